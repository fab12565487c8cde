package loadgen

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestZipfAds(t *testing.T) {
	const n, s, draws = 50, 1.3, 200_000
	norm := 0.0
	for k := range n {
		norm += math.Pow(float64(k+1), -s)
	}
	for _, tt := range []struct {
		name string
		z    *zipfAds
	}{
		{"alias", newZipfAds(rand.New(rand.NewPCG(1, 2)), n, s)},
		{"rand.Zipf", &zipfAds{slow: rand.NewZipf(rand.New(rand.NewPCG(1, 2)), s, 1, n-1)}},
	} {
		counts := make([]int, n)
		for range draws {
			k := tt.z.next()
			if int(k) >= n {
				t.Fatalf("%s: drew %d of %d ads", tt.name, k, n)
			}
			counts[k]++
		}
		for _, k := range []int{0, 1, 4, 20, 49} {
			want := math.Pow(float64(k+1), -s) / norm * draws
			if got := float64(counts[k]); math.Abs(got-want) > 5*math.Sqrt(want)+1 {
				t.Errorf("%s: ad %d drawn %v times, want about %.0f", tt.name, k, got, want)
			}
		}
	}
	if z := newZipfAds(rand.New(rand.NewPCG(1, 2)), maxAliasAds+1, 1.1); z.slow == nil {
		t.Error("no fallback to rand.Zipf above maxAliasAds")
	}
}
