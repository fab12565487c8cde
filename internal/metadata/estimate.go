package metadata

import (
	"sync"
	"time"
)

// Estimator predicts when a new task will be done from the queue ahead of it,
// the number of workers and recent processing times:
//
//	estimate = handoff + (ahead/workers + 1) · typical
//
// where ahead counts the queued and running tasks, typical is an
// exponentially weighted mean of recent processing times (weight 0.2 per
// task; Prior until the first task finishes), and handoff is the expected
// wait for the outbox relay's next pass. Tasks for one busy host can wait
// longer than this; tasks answered from the cache finish sooner.
type Estimator struct {
	workers int
	handoff time.Duration

	mu      sync.Mutex
	typical time.Duration
}

// Prior is the processing time assumed before any task has finished.
const Prior = 500 * time.Millisecond

// NewEstimator returns an Estimator for workers concurrent tasks and a relay
// that polls every pollInterval.
func NewEstimator(workers int, pollInterval time.Duration) *Estimator {
	return &Estimator{workers: max(workers, 1), handoff: pollInterval / 2, typical: Prior}
}

// Observe records how long a task took to process.
func (e *Estimator) Observe(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.typical += (d - e.typical) / 5
}

// Typical returns the current typical processing time.
func (e *Estimator) Typical() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.typical
}

// Estimate returns the expected time to completion of a task with queued and
// running tasks ahead of it.
func (e *Estimator) Estimate(queued, running int) time.Duration {
	ahead := max(queued, 0) + max(running, 0)
	return e.handoff + time.Duration(ahead/e.workers+1)*e.Typical()
}
