package redislimit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pedal-project/pedal/internal/ratelimit"
	"github.com/pedal-project/pedal/internal/ratelimit/redislimit"
	"github.com/pedal-project/pedal/internal/redistest"
)

// downTimeout is the generous bound on how long Allow may take when Redis is
// gone; the configured timeouts are 200 ms.
const downTimeout = 2 * time.Second

func newLimiter(t *testing.T, cfg redislimit.Config) (*redislimit.Limiter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	l, err := redislimit.New(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	return l, reg
}

// TestMatchesLocal runs the same sequence of requests through Local (with
// its clock held still) and through Redis (whose clock runs, but by far less
// than an emission interval during the test).
func TestMatchesLocal(t *testing.T) {
	srv := redistest.Start(t)
	rl, _ := newLimiter(t, redislimit.Config{Client: redistest.Client(t, srv.Addr())})
	const tolerance = 250 * time.Millisecond // Redis's clock advances between calls
	for _, lim := range []ratelimit.Limit{
		{Rate: 10, Period: time.Minute, Burst: 5},
		ratelimit.PerMinute(3),
		ratelimit.PerHour(2),
		{Rate: 1, Period: time.Hour, Burst: 7},
		{Rate: 4, Period: 2 * time.Second, Burst: 4}, // 500 ms: exact in binary
		{Rate: 60, Period: time.Hour, Burst: 1},
	} {
		t.Run(lim.String(), func(t *testing.T) {
			now := time.Now()
			local := ratelimit.NewLocal(ratelimit.Config{Now: func() time.Time { return now }})
			key := t.Name()
			for i := range lim.Burst + 3 {
				want, err := local.Allow(t.Context(), key, lim)
				if err != nil {
					t.Fatal(err)
				}
				got, err := rl.Allow(t.Context(), key, lim)
				if err != nil {
					t.Fatal(err)
				}
				if got.Allowed != want.Allowed || got.Remaining != want.Remaining || got.Limit != want.Limit {
					t.Fatalf("request %d: got Allowed=%v Remaining=%d Limit=%v, want Allowed=%v Remaining=%d Limit=%v",
						i, got.Allowed, got.Remaining, got.Limit, want.Allowed, want.Remaining, want.Limit)
				}
				if !within(got.RetryAfter, want.RetryAfter, tolerance) || !within(got.ResetAfter, want.ResetAfter, tolerance) {
					t.Errorf("request %d: got RetryAfter=%v ResetAfter=%v, want %v and %v (±%v)",
						i, got.RetryAfter, got.ResetAfter, want.RetryAfter, want.ResetAfter, tolerance)
				}
			}
		})
	}
}

// TestInexactIntervals pins the documented deviation: when Period/Rate is
// not exact in binary, redis_rate's float arithmetic may report Remaining one
// lower than Local, never more, and decides the same.
func TestInexactIntervals(t *testing.T) {
	srv := redistest.Start(t)
	rl, _ := newLimiter(t, redislimit.Config{Client: redistest.Client(t, srv.Addr())})
	for _, lim := range []ratelimit.Limit{
		{Rate: 7, Period: time.Minute, Burst: 5},
		{Rate: 13, Period: time.Minute, Burst: 1},
		{Rate: 90, Period: time.Hour, Burst: 3},
	} {
		t.Run(lim.String(), func(t *testing.T) {
			now := time.Now()
			local := ratelimit.NewLocal(ratelimit.Config{Now: func() time.Time { return now }})
			for i := range lim.Burst + 2 {
				want, _ := local.Allow(t.Context(), "k", lim)
				got, err := rl.Allow(t.Context(), t.Name(), lim)
				if err != nil {
					t.Fatal(err)
				}
				if got.Allowed != want.Allowed || got.Remaining > want.Remaining || got.Remaining < want.Remaining-1 {
					t.Fatalf("request %d: got Allowed=%v Remaining=%d, want Allowed=%v Remaining=%d (or one less)",
						i, got.Allowed, got.Remaining, want.Allowed, want.Remaining)
				}
			}
		})
	}
}

// within reports whether got is want, or at most tol less: time passes
// between calls, so Redis's durations can only be shorter than Local's
// frozen ones (a microsecond of float rounding aside). -1 must match exactly.
func within(got, want, tol time.Duration) bool {
	if want == -1 || got == -1 {
		return got == want
	}
	return got <= want+time.Microsecond && got >= want-tol
}

func TestBurstThenRefusal(t *testing.T) {
	srv := redistest.Start(t)
	rl, _ := newLimiter(t, redislimit.Config{Client: redistest.Client(t, srv.Addr())})
	lim := ratelimit.PerMinute(3)
	for i, wantRemaining := range []int{2, 1, 0} {
		res, err := rl.Allow(t.Context(), "k", lim)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Allowed || res.Remaining != wantRemaining || res.RetryAfter != -1 {
			t.Fatalf("request %d: got %+v, want allowed with Remaining %d and RetryAfter -1", i, res, wantRemaining)
		}
	}
	res, err := rl.Allow(t.Context(), "k", lim)
	if err != nil {
		t.Fatal(err)
	}
	if res.Allowed || res.Remaining != 0 || res.RetryAfter <= 19*time.Second || res.RetryAfter > 20*time.Second {
		t.Fatalf("4th request: got %+v, want refused with Remaining 0 and RetryAfter in (19s, 20s]", res)
	}
	if res.ResetAfter <= 59*time.Second || res.ResetAfter > time.Minute {
		t.Errorf("4th request: ResetAfter = %v, want in (59s, 1m]", res.ResetAfter)
	}
	// Another key is not affected.
	if res, err := rl.Allow(t.Context(), "other", lim); err != nil || !res.Allowed {
		t.Fatalf("other key: got %+v, %v, want allowed", res, err)
	}
}

// TestRetryAfterIsHonoured waits for real time, as Redis's clock is real.
func TestRetryAfterIsHonoured(t *testing.T) {
	srv := redistest.Start(t)
	rl, _ := newLimiter(t, redislimit.Config{Client: redistest.Client(t, srv.Addr())})
	lim := ratelimit.Limit{Rate: 5, Period: time.Second, Burst: 1} // one every 200 ms
	if res, err := rl.Allow(t.Context(), "k", lim); err != nil || !res.Allowed {
		t.Fatalf("first: got %+v, %v, want allowed", res, err)
	}
	res, err := rl.Allow(t.Context(), "k", lim)
	if err != nil || res.Allowed {
		t.Fatalf("second: got %+v, %v, want refused", res, err)
	}
	time.Sleep(res.RetryAfter + 5*time.Millisecond)
	if res, err := rl.Allow(t.Context(), "k", lim); err != nil || !res.Allowed {
		t.Fatalf("after RetryAfter: got %+v, %v, want allowed", res, err)
	}
}

// TestInstancesShareTheLimit is the point of the package: two gateway
// instances with their own Limiter see one budget per key.
func TestInstancesShareTheLimit(t *testing.T) {
	srv := redistest.Start(t)
	a, _ := newLimiter(t, redislimit.Config{Client: redistest.Client(t, srv.Addr())})
	b, _ := newLimiter(t, redislimit.Config{Client: redistest.Client(t, srv.Addr())})

	lim := ratelimit.PerMinute(4)
	var allowed []bool
	for i := range 6 {
		l := a
		if i%2 == 1 {
			l = b
		}
		res, err := l.Allow(t.Context(), "shared", lim)
		if err != nil {
			t.Fatal(err)
		}
		allowed = append(allowed, res.Allowed)
	}
	want := []bool{true, true, true, true, false, false}
	for i := range want {
		if allowed[i] != want[i] {
			t.Fatalf("alternating between instances: allowed = %v, want %v", allowed, want)
		}
	}

	// Concurrently: exactly Burst admissions among many racing requests.
	lim = ratelimit.Limit{Rate: 1, Period: time.Hour, Burst: 25}
	var n atomic.Int64
	var wg sync.WaitGroup
	for i := range 100 {
		l := a
		if i%2 == 1 {
			l = b
		}
		wg.Go(func() {
			res, err := l.Allow(context.Background(), "race", lim)
			if err != nil {
				t.Error(err)
				return
			}
			if res.Allowed {
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if got := n.Load(); got != int64(lim.Burst) {
		t.Errorf("100 concurrent requests over two instances: %d admitted, want %d", got, lim.Burst)
	}
}

func TestKeyPrefix(t *testing.T) {
	srv := redistest.Start(t)
	def, _ := newLimiter(t, redislimit.Config{Client: redistest.Client(t, srv.Addr())})
	custom, _ := newLimiter(t, redislimit.Config{Client: redistest.Client(t, srv.Addr()), KeyPrefix: "other:"})
	lim := ratelimit.PerMinute(1)
	for _, l := range []*redislimit.Limiter{def, custom} {
		if res, err := l.Allow(t.Context(), "k", lim); err != nil || !res.Allowed {
			t.Fatalf("got %+v, %v, want allowed: prefixes must keep the budgets apart", res, err)
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	keys, err := rdb.Keys(t.Context(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"rate:pedal:rl:k": true, "rate:other:k": true}
	if len(keys) != len(want) || !want[keys[0]] || !want[keys[1]] {
		t.Fatalf("keys in Redis = %q, want those of %v", keys, want)
	}
	// The key expires once the bucket is full again (1 minute here).
	ttl, err := rdb.TTL(t.Context(), "rate:pedal:rl:k").Result()
	if err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("TTL = %v, %v, want in (0, 1m]", ttl, err)
	}
}

func TestInvalidLimit(t *testing.T) {
	// No server: an invalid limit is refused before Redis is asked.
	rl, _ := newLimiter(t, redislimit.Config{Client: redistest.Client(t, "127.0.0.1:1")})
	for _, lim := range []ratelimit.Limit{
		{},
		{Rate: 0, Period: time.Second, Burst: 1},
		{Rate: 1, Period: 0, Burst: 1},
		{Rate: 1, Period: time.Second, Burst: -1},
		{Rate: 1, Period: 1 << 62, Burst: 1 << 20},
	} {
		if _, err := rl.Allow(t.Context(), "k", lim); !errors.Is(err, ratelimit.ErrInvalidLimit) {
			t.Errorf("Allow(%v) error = %v, want ErrInvalidLimit", lim, err)
		}
	}
}

func TestRedisDownThenBack(t *testing.T) {
	for _, tc := range []struct {
		name       string
		down, back func(*redistest.Server)
	}{
		{"killed", (*redistest.Server).Stop, (*redistest.Server).Restart}, // connection refused
		{"hung", (*redistest.Server).Pause, (*redistest.Server).Resume},   // read timeout
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			rl, reg := newLimiter(t, redislimit.Config{Client: redistest.Client(t, srv.Addr())})
			lim := ratelimit.PerMinute(10)
			if _, err := rl.Allow(t.Context(), "k", lim); err != nil { // a pooled connection exists
				t.Fatal(err)
			}

			tc.down(srv)
			for i := range 3 {
				start := time.Now()
				_, err := rl.Allow(t.Context(), "k", lim)
				took := time.Since(start)
				if err == nil {
					t.Fatalf("call %d with Redis %s: no error", i, tc.name)
				}
				if took > downTimeout {
					t.Errorf("call %d with Redis %s: took %v, want < %v", i, tc.name, took, downTimeout)
				}
				t.Logf("call %d with Redis %s: %v after %v", i, tc.name, err, took)
			}
			if got := errorsTotal(t, reg); got != 3 {
				t.Errorf("pedal_ratelimit_redis_errors_total = %v, want 3", got)
			}
			if err := rl.Ping(t.Context()); err == nil {
				t.Error("Ping with Redis down: no error")
			}

			tc.back(srv)
			res, err := rl.Allow(t.Context(), "k", lim)
			if err != nil {
				t.Fatalf("Redis back: %v", err)
			}
			if !res.Allowed {
				t.Fatalf("Redis back: got %+v, want allowed", res)
			}
			if err := rl.Ping(t.Context()); err != nil {
				t.Errorf("Ping with Redis back: %v", err)
			}
		})
	}
}

// errorsTotal returns the value of pedal_ratelimit_redis_errors_total.
func errorsTotal(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "pedal_ratelimit_redis_errors_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("pedal_ratelimit_redis_errors_total not registered")
	return 0
}

func TestNewNeedsAddr(t *testing.T) {
	if _, err := redislimit.New(redislimit.Config{}, prometheus.NewRegistry()); err == nil {
		t.Fatal("New without a client: no error")
	}
}
