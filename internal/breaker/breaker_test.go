package breaker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// calls makes n calls through b that all end with o, failing the test if b
// refuses one.
func calls(t *testing.T, b *Breaker, o Outcome, n int) {
	t.Helper()
	for i := range n {
		done, err := b.Allow()
		if err != nil {
			t.Fatalf("call %d of %d (%v): %v", i+1, n, o, err)
		}
		done(o)
	}
}

// allow makes a call that b must let through and returns its done.
func allow(t *testing.T, b *Breaker) func(Outcome) {
	t.Helper()
	done, err := b.Allow()
	if err != nil {
		t.Fatalf("Allow in state %v: %v", b.State(), err)
	}
	return done
}

// refuse makes a call that b must refuse with ErrOpen.
func refuse(t *testing.T, b *Breaker) {
	t.Helper()
	done, err := b.Allow()
	if !errors.Is(err, ErrOpen) {
		t.Fatalf("Allow in state %v: err = %v, want ErrOpen", b.State(), err)
	}
	if done != nil {
		t.Fatal("Allow returned a done func with ErrOpen")
	}
}

func wantState(t *testing.T, b *Breaker, want State) {
	t.Helper()
	if got := b.State(); got != want {
		t.Fatalf("State() = %v, want %v", got, want)
	}
}

func wantCounts(t *testing.T, b *Breaker, successes, failures int) {
	t.Helper()
	if s, f := b.Counts(); s != successes || f != failures {
		t.Fatalf("Counts() = %d successes, %d failures; want %d, %d", s, f, successes, failures)
	}
}

// noJitter makes the open wait exactly OpenFor.
func noJitter(time.Duration) time.Duration { return 0 }

// events records what a Breaker reports through its Config callbacks.
type events struct {
	mu      sync.Mutex
	changes []string // "from->to"
	shorts  int
}

func (e *events) hook(cfg Config) Config {
	cfg.OnStateChange = func(from, to State) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.changes = append(e.changes, from.String()+"->"+to.String())
	}
	cfg.OnShortCircuit = func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.shorts++
	}
	return cfg
}

func (e *events) check(t *testing.T, changes []string, shorts int) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !slices.Equal(e.changes, changes) {
		t.Errorf("state changes:\n got %q\nwant %q", e.changes, changes)
	}
	if e.shorts != shorts {
		t.Errorf("%d short-circuits, want %d", e.shorts, shorts)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Closed: "closed", Open: "open", HalfOpen: "half_open", 7: "State(7)"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}

func TestTripBoundary(t *testing.T) {
	type step struct {
		o Outcome
		n int
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  State
	}{
		{"10 of 20 failed", []step{{Failure, 10}, {Success, 10}}, Closed},
		{"10 of 20 failed, successes first", []step{{Success, 10}, {Failure, 10}}, Closed},
		{"11 of 20 failed", []step{{Success, 9}, {Failure, 11}}, Open},
		{"11 of 20 failed, the 20th a success", []step{{Failure, 11}, {Success, 9}}, Open},
		{"11 of 21 failed", []step{{Failure, 10}, {Success, 10}, {Failure, 1}}, Open},
		{"19 of 19 failed: below the minimum", []step{{Failure, 19}}, Closed},
		{"20 of 20 failed", []step{{Failure, 20}}, Open},
		{"ignores do not make the minimum", []step{{Failure, 19}, {Ignore, 5}}, Closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := New(Config{})
				for _, s := range tc.steps {
					calls(t, b, s.o, s.n)
				}
				wantState(t, b, tc.want)
				if tc.want == Open {
					refuse(t, b)
				}
			})
		})
	}
}

func TestFailureRatioAndMinCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{FailureRatio: 0.25, MinCalls: 4})
		calls(t, b, Success, 3)
		calls(t, b, Failure, 1) // 1 of 4: not more than a quarter
		wantState(t, b, Closed)
		calls(t, b, Failure, 1) // 2 of 5
		wantState(t, b, Open)
	})
}

func TestWindowRolls(t *testing.T) {
	t.Run("failures 9.5s old still count", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{})
			calls(t, b, Failure, 11)
			time.Sleep(9500 * time.Millisecond)
			calls(t, b, Success, 9)
			wantState(t, b, Open)
		})
	})
	t.Run("failures 10.5s old fall out", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{})
			calls(t, b, Failure, 11)
			time.Sleep(10500 * time.Millisecond)
			wantCounts(t, b, 0, 0)
			// 10 of 20: closed, but 21 of 31 if the old failures counted.
			calls(t, b, Success, 10)
			calls(t, b, Failure, 10)
			wantState(t, b, Closed)
			wantCounts(t, b, 10, 10)
			calls(t, b, Success, 20)
			wantState(t, b, Closed)
		})
	})
	// The bucket of t=0 covers [0, 1s) and leaves the window at exactly 10s.
	t.Run("last instant in the window", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{})
			calls(t, b, Failure, 11)
			time.Sleep(10*time.Second - time.Nanosecond)
			wantCounts(t, b, 0, 11)
			calls(t, b, Success, 9)
			wantState(t, b, Open)
		})
	})
	t.Run("first instant out of the window", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{})
			calls(t, b, Failure, 11)
			time.Sleep(10 * time.Second)
			calls(t, b, Success, 9)
			wantState(t, b, Closed)
			wantCounts(t, b, 9, 0)
		})
	})
	t.Run("bucket by bucket", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{})
			time.Sleep(500 * time.Millisecond)
			for k := range 10 { // one failure at k+0.5s, k+1 successes with it
				calls(t, b, Failure, 1)
				calls(t, b, Success, k+1)
				time.Sleep(time.Second)
			}
			// t=10.5s: the bucket of t=0.5s has gone.
			for k := 1; k <= 10; k++ {
				wantS := 0
				for j := k + 1; j <= 10; j++ {
					wantS += j
				}
				wantCounts(t, b, wantS, 10-k)
				time.Sleep(time.Second)
			}
		})
	})
	t.Run("a long idle gap empties the window", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{})
			calls(t, b, Failure, 19)
			time.Sleep(time.Hour)
			calls(t, b, Failure, 1)
			wantCounts(t, b, 0, 1)
			wantState(t, b, Closed)
		})
	})
	t.Run("successes aging out open it on Allow", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ev := &events{}
			b := New(ev.hook(Config{}))
			time.Sleep(500 * time.Millisecond)
			calls(t, b, Success, 5)
			time.Sleep(time.Second)
			calls(t, b, Success, 8)
			calls(t, b, Failure, 12) // 12 of 25
			wantState(t, b, Closed)
			time.Sleep(9 * time.Second) // t=10.5s: 12 of 20
			refuse(t, b)
			wantCounts(t, b, 8, 12)
			ev.check(t, []string{"closed->open"}, 1)
		})
	})
}

// trip opens b with failures at the current time.
func trip(t *testing.T, b *Breaker) {
	t.Helper()
	for range b.cfg.MinCalls {
		calls(t, b, Failure, 1)
		if b.State() == Open {
			return
		}
	}
	t.Fatalf("still %v after %d failures", b.State(), b.cfg.MinCalls)
}

func TestOpenWaitsJitteredTime(t *testing.T) {
	const openFor = 5 * time.Second
	for _, tc := range []struct {
		jitter, wait time.Duration
	}{
		{0, openFor},
		{1500 * time.Millisecond, 6500 * time.Millisecond},
		{openFor - time.Nanosecond, 2*openFor - time.Nanosecond},
		{-time.Second, openFor},                    // clamped up
		{3 * openFor, 2*openFor - time.Nanosecond}, // clamped down
	} {
		t.Run(fmt.Sprint(tc.jitter), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var asked []time.Duration
				b := New(Config{Jitter: func(d time.Duration) time.Duration {
					asked = append(asked, d)
					return tc.jitter
				}})
				time.Sleep(3 * time.Second) // the wait runs from the trip, not from New
				trip(t, b)
				if want := []time.Duration{openFor}; !slices.Equal(asked, want) {
					t.Errorf("Jitter called with %v, want %v", asked, want)
				}
				time.Sleep(tc.wait - time.Nanosecond)
				refuse(t, b)
				wantState(t, b, Open)
				time.Sleep(time.Nanosecond)
				allow(t, b)
				wantState(t, b, HalfOpen)
			})
		})
	}
}

// fakeClock is a Config.Now that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// TestDefaultJitter measures, through Allow, the open wait drawn by the
// default jitter many times.
func TestDefaultJitter(t *testing.T) {
	const (
		openFor = time.Second
		step    = 5 * time.Millisecond
		draws   = 400
	)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	b := New(Config{OpenFor: openFor, Now: clock.Now})
	trip(t, b)
	start := clock.Now()
	var deciles [10]int
	minWait, maxWait := time.Duration(1<<62), time.Duration(0)
	for range draws {
		var done func(Outcome)
		for done == nil {
			done, _ = b.Allow()
			if done == nil {
				clock.Advance(step)
			}
		}
		// The wait is in (wait-step, wait].
		wait := clock.Now().Sub(start)
		if wait < openFor || wait-step >= 2*openFor {
			t.Fatalf("open for %v, want [%v, %v)", wait, openFor, 2*openFor)
		}
		minWait, maxWait = min(minWait, wait), max(maxWait, wait)
		deciles[min(9, int((wait-openFor)*10/openFor))]++
		done(Failure) // reopen, with a new draw
		start = clock.Now()
	}
	// Uniform over the range: each tenth of it holds about 40 of the 400
	// draws (standard deviation 6); it is empty with probability about
	// 0.9⁴⁰⁰ ≈ 5e-19, and holds more than 100 with less than 1e-20.
	for i, n := range deciles {
		if n == 0 || n > draws/4 {
			t.Errorf("%d waits in [%v, %v) of %d draws (span %v..%v): %v", n, openFor+time.Duration(i)*openFor/10,
				openFor+time.Duration(i+1)*openFor/10, draws, minWait, maxWait, deciles)
		}
	}
}

// halfOpen trips b and waits for its open time (Jitter must be noJitter).
func halfOpen(t *testing.T, b *Breaker) {
	t.Helper()
	trip(t, b)
	time.Sleep(b.cfg.OpenFor)
}

func TestHalfOpenProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ev := &events{}
		b := New(ev.hook(Config{Jitter: noJitter}))
		halfOpen(t, b)
		p1, p2, p3 := allow(t, b), allow(t, b), allow(t, b)
		wantState(t, b, HalfOpen)
		refuse(t, b) // three probes in flight
		p1(Success)
		p4 := allow(t, b) // p1's slot
		refuse(t, b)
		p2(Ignore) // frees its slot, counts neither way
		p5 := allow(t, b)
		refuse(t, b)
		p3(Success)
		wantState(t, b, HalfOpen) // two successes so far
		p4(Success)
		wantState(t, b, Closed)
		p5(Failure) // from the half-open generation: ignored
		wantState(t, b, Closed)
		wantCounts(t, b, 0, 0)
		ev.check(t, []string{"closed->open", "open->half_open", "half_open->closed"}, 3)

		// A fresh window: the minimum applies again.
		calls(t, b, Failure, 19)
		wantState(t, b, Closed)
		calls(t, b, Failure, 1)
		wantState(t, b, Open)
	})
}

func TestHalfOpenConcurrentAllow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ev := &events{}
		b := New(ev.hook(Config{Jitter: noJitter, Probes: 5}))
		halfOpen(t, b)
		var admitted, refused atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 100 {
			wg.Go(func() {
				<-start
				if _, err := b.Allow(); err != nil {
					refused.Add(1)
				} else {
					admitted.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if admitted.Load() != 5 || refused.Load() != 95 {
			t.Errorf("admitted %d, refused %d of 100; want 5, 95", admitted.Load(), refused.Load())
		}
		ev.check(t, []string{"closed->open", "open->half_open"}, 95)
	})
}

func TestProbeFailureReopens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		jitters := []time.Duration{0, 2 * time.Second}
		ev := &events{}
		b := New(ev.hook(Config{Jitter: func(time.Duration) time.Duration {
			j := jitters[0]
			jitters = jitters[1:]
			return j
		}}))
		halfOpen(t, b)
		p1, p2 := allow(t, b), allow(t, b)
		p2(Success)
		time.Sleep(time.Second)
		p1(Failure)
		wantState(t, b, Open)
		refuse(t, b)
		time.Sleep(7*time.Second - time.Nanosecond) // 5s + 2s of jitter from the failure
		refuse(t, b)
		time.Sleep(time.Nanosecond)
		q1 := allow(t, b)
		wantState(t, b, HalfOpen)
		// The earlier success does not carry over: three more are needed.
		q1(Success)
		calls(t, b, Success, 1)
		wantState(t, b, HalfOpen)
		calls(t, b, Success, 1)
		wantState(t, b, Closed)
		ev.check(t, []string{"closed->open", "open->half_open", "half_open->open", "open->half_open", "half_open->closed"}, 2)
	})
}

func TestProbeSuccessesMustBeConsecutive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Jitter: noJitter})
		halfOpen(t, b)
		calls(t, b, Success, 2)
		calls(t, b, Failure, 1)
		wantState(t, b, Open)
		time.Sleep(b.cfg.OpenFor)
		calls(t, b, Success, 2)
		wantState(t, b, HalfOpen)
		calls(t, b, Success, 1)
		wantState(t, b, Closed)
	})
}

func TestStaleResultsIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Jitter: noJitter})
		var held []func(Outcome)
		for range 6 {
			held = append(held, allow(t, b))
		}
		trip(t, b)
		held[0](Failure) // Open: nothing to count into
		held[1](Success)
		wantCounts(t, b, 0, 20)
		time.Sleep(b.cfg.OpenFor)
		allow(t, b) // a probe in flight
		wantState(t, b, HalfOpen)
		for _, done := range held[2:5] {
			done(Success) // would close the breaker if taken as probes
		}
		wantState(t, b, HalfOpen)
		allow(t, b)
		allow(t, b)
		refuse(t, b) // the stale results freed no probe slots
		held[5](Failure)
		wantState(t, b, HalfOpen)
	})
}

func TestDoneTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Jitter: noJitter})
		done := allow(t, b)
		done(Failure)
		done(Failure)
		done(Success)
		wantCounts(t, b, 0, 1)

		halfOpen(t, b)
		done = allow(t, b)
		done(Success)
		done(Success)
		done(Success)
		wantState(t, b, HalfOpen)
		done(Failure)
		wantState(t, b, HalfOpen)
	})
}

func TestIgnoreNotCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Jitter: noJitter})
		calls(t, b, Failure, 15)
		calls(t, b, Ignore, 100)
		calls(t, b, Outcome(0), 10) // not a valid outcome: ignored
		wantCounts(t, b, 0, 15)
		wantState(t, b, Closed)

		halfOpen(t, b)
		calls(t, b, Ignore, 10) // each frees its slot
		wantState(t, b, HalfOpen)
		calls(t, b, Success, 3)
		wantState(t, b, Closed)
	})
}

func TestCallbacksOutsideLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var got []string
		var b *Breaker
		b = New(Config{
			Jitter: noJitter,
			OnStateChange: func(from, to State) {
				s, f := b.Counts() // would deadlock under the lock
				got = append(got, fmt.Sprintf("%v->%v state=%v counts=%d/%d", from, to, b.State(), s, f))
			},
			OnShortCircuit: func() { got = append(got, "short-circuit in "+b.State().String()) },
		})
		calls(t, b, Success, 5)
		trip(t, b)
		refuse(t, b)
		time.Sleep(b.cfg.OpenFor)
		calls(t, b, Failure, 1)
		time.Sleep(b.cfg.OpenFor)
		calls(t, b, Success, 3)
		want := []string{
			"closed->open state=open counts=5/15", // the window that opened it
			"short-circuit in open",
			"open->half_open state=half_open counts=5/15",
			"half_open->open state=open counts=5/15",
			"open->half_open state=half_open counts=5/15",
			"half_open->closed state=closed counts=0/0",
		}
		if !slices.Equal(got, want) {
			t.Errorf("callbacks:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		}
	})
}

// checkInvariants checks b's internal state.
func checkInvariants(t *testing.T, b *Breaker) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var s, f int
	for _, bk := range b.buckets {
		s, f = s+bk.successes, f+bk.failures
	}
	if s != b.successes || f != b.failures || s < 0 || f < 0 {
		t.Errorf("window totals %d/%d, buckets sum to %d/%d", b.successes, b.failures, s, f)
	}
	if b.probes < 0 || b.probes > b.cfg.Probes || (b.state != HalfOpen && b.probes+b.probeSuccesses != 0) {
		t.Errorf("%v: %d probes in flight (limit %d), %d probe successes", b.state, b.probes, b.cfg.Probes, b.probeSuccesses)
	}
}

func TestConcurrentUse(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	start := clock.Now()
	var refused, shorts atomic.Int64
	var mu sync.Mutex
	changes := map[string]int{}
	b := New(Config{
		Window:  100 * time.Millisecond,
		OpenFor: 10 * time.Millisecond,
		Now:     clock.Now,
		OnStateChange: func(from, to State) {
			mu.Lock()
			defer mu.Unlock()
			changes[from.String()+"->"+to.String()]++
		},
		OnShortCircuit: func() { shorts.Add(1) },
	})
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 0))
			for i := range 2000 {
				now := clock.Advance(20 * time.Microsecond)
				done, err := b.Allow()
				if err != nil {
					refused.Add(1)
					continue
				}
				// Alternate 200ms of a failing upstream with 200ms of a healthy one.
				pFail := 0.02
				if now.Sub(start)/(200*time.Millisecond)%2 == 0 {
					pFail = 0.9
				}
				switch x := r.Float64(); {
				case x < 0.05:
					done(Ignore)
				case x < 0.05+pFail:
					done(Failure)
				default:
					done(Success)
				}
				if i%7 == 0 {
					done(Failure) // a second call: no effect
				}
				if i%100 == 0 {
					checkInvariants(t, b)
					b.Counts()
				}
			}
		})
	}
	wg.Wait()
	checkInvariants(t, b)
	if b.probes != 0 {
		t.Errorf("%d probes in flight after all calls finished", b.probes)
	}
	if refused.Load() != shorts.Load() {
		t.Errorf("%d calls refused, %d short-circuits reported", refused.Load(), shorts.Load())
	}
	legal := map[string]bool{"closed->open": true, "open->half_open": true, "half_open->open": true, "half_open->closed": true}
	for c, n := range changes {
		if !legal[c] {
			t.Errorf("%d illegal state changes %s", n, c)
		}
	}
	// The load is meant to exercise every transition.
	for c := range legal {
		if changes[c] == 0 {
			t.Errorf("no %s in %v", c, changes)
		}
	}
}

func TestAllowAllocs(t *testing.T) {
	b := New(Config{})
	if n := testing.AllocsPerRun(100, func() {
		done, _ := b.Allow()
		done(Success)
	}); n > 2 {
		t.Errorf("Allow+done: %v allocations, want at most 2", n)
	}
	b = New(Config{MinCalls: 1})
	calls(t, b, Failure, 1)
	if n := testing.AllocsPerRun(100, func() { b.Allow() }); n != 0 {
		t.Errorf("Allow when open: %v allocations, want 0", n)
	}
}

func BenchmarkAllow(b *testing.B) {
	br := New(Config{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			done, err := br.Allow()
			if err != nil {
				b.Fatal(err)
			}
			done(Success)
		}
	})
}

func BenchmarkAllowOpen(b *testing.B) {
	br := New(Config{MinCalls: 1, OpenFor: time.Hour})
	done, _ := br.Allow()
	done(Failure)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := br.Allow(); err == nil {
				b.Fatal("allowed")
			}
		}
	})
}
