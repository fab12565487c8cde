// Package redislimit is a [ratelimit.Limiter] whose state lives in Redis, so
// that several gateway instances share one limit per key.
//
// # Concept
//
// [Limiter.Allow] runs redis_rate's GCRA Lua script
// (github.com/go-redis/redis_rate/v10): one round trip that reads the key's
// theoretical arrival time (TAT), decides, and stores the new TAT with an
// expiry, atomically inside Redis. It is the same algorithm as the
// in-process [ratelimit.Local], so for the same sequence of requests both
// give the same Allowed and Remaining; RetryAfter and ResetAfter agree up to
// the time that passes between calls, because the script reads Redis's clock
// (TIME), not the gateway's.
//
// # Invariants
//
//   - Result fields mean what they mean for [ratelimit.Local]: Remaining is 0
//     on a refusal, RetryAfter is -1 on an admission and > 0 on a refusal.
//   - An invalid Limit is refused with an error wrapping
//     [ratelimit.ErrInvalidLimit] before Redis is asked.
//   - Keys are stored as "rate:" + KeyPrefix + key ("rate:" is redis_rate's
//     own fixed prefix) and expire once the bucket is full again, so Redis
//     holds no key longer than Burst·Period/Rate.
//   - The script computes in float seconds since 2017 (about 3e8, so about
//     1e-7 s resolution). When the emission interval Period/Rate is not
//     exactly representable in binary (7/min, 3/s, ...), Remaining can be one
//     lower than Local's, which computes in integer nanoseconds; this happens
//     on every request that finds the bucket full (such as a key's first).
//     Allowed is not affected except for a request arriving within about
//     1e-7 s of its admission time. Intervals such as 1 s, 6 s or 500 ms are
//     exact and give Local's Remaining.
//
// # When Redis is unreachable
//
// Allow returns an error quickly: the client from package redisconn has short
// dial, read and write timeouts, one dial attempt and no command retries (a
// retried script after a timeout could count a request twice), and every call
// is bounded by [Config.Timeout]. Each error is counted in
// pedal_ratelimit_redis_errors_total. The gateway fails OPEN on a limiter
// error: it logs and lets the request through, because a rate limiter
// protects capacity, and refusing every request while Redis is away would
// turn a Redis outage into a full gateway outage. Once Redis answers again,
// Allow works again without intervention (state lost by a Redis restart means
// full buckets, i.e. more permissive, never less).
//
// # Concurrency
//
// A [Limiter] is safe for concurrent use by many goroutines and by many
// processes sharing the same Redis: each Allow is atomic per key in Redis.
package redislimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pedal-project/pedal/internal/ratelimit"
)

// Defaults for the zero values of Config fields.
const (
	DefaultKeyPrefix = "pedal:rl:"
	DefaultTimeout   = 500 * time.Millisecond // one Allow call
)

// Config configures a Limiter. Addr is required; the zero value of every
// other field is a useful default.
type Config struct {
	// Client is the Redis to use (package redisconn makes one); required.
	// Its owner closes it.
	Client *redis.Client
	// Timeout bounds one Allow call, whatever the caller's context says;
	// zero means DefaultTimeout.
	Timeout time.Duration
	// KeyPrefix is prepended to every key; empty means DefaultKeyPrefix.
	KeyPrefix string
}

// Limiter is a Redis-backed [ratelimit.Limiter].
type Limiter struct {
	rdb     *redis.Client
	rl      *redis_rate.Limiter
	prefix  string
	timeout time.Duration
	errs    prometheus.Counter
}

var _ ratelimit.Limiter = (*Limiter)(nil)

// New returns a Limiter using cfg.Client and registers its metrics with reg.
// It does not connect: the first Allow does, so a gateway can start while
// Redis is down (and fail open until it is up).
func New(cfg Config, reg prometheus.Registerer) (*Limiter, error) {
	if cfg.Client == nil {
		return nil, errors.New("redislimit: no Redis client configured")
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultKeyPrefix
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	errs := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pedal_ratelimit_redis_errors_total",
		Help: "Rate-limit checks that failed because Redis could not be reached or answered an error; the gateway lets those requests through.",
	})
	if err := reg.Register(errs); err != nil {
		return nil, fmt.Errorf("redislimit: register metrics: %w", err)
	}
	rdb := cfg.Client
	return &Limiter{
		rdb:     rdb,
		rl:      redis_rate.NewLimiter(rdb),
		prefix:  cfg.KeyPrefix,
		timeout: cfg.Timeout,
		errs:    errs,
	}, nil
}

// Allow implements [ratelimit.Limiter]. It returns an error wrapping
// ratelimit.ErrInvalidLimit for an invalid lim, and an error when Redis
// cannot be asked in time; the caller decides what that means (the gateway
// admits the request).
func (l *Limiter) Allow(ctx context.Context, key string, lim ratelimit.Limit) (ratelimit.Result, error) {
	if !valid(lim) {
		return ratelimit.Result{Limit: lim}, fmt.Errorf("%w: %v", ratelimit.ErrInvalidLimit, lim)
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	res, err := l.rl.Allow(ctx, l.prefix+key, redis_rate.Limit{Rate: lim.Rate, Burst: lim.Burst, Period: lim.Period})
	if err != nil {
		l.errs.Inc()
		return ratelimit.Result{Limit: lim}, fmt.Errorf("redislimit: allow: %w", err)
	}
	return ratelimit.Result{
		Allowed:    res.Allowed > 0,
		Limit:      lim,
		Remaining:  res.Remaining,
		RetryAfter: res.RetryAfter,
		ResetAfter: res.ResetAfter,
	}, nil
}

// valid applies ratelimit.Local's rule: positive Rate, Period and Burst, and
// Burst·⌈Period/Rate⌉ within about 146 years.
func valid(l ratelimit.Limit) bool {
	if l.Rate <= 0 || l.Period <= 0 || l.Burst <= 0 {
		return false
	}
	p, r := int64(l.Period), int64(l.Rate)
	interval := p / r
	if p%r != 0 {
		interval++
	}
	return interval <= math.MaxInt64/2/int64(l.Burst)
}

// Ping checks that Redis answers, for readiness probes.
func (l *Limiter) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if err := l.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redislimit: ping: %w", err)
	}
	return nil
}
