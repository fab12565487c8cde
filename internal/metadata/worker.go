package metadata

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/errgroup"

	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/metadata/collect"
	"github.com/pedal-project/pedal/internal/metadata/taskstore"
	"github.com/pedal-project/pedal/internal/outbox"
	"github.com/pedal-project/pedal/internal/retry"
)

// Log is the part of the event log the Worker consumes metadata.tasks from.
type Log interface {
	Partitions(ctx context.Context, topic string) (int32, error)
	Offsets(ctx context.Context, topic string, part int32) (start, end int64, err error)
	Fetch(ctx context.Context, topic string, part int32, offset int64, max int) ([]eventlog.Record, error)
	CommitOffset(ctx context.Context, group, topic string, part int32, offset int64) error
	CommittedOffset(ctx context.Context, group, topic string, part int32) (int64, error)
}

// WorkerConfig tunes a Worker; zero fields take the defaults given.
type WorkerConfig struct {
	Workers int // tasks processed at once; default 8
	PerHost int // tasks for one target host processed at once; default 2
	// MaxPending bounds the tasks read from the log and not yet finished,
	// running or waiting for their host; default 1024.
	MaxPending int
	// MaxWaitingPerHost bounds the tasks of one host waiting for its
	// PerHost limit; more are deferred (left QUEUED, published again by
	// taskstore.Store.Requeue later) so that one host's backlog cannot fill
	// MaxPending. Default MaxPending/4.
	MaxWaitingPerHost int
	// Group is the consumer group whose positions the Worker commits;
	// default "metadata-workers".
	Group string
	// CommitInterval is how often finished positions are committed; default
	// 200ms. A crash redelivers at most the tasks finished since.
	CommitInterval time.Duration
}

func (c *WorkerConfig) defaults() {
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.PerHost <= 0 {
		c.PerHost = 2
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 1024
	}
	if c.Group == "" {
		c.Group = "metadata-workers"
	}
	if c.MaxWaitingPerHost <= 0 {
		c.MaxWaitingPerHost = max(c.MaxPending/4, 1)
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = 200 * time.Millisecond
	}
}

// Worker consumes metadata.tasks and carries the tasks out.
type Worker struct {
	cfg   WorkerConfig
	log   Log
	store *taskstore.Store
	col   *collect.Collector
	est   *Estimator
	lg    *slog.Logger
	m     *workerMetrics
	sched *scheduler
	slots chan struct{}
}

// NewWorker returns a Worker. est may be nil; logger and reg may be nil.
func NewWorker(cfg WorkerConfig, log Log, store *taskstore.Store, col *collect.Collector, est *Estimator,
	logger *slog.Logger, reg prometheus.Registerer) *Worker {
	cfg.defaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if est == nil {
		est = NewEstimator(cfg.Workers, 0)
	}
	m := newWorkerMetrics(reg)
	return &Worker{cfg: cfg, log: log, store: store, col: col, est: est, lg: logger, m: m,
		sched: newScheduler(cfg.Workers, cfg.PerHost, cfg.MaxWaitingPerHost, m), slots: make(chan struct{}, cfg.MaxPending)}
}

// Run consumes every partition of metadata.tasks until ctx is done, then
// waits for the tasks in progress to stop, commits the finished positions
// and returns nil. The topic must exist.
func (w *Worker) Run(ctx context.Context) error {
	n, err := w.log.Partitions(ctx, taskstore.TopicTasks)
	if err != nil {
		return fmt.Errorf("metadata worker: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	stop := make(chan struct{})
	var commits sync.WaitGroup
	for p := range n {
		tr := &tracker{}
		ready := make(chan struct{})
		commits.Go(func() {
			<-ready
			w.commitLoop(p, tr, stop)
		})
		g.Go(func() error { return w.consume(gctx, p, tr, ready) })
	}
	err = g.Wait()
	// No task is submitted any more: let those in progress end (they stop
	// with ctx), then commit what finished.
	w.sched.wait()
	close(stop)
	commits.Wait()
	return err
}

// consume reads one partition in order and hands its tasks to the scheduler;
// the partition's position (tr) advances past a task only once the task and
// every task before it are finished. It sets tr's starting position, then
// closes ready (also when it fails before).
func (w *Worker) consume(ctx context.Context, part int32, tr *tracker, ready chan struct{}) error {
	readied := false
	defer func() {
		if !readied {
			close(ready)
		}
	}()
	var next int64
	err := w.retryLog(ctx, part, "read the committed position", func() error {
		var err error
		if next, err = w.log.CommittedOffset(ctx, w.cfg.Group, taskstore.TopicTasks, part); err == nil && next < 0 {
			next, _, err = w.log.Offsets(ctx, taskstore.TopicTasks, part)
		}
		return err
	})
	if err != nil {
		return err
	}
	tr.next, tr.committed = next, next
	close(ready)
	readied = true
	for {
		recs, err := w.log.Fetch(ctx, taskstore.TopicTasks, part, tr.fetchFrom(), 64)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, eventlog.ErrOffsetOutOfRange):
			var start, end int64
			if err := w.retryLog(ctx, part, "read the log's offsets", func() error {
				var err error
				start, end, err = w.log.Offsets(ctx, taskstore.TopicTasks, part)
				return err
			}); err != nil {
				return err
			}
			from := tr.fetchFrom()
			to := max(start, min(from, end)) // forward only, within the log
			if to == from {
				continue
			}
			// The store still has these tasks; Requeue finds them again.
			w.lg.ErrorContext(ctx, "tasks are no longer in the log (retention); skipping ahead",
				"partition", part, "from", from, "to", to)
			tr.skipTo(to)
			continue
		case errors.Is(err, eventlog.ErrUnknownTopic), errors.Is(err, eventlog.ErrBadPartition), errors.Is(err, eventlog.ErrClosed):
			return fmt.Errorf("metadata worker: partition %d: %w", part, err)
		case err != nil:
			// A broker or disk hiccup: wait and read again, without stopping the process.
			w.lg.WarnContext(ctx, "read the tasks topic; retrying", "partition", part, "err", err)
			if retry.Sleep(ctx, retry.FullJitter(100*time.Millisecond, 5*time.Second, 3)) != nil {
				return nil
			}
			continue
		}
		for _, rec := range recs {
			select {
			case w.slots <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			tr.add(rec.Offset)
			ev, err := decodeTask(rec.Value)
			if err != nil {
				w.lg.ErrorContext(ctx, "undecodable record in the tasks topic; skipped", "partition", part, "offset", rec.Offset, "err", err)
				tr.finish(rec.Offset)
				<-w.slots
				continue
			}
			off := rec.Offset
			accepted := w.sched.submit(hostOf(ev.TargetURL), func() {
				defer func() { <-w.slots }()
				if w.process(ctx, ev) {
					tr.finish(off)
				}
			})
			if !accepted {
				// The host already has a full queue: leave the task QUEUED
				// and move on, so that one host's backlog cannot fill the
				// read-ahead; Requeue publishes it again later.
				w.m.deferred.Inc()
				w.lg.DebugContext(ctx, "task deferred: its host's queue is full", "task_id", ev.TaskID)
				tr.finish(off)
				<-w.slots
			}
		}
	}
}

// retryLog calls f until it succeeds or ctx ends (then it returns nil:
// shutting down is not a failure); only a missing topic or partition, or a
// closed log, is returned as an error.
func (w *Worker) retryLog(ctx context.Context, part int32, what string, f func() error) error {
	for n := 0; ; n++ {
		err := f()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, eventlog.ErrUnknownTopic), errors.Is(err, eventlog.ErrBadPartition), errors.Is(err, eventlog.ErrClosed):
			return fmt.Errorf("metadata worker: partition %d: %s: %w", part, what, err)
		case ctx.Err() != nil:
			return nil
		}
		w.lg.WarnContext(ctx, what+"; retrying", "partition", part, "err", err)
		if retry.Sleep(ctx, retry.FullJitter(100*time.Millisecond, 5*time.Second, n)) != nil {
			return nil
		}
	}
}

func (w *Worker) commitLoop(part int32, tr *tracker, stop <-chan struct{}) {
	t := time.NewTicker(w.cfg.CommitInterval)
	defer t.Stop()
	commit := func() {
		off, ok := tr.committable()
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.log.CommitOffset(ctx, w.cfg.Group, taskstore.TopicTasks, part, off); err != nil {
			w.lg.Warn("commit the tasks position", "partition", part, "offset", off, "err", err)
			return
		}
		tr.committedTo(off)
	}
	for {
		select {
		case <-t.C:
			commit()
		case <-stop:
			commit()
			return
		}
	}
}

func decodeTask(v []byte) (taskstore.RequestedEvent, error) {
	var m outbox.Message
	if err := json.Unmarshal(v, &m); err != nil {
		return taskstore.RequestedEvent{}, err
	}
	if m.EventType != taskstore.EventTaskRequested {
		return taskstore.RequestedEvent{}, fmt.Errorf("event type %q", m.EventType)
	}
	var ev taskstore.RequestedEvent
	if err := json.Unmarshal(m.Payload, &ev); err != nil {
		return taskstore.RequestedEvent{}, err
	}
	if ev.TaskID == "" {
		return taskstore.RequestedEvent{}, errors.New("no task id")
	}
	return ev, nil
}

// hostOf is the politeness key of a URL: its host name, lower-cased, without
// a port or a trailing dot, so that one host cannot be reached under several
// keys.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
}

// process carries out one task. It returns false when ctx ended first, so
// the task stays unfinished and is delivered again after a restart.
func (w *Worker) process(ctx context.Context, ev taskstore.RequestedEvent) bool {
	t, err := retryStore(ctx, w, "start task", func() (taskstore.Task, error) { return w.store.StartAttempt(ctx, ev.TaskID) })
	switch {
	case errors.Is(err, taskstore.ErrFinished):
		w.m.redelivered.Inc()
		return true
	case errors.Is(err, taskstore.ErrNotFound):
		w.lg.ErrorContext(ctx, "a task in the log is not in the store; skipped", "task_id", ev.TaskID)
		return true
	case err != nil:
		return false // ctx ended
	}
	var opts collect.Options
	if err := json.Unmarshal(t.Options, &opts); err != nil {
		w.lg.ErrorContext(ctx, "task options unreadable; using defaults", "task_id", t.ID, "err", err)
	}
	w.m.queueWait.Observe(time.Since(t.CreatedAt).Seconds())
	start := time.Now()
	out, err := w.col.Collect(ctx, t.TargetURL, opts, func(int) {
		if _, err := w.store.StartAttempt(ctx, t.ID); err != nil && ctx.Err() == nil {
			w.lg.WarnContext(ctx, "count a retry", "task_id", t.ID, "err", err)
		}
	})
	if ctx.Err() != nil {
		return false
	}
	elapsed := time.Since(start)
	w.est.Observe(elapsed)
	w.m.duration.Observe(elapsed.Seconds())
	var o taskstore.Outcome
	var cerr *collect.Error
	switch {
	case err == nil:
		o.FinalURL = out.FinalURL
		if o.Result, err = json.Marshal(out.Result); err != nil {
			o = taskstore.Outcome{ErrorCode: "internal_error", ErrorMessage: "the result could not be encoded"}
		}
		o.Result = withoutNUL(o.Result)
	case errors.As(err, &cerr):
		o = taskstore.Outcome{ErrorCode: cerr.Code, ErrorMessage: cerr.Message}
	default:
		o = taskstore.Outcome{ErrorCode: "internal_error", ErrorMessage: "the page could not be collected"}
		w.lg.ErrorContext(ctx, "collect", "task_id", t.ID, "err", err)
	}
	ft, err := retryStore(ctx, w, "finish task", func() (taskstore.Task, error) { return w.store.Finish(ctx, t.ID, o) })
	switch {
	case errors.Is(err, taskstore.ErrFinished):
		w.m.redelivered.Inc()
	case err != nil:
		return false
	default:
		w.m.tasks.WithLabelValues(strings.ToLower(string(ft.Status))).Inc()
		w.lg.DebugContext(ctx, "task finished", "task_id", t.ID, "status", ft.Status, "code", o.ErrorCode, "elapsed", elapsed)
	}
	return true
}

// retryStore calls f until it succeeds, fails with a task error
// (ErrFinished, ErrNotFound), or ctx ends: a store that is briefly
// unavailable delays a task but does not drop it.
func retryStore(ctx context.Context, w *Worker, what string, f func() (taskstore.Task, error)) (taskstore.Task, error) {
	for n := 0; ; n++ {
		t, err := f()
		if err == nil || errors.Is(err, taskstore.ErrFinished) || errors.Is(err, taskstore.ErrNotFound) {
			return t, err
		}
		if ctx.Err() != nil {
			return t, ctx.Err()
		}
		w.lg.WarnContext(ctx, what+" failed; retrying", "err", err)
		if retry.Sleep(ctx, retry.FullJitter(50*time.Millisecond, 5*time.Second, n)) != nil {
			return t, ctx.Err()
		}
	}
}

// tracker follows one partition's tasks between read and finished.
type tracker struct {
	mu        sync.Mutex
	next      int64   // next offset to fetch
	open      []int64 // offsets read and not finished, ascending
	committed int64
}

func (t *tracker) fetchFrom() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.next
}

// skipTo moves the next offset to fetch. Moving back (a log truncated under
// us) forgets the unfinished offsets from there on: they are read again.
func (t *tracker) skipTo(off int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next = off
	i := sort.Search(len(t.open), func(i int) bool { return t.open[i] >= off })
	t.open = t.open[:i]
}

func (t *tracker) add(off int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.open = append(t.open, off)
	t.next = off + 1
}

func (t *tracker) finish(off int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := sort.Search(len(t.open), func(i int) bool { return t.open[i] >= off })
	if i < len(t.open) && t.open[i] == off {
		t.open = append(t.open[:i], t.open[i+1:]...)
	}
}

// committable returns the position to commit (the first unfinished offset,
// or the next to fetch) if it moved since the last commit.
func (t *tracker) committable() (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	off := t.next
	if len(t.open) > 0 {
		off = t.open[0]
	}
	return off, off > t.committed
}

func (t *tracker) committedTo(off int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.committed = max(t.committed, off)
}

// scheduler runs jobs with at most workers at once and at most perHost per
// host, in arrival order among those allowed to start: a job whose host is
// busy waits in the queue without taking a worker.
type scheduler struct {
	workers, perHost int
	maxWaiting       int // per host
	m                *workerMetrics

	mu      sync.Mutex
	running int
	byHost  map[string]int // running
	waiting map[string]int
	queue   []job
	wg      sync.WaitGroup
}

type job struct {
	host string
	run  func()
}

func newScheduler(workers, perHost, maxWaiting int, m *workerMetrics) *scheduler {
	return &scheduler{workers: workers, perHost: perHost, maxWaiting: maxWaiting, m: m,
		byHost: map[string]int{}, waiting: map[string]int{}}
}

// submit queues run for host, or reports false when the host already has
// maxWaiting jobs waiting.
func (s *scheduler) submit(host string, run func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting[host] >= s.maxWaiting {
		return false
	}
	s.waiting[host]++
	s.queue = append(s.queue, job{host, run})
	s.dispatch()
	return true
}

// dispatch starts what may start; s.mu is held.
func (s *scheduler) dispatch() {
	for i := 0; i < len(s.queue) && s.running < s.workers; {
		j := s.queue[i]
		if s.byHost[j.host] >= s.perHost {
			i++
			continue
		}
		s.queue = append(s.queue[:i], s.queue[i+1:]...)
		if s.waiting[j.host]--; s.waiting[j.host] == 0 {
			delete(s.waiting, j.host)
		}
		s.running++
		s.byHost[j.host]++
		s.wg.Go(func() {
			j.run()
			s.mu.Lock()
			defer s.mu.Unlock()
			s.running--
			if s.byHost[j.host]--; s.byHost[j.host] == 0 {
				delete(s.byHost, j.host)
			}
			s.dispatch()
		})
	}
	s.m.running.Set(float64(s.running))
	s.m.waiting.Set(float64(len(s.queue)))
}

// wait returns once no job runs or waits.
func (s *scheduler) wait() { s.wg.Wait() }

type workerMetrics struct {
	tasks       *prometheus.CounterVec
	duration    prometheus.Histogram
	queueWait   prometheus.Histogram
	redelivered prometheus.Counter
	deferred    prometheus.Counter
	running     prometheus.Gauge
	waiting     prometheus.Gauge
}

func newWorkerMetrics(reg prometheus.Registerer) *workerMetrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	f := promauto.With(reg)
	return &workerMetrics{
		tasks: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_metadata_tasks_total",
			Help: "Metadata tasks finished, by status (succeeded, failed).",
		}, []string{"status"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "pedal_metadata_task_duration_seconds",
			Help:    "Processing time of a task, from its start by a worker to its result.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		queueWait: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "pedal_metadata_task_queue_seconds",
			Help:    "Time from a task's creation to the start of its processing.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		deferred: f.NewCounter(prometheus.CounterOpts{
			Name: "pedal_metadata_tasks_deferred_total",
			Help: "Tasks left QUEUED because their host's wait queue was full; requeued later.",
		}),
		redelivered: f.NewCounter(prometheus.CounterOpts{
			Name: "pedal_metadata_tasks_redelivered_total",
			Help: "Task deliveries skipped because the task was already finished (at-least-once delivery).",
		}),
		running: f.NewGauge(prometheus.GaugeOpts{
			Name: "pedal_metadata_tasks_running",
			Help: "Tasks being processed.",
		}),
		waiting: f.NewGauge(prometheus.GaugeOpts{
			Name: "pedal_metadata_tasks_waiting",
			Help: "Tasks read from the log and waiting for a worker or for their host's concurrency limit.",
		}),
	}
}

// withoutNUL replaces the escape \u0000 in JSON text by \ufffd: a page's
// JSON-LD or oEmbed answer may hold one, and PostgreSQL's jsonb refuses it,
// which would fail the task's completion forever.
func withoutNUL(b []byte) []byte {
	const esc = `\u0000`
	if !bytes.Contains(b, []byte(esc)) {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			out = append(out, b[i])
			continue
		}
		if bytes.HasPrefix(b[i:], []byte(esc)) {
			out = append(out, `\ufffd`...)
			i += len(esc) - 1
			continue
		}
		// Another escape: copy it whole, so that an escaped backslash
		// followed by "u0000" is left alone.
		out = append(out, b[i])
		if i+1 < len(b) {
			i++
			out = append(out, b[i])
		}
	}
	return out
}
