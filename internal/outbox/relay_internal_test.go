package outbox

import (
	"testing"
	"time"
)

func TestFullJitterStaysInBounds(t *testing.T) {
	base, ceiling := 100*time.Millisecond, 2*time.Second
	for n := range 70 {
		limit := ceiling
		if n < 5 { // 100ms·2^n < 2s for n ≤ 4
			limit = base << n
		}
		for range 200 {
			if d := fullJitter(base, ceiling, n); d < 0 || d > limit {
				t.Fatalf("fullJitter(n=%d) = %v, want within [0, %v]", n, d, limit)
			}
		}
	}
}
