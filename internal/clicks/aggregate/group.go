package aggregate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/eventlog"
)

// Membership is a consumer group through which aggregators in several
// processes share the partitions of the clicks topic (kafkalog.Member): each
// partition has one owner at a time, and moves when members come and go.
//
// A partition's state (windows, deduplication, ip counters) is local to its
// owner. The owner commits its position to the group every
// LogCommitInterval, with metadata: its epoch and the largest event time
// processed. A new owner takes over in one of two ways:
//
//   - Resume: its local state is the partition's latest (it was the last
//     owner: its recorded epoch is the committed one, its position at or past
//     the committed one). It goes on from there.
//   - Rebuild: otherwise it drops its local state of the partition and
//     replays the log silently, from the first record whose event time is
//     within AllowedLateness + LateHorizon + 1 minute + 2 × DedupHorizon of
//     the committed largest event time, up to the committed position; then
//     it processes and publishes from there. Every record before the replay's
//     start is older than any window that can still change, and than any
//     deduplication entry a later click can match, so the totals published
//     afterwards are those the previous owner would have published. (The one
//     exception: one click id repeated four or more times, each within the
//     dedup horizon of the last, over more than two horizons: its copies
//     before the replay's start are not seen.) Until the new owner has
//     processed as far as the previous one had, the totals it publishes for
//     those windows are the earlier, smaller ones; they never exceed the
//     truth.
//
// Fencing: every takeover takes an epoch above the committed one and the
// analytics store's (analytics.Fenced), commits it to the group first (the
// group refuses commits from a member that lost the partition), and writes
// window totals with it. A previous owner that still runs (a zombie: paused
// past its session, not yet told) can neither commit its position over its
// successor's nor replace its successor's totals.
type Membership interface {
	// Join joins the group and calls r as partitions are assigned, revoked
	// and lost until ctx is done, then leaves the group.
	Join(ctx context.Context, r Rebalancer) error
	// Committed returns the group's committed position in part with its
	// metadata; ok is false when none was committed.
	Committed(ctx context.Context, part int32) (offset int64, metadata string, ok bool, err error)
	// Commit stores the member's position in part with metadata; it fails
	// once the member no longer holds the generation that owns part.
	Commit(ctx context.Context, part int32, offset int64, metadata string) error
	// OffsetForTime returns the first offset of part whose timestamp (the
	// click's event time) is at or after t; every record before it is
	// older. With none that recent, the end offset.
	OffsetForTime(ctx context.Context, part int32, t time.Time) (int64, error)
}

// Rebalancer receives partition assignments; the Aggregator is one. Calls
// come one at a time.
type Rebalancer interface {
	PartitionsAssigned(ctx context.Context, parts []int32)
	PartitionsRevoked(ctx context.Context, parts []int32)
	PartitionsLost(ctx context.Context, parts []int32)
}

// position is the metadata of a committed position.
type position struct {
	epoch  uint64
	hasMax bool
	maxTS  int64 // Unix ms
}

func (p position) String() string {
	if !p.hasMax {
		return "pedal/1 epoch=" + strconv.FormatUint(p.epoch, 10)
	}
	return "pedal/1 epoch=" + strconv.FormatUint(p.epoch, 10) + " max=" + strconv.FormatInt(p.maxTS, 10)
}

func parsePosition(s string) (position, error) {
	f := strings.Fields(s)
	if len(f) < 2 || f[0] != "pedal/1" {
		return position{}, fmt.Errorf("position metadata %q is not pedal's", s)
	}
	var p position
	for _, kv := range f[1:] {
		k, v, _ := strings.Cut(kv, "=")
		var err error
		switch k {
		case "epoch":
			p.epoch, err = strconv.ParseUint(v, 10, 64)
		case "max":
			p.maxTS, err = strconv.ParseInt(v, 10, 64)
			p.hasMax = true
		}
		if err != nil {
			return position{}, fmt.Errorf("position metadata %q: %w", s, err)
		}
	}
	return p, nil
}

// groupState is the aggregator's side of its membership.
type groupState struct {
	mu      sync.Mutex
	ctx     context.Context // Run's; partitions run under it
	fail    context.CancelCauseFunc
	running map[int32]*owned
}

// owned is a partition the group assigned to this aggregator.
type owned struct {
	cancel context.CancelFunc
	done   chan struct{}
	p      *partition // set once the takeover is done
}

// runGroup joins the group and runs the partitions it assigns until ctx is
// done or a partition fails.
func (a *Aggregator) runGroup(ctx context.Context) error {
	gctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	a.group.mu.Lock()
	a.group.ctx, a.group.fail, a.group.running = gctx, fail, map[int32]*owned{}
	a.group.mu.Unlock()
	sampled := make(chan struct{})
	go func() { a.rates.sample(gctx, a); close(sampled) }()
	err := a.cfg.Membership.Join(gctx, a)
	// Leaving revoked everything; what remains (a failed leave) stops here.
	a.stopPartitions(context.WithoutCancel(ctx), nil, false)
	fail(nil)
	<-sampled
	if cause := context.Cause(gctx); ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// PartitionsAssigned starts taking over parts. Takeovers (a replay may take
// a while) run in the partitions' goroutines, so that the group's heartbeats
// go on.
func (a *Aggregator) PartitionsAssigned(_ context.Context, parts []int32) {
	a.group.mu.Lock()
	defer a.group.mu.Unlock()
	for _, id := range parts {
		if _, ok := a.group.running[id]; ok {
			continue
		}
		pctx, cancel := context.WithCancel(a.group.ctx)
		o := &owned{cancel: cancel, done: make(chan struct{})}
		a.group.running[id] = o
		go func() {
			defer close(o.done)
			p, err := a.takeOver(pctx, id)
			if err == nil {
				a.mu.Lock()
				o.p = p
				a.byID[id] = p
				a.parts = append(slices.Clone(a.parts), p)
				slices.SortFunc(a.parts, func(x, y *partition) int { return int(x.id - y.id) })
				a.mu.Unlock()
				err = p.run(pctx)
			}
			if err != nil && pctx.Err() == nil {
				a.group.fail(fmt.Errorf("partition %d: %w", id, err))
			}
		}()
	}
}

// PartitionsRevoked stops parts and commits their positions for their next
// owners.
func (a *Aggregator) PartitionsRevoked(ctx context.Context, parts []int32) {
	a.stopPartitions(ctx, parts, true)
}

// PartitionsLost stops parts; they are already another's.
func (a *Aggregator) PartitionsLost(ctx context.Context, parts []int32) {
	a.stopPartitions(ctx, parts, false)
}

// stopPartitions stops parts (nil: every partition) and waits for them: a
// running partition commits its state and publishes on its way out; with
// commit, its position then goes to the group.
func (a *Aggregator) stopPartitions(ctx context.Context, parts []int32, commit bool) {
	a.group.mu.Lock()
	var stopping []*owned
	for id, o := range a.group.running {
		if parts == nil || slices.Contains(parts, id) {
			o.cancel()
			stopping = append(stopping, o)
			delete(a.group.running, id)
		}
	}
	a.group.mu.Unlock()
	for _, o := range stopping {
		<-o.done
		p := o.p
		if p == nil {
			continue // stopped during its takeover
		}
		if commit && (p.publishedNext != p.next || len(p.unpublished) > 0) {
			// Its last totals did not all reach the store: the next owner must
			// process again from the last commit, and publish them.
			a.logger.Warn("a revoked partition's last totals were not published; leaving its position", "partition", p.id)
			commit = false
		}
		if commit {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := p.commitPosition(cctx); err != nil {
				a.logger.Warn("commit the position of a revoked partition", "partition", p.id, "err", err)
			}
			cancel()
		}
		a.mu.Lock()
		a.byID[p.id] = nil
		a.parts = slices.DeleteFunc(slices.Clone(a.parts), func(q *partition) bool { return q == p })
		a.mu.Unlock()
		a.logger.Info("aggregator partition handed over", "partition", p.id, "position", p.next, "committed", commit)
	}
}

// replayMargin is how far before the committed largest event time a
// rebuild starts reading: see Membership.
func (a *Aggregator) replayMargin() time.Duration {
	c := &a.cfg
	return c.AllowedLateness + c.LateHorizon + time.Minute + 2*c.DedupHorizon
}

// takeOver makes this aggregator the owner of partition id: it resumes its
// local state if that is the partition's latest, or rebuilds it from the log,
// then records its new epoch in the group and locally.
func (a *Aggregator) takeOver(ctx context.Context, id int32) (*partition, error) {
	start := time.Now()
	m := a.cfg.Membership
	off, md, committed, err := m.Committed(ctx, id)
	if err != nil {
		return nil, err
	}
	var pos position
	if committed {
		if pos, err = parsePosition(md); err != nil {
			// Another writer's commit: no epoch, no event time to replay from.
			a.logger.Warn("aggregator: unreadable committed position; rebuilding from its offset", "partition", id, "err", err)
			pos = position{}
		}
	}
	localEpoch, err := a.localEpoch(id)
	if err != nil {
		return nil, err
	}
	p, err := a.loadPartition(id)
	if err != nil {
		return nil, err
	}
	resume := committed && pos.epoch != 0 && localEpoch == pos.epoch && p.next >= off
	kind, replayed := "resume", int64(0)
	if !committed && p.next == 0 && !p.hasMax {
		kind = "new" // nobody has processed the partition; neither have we
	} else if !resume {
		kind = "rebuild"
		if err := a.dropPartition(id); err != nil {
			return nil, err
		}
		if p, err = a.loadPartition(id); err != nil {
			return nil, err
		}
		if committed {
			if replayed, err = a.rebuild(ctx, p, off, pos); err != nil {
				return nil, err
			}
		}
	}
	epoch := pos.epoch + 1
	if a.fenced != nil {
		epoch = max(epoch, a.fenced.MinEpoch())
	}
	p.epoch = epoch
	// The group first: it refuses the commit if the partition has moved on
	// meanwhile, and from now on a previous owner's commits and totals lose.
	for attempt := 0; ; attempt++ {
		err = p.commitPosition(ctx)
		if err == nil || ctx.Err() != nil || attempt == 20 {
			break
		}
		t := time.NewTimer(min(100*time.Millisecond<<min(attempt, 5), 2*time.Second))
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	if err != nil {
		return nil, fmt.Errorf("record the epoch of a takeover: %w", err)
	}
	if err := a.db.Set(partKey(kindEpoch, id), be64bytes(epoch), pebble.Sync); err != nil {
		return nil, fmt.Errorf("record the epoch of a takeover: %w", err)
	}
	p.lastLogCommit = a.cfg.Now()
	a.m.takeover(kind, time.Since(start), replayed)
	a.logger.Info("aggregator partition taken over", "partition", id, "how", kind, "epoch", epoch,
		"from", p.next, "replayed", replayed, "duration", time.Since(start))
	return p, nil
}

// rebuild replays the log into p, a partition without state, up to off,
// publishing nothing; see Membership.
func (a *Aggregator) rebuild(ctx context.Context, p *partition, off int64, pos position) (int64, error) {
	logStart, _, err := a.log.Offsets(ctx, clicks.Topic, p.id)
	if err != nil {
		return 0, err
	}
	from := logStart
	if pos.hasMax {
		at, err := a.cfg.Membership.OffsetForTime(ctx, p.id, time.UnixMilli(pos.maxTS).Add(-a.replayMargin()))
		if err != nil {
			return 0, err
		}
		from = max(from, at)
	}
	from = min(from, off)
	p.next = from
	p.replaying = true
	p.lastFlush = a.cfg.Now()
	n, err := p.processUntil(ctx, off, nil)
	if err != nil {
		return n, err
	}
	p.processed = true
	if err := p.flush(ctx); err != nil {
		return n, err
	}
	p.replaying = false
	p.firstRecv = time.Time{}
	if pos.hasMax && (!p.hasMax || p.maxTS != pos.maxTS) {
		a.logger.Warn("aggregator: the replay did not reach the committed largest event time; was the log truncated?",
			"partition", p.id, "committed_max", time.UnixMilli(pos.maxTS), "replayed_max", time.UnixMilli(p.maxTS))
	}
	// What the previous owner published needs no second publication.
	p.publishedNext = p.next
	if err := a.db.Set(partKey(kindPublished, p.id), meta{next: p.next}.encode(), pebble.Sync); err != nil {
		return n, err
	}
	p.mu.Lock()
	p.pub.next = p.next
	p.mu.Unlock()
	return n, nil
}

// processUntil reads the log from p.next and processes it up to end (not
// included), flushing as usual, and returns the records processed.
// progress, when set, gets the running count.
func (p *partition) processUntil(ctx context.Context, end int64, progress func(int64)) (int64, error) {
	var n int64
	for p.next < end {
		recs, err := p.a.log.Fetch(ctx, clicks.Topic, p.id, p.next, int(min(int64(p.a.cfg.FetchMax), end-p.next)))
		if err != nil {
			return n, fmt.Errorf("read the log at %d: %w", p.next, err)
		}
		recs = slices.DeleteFunc(recs, func(r eventlog.Record) bool { return r.Offset >= end })
		if err := p.step(ctx, recs); err != nil {
			return n, err
		}
		n += int64(len(recs))
		if len(recs) == 0 || p.next >= end {
			p.next = end // a gap in the offsets (Kafka's transaction markers)
		}
		if progress != nil {
			progress(n)
		}
	}
	return n, nil
}

// localEpoch returns the epoch this aggregator last took partition id with.
func (a *Aggregator) localEpoch(id int32) (uint64, error) {
	v, closer, err := a.db.Get(partKey(kindEpoch, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, errCorrupt
	}
	return be64(v), nil
}

// dropPartition deletes the local state of partition id.
func (a *Aggregator) dropPartition(id int32) error {
	b := a.db.NewBatch()
	defer b.Close()
	for _, kind := range []byte{kindMeta, kindPublished, kindWindow, kindIP, kindDedup, kindEpoch} {
		if err := b.DeleteRange(partKey(kind, id), partKey(kind, id+1), nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}
