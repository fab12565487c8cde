package breaker

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// ErrOpen is returned by Allow when the breaker rejects a call: it is open, or
// half-open with all its probes in flight.
var ErrOpen = errors.New("breaker: open")

// State is the state of a Breaker.
type State int32

// The states of a Breaker; see the package documentation.
const (
	Closed State = iota
	Open
	HalfOpen
)

// String returns "closed", "open" or "half_open", suitable as a metric label.
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Outcome is the result of a call, reported through the done function
// returned by Allow. The zero Outcome is not valid and is treated as Ignore.
type Outcome int

// The outcomes of a call.
const (
	Success Outcome = iota + 1 // the upstream answered well
	Failure                    // the upstream failed or timed out
	Ignore                     // says nothing about the upstream, e.g. a client cancellation
)

// String returns "success", "failure" or "ignore".
func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Failure:
		return "failure"
	case Ignore:
		return "ignore"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// Config tunes a Breaker. The zero value is usable: a zero (or negative)
// field takes the default given in its comment.
type Config struct {
	// Window is the span of the rolling window of outcomes (10s). It is
	// split into Buckets buckets (10) of Window/Buckets each; a bucket leaves
	// the window as a whole once it is Window old.
	Window  time.Duration
	Buckets int

	// FailureRatio (0.5): the breaker opens when strictly more than this
	// fraction of the completed calls in the window failed, provided the
	// window holds at least MinCalls (20) completed calls. A FailureRatio
	// of 1 or more never opens the breaker.
	FailureRatio float64
	MinCalls     int

	// OpenFor (5s) is the shortest time the breaker stays open; the actual
	// wait is OpenFor + Jitter(OpenFor).
	OpenFor time.Duration

	// Probes (3) is both the number of calls let through at once while
	// half-open and the number of consecutive probe successes that close the
	// breaker.
	Probes int

	// Now returns the current time (time.Now).
	Now func() time.Time

	// Jitter returns a random duration in [0, d); it is called with OpenFor
	// each time the breaker opens (default: uniform, from math/rand/v2).
	// Results outside [0, d) are clamped into it.
	Jitter func(d time.Duration) time.Duration

	// OnStateChange, if set, is called after each state change.
	OnStateChange func(from, to State)

	// OnShortCircuit, if set, is called each time Allow returns ErrOpen.
	OnShortCircuit func()
}

func (c Config) withDefaults() Config {
	if c.Window <= 0 {
		c.Window = 10 * time.Second
	}
	if c.Buckets <= 0 {
		c.Buckets = 10
	}
	if time.Duration(c.Buckets) > c.Window { // buckets of at least 1ns
		c.Buckets = int(c.Window)
	}
	if !(c.FailureRatio > 0) { // also catches NaN
		c.FailureRatio = 0.5
	}
	if c.MinCalls <= 0 {
		c.MinCalls = 20
	}
	if c.OpenFor <= 0 {
		c.OpenFor = 5 * time.Second
	}
	if c.Probes <= 0 {
		c.Probes = 3
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Jitter == nil {
		c.Jitter = func(d time.Duration) time.Duration { return rand.N(d) }
	}
	return c
}

// A Breaker is a circuit breaker; create one with New. It is safe for
// concurrent use.
type Breaker struct {
	cfg    Config        // defaulted, read-only after New
	width  time.Duration // of a bucket
	origin time.Time     // times are kept as durations since origin

	mu    sync.Mutex
	state State
	gen   uint64 // incremented on every state change

	// Closed: the rolling window. buckets is a ring; bucket number i (covering
	// [i·width, (i+1)·width) since origin) lives at buckets[i%len(buckets)],
	// and cur is the newest bucket number. successes and failures are the
	// sums over the ring. The window is frozen while not Closed and emptied
	// when the breaker closes.
	buckets             []bucket
	cur                 int64
	successes, failures int

	// Open: Allow lets a probe through from openUntil on.
	openUntil time.Duration

	// HalfOpen: probes in flight, and consecutive probe successes; both are
	// zero in the other states.
	probes, probeSuccesses int
}

type bucket struct {
	successes, failures int
}

// New returns a closed Breaker with an empty window.
func New(cfg Config) *Breaker {
	cfg = cfg.withDefaults()
	b := &Breaker{
		cfg:     cfg,
		width:   cfg.Window / time.Duration(cfg.Buckets),
		origin:  cfg.Now(),
		buckets: make([]bucket, cfg.Buckets),
	}
	return b
}

// Allow asks to make a call. If the breaker lets it through, the caller must
// make the call and then report its outcome with done; otherwise Allow
// returns ErrOpen and a nil done, and the call must not be made.
func (b *Breaker) Allow() (done func(Outcome), err error) {
	now := b.since()
	b.mu.Lock()
	from := b.state
	ok := b.admit(now)
	to, gen := b.state, b.gen
	b.mu.Unlock()

	if from != to && b.cfg.OnStateChange != nil {
		b.cfg.OnStateChange(from, to)
	}
	if !ok {
		if b.cfg.OnShortCircuit != nil {
			b.cfg.OnShortCircuit()
		}
		return nil, ErrOpen
	}
	finished := false // guarded by b.mu
	return func(o Outcome) {
		now := b.since()
		b.mu.Lock()
		if finished {
			b.mu.Unlock()
			return
		}
		finished = true
		from := b.state
		if gen == b.gen {
			b.finish(now, o)
		}
		to := b.state
		b.mu.Unlock()
		if from != to && b.cfg.OnStateChange != nil {
			b.cfg.OnStateChange(from, to)
		}
	}, nil
}

// admit reports whether a call may start now, changing state at most once.
// b.mu must be held.
func (b *Breaker) admit(now time.Duration) bool {
	switch b.state {
	case Closed:
		b.roll(now)
		if !b.tripped() { // successes may have aged out of the window
			return true
		}
		b.open(now)
		return false
	case Open:
		if now < b.openUntil {
			return false
		}
		b.halfOpen()
	}
	// HalfOpen.
	if b.probes >= b.cfg.Probes {
		return false
	}
	b.probes++
	return true
}

// finish records the outcome of a call allowed in the current generation,
// changing state at most once. b.mu must be held.
func (b *Breaker) finish(now time.Duration, o Outcome) {
	switch b.state {
	case Closed:
		b.roll(now)
		bk := &b.buckets[b.cur%int64(len(b.buckets))]
		switch o {
		case Success:
			bk.successes++
			b.successes++
		case Failure:
			bk.failures++
			b.failures++
		default:
			return
		}
		if b.tripped() {
			b.open(now)
		}
	case HalfOpen:
		b.probes--
		switch o {
		case Success:
			b.probeSuccesses++
			if b.probeSuccesses >= b.cfg.Probes {
				b.close(now)
			}
		case Failure:
			b.open(now)
		}
	}
}

// tripped reports whether the window calls for opening. b.mu must be held.
func (b *Breaker) tripped() bool {
	total := b.successes + b.failures
	return total >= b.cfg.MinCalls && float64(b.failures) > b.cfg.FailureRatio*float64(total)
}

// roll advances the window to now, dropping the buckets that left it. Time
// that goes backwards is treated as the newest bucket. b.mu must be held.
func (b *Breaker) roll(now time.Duration) {
	i := int64(now / b.width)
	if i <= b.cur {
		return
	}
	n := int64(len(b.buckets))
	if i-b.cur >= n {
		clear(b.buckets)
		b.successes, b.failures = 0, 0
	} else {
		for j := b.cur + 1; j <= i; j++ {
			bk := &b.buckets[j%n]
			b.successes -= bk.successes
			b.failures -= bk.failures
			*bk = bucket{}
		}
	}
	b.cur = i
}

// open, halfOpen and close change state and start a new generation. b.mu
// must be held.

func (b *Breaker) open(now time.Duration) {
	d := b.cfg.OpenFor
	j := b.cfg.Jitter(d)
	j = max(0, min(j, d-1))
	b.state, b.gen = Open, b.gen+1
	b.openUntil = now + d + j
	b.probes, b.probeSuccesses = 0, 0
}

func (b *Breaker) halfOpen() {
	b.state, b.gen = HalfOpen, b.gen+1
	b.probes, b.probeSuccesses = 0, 0
}

func (b *Breaker) close(now time.Duration) {
	b.state, b.gen = Closed, b.gen+1
	b.probes, b.probeSuccesses = 0, 0
	clear(b.buckets)
	b.successes, b.failures = 0, 0
	b.cur = max(b.cur, int64(now/b.width))
}

// State returns the current state. It does not read the clock: an open
// breaker whose wait is over reports Open until the next Allow.
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// Counts returns the successes and failures in the rolling window. While the
// breaker is open or half-open the window is frozen: Counts reports the
// window that opened it. Half-open probes are not counted in the window.
func (b *Breaker) Counts() (successes, failures int) {
	now := b.since()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == Closed {
		b.roll(now)
	}
	return b.successes, b.failures
}

func (b *Breaker) since() time.Duration {
	return b.cfg.Now().Sub(b.origin)
}
