// Package retry computes waits between attempts: exponential backoff with
// full jitter, as in "Exponential Backoff And Jitter" (AWS Architecture Blog):
// the wait before retry n is random(0, min(cap, base·2^n)). Full jitter
// spreads retries of many clients evenly instead of in synchronised waves.
//
// Everything here is safe for concurrent use.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// FullJitter returns a uniformly random duration in [0, min(ceiling, base·2^n)].
// n counts failures so far (0 for the first retry); overflow saturates at
// ceiling.
func FullJitter(base, ceiling time.Duration, n int) time.Duration {
	if base <= 0 || ceiling <= 0 {
		return 0
	}
	d := ceiling
	if n < 0 {
		n = 0
	}
	if n < 62 && base<<n > 0 && base<<n < ceiling {
		d = base << n
	}
	return rand.N(d + 1)
}

// Sleep waits d or until ctx is done, and returns ctx.Err() in the latter case.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
