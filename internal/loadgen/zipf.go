package loadgen

import (
	"math"
	"math/rand/v2"
)

// maxAliasAds bounds the ads drawn through an alias table (8 bytes per ad); more
// are drawn with rand.Zipf, which is several times slower.
const maxAliasAds = 1 << 22

// zipfAds draws ad numbers 0..n-1 with P(k) proportional to (k+1)^-s, the
// distribution of rand.NewZipf(r, s, 1, n-1), in constant time: Vose's alias
// method over a table built once.
type zipfAds struct {
	rng    *rand.Rand
	thresh []uint32 // column i keeps i when the coin is below thresh[i]
	alias  []uint32 // and gives alias[i] otherwise
	slow   *rand.Zipf
}

func newZipfAds(rng *rand.Rand, n int, s float64) *zipfAds {
	z := &zipfAds{rng: rng}
	if n > maxAliasAds {
		z.slow = rand.NewZipf(rng, s, 1, uint64(n-1))
		return z
	}
	q := make([]float64, n)
	sum := 0.0
	for k := range q {
		q[k] = math.Pow(float64(k+1), -s)
		sum += q[k]
	}
	small, large := make([]uint32, 0, n), make([]uint32, 0, n)
	for k := range q {
		q[k] *= float64(n) / sum
		if q[k] < 1 {
			small = append(small, uint32(k))
		} else {
			large = append(large, uint32(k))
		}
	}
	z.thresh, z.alias = make([]uint32, n), make([]uint32, n)
	for len(small) > 0 && len(large) > 0 {
		s, l := small[len(small)-1], large[len(large)-1]
		small = small[:len(small)-1]
		z.thresh[s] = uint32(q[s] * (1 << 32))
		z.alias[s] = l
		q[l] -= 1 - q[s]
		if q[l] < 1 {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	// What is left has probability 1 up to rounding.
	for _, k := range append(small, large...) {
		z.thresh[k], z.alias[k] = math.MaxUint32, k
	}
	return z
}

func (z *zipfAds) next() uint32 {
	if z.slow != nil {
		return uint32(z.slow.Uint64())
	}
	r := z.rng.Uint64()
	i := uint32((r >> 32) * uint64(len(z.thresh)) >> 32)
	if uint32(r) < z.thresh[i] {
		return i
	}
	return z.alias[i]
}
