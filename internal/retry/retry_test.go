package retry

import (
	"context"
	"testing"
	"time"
)

func TestFullJitterBounds(t *testing.T) {
	base, ceiling := 100*time.Millisecond, 2*time.Second
	for n, bound := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, 1600 * time.Millisecond, 2 * time.Second, 2 * time.Second} {
		var maxSeen, minSeen time.Duration = 0, bound
		for range 2000 {
			d := FullJitter(base, ceiling, n)
			if d < 0 || d > bound {
				t.Fatalf("n=%d: %v outside [0, %v]", n, d, bound)
			}
			maxSeen, minSeen = max(maxSeen, d), min(minSeen, d)
		}
		// Full jitter covers the whole range, not just its top (equal jitter)
		// or a fixed point (no jitter).
		if maxSeen < bound*8/10 || minSeen > bound*2/10 {
			t.Errorf("n=%d: 2000 draws span [%v, %v]; want most of [0, %v]", n, minSeen, maxSeen, bound)
		}
	}
	if d := FullJitter(base, ceiling, 1000); d > ceiling {
		t.Errorf("n=1000: %v beyond the ceiling", d)
	}
	if d := FullJitter(0, ceiling, 3); d != 0 {
		t.Errorf("zero base: %v", d)
	}
}

func TestSleepStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); err != context.Canceled {
		t.Fatalf("Sleep on a cancelled context: %v", err)
	}
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("Sleep: %v", err)
	}
}
