// Package redisrevoke is a [jwtauth.Revocations] store kept in Redis, so that
// a token revoked through one gateway instance is refused by all of them.
//
// # Concept
//
// A revoked token ID is a Redis key, KeyPrefix + id, holding "1" and expiring
// at the time the revocation ends (PXAT, millisecond precision): Redis
// forgets a revocation by itself once the token could no longer be valid.
// [Store.Revoked] is one EXISTS.
//
// # Invariants
//
//   - Revoking an ID again keeps the later expiry (SET NX PXAT, then
//     PEXPIREAT GT, in one MULTI), as [jwtauth.MemoryRevocations] does.
//   - A revocation whose end has already passed is not stored.
//   - Expiry follows Redis's clock; jwtauth revokes until exp plus its leeway
//     (30 s by default), which covers ordinary clock skew between gateway
//     instances and Redis.
//   - Revocations live only as long as Redis keeps its data: run the Redis
//     that holds them with persistence (appendonly yes), or a Redis restart
//     makes revoked tokens valid again until their exp.
//
// # When Redis is unreachable
//
// Revoked and Revoke return an error quickly (200 ms dial, read and write
// timeouts by default, no command retries, one dial attempt, each call bounded
// by [Config.Timeout]) and count it in pedal_revocations_redis_errors_total.
// A [jwtauth.Verifier] turns an error from Revoked into a failed
// verification, and checks revocations on every call, session-cache hit or
// not: the gateway fails CLOSED and answers 5xx rather than admit a token it
// cannot check. This puts security over availability: a stolen token that
// was revoked must not be accepted again just because Redis is away, and a
// Redis outage therefore stops authenticated traffic until Redis is back.
// (The rate limiter, in contrast, fails open.)
//
// # Concurrency
//
// A [Store] is safe for concurrent use by many goroutines and by many
// processes sharing the same Redis.
package redisrevoke

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pedal-project/pedal/internal/jwtauth"
)

// Defaults for the zero values of Config fields.
const (
	DefaultKeyPrefix = "pedal:revoked:"
	DefaultTimeout   = 500 * time.Millisecond // one Revoke or Revoked call
)

// Config configures a Store. Addr is required; the zero value of every other
// field is a useful default.
type Config struct {
	// Client is the Redis to use (package redisconn makes one); required.
	// Its owner closes it.
	Client *redis.Client
	// Timeout bounds one call, whatever the caller's context says; zero
	// means DefaultTimeout.
	Timeout time.Duration
	// KeyPrefix is prepended to every revoked ID; empty means
	// DefaultKeyPrefix.
	KeyPrefix string
	// Now is the clock used to skip revocations that are already over; nil
	// means time.Now.
	Now func() time.Time
}

// Store is a Redis-backed [jwtauth.Revocations].
type Store struct {
	rdb     *redis.Client
	prefix  string
	timeout time.Duration
	now     func() time.Time
	errs    *prometheus.CounterVec // by op: "revoke", "check"
}

var _ jwtauth.Revocations = (*Store)(nil)

// New returns a Store using cfg.Client and registers its metrics with reg.
// It does not connect; the first call does.
func New(cfg Config, reg prometheus.Registerer) (*Store, error) {
	if cfg.Client == nil {
		return nil, errors.New("redisrevoke: no Redis client configured")
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultKeyPrefix
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pedal_revocations_redis_errors_total",
		Help: "Revocation store operations that failed because Redis could not be reached or answered an error; a failed check refuses the token.",
	}, []string{"op"})
	if err := reg.Register(errs); err != nil {
		return nil, fmt.Errorf("redisrevoke: register metrics: %w", err)
	}
	errs.WithLabelValues("revoke")
	errs.WithLabelValues("check")
	rdb := cfg.Client
	return &Store{rdb: rdb, prefix: cfg.KeyPrefix, timeout: cfg.Timeout, now: cfg.Now, errs: errs}, nil
}

// Revoke implements [jwtauth.Revocations]: id stays revoked until until (by
// Redis's clock, to the millisecond). Revoking an ID again keeps the later
// expiry.
func (s *Store) Revoke(ctx context.Context, id string, until time.Time) error {
	if !s.now().Before(until) {
		return nil // already over
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	key, ms := s.prefix+id, until.UnixMilli()
	cmds, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Do(ctx, "SET", key, "1", "PXAT", ms, "NX") // a new revocation
		p.Do(ctx, "PEXPIREAT", key, ms, "GT")        // or a later end for an existing one
		return nil
	})
	if errors.Is(err, redis.Nil) { // SET NX on an existing key answers nil
		err = nil
		for _, c := range cmds {
			if e := c.Err(); e != nil && !errors.Is(e, redis.Nil) {
				err = e
				break
			}
		}
	}
	if err != nil {
		s.errs.WithLabelValues("revoke").Inc()
		return fmt.Errorf("redisrevoke: revoke: %w", err)
	}
	return nil
}

// Revoked implements [jwtauth.Revocations]. It returns an error when Redis
// cannot be asked in time; a Verifier then refuses the token.
func (s *Store) Revoked(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	n, err := s.rdb.Exists(ctx, s.prefix+id).Result()
	if err != nil {
		s.errs.WithLabelValues("check").Inc()
		return false, fmt.Errorf("redisrevoke: check: %w", err)
	}
	return n > 0, nil
}

// Ping checks that Redis answers, for readiness probes.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisrevoke: ping: %w", err)
	}
	return nil
}
