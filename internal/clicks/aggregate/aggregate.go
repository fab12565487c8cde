package aggregate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/pebbleslog"
)

// Log is the part of the event log the aggregator reads.
type Log interface {
	Partitions(ctx context.Context, topic string) (int32, error)
	Offsets(ctx context.Context, topic string, part int32) (start, end int64, err error)
	Fetch(ctx context.Context, topic string, part int32, offset int64, max int) ([]eventlog.Record, error)
	CommitOffset(ctx context.Context, group, topic string, part int32, offset int64) error
}

// Config tunes an Aggregator. Zero fields take the defaults of pedal serve.
type Config struct {
	// Partitions are the partitions of the clicks topic this aggregator owns;
	// nil means all. Aggregators in several processes split the partitions
	// between them this way, each with its own state directory.
	Partitions []int32
	// Membership, when set, makes the aggregator a member of a consumer group
	// that assigns the partitions and moves them between processes (see
	// Membership); Partitions must then be nil.
	Membership Membership

	DedupHorizon    time.Duration // default 10m
	AllowedLateness time.Duration // default 30s
	LateHorizon     time.Duration // default 1h
	IPRateLimit     int           // default 5
	BotSubstrings   []string      // default clicks.DefaultBotSubstrings(); matched case-insensitively

	// FlushInterval is how often a busy partition commits its state and
	// publishes its changed windows; default 250ms. It bounds freshness.
	FlushInterval time.Duration
	// FetchMax is the most records read from the log at once; default 8192.
	FetchMax int
	// IdleTimeout: a partition that has processed everything and received
	// nothing for this long lets its windows become final by the wall clock
	// (watermark = now − AllowedLateness), so an idle partition does not hold
	// windows open forever. Default 10s. Only the final flag follows it; the
	// rules never look at the wall clock.
	IdleTimeout time.Duration
	// Group is the consumer group whose position the aggregator commits to the
	// log, which lets log retention pass what is processed; default "aggregator".
	Group string
	// LogCommitInterval spaces those log commits; default 5s.
	LogCommitInterval time.Duration
	// Workers is how many partitions process at once; default half of
	// GOMAXPROCS, at least 1. The rest of the CPU stays with ingestion, whose
	// acknowledgements are the latency that matters: under overload the
	// aggregator falls behind (lag, freshness) instead of slowing every 202.
	Workers int
	// Now is the wall clock; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.DedupHorizon, 10*time.Minute)
	def(&c.AllowedLateness, 30*time.Second)
	def(&c.LateHorizon, time.Hour)
	def(&c.FlushInterval, 250*time.Millisecond)
	def(&c.IdleTimeout, 10*time.Second)
	def(&c.LogCommitInterval, 5*time.Second)
	if c.IPRateLimit <= 0 {
		c.IPRateLimit = 5
	}
	if c.BotSubstrings == nil {
		c.BotSubstrings = clicks.DefaultBotSubstrings()
	}
	if c.FetchMax <= 0 {
		c.FetchMax = 8192
	}
	if c.Workers <= 0 {
		c.Workers = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if c.Group == "" {
		c.Group = "aggregator"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Aggregator aggregates every partition of the clicks topic.
type Aggregator struct {
	cfg    Config
	log    Log
	store  analytics.Store
	db     *pebble.DB
	logger *slog.Logger
	m      *metrics
	bots   []string
	fenced analytics.Fenced // the store, when it fences writers by epoch
	rates  rates
	sem    chan struct{} // a slot per worker

	mu    sync.RWMutex
	parts []*partition // the owned partitions, by increasing id
	byID  []*partition // every partition of the topic; nil when not owned

	group groupState // with a Membership
}

// Open opens (or creates) the aggregator's state store in dir and loads the
// state of every partition of the clicks topic, which must exist.
func Open(ctx context.Context, dir string, cfg Config, log Log, store analytics.Store, logger *slog.Logger, reg prometheus.Registerer) (*Aggregator, error) {
	cfg.setDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n, err := log.Partitions(ctx, clicks.Topic)
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	opts := &pebble.Options{
		Logger: pebbleslog.Logger{L: logger, Fatal: func(msg string) {
			// The state store cannot go on; the process must stop and recover from
			// the last committed state.
			panic("aggregator state store: " + msg)
		}},
		MemTableSize: 64 << 20,
	}
	for i := range opts.Levels {
		// Late clicks and fingerprint matches look up single keys.
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open aggregator state in %s: %w", dir, err)
	}
	a := &Aggregator{cfg: cfg, log: log, store: store, db: db, logger: logger, sem: make(chan struct{}, cfg.Workers)}
	a.fenced, _ = store.(analytics.Fenced)
	for _, b := range cfg.BotSubstrings {
		if b = strings.ToLower(strings.TrimSpace(b)); b != "" {
			a.bots = append(a.bots, b)
		}
	}
	a.m = newMetrics(reg, a)
	start := time.Now()
	owned := cfg.Partitions
	switch {
	case cfg.Membership != nil && owned != nil:
		db.Close()
		return nil, errors.New("aggregator: partitions are chosen either by a consumer group or by a list, not both")
	case cfg.Membership != nil:
		// The group assigns them once Run has joined it.
	case owned == nil:
		for i := range n {
			owned = append(owned, i)
		}
	}
	for _, i := range owned {
		if i < 0 || i >= n {
			db.Close()
			return nil, fmt.Errorf("aggregator: partition %d: the clicks topic has partitions 0 to %d", i, n-1)
		}
	}
	a.byID = make([]*partition, n)
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for _, i := range owned {
		g.Go(func() error {
			p, err := a.loadPartition(i)
			if err != nil {
				return fmt.Errorf("load aggregator state of partition %d: %w", i, err)
			}
			a.byID[i] = p
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		db.Close()
		return nil, err
	}
	for _, p := range a.byID {
		if p != nil {
			a.parts = append(a.parts, p)
		}
	}
	keys, windows := 0, 0
	for _, p := range a.parts {
		keys += p.fps.Len()
		windows += len(p.windows)
	}
	if cfg.Membership == nil {
		logger.Info("aggregator state loaded", "partitions", len(a.parts), "of", n, "dedup_keys", keys, "open_windows", windows, "duration", time.Since(start))
	}
	return a, nil
}

// Run processes every partition until ctx is done, then commits what it has
// processed. It returns nil after ctx is done, or the first error that stopped
// a partition.
func (a *Aggregator) Run(ctx context.Context) error {
	if a.cfg.Membership != nil {
		return a.runGroup(ctx)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, p := range a.parts {
		g.Go(func() error { return p.run(gctx) })
	}
	g.Go(func() error { a.rates.sample(gctx, a); return nil })
	err := g.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// owned returns the partitions the aggregator owns now.
func (a *Aggregator) owned() []*partition {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.parts
}

// Close closes the state store. Call it after Run has returned.
func (a *Aggregator) Close() error { return a.db.Close() }

// Watermark returns the watermark that decides whether the windows of adID's
// partition are final: the partition's event-time watermark, or, when the
// partition has been idle for IdleTimeout, now − AllowedLateness if that is
// later. ok is false before the partition has seen a click, and for a
// partition another aggregator owns.
func (a *Aggregator) Watermark(adID string) (time.Time, bool) {
	a.mu.RLock()
	p := a.byID[eventlog.PartitionForString(adID, int32(len(a.byID)))]
	a.mu.RUnlock()
	if p == nil {
		return time.Time{}, false // another aggregator's
	}
	return p.finalWatermark(a.cfg.Now())
}

// PartitionStatus is one partition's progress.
type PartitionStatus struct {
	Partition       int32
	LogEndOffset    int64
	CommittedOffset int64     // next offset to process; everything before it is queryable
	Watermark       time.Time // event-time watermark; zero before the first click
}

// Status is the aggregator's progress.
type Status struct {
	Partitions           []PartitionStatus
	EventsInPerSecond    float64 // appended to the log, over the last ~10s
	EventsOutPerSecond   float64 // processed and published, over the last ~10s
	OldestUnprocessedAge time.Duration
	Freshness            time.Duration // now − newest queryable event time; -1 before any
}

// Status reports every partition's progress.
func (a *Aggregator) Status(ctx context.Context) (Status, error) {
	now := a.cfg.Now()
	st := Status{Freshness: -1}
	var newest int64
	for _, p := range a.owned() {
		_, end, err := a.log.Offsets(ctx, clicks.Topic, p.id)
		if err != nil {
			return Status{}, err
		}
		pub := p.snapshot()
		ps := PartitionStatus{Partition: p.id, LogEndOffset: end, CommittedOffset: pub.next}
		if pub.hasMax {
			ps.Watermark = time.UnixMilli(pub.maxTS).UTC().Add(-a.cfg.AllowedLateness)
			newest = max(newest, pub.maxTS)
		}
		st.Partitions = append(st.Partitions, ps)
		if end > pub.next {
			recs, err := a.log.Fetch(ctx, clicks.Topic, p.id, pub.next, 1)
			if err != nil {
				return Status{}, err
			}
			if len(recs) > 0 {
				if c, err := clicks.Decode(recs[0].Value); err == nil {
					st.OldestUnprocessedAge = max(st.OldestUnprocessedAge, now.Sub(c.ReceivedAt))
				}
			}
		}
	}
	if newest != 0 {
		st.Freshness = max(0, now.Sub(time.UnixMilli(newest)))
	}
	st.EventsInPerSecond, st.EventsOutPerSecond = a.rates.get()
	return st, nil
}

// rates samples the log's end offsets and the committed offsets once a second
// to report events in and out per second over the last ten seconds.
type rates struct {
	mu      sync.Mutex
	samples [11]rateSample
	n, head int
}

type rateSample struct {
	at      time.Time
	in, out int64
}

func (r *rates) sample(ctx context.Context, a *Aggregator) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		var s rateSample
		s.at = a.cfg.Now()
		for _, p := range a.owned() {
			if _, end, err := a.log.Offsets(ctx, clicks.Topic, p.id); err == nil {
				s.in += end
			}
			s.out += p.snapshot().next
		}
		r.mu.Lock()
		r.samples[r.head] = s
		r.head = (r.head + 1) % len(r.samples)
		r.n = min(r.n+1, len(r.samples))
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *rates) get() (in, out float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n < 2 {
		return 0, 0
	}
	last := r.samples[(r.head+len(r.samples)-1)%len(r.samples)]
	first := r.samples[(r.head+len(r.samples)-r.n)%len(r.samples)]
	d := last.at.Sub(first.at).Seconds()
	if d <= 0 {
		return 0, 0
	}
	return float64(last.in-first.in) / d, float64(last.out-first.out) / d
}
