package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// ErrInvalidLimit is returned by Allow for a Limit with a non-positive Rate,
// Period or Burst, or one whose Burst·Period/Rate exceeds about 146 years.
var ErrInvalidLimit = errors.New("ratelimit: invalid limit")

// Limit admits Rate requests per Period, with bursts of up to Burst requests.
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// PerSecond returns a limit of n requests per second with a burst of n.
func PerSecond(n int) Limit { return Limit{Rate: n, Period: time.Second, Burst: n} }

// PerMinute returns a limit of n requests per minute with a burst of n.
func PerMinute(n int) Limit { return Limit{Rate: n, Period: time.Minute, Burst: n} }

// PerHour returns a limit of n requests per hour with a burst of n.
func PerHour(n int) Limit { return Limit{Rate: n, Period: time.Hour, Burst: n} }

// String returns the limit as "10 req/1s (burst 20)".
func (l Limit) String() string {
	return fmt.Sprintf("%d req/%s (burst %d)", l.Rate, l.Period, l.Burst)
}

// IsZero reports whether l is the zero Limit.
func (l Limit) IsZero() bool { return l == Limit{} }

// maxBurstOffset bounds Burst·interval so that TAT arithmetic cannot overflow.
const maxBurstOffset = math.MaxInt64 / 2

// interval returns the emission interval Period/Rate rounded up to the next
// nanosecond, and the burst offset Burst·interval. It reports false when the
// limit is invalid.
func (l Limit) interval() (interval, burstOffset int64, ok bool) {
	if l.Rate <= 0 || l.Period <= 0 || l.Burst <= 0 {
		return 0, 0, false
	}
	p, r := int64(l.Period), int64(l.Rate)
	interval = p / r
	if p%r != 0 {
		interval++
	}
	if interval > maxBurstOffset/int64(l.Burst) {
		return 0, 0, false
	}
	return interval, interval * int64(l.Burst), true
}

// Result is the outcome of one Allow call. Its fields mean what
// redis_rate.Result's do.
type Result struct {
	// Allowed reports whether the request was admitted.
	Allowed bool
	// Limit is the limit the request was checked against.
	Limit Limit
	// Remaining is how many more requests would be admitted right now,
	// after this one. It is 0 on a refusal.
	Remaining int
	// RetryAfter is how long until this request would be admitted: -1 when
	// it was admitted, otherwise > 0.
	RetryAfter time.Duration
	// ResetAfter is how long until the key's bucket is full again, that is
	// until Burst requests would be admitted at once.
	ResetAfter time.Duration
}

// Limiter decides whether the request identified by key may proceed under l.
// Local implements it in process; a Redis-backed implementation built on
// redis_rate shares its state across gateway replicas.
type Limiter interface {
	Allow(ctx context.Context, key string, l Limit) (Result, error)
}

// gcra applies one request at time now (ns) to a key whose stored TAT is tat
// (ns; any value ≤ now, such as 0 for a missing key, means a full bucket). It
// returns the result and the new TAT to store; on refusal the new TAT is tat.
func gcra(now, tat, interval, burstOffset int64, l Limit) (Result, int64) {
	tat = max(tat, now)
	newTAT := tat + interval
	allowAt := newTAT - burstOffset
	if diff := now - allowAt; diff >= 0 {
		return Result{
			Allowed:    true,
			Limit:      l,
			Remaining:  int(diff / interval),
			RetryAfter: -1,
			ResetAfter: time.Duration(newTAT - now),
		}, newTAT
	}
	return Result{
		Allowed:    false,
		Limit:      l,
		Remaining:  0,
		RetryAfter: time.Duration(allowAt - now),
		ResetAfter: time.Duration(tat - now),
	}, tat
}
