package redisrevoke_test

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pedal-project/pedal/internal/jwtauth"
	"github.com/pedal-project/pedal/internal/jwtauth/redisrevoke"
	"github.com/pedal-project/pedal/internal/redistest"
)

// downTimeout is the generous bound on how long a call may take when Redis
// is gone; the configured timeouts are 200 ms.
const downTimeout = 2 * time.Second

func newStore(t *testing.T, addr string) (*redisrevoke.Store, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := redisrevoke.New(redisrevoke.Config{Client: redistest.Client(t, addr)}, reg)
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func rawClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func TestRevokeThenRevoked(t *testing.T) {
	srv := redistest.Start(t)
	s, _ := newStore(t, srv.Addr())
	ctx := t.Context()

	if got, err := s.Revoked(ctx, "jti:a"); err != nil || got {
		t.Fatalf("Revoked before Revoke = %v, %v; want false, nil", got, err)
	}
	until := time.Now().Add(time.Hour)
	if err := s.Revoke(ctx, "jti:a", until); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Revoked(ctx, "jti:a"); err != nil || !got {
		t.Fatalf("Revoked after Revoke = %v, %v; want true, nil", got, err)
	}
	if got, err := s.Revoked(ctx, "jti:b"); err != nil || got {
		t.Fatalf("Revoked of another ID = %v, %v; want false, nil", got, err)
	}
	// The key expires exactly at until (to the millisecond).
	rdb := rawClient(t, srv.Addr())
	if got, err := rdb.PExpireTime(ctx, redisrevoke.DefaultKeyPrefix+"jti:a").Result(); err != nil || got != time.Duration(until.UnixMilli())*time.Millisecond {
		t.Fatalf("PEXPIRETIME = %v, %v; want %v", got, err, time.Duration(until.UnixMilli())*time.Millisecond)
	}
}

func TestRevokeKeepsTheLaterExpiry(t *testing.T) {
	srv := redistest.Start(t)
	s, _ := newStore(t, srv.Addr())
	rdb := rawClient(t, srv.Addr())
	ctx, now := t.Context(), time.Now()
	for _, tc := range []struct {
		until, want time.Duration // from now
	}{
		{time.Hour, time.Hour},
		{10 * time.Minute, time.Hour}, // earlier: ignored
		{2 * time.Hour, 2 * time.Hour},
	} {
		if err := s.Revoke(ctx, "id", now.Add(tc.until)); err != nil {
			t.Fatal(err)
		}
		got, err := rdb.PExpireTime(ctx, redisrevoke.DefaultKeyPrefix+"id").Result()
		if want := time.Duration(now.Add(tc.want).UnixMilli()) * time.Millisecond; err != nil || got != want {
			t.Fatalf("after Revoke until now+%v: PEXPIRETIME = %v, %v; want now+%v", tc.until, got, err, tc.want)
		}
	}
}

func TestRevokeInThePastIsNotStored(t *testing.T) {
	srv := redistest.Start(t)
	s, _ := newStore(t, srv.Addr())
	if err := s.Revoke(t.Context(), "old", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := rawClient(t, srv.Addr()).DBSize(t.Context()).Result(); err != nil || n != 0 {
		t.Fatalf("DBSIZE = %v, %v; want 0", n, err)
	}
}

// TestRevocationExpires waits for real time: expiry is Redis's.
func TestRevocationExpires(t *testing.T) {
	srv := redistest.Start(t)
	s, _ := newStore(t, srv.Addr())
	until := time.Now().Add(200 * time.Millisecond)
	if err := s.Revoke(t.Context(), "short", until); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Revoked(t.Context(), "short"); err != nil || !got {
		t.Fatalf("Revoked before until = %v, %v; want true", got, err)
	}
	time.Sleep(time.Until(until) + 50*time.Millisecond)
	if got, err := s.Revoked(t.Context(), "short"); err != nil || got {
		t.Fatalf("Revoked after until = %v, %v; want false", got, err)
	}
}

func TestRedisDown(t *testing.T) {
	for _, tc := range []struct {
		name       string
		down, back func(*redistest.Server)
	}{
		{"killed", (*redistest.Server).Stop, (*redistest.Server).Restart}, // connection refused
		{"hung", (*redistest.Server).Pause, (*redistest.Server).Resume},   // read timeout
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			s, reg := newStore(t, srv.Addr())
			if err := s.Revoke(t.Context(), "id", time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			tc.down(srv)

			start := time.Now()
			got, err := s.Revoked(t.Context(), "id")
			if err == nil {
				t.Fatalf("Revoked with Redis %s = %v, nil; want an error", tc.name, got)
			}
			if took := time.Since(start); took > downTimeout {
				t.Errorf("Revoked with Redis %s took %v, want < %v", tc.name, took, downTimeout)
			}
			start = time.Now()
			if err := s.Revoke(t.Context(), "id2", time.Now().Add(time.Hour)); err == nil {
				t.Fatalf("Revoke with Redis %s: no error", tc.name)
			}
			if took := time.Since(start); took > downTimeout {
				t.Errorf("Revoke with Redis %s took %v, want < %v", tc.name, took, downTimeout)
			}
			for _, op := range []string{"check", "revoke"} {
				if got := errorsTotal(t, reg, op); got != 1 {
					t.Errorf("pedal_revocations_redis_errors_total{op=%q} = %v, want 1", op, got)
				}
			}

			tc.back(srv)
			if _, err := s.Revoked(t.Context(), "id"); err != nil {
				t.Fatalf("Revoked with Redis back: %v", err)
			}
			if err := s.Ping(t.Context()); err != nil {
				t.Errorf("Ping with Redis back: %v", err)
			}
		})
	}
}

// errorsTotal returns pedal_revocations_redis_errors_total{op=op}.
func errorsTotal(t *testing.T, reg *prometheus.Registry, op string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pedal_revocations_redis_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" && l.GetValue() == op {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("pedal_revocations_redis_errors_total{op=%q} not found", op)
	return 0
}

var hmacKey = []byte("0123456789abcdef0123456789abcdef")

func newVerifier(t *testing.T, addr string) *jwtauth.Verifier {
	t.Helper()
	s, _ := newStore(t, addr)
	v, err := jwtauth.New(t.Context(), jwtauth.Config{HMACKey: hmacKey, Revocations: s})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func mint(t *testing.T, sub string) string {
	t.Helper()
	tok, err := jwtauth.Mint(hmacKey, jwtauth.MintClaims{Subject: sub})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestTwoGatewayInstances: a token revoked through one Verifier is refused by
// another sharing the Redis, even though the other had it in its session
// cache; with Redis down, every token is refused (fail closed), cached or
// not.
func TestTwoGatewayInstances(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newVerifier(t, srv.Addr()), newVerifier(t, srv.Addr())
	ctx := t.Context()

	stolen, other := mint(t, "mallory"), mint(t, "alice")
	for _, v := range []*jwtauth.Verifier{a, b} { // both instances cache both tokens
		for _, tok := range []string{stolen, other} {
			if _, err := v.Verify(ctx, tok); err != nil {
				t.Fatalf("Verify before revocation: %v", err)
			}
		}
	}

	if err := a.Revoke(ctx, stolen); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]*jwtauth.Verifier{"revoking instance": a, "other instance (cache hit)": b} {
		if _, err := v.Verify(ctx, stolen); !errors.Is(err, jwtauth.ErrRevoked) {
			t.Errorf("%s: Verify of the revoked token: %v, want ErrRevoked", name, err)
		}
		if _, err := v.Verify(ctx, other); err != nil {
			t.Errorf("%s: Verify of another token: %v, want success", name, err)
		}
	}

	srv.Stop()
	uncached := mint(t, "bob")
	for name, tok := range map[string]string{"cached": other, "uncached": uncached, "revoked": stolen} {
		start := time.Now()
		cl, err := b.Verify(ctx, tok)
		if err == nil {
			t.Errorf("Redis down, %s token: Verify = %+v, nil; want an error (fail closed)", name, cl)
			continue
		}
		if took := time.Since(start); took > downTimeout {
			t.Errorf("Redis down, %s token: Verify took %v, want < %v", name, took, downTimeout)
		}
		for _, sentinel := range []error{jwtauth.ErrMissingToken, jwtauth.ErrInvalidToken, jwtauth.ErrExpired, jwtauth.ErrRevoked} {
			if errors.Is(err, sentinel) {
				t.Errorf("Redis down, %s token: error %v wraps %v; want an internal error", name, err, sentinel)
			}
		}
	}
	if err := a.Revoke(ctx, other); err == nil {
		t.Error("Redis down: Revoke succeeded")
	}

	srv.Restart() // empty: without persistence the revocation is gone
	if _, err := b.Verify(ctx, uncached); err != nil {
		t.Errorf("Redis back: Verify: %v", err)
	}
}

func TestNewNeedsAddr(t *testing.T) {
	if _, err := redisrevoke.New(redisrevoke.Config{}, prometheus.NewRegistry()); err == nil {
		t.Fatal("New without a client: no error")
	}
}
