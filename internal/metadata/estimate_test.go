package metadata

import (
	"testing"
	"time"
)

func TestEstimator(t *testing.T) {
	e := NewEstimator(4, 200*time.Millisecond)
	if got := e.Estimate(0, 0); got != 100*time.Millisecond+Prior {
		t.Errorf("empty queue before any task: %v", got)
	}
	for range 100 {
		e.Observe(2 * time.Second)
	}
	if typ := e.Typical(); typ < 1990*time.Millisecond || typ > 2*time.Second {
		t.Fatalf("typical after 100 tasks of 2s: %v", typ)
	}
	typ := e.Typical()
	for _, c := range []struct {
		queued, running int
		waves           time.Duration
	}{{0, 0, 1}, {3, 0, 1}, {2, 2, 2}, {9, 4, 4}, {-1, 0, 1}} {
		if got, want := e.Estimate(c.queued, c.running), 100*time.Millisecond+c.waves*typ; got != want {
			t.Errorf("queued %d running %d: %v, want %v", c.queued, c.running, got, want)
		}
	}
	// It follows the recent past, not the whole history.
	for range 30 {
		e.Observe(100 * time.Millisecond)
	}
	if typ := e.Typical(); typ > 200*time.Millisecond {
		t.Errorf("typical after 30 fast tasks: %v", typ)
	}
}
