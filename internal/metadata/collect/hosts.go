package collect

import (
	"slices"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// hostTable holds one circuit breaker per host, forgetting the longest idle
// hosts beyond Config.MaxHosts.
type hostTable struct {
	cfg     Config
	metrics *metrics

	mu    sync.Mutex
	hosts map[string]*host
}

type host struct {
	cb       *gobreaker.TwoStepCircuitBreaker[struct{}]
	lastUsed time.Time
}

func newHostTable(cfg Config, m *metrics) *hostTable {
	return &hostTable{cfg: cfg, metrics: m, hosts: map[string]*host{}}
}

// allow asks the host's breaker for a call. It returns a function to report
// the call's failure (a retryable *Error) or success (nil), or, when the
// breaker is open, an *Error with CodeHostUnavailable.
func (t *hostTable) allow(name string) (func(error), error) {
	h := t.get(name)
	done, err := h.cb.Allow()
	if err != nil {
		t.metrics.rejected.Inc()
		return nil, &Error{Code: CodeHostUnavailable, Retryable: false,
			Message: "too many recent requests to this host failed; it is not tried again for a few seconds"}
	}
	return done, nil
}

// countsAsFailure: a failure of the host (it timed out, refused or answered
// 5xx/429), not of the URL or of our policy.
func countsAsFailure(err error) bool {
	e, ok := err.(*Error)
	return ok && e.Retryable
}

func (t *hostTable) get(name string) *host {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if h, ok := t.hosts[name]; ok {
		h.lastUsed = now
		return h
	}
	if len(t.hosts) >= t.cfg.MaxHosts {
		t.evict()
	}
	minCalls := uint32(t.cfg.BreakerMinCalls)
	h := &host{lastUsed: now, cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         name,
		MaxRequests:  uint32(t.cfg.BreakerProbes),
		Interval:     t.cfg.BreakerWindow,
		BucketPeriod: t.cfg.BreakerWindow / 10,
		Timeout:      t.cfg.BreakerOpenFor,
		IsSuccessful: func(err error) bool { return !countsAsFailure(err) },
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.Requests >= minCalls && 2*c.TotalFailures > c.Requests
		},
		OnStateChange: func(_ string, from, to gobreaker.State) {
			t.metrics.transitions.WithLabelValues(to.String()).Inc()
			switch {
			case from == gobreaker.StateClosed:
				t.metrics.openHosts.Inc()
			case to == gobreaker.StateClosed:
				t.metrics.openHosts.Dec()
			}
		},
	})}
	t.hosts[name] = h
	return h
}

// evict forgets the idlest tenth of the hosts whose breaker is closed (an
// open breaker is remembered until it closes).
func (t *hostTable) evict() {
	var idle []time.Time
	for _, h := range t.hosts {
		if h.cb.State() == gobreaker.StateClosed {
			idle = append(idle, h.lastUsed)
		}
	}
	if len(idle) == 0 {
		return
	}
	slices.SortFunc(idle, time.Time.Compare)
	cutoff := idle[max(1, len(idle)/10)-1]
	for name, h := range t.hosts {
		if h.cb.State() == gobreaker.StateClosed && !h.lastUsed.After(cutoff) {
			delete(t.hosts, name)
		}
	}
}
