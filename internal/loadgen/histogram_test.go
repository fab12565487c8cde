package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBucketLayout(t *testing.T) {
	prevHi := uint64(0)
	for i := range bucketOf(histMax) + 1 {
		lo, hi := bucketRange(i)
		if lo != prevHi {
			t.Fatalf("bucket %d starts at %d, want %d (the end of the previous one)", i, lo, prevHi)
		}
		if w := hi - lo; lo >= 2*histSub && float64(w)/float64(lo) > 1.0/histSub {
			t.Fatalf("bucket %d [%d, %d) wider than 1/%d of its values", i, lo, hi, histSub)
		}
		for _, v := range []uint64{lo, hi - 1} {
			if got := bucketOf(v); got != i {
				t.Fatalf("bucketOf(%d) = %d, want %d", v, got, i)
			}
		}
		prevHi = hi
	}
	if n := bucketOf(math.MaxUint64); n >= histBuckets {
		t.Fatalf("bucketOf(max) = %d, beyond %d buckets", n, histBuckets)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name string
		draw func(r *rand.Rand) time.Duration
	}{
		{"lognormal", func(r *rand.Rand) time.Duration {
			return time.Duration(math.Exp(r.NormFloat64()*1.5+math.Log(2e6))) * time.Nanosecond
		}},
		{"sub-millisecond", func(r *rand.Rand) time.Duration { return time.Duration(r.IntN(900)) * time.Microsecond }},
		{"bimodal with stalls", func(r *rand.Rand) time.Duration {
			if r.IntN(100) == 0 {
				return 2*time.Second + time.Duration(r.IntN(3e9))
			}
			return 300*time.Microsecond + time.Duration(r.IntN(5e6))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			var h histogram
			vals := make([]time.Duration, 100_000)
			for i := range vals {
				vals[i] = tt.draw(r).Truncate(time.Microsecond)
				h.record(vals[i])
			}
			slices.Sort(vals)
			for _, q := range []float64{0, 0.1, 0.5, 0.9, 0.99, 0.999, 1} {
				rank := max(int(math.Ceil(q*float64(len(vals)))), 1)
				want := vals[rank-1]
				got := h.quantile(q)
				if diff := math.Abs(float64(got - want)); diff > float64(want)/histSub/2+float64(time.Microsecond) {
					t.Errorf("quantile(%v) = %v, want %v within 0.4%%", q, got, want)
				}
			}
			if got, want := h.maxValue(), vals[len(vals)-1]; got != want {
				t.Errorf("max = %v, want %v", got, want)
			}
			if got := h.count(); got != uint64(len(vals)) {
				t.Errorf("count = %d, want %d", got, len(vals))
			}
		})
	}
}

func TestHistogramMergeAndMove(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var whole, a, b histogram
	var wg sync.WaitGroup
	vals := make([]time.Duration, 20_000)
	for i := range vals {
		vals[i] = time.Duration(r.Int64N(int64(5 * time.Second)))
		whole.record(vals[i])
	}
	// Concurrent recording into two halves, merged, equals the whole.
	wg.Go(func() {
		for _, v := range vals[:10_000] {
			a.record(v)
		}
	})
	wg.Go(func() {
		for _, v := range vals[10_000:] {
			b.record(v)
		}
	})
	wg.Wait()
	var merged histogram
	merged.merge(&a)
	merged.merge(&b)
	var moved histogram
	merged.moveTo(&moved)
	if merged.count() != 0 || merged.maxValue() != 0 {
		t.Errorf("moveTo left %d values, max %v", merged.count(), merged.maxValue())
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 1} {
		if got, want := moved.quantile(q), whole.quantile(q); got != want {
			t.Errorf("merged quantile(%v) = %v, want %v", q, got, want)
		}
	}
	var empty histogram
	if got := empty.quantile(0.5); got != 0 {
		t.Errorf("empty quantile = %v, want 0", got)
	}
}
