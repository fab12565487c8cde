package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var _ Limiter = (*Local)(nil)

// clock is a fake clock that moves only when told to.
type clock struct{ ns atomic.Int64 }

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (c *clock) Now() time.Time          { return epoch.Add(time.Duration(c.ns.Load())) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newLocal(cfg Config) (*Local, *clock) {
	c := new(clock)
	cfg.Now = c.Now
	return NewLocal(cfg), c
}

func allow(t testing.TB, l *Local, key string, lim Limit) Result {
	t.Helper()
	res, err := l.Allow(t.Context(), key, lim)
	if err != nil {
		t.Fatalf("Allow(%q, %v): %v", key, lim, err)
	}
	return res
}

func TestBurstThenRefusal(t *testing.T) {
	l, c := newLocal(Config{})
	lim := Limit{Rate: 10, Period: time.Second, Burst: 5} // one request per 100ms
	ms := time.Millisecond
	ok := func(remaining int, reset time.Duration) Result {
		return Result{Allowed: true, Limit: lim, Remaining: remaining, RetryAfter: -1, ResetAfter: reset}
	}
	no := func(retry, reset time.Duration) Result {
		return Result{Allowed: false, Limit: lim, Remaining: 0, RetryAfter: retry, ResetAfter: reset}
	}
	steps := []struct {
		advance time.Duration
		want    Result
	}{
		{0, ok(4, 100*ms)},
		{0, ok(3, 200*ms)},
		{0, ok(2, 300*ms)},
		{0, ok(1, 400*ms)},
		{0, ok(0, 500*ms)},
		{0, no(100*ms, 500*ms)},
		{0, no(100*ms, 500*ms)}, // a refusal changes nothing
		{30 * ms, no(70*ms, 470*ms)},
		{70 * ms, ok(0, 500*ms)},
		{250 * ms, ok(1, 350*ms)}, // 2.5 intervals refilled, 1.5 of them left after this request
		{0, ok(0, 450*ms)},
		{0, no(50*ms, 450*ms)},
		{450 * ms, ok(4, 100*ms)}, // full again after ResetAfter
		{10 * time.Second, ok(4, 100*ms)},
	}
	for i, s := range steps {
		c.Advance(s.advance)
		got := allow(t, l, "k", lim)
		if diff := cmp.Diff(s.want, got); diff != "" {
			t.Fatalf("step %d (+%v): Allow mismatch (-want +got):\n%s", i, s.advance, diff)
		}
	}
}

var limits = []Limit{
	{Rate: 10, Period: time.Second, Burst: 5},
	{Rate: 1, Period: time.Second, Burst: 1},
	{Rate: 3, Period: time.Second, Burst: 2}, // interval not a whole number of ns
	{Rate: 100, Period: time.Second, Burst: 1},
	{Rate: 2, Period: time.Second, Burst: 20}, // burst > rate
	PerMinute(7),
	PerHour(1000),
}

func TestClockStillAdmitsExactlyBurst(t *testing.T) {
	for _, lim := range limits {
		l, _ := newLocal(Config{})
		for i := range lim.Burst {
			res := allow(t, l, "k", lim)
			if !res.Allowed || res.Remaining != lim.Burst-1-i {
				t.Fatalf("%v: request %d: got %+v, want allowed with Remaining %d", lim, i, res, lim.Burst-1-i)
			}
		}
		if res := allow(t, l, "k", lim); res.Allowed || res.Remaining != 0 {
			t.Fatalf("%v: request %d: got %+v, want refused with Remaining 0", lim, lim.Burst, res)
		}
	}
}

func TestRetryAfterIsExact(t *testing.T) {
	for _, lim := range limits {
		t.Run(lim.String(), func(t *testing.T) {
			l, c := newLocal(Config{})
			for range lim.Burst {
				allow(t, l, "k", lim)
			}
			for i := range 20 {
				res := allow(t, l, "k", lim)
				if res.Allowed || res.RetryAfter <= 0 {
					t.Fatalf("round %d: got %+v, want refused with RetryAfter > 0", i, res)
				}
				c.Advance(res.RetryAfter - 1)
				if early := allow(t, l, "k", lim); early.Allowed || early.RetryAfter != 1 {
					t.Fatalf("round %d: 1ns before RetryAfter %v: got %+v, want refused with RetryAfter 1ns", i, res.RetryAfter, early)
				}
				c.Advance(1)
				if got := allow(t, l, "k", lim); !got.Allowed || got.Remaining != 0 || got.RetryAfter != -1 {
					t.Fatalf("round %d: at RetryAfter %v: got %+v, want allowed with Remaining 0", i, res.RetryAfter, got)
				}
				c.Advance(time.Duration(rand.Int64N(int64(res.RetryAfter)))) // somewhere before the next admission
			}
		})
	}
}

func TestResetAfterRefillsBurst(t *testing.T) {
	for _, lim := range limits {
		if lim.Burst < 2 {
			continue // 1ns before full, nothing is left
		}
		l, c := newLocal(Config{})
		var res Result
		for range lim.Burst / 2 {
			res = allow(t, l, "k", lim)
		}
		c.Advance(res.ResetAfter - 1)
		if got := allow(t, l, "k", lim); !got.Allowed || got.Remaining != lim.Burst-2 {
			t.Fatalf("%v: 1ns before ResetAfter: got %+v, want Remaining %d", lim, got, lim.Burst-2)
		}
		c.Advance(time.Hour + 1)
		if got := allow(t, l, "k", lim); got.Remaining != lim.Burst-1 || got.ResetAfter != time.Duration(mustInterval(t, lim)) {
			t.Fatalf("%v: after a full refill: got %+v, want Remaining %d and ResetAfter one interval", lim, got, lim.Burst-1)
		}
	}
}

func mustInterval(t *testing.T, lim Limit) int64 {
	t.Helper()
	iv, _, ok := lim.interval()
	if !ok {
		t.Fatalf("%v: invalid", lim)
	}
	return iv
}

// TestSteadyState checks that a key under constant pressure is admitted
// exactly Rate times per Period, polling every millisecond.
func TestSteadyState(t *testing.T) {
	for _, lim := range []Limit{
		{Rate: 10, Period: time.Second, Burst: 5},
		{Rate: 7, Period: 70 * time.Millisecond, Burst: 3},
		PerSecond(50),
	} {
		l, c := newLocal(Config{})
		for range lim.Burst {
			allow(t, l, "k", lim)
		}
		step := time.Millisecond
		admitted := 0
		for p := 1; p <= 20; p++ {
			for range lim.Period / step {
				c.Advance(step)
				if allow(t, l, "k", lim).Allowed {
					admitted++
				}
			}
			if admitted != p*lim.Rate {
				t.Fatalf("%v: %d admitted in %d periods, want %d", lim, admitted, p, p*lim.Rate)
			}
		}
	}
}

// TestGreedyClient follows RetryAfter to the nanosecond from a full bucket:
// in [0, k·Period) it must get exactly Burst + k·Rate − 1 requests, the last
// interval of each period ending at or after its end. This holds even when
// Period is not a multiple of Rate, as the interval is rounded up.
func TestGreedyClient(t *testing.T) {
	for _, lim := range limits {
		l, c := newLocal(Config{})
		admitted := 0
		for k := 1; k <= 5; k++ {
			for {
				res := allow(t, l, "k", lim)
				if res.Allowed {
					admitted++
					continue
				}
				if time.Duration(c.ns.Load())+res.RetryAfter >= time.Duration(k)*lim.Period {
					break
				}
				c.Advance(res.RetryAfter)
			}
			if want := lim.Burst + k*lim.Rate - 1; admitted != want {
				t.Fatalf("%v: %d admitted in [0, %d·Period), want %d", lim, admitted, k, want)
			}
		}
	}
}

func TestKeysAreIndependent(t *testing.T) {
	l, _ := newLocal(Config{Shards: 1}) // same shard, so only the key separates them
	lim := Limit{Rate: 1, Period: time.Minute, Burst: 3}
	for range 3 {
		allow(t, l, "a", lim)
	}
	if allow(t, l, "a", lim).Allowed {
		t.Fatal(`"a" admitted past its burst`)
	}
	for i := range 3 {
		if res := allow(t, l, "b", lim); !res.Allowed || res.Remaining != 2-i {
			t.Fatalf(`"b" request %d: got %+v, want allowed with Remaining %d`, i, res, 2-i)
		}
	}
}

func TestInvalidLimit(t *testing.T) {
	l, _ := newLocal(Config{})
	for _, lim := range []Limit{
		{},
		{Rate: 0, Period: time.Second, Burst: 1},
		{Rate: 1, Period: 0, Burst: 1},
		{Rate: 1, Period: time.Second, Burst: 0},
		{Rate: -1, Period: time.Second, Burst: 1},
		{Rate: 1, Period: time.Duration(math.MaxInt64), Burst: 2},
	} {
		if _, err := l.Allow(t.Context(), "k", lim); !errors.Is(err, ErrInvalidLimit) {
			t.Errorf("Allow(%v) = %v, want ErrInvalidLimit", lim, err)
		}
	}
}

// TestExpiredEntriesAreDropped feeds a stream of new keys and checks that
// memory follows the number of keys with a TAT in the future, not the number
// ever seen, and that no such key is forgotten.
func TestExpiredEntriesAreDropped(t *testing.T) {
	const shards = 4
	l, c := newLocal(Config{Shards: shards})
	lim := Limit{Rate: 1, Period: time.Second, Burst: 1} // each key's TAT is 1s after its request
	const step = time.Millisecond
	live := int(time.Second / step) // keys whose TAT is still ahead
	peak := 0
	for i := range 100_000 {
		c.Advance(step)
		allow(t, l, fmt.Sprint("client-", i), lim)
		peak = max(peak, l.Len())
		if i == 100_000-1 {
			for j := i - live + 1; j <= i; j++ {
				if allow(t, l, fmt.Sprint("client-", j), lim).Allowed {
					t.Fatalf("client-%d forgotten while its TAT was ahead", j)
				}
			}
		}
	}
	// Each shard sweeps when it has doubled since its last sweep, so it
	// holds at most twice its live keys (or minSweepLen).
	if limit := 2*live + shards*minSweepLen + shards; peak > limit {
		t.Fatalf("peak %d entries for %d live keys, want at most %d", peak, live, limit)
	}
	c.Advance(time.Hour)
	allow(t, l, "late", lim) // a new key after sweepEvery sweeps its shard
	if n := l.Len(); n > 1+(shards-1)*(2*live/shards+minSweepLen) {
		t.Fatalf("%d entries an hour later, want the other shards' at most", n)
	}
}

// TestDroppingChangesNoDecision compares Local, with frequent sweeps, against
// a map that forgets nothing.
func TestDroppingChangesNoDecision(t *testing.T) {
	l, c := newLocal(Config{Shards: 1})
	ref := map[string]int64{}
	lims := []Limit{PerSecond(5), {Rate: 3, Period: time.Second, Burst: 7}, PerMinute(100)}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50_000 {
		c.Advance(time.Duration(rng.Int64N(int64(20 * time.Millisecond))))
		key := fmt.Sprint(rng.IntN(300))
		lim := lims[rng.IntN(len(lims))]
		got := allow(t, l, key, lim)
		now := c.ns.Load()
		iv, off, _ := lim.interval()
		tat, ok := ref[key]
		if !ok {
			tat = now
		}
		want, newTAT := gcra(now, tat, iv, off, lim)
		ref[key] = newTAT
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("request %d (%s, %v): mismatch (-want +got):\n%s", i, key, lim, diff)
		}
	}
}

func TestMaxEntries(t *testing.T) {
	l, c := newLocal(Config{Shards: 2, MaxEntries: 64})
	lim := PerHour(1)
	for i := range 1000 {
		c.Advance(time.Millisecond)
		key := fmt.Sprint("k", i)
		if !allow(t, l, key, lim).Allowed {
			t.Fatalf("new key %s refused past the cap", key)
		}
		if allow(t, l, key, lim).Allowed {
			t.Fatalf("%s: its own entry was evicted to make room for it", key)
		}
		if n := l.Len(); n > 64 {
			t.Fatalf("%d entries, want at most 64", n)
		}
	}
}

// TestConcurrentOneKey hammers one key from many goroutines; the clock moves
// only between rounds, so the number admitted is known exactly.
func TestConcurrentOneKey(t *testing.T) {
	l, c := newLocal(Config{})
	lim := Limit{Rate: 100, Period: time.Second, Burst: 50} // 10ms interval
	rounds := []struct {
		advance time.Duration
		want    int64
	}{
		{0, 50},                      // burst
		{0, 0},                       // nothing refilled
		{370 * time.Millisecond, 37}, // 37 intervals
		{5 * time.Millisecond, 0},    // half an interval
		{5 * time.Millisecond, 1},    // the other half
		{10 * time.Second, 50},       // refill caps at the burst
	}
	for i, r := range rounds {
		c.Advance(r.advance)
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for range 200 {
					res, err := l.Allow(t.Context(), "hot", lim)
					if err != nil {
						t.Error(err)
						return
					}
					if res.Allowed {
						admitted.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if got := admitted.Load(); got != r.want {
			t.Fatalf("round %d (+%v): %d admitted, want %d", i, r.advance, got, r.want)
		}
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l, _ := newLocal(Config{})
	lim := PerSecond(10)
	allow(t, l, "k", lim)
	if n := testing.AllocsPerRun(1000, func() { l.Allow(t.Context(), "k", lim) }); n != 0 {
		t.Fatalf("Allow on a known key: %v allocations, want 0", n)
	}
}

func TestLimitHelpers(t *testing.T) {
	got := []Limit{PerSecond(5), PerMinute(6), PerHour(7)}
	want := []Limit{{5, time.Second, 5}, {6, time.Minute, 6}, {7, time.Hour, 7}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if s := (Limit{Rate: 10, Period: time.Second, Burst: 20}).String(); s != "10 req/1s (burst 20)" {
		t.Fatalf("String() = %q", s)
	}
}

func BenchmarkLocalAllow(b *testing.B) {
	lim := Limit{Rate: 1000, Period: time.Second, Burst: 100}
	b.Run("ManyKeys", func(b *testing.B) {
		l := NewLocal(Config{})
		keys := make([]string, 100_000)
		for i := range keys {
			keys[i] = fmt.Sprintf("route-%d\x00a:10.%d.%d.%d", i%50, i>>16&255, i>>8&255, i&255)
			l.Allow(b.Context(), keys[i], lim)
		}
		var seq atomic.Uint64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(seq.Add(1) * 7919)
			for pb.Next() {
				i++
				l.Allow(context.Background(), keys[i%len(keys)], lim)
			}
		})
	})
	b.Run("HotKey", func(b *testing.B) {
		l := NewLocal(Config{})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Allow(context.Background(), "route-1\x00s:hot-subject", lim)
			}
		})
	})
}
