// Package pebblelog is the embedded implementation of eventlog: one Pebble database
// in one process holding every topic, partition and consumer position.
//
// Appends are group-committed. Concurrent appends queue; one of them leads a
// group: it encodes every queued append's records into one Pebble batch (one key
// per partition touched), assigns offsets, applies the batch, waits for its WAL
// sync, which the whole group shares, and passes leadership on to the appends
// that queued meanwhile. So a thousand one-record appends a millisecond cost a handful of Pebble
// commits and syncs, not a thousand. A partition's high watermark, the end of what readers
// may see, advances only when a commit and every commit before it are synced, so
// nothing is read that a crash could take back.
//
// Retention deletes whole batches that are older than Config.RetentionAge and that
// every consumer group with a committed position on the partition has passed; a
// partition no group has committed on keeps everything.
// Appends fail with eventlog.ErrFull while the disk's free space is below
// Config.MinFreeBytes.
//
// A *Log is safe for concurrent use.
package pebblelog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/pebbleslog"
)

// Config tunes a Log. The zero value is usable.
type Config struct {
	// FS is the file system; nil means the operating system's. Tests use a crashable
	// in-memory FS to drop unsynced writes.
	FS vfs.FS
	// RetentionAge is how long records are kept at least; 0 means forever.
	RetentionAge time.Duration
	// RetentionInterval is how often Run applies retention; default 1 minute.
	RetentionInterval time.Duration
	// MinFreeBytes: appends fail with ErrFull while the disk has less free space;
	// default 256 MiB. Negative disables the check.
	MinFreeBytes int64
	// MinSyncInterval spaces WAL syncs at least this far apart: appends arriving
	// meanwhile wait and share the next sync. Fewer, larger syncs cost less CPU
	// under many small appends (redirect clicks) at the price of up to this much
	// latency. Zero syncs as soon as one is asked for.
	MinSyncInterval time.Duration
	// Now is the clock for append times; nil means time.Now.
	Now func() time.Time
	// Fatal is called when the store fails in a way that could lose
	// acknowledged writes if the process went on (a failed WAL sync, an error
	// Pebble reports as fatal). It must not return. Nil logs and exits the
	// process with status 70: fail-stop, so a supervisor restarts it and the log
	// recovers from what is durable. Tests set it to panic.
	Fatal func(msg string)
}

// Log is an embedded event log. Open one per directory.
type Log struct {
	cfg    Config
	db     *pebble.DB
	dir    string
	logger *slog.Logger
	m      *metrics

	// qmu guards the queue of appends waiting for a group leader.
	qmu     sync.Mutex
	queue   []*pending
	leading bool // an append is leading a group; the queue's head is woken next

	// mu orders appends: offsets are assigned and batches applied under it.
	// Lock order: qmu and mu are never held together; mu, then a partition's mu.
	mu     sync.Mutex
	topics atomic.Pointer[map[string]*topic] // copy-on-write under mu
	nextID uint32

	// gate admits operations that touch the database until Close, which waits
	// for those admitted.
	gate struct {
		sync.Mutex
		closed bool
		active int
		idle   sync.Cond
	}
	done chan struct{} // closed by Close

	full atomic.Bool // free space below MinFreeBytes at the last check
}

type topic struct {
	id    uint32
	name  string
	parts []*partition
}

type partition struct {
	next int64 // next offset to assign; guarded by Log.mu

	mu      sync.Mutex
	start   int64         // log start offset
	hw      int64         // high watermark: records below it are durable and readable
	changed chan struct{} // closed and replaced when hw moves
	groups  map[string]int64
}

type commit struct {
	ends []partEnd
}

type partEnd struct {
	p   *partition
	end int64 // high watermark once this commit is durable
	n   int64 // records of this commit in p
}

// Open opens (creating if needed) the log in dir. logger and reg may be nil.
func Open(dir string, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Log, error) {
	if cfg.RetentionInterval <= 0 {
		cfg.RetentionInterval = time.Minute
	}
	if cfg.MinFreeBytes == 0 {
		cfg.MinFreeBytes = 256 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.Fatal = pebbleslog.FailStop(cfg.Fatal, logger, "event log")
	opts := &pebble.Options{
		FS:                 cfg.FS,
		Logger:             pebbleslog.Logger{L: logger, Fatal: cfg.Fatal},
		FormatMajorVersion: pebble.FormatValueSeparation,
		// Large memtables absorb bursts; the WAL is the durability point.
		MemTableSize:                64 << 20,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       64,
	}
	if cfg.MinSyncInterval > 0 {
		iv := cfg.MinSyncInterval
		opts.WALMinSyncInterval = func() time.Duration { return iv }
	}
	// Record batches are large values written once and deleted by range. Stored in
	// blob files (WiscKey-style value separation), they are written once at flush;
	// compactions then move only keys and value handles, which took compaction
	// from half of the server's CPU at 350k clicks/s to a small share.
	opts.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
		return pebble.ValueSeparationPolicy{
			Enabled:               true,
			MinimumSize:           256,
			MaxBlobReferenceDepth: 10,
			RewriteMinimumAge:     time.Hour,
			TargetGarbageRatio:    1.0, // retention deletes whole old ranges; never rewrite
		}
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open event log in %s: %w", dir, err)
	}
	l := &Log{cfg: cfg, db: db, dir: dir, logger: logger, done: make(chan struct{})}
	l.gate.idle.L = &l.gate.Mutex
	if err := l.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open event log in %s: %w", dir, err)
	}
	l.m = newMetrics(reg, l)
	l.checkDisk()
	return l, nil
}

// load reads topic metadata and recovers each partition's offsets and groups.
func (l *Log) load() error {
	topics := map[string]*topic{}
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindMeta}, UpperBound: []byte{kindMeta + 1}})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		v := it.Value()
		if len(v) != 8 {
			it.Close()
			return fmt.Errorf("topic %q: corrupt metadata", it.Key()[1:])
		}
		t := &topic{id: binary.BigEndian.Uint32(v), name: string(it.Key()[1:])}
		t.parts = make([]*partition, binary.BigEndian.Uint32(v[4:]))
		topics[t.name] = t
		if t.id >= l.nextID {
			l.nextID = t.id + 1
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, t := range topics {
		for i := range t.parts {
			p, err := l.recoverPartition(t.id, int32(i))
			if err != nil {
				return fmt.Errorf("topic %q partition %d: %w", t.name, i, err)
			}
			t.parts[i] = p
		}
	}
	l.topics.Store(&topics)
	return nil
}

func (l *Log) recoverPartition(tid uint32, part int32) (*partition, error) {
	p := &partition{changed: make(chan struct{}), groups: map[string]int64{}}
	if v, closer, err := l.db.Get(partKey(kindStart, tid, part)); err == nil {
		p.start = int64(binary.BigEndian.Uint64(v))
		closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return nil, err
	}
	lo, hi := dataKey(tid, part, 0), dataKey(tid, part, -1)
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	p.next = p.start
	if it.Last() {
		h, err := readHeader(it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		p.next = int64(binary.BigEndian.Uint64(it.Key()[9:])) + h.count
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	p.hw = p.next
	cp := partKey(kindCommit, tid, part)
	it, err = l.db.NewIter(&pebble.IterOptions{LowerBound: cp, UpperBound: partKey(kindCommit, tid, part+1)})
	if err != nil {
		return nil, err
	}
	for it.First(); it.Valid(); it.Next() {
		p.groups[string(it.Key()[9:])] = int64(binary.BigEndian.Uint64(it.Value()))
	}
	return p, it.Close()
}

func (l *Log) topic(name string) (*topic, error) {
	t, ok := (*l.topics.Load())[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", eventlog.ErrUnknownTopic, name)
	}
	return t, nil
}

func (t *topic) partition(part int32) (*partition, error) {
	if part < 0 || int(part) >= len(t.parts) {
		return nil, fmt.Errorf("%w: topic %q has %d partitions, not %d", eventlog.ErrBadPartition, t.name, len(t.parts), part)
	}
	return t.parts[part], nil
}

// CreateTopic creates a topic with n partitions. Creating an existing topic with the
// same count is a no-op; with another count it fails with ErrTopicExists.
func (l *Log) CreateTopic(ctx context.Context, name string, partitions int32) error {
	if name == "" || partitions <= 0 {
		return fmt.Errorf("create topic %q: need a name and at least one partition", name)
	}
	if err := l.enter(); err != nil {
		return err
	}
	defer l.exit()
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.topics.Load()
	if t, ok := old[name]; ok {
		if len(t.parts) != int(partitions) {
			return fmt.Errorf("%w: %q has %d partitions", eventlog.ErrTopicExists, name, len(t.parts))
		}
		return nil
	}
	t := &topic{id: l.nextID, name: name, parts: make([]*partition, partitions)}
	for i := range t.parts {
		t.parts[i] = &partition{changed: make(chan struct{}), groups: map[string]int64{}}
	}
	v := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, t.id), uint32(partitions))
	if err := l.db.Set(metaKey(name), v, pebble.Sync); err != nil {
		return fmt.Errorf("create topic %q: %w", name, err)
	}
	l.nextID++
	topics := make(map[string]*topic, len(old)+1)
	for k, v := range old {
		topics[k] = v
	}
	topics[name] = t
	l.topics.Store(&topics)
	return nil
}

// Partitions returns the number of partitions of topic.
func (l *Log) Partitions(ctx context.Context, name string) (int32, error) {
	t, err := l.topic(name)
	if err != nil {
		return 0, err
	}
	return int32(len(t.parts)), nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// Append makes recs durable in topic and sets each one's Offset. A record's
// Partition must be in range; a zero Timestamp becomes the append time. On error no
// record of the call was acknowledged; some may still become readable if the error
// came after they were written (a failed sync), as with any log.
func (l *Log) Append(ctx context.Context, name string, recs []eventlog.Record) error {
	if len(recs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := l.topic(name)
	if err != nil {
		return err
	}
	now := l.cfg.Now()
	for i := range recs {
		r := &recs[i]
		if r.Partition < 0 || int(r.Partition) >= len(t.parts) {
			return fmt.Errorf("append record %d: %w: topic %q has %d partitions, not %d", i, eventlog.ErrBadPartition, name, len(t.parts), r.Partition)
		}
		if r.Timestamp.IsZero() {
			r.Timestamp = now
		}
	}
	if l.full.Load() {
		return fmt.Errorf("append to %q: %w: less than %d bytes free", name, eventlog.ErrFull, l.cfg.MinFreeBytes)
	}
	if err := l.enter(); err != nil {
		return err
	}
	defer l.exit()

	p := &pending{t: t, recs: recs, wake: make(chan bool, 1)}
	start := time.Now()
	l.qmu.Lock()
	l.queue = append(l.queue, p)
	lead := !l.leading
	l.leading = true
	l.qmu.Unlock()
	if !lead {
		lead = <-p.wake
	}
	if lead {
		l.lead()
	}
	<-p.g.done
	if p.g.err != nil {
		return fmt.Errorf("append to %q: %w", name, p.g.err)
	}
	l.m.observeAppend(len(recs), time.Since(start))
	return nil
}

// pending is an Append waiting to be committed in a group.
type pending struct {
	t    *topic
	recs []eventlog.Record
	wake chan bool // true: lead the next group; false: p.g is set
	g    *group
}

// group is the appends committed by one Pebble batch and one sync.
type group struct {
	done chan struct{}
	err  error
}

// lead commits every queued append as one group: one Pebble batch holding one
// key per partition touched, and one sync. Leadership then passes to the next
// queued append, so everything that arrived during a sync shares the next one.
func (l *Log) lead() {
	l.qmu.Lock()
	reqs := l.queue
	l.queue = nil
	l.qmu.Unlock()

	g := &group{done: make(chan struct{})}
	handedOn := false
	defer func() {
		// Whatever stops this leader (a panic, Config.Fatal exiting the
		// goroutine), no append may wait forever for its group or for leadership.
		if handedOn {
			return
		}
		v := recover()
		g.err = errors.New("group commit stopped")
		if v != nil {
			g.err = fmt.Errorf("group commit failed: %v", v)
		}
		for _, r := range reqs {
			if r.g == nil {
				r.g = g
				r.wake <- false
			}
		}
		select {
		case <-g.done:
		default:
			close(g.done)
		}
		l.handOn()
		if v != nil {
			panic(v)
		}
	}()
	b := l.db.NewBatch()
	c, err := l.apply(b, reqs)

	for _, r := range reqs {
		r.g = g
		r.wake <- false // buffered; the leader's own is never read
	}
	if err == nil {
		if err = b.SyncWait(); err != nil {
			// The batch may or may not survive a crash, and Pebble keeps failing
			// every later sync: no append can be acknowledged any more, and
			// readers must not see the batch. Stop; a restart recovers.
			err = fmt.Errorf("sync: %w", err)
			l.cfg.Fatal("WAL sync failed: " + err.Error())
		} else {
			l.markSynced(c)
		}
	}
	l.m.observeCommit(b.Len())
	b.Close()
	g.err = err
	close(g.done)
	handedOn = true
	l.handOn()
}

// handOn passes leadership to the appends that queued during the last group.
func (l *Log) handOn() {
	l.qmu.Lock()
	if len(l.queue) > 0 {
		l.queue[0].wake <- true
	} else {
		l.leading = false
	}
	l.qmu.Unlock()
}

// apply assigns offsets to reqs' records, encodes them into b (one key per
// partition, records in request order) and applies b without waiting for its sync.
func (l *Log) apply(b *pebble.Batch, reqs []*pending) (*commit, error) {
	type partRecs struct {
		t    *topic
		part int32
		recs []*eventlog.Record
	}
	var lists []partRecs
	index := map[*partition]int{}
	for _, r := range reqs {
		for i := range r.recs {
			rec := &r.recs[i]
			p := r.t.parts[rec.Partition]
			j, ok := index[p]
			if !ok {
				j = len(lists)
				index[p] = j
				lists = append(lists, partRecs{t: r.t, part: rec.Partition})
			}
			lists[j].recs = append(lists[j].recs, rec)
		}
	}
	bufp := bufPool.Get().(*[]byte)
	buf := (*bufp)[:0]
	defer func() {
		if cap(buf) <= 4<<20 {
			*bufp = buf[:0]
			bufPool.Put(bufp)
		}
	}()
	now := l.cfg.Now().UnixMilli()
	c := &commit{ends: make([]partEnd, 0, len(lists))}

	l.mu.Lock()
	defer l.mu.Unlock()
	for _, pl := range lists {
		p := pl.t.parts[pl.part]
		base := p.next
		for i, r := range pl.recs {
			r.Offset = base + int64(i)
		}
		buf = appendBatch(buf[:0], now, pl.recs)
		if err := b.Set(dataKey(pl.t.id, pl.part, base), buf, nil); err != nil {
			l.rollback(c)
			return nil, err
		}
		p.next += int64(len(pl.recs))
		c.ends = append(c.ends, partEnd{p, p.next, int64(len(pl.recs))})
	}
	if err := l.db.ApplyNoSyncWait(b, pebble.Sync); err != nil {
		l.rollback(c) // nothing was applied: give the offsets back
		return nil, err
	}
	return c, nil
}

func (l *Log) rollback(c *commit) {
	for _, e := range c.ends {
		e.p.next -= e.n
	}
}

// markSynced makes c's records readable. Groups are committed one at a time, a
// group's sync covers every earlier write, so c's ends are a durable prefix.
func (l *Log) markSynced(c *commit) {
	for _, e := range c.ends {
		e.p.mu.Lock()
		if e.end > e.p.hw {
			e.p.hw = e.end
			close(e.p.changed)
			e.p.changed = make(chan struct{})
		}
		e.p.mu.Unlock()
	}
}

// Offsets returns the partition's log start offset and high watermark: the offsets
// of the first readable record and of the next record to be made readable.
func (l *Log) Offsets(ctx context.Context, name string, part int32) (start, end int64, err error) {
	t, err := l.topic(name)
	if err != nil {
		return 0, 0, err
	}
	p, err := t.partition(part)
	if err != nil {
		return 0, 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.start, p.hw, nil
}

// Fetch returns up to max records of a partition starting at offset, waiting until
// at least one is readable or ctx is done. An offset below the log start offset or
// above the high watermark fails with ErrOffsetOutOfRange. The returned records own
// their memory.
func (l *Log) Fetch(ctx context.Context, name string, part int32, offset int64, max int) ([]eventlog.Record, error) {
	t, err := l.topic(name)
	if err != nil {
		return nil, err
	}
	p, err := t.partition(part)
	if err != nil {
		return nil, err
	}
	if max <= 0 {
		max = 1
	}
	for {
		p.mu.Lock()
		start, hw, changed := p.start, p.hw, p.changed
		p.mu.Unlock()
		if offset < start || offset > hw {
			return nil, fmt.Errorf("%w: %q/%d offset %d not in [%d, %d]", eventlog.ErrOffsetOutOfRange, name, part, offset, start, hw)
		}
		if offset < hw {
			if err := l.enter(); err != nil {
				return nil, err
			}
			defer l.exit()
			return l.read(t.id, part, offset, hw, max)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.done:
			return nil, eventlog.ErrClosed
		}
	}
}

func (l *Log) read(tid uint32, part int32, from, to int64, max int) ([]eventlog.Record, error) {
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: dataKey(tid, part, 0), UpperBound: dataKey(tid, part, to)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []eventlog.Record
	ok := it.SeekLT(dataKey(tid, part, from+1))
	for ; ok && len(out) < max; ok = it.Next() {
		base := int64(binary.BigEndian.Uint64(it.Key()[9:]))
		v := append([]byte(nil), it.Value()...) // records alias this copy
		out, err = decodeBatch(out, part, base, v, from, to, max)
		if err != nil {
			return nil, fmt.Errorf("read partition %d at %d: %w", part, base, err)
		}
	}
	if len(out) == 0 {
		// A retention pass may have removed the range between our check and the read.
		return nil, fmt.Errorf("%w: offset %d was deleted by retention", eventlog.ErrOffsetOutOfRange, from)
	}
	return out, it.Error()
}

// CommitOffset stores group's position in a partition: the offset of the next
// record it will process. It is durable on return.
func (l *Log) CommitOffset(ctx context.Context, group, name string, part int32, offset int64) error {
	t, err := l.topic(name)
	if err != nil {
		return err
	}
	p, err := t.partition(part)
	if err != nil {
		return err
	}
	if group == "" {
		return errors.New("commit offset: empty group")
	}
	p.mu.Lock()
	hw := p.hw
	p.mu.Unlock()
	if offset < 0 || offset > hw {
		return fmt.Errorf("commit offset: %w: %d not in [0, %d]", eventlog.ErrOffsetOutOfRange, offset, hw)
	}
	if err := l.enter(); err != nil {
		return err
	}
	defer l.exit()
	// A group's position has one writer, its partition's owner; the sync runs
	// outside p.mu so readers and appends do not wait for it.
	if err := l.db.Set(commitKey(t.id, part, group), binary.BigEndian.AppendUint64(nil, uint64(offset)), pebble.Sync); err != nil {
		return fmt.Errorf("commit offset: %w", err)
	}
	p.mu.Lock()
	p.groups[group] = offset
	p.mu.Unlock()
	return nil
}

// CommittedOffset returns group's committed position in a partition, or -1 when the
// group has committed none.
func (l *Log) CommittedOffset(ctx context.Context, group, name string, part int32) (int64, error) {
	t, err := l.topic(name)
	if err != nil {
		return 0, err
	}
	p, err := t.partition(part)
	if err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if off, ok := p.groups[group]; ok {
		return off, nil
	}
	return -1, nil
}

// Run applies retention and watches free disk space until ctx is done.
func (l *Log) Run(ctx context.Context) error {
	diskTick := time.NewTicker(2 * time.Second)
	defer diskTick.Stop()
	retTick := time.NewTicker(l.cfg.RetentionInterval)
	defer retTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-diskTick.C:
			l.checkDisk()
		case <-retTick.C:
			if _, err := l.ApplyRetention(ctx); err != nil {
				l.logger.ErrorContext(ctx, "event log retention", "err", err)
			}
		}
	}
}

func (l *Log) checkDisk() {
	if l.cfg.MinFreeBytes < 0 {
		return
	}
	fs := l.cfg.FS
	if fs == nil {
		fs = vfs.Default
	}
	u, err := fs.GetDiskUsage(l.dir)
	if err != nil {
		return
	}
	full := int64(u.AvailBytes) < l.cfg.MinFreeBytes
	if full != l.full.Swap(full) {
		l.logger.Warn("event log free space", "avail_bytes", u.AvailBytes, "min_free_bytes", l.cfg.MinFreeBytes, "full", full)
	}
}

// ApplyRetention deletes, in every partition, the batches that ended before the
// retention age and before every consumer group's committed position. It returns
// the number of records deleted.
func (l *Log) ApplyRetention(ctx context.Context) (int64, error) {
	if l.cfg.RetentionAge <= 0 {
		return 0, nil
	}
	cutoff := l.cfg.Now().Add(-l.cfg.RetentionAge).UnixMilli()
	var total int64
	topics := *l.topics.Load()
	names := make([]string, 0, len(topics))
	for n := range topics {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t := topics[n]
		for i, p := range t.parts {
			if err := ctx.Err(); err != nil {
				return total, err
			}
			if err := l.enter(); err != nil {
				return total, err
			}
			d, err := l.retainPartition(t.id, int32(i), p, cutoff)
			l.exit()
			if err != nil {
				return total, fmt.Errorf("retention of %q/%d: %w", n, i, err)
			}
			total += d
		}
	}
	return total, nil
}

func (l *Log) retainPartition(tid uint32, part int32, p *partition, cutoff int64) (int64, error) {
	p.mu.Lock()
	limit, start := p.hw, p.start
	for _, off := range p.groups {
		limit = min(limit, off)
	}
	if len(p.groups) == 0 {
		limit = start // nobody has read anything yet: keep it all
	}
	p.mu.Unlock()
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: dataKey(tid, part, start), UpperBound: dataKey(tid, part, limit)})
	if err != nil {
		return 0, err
	}
	newStart := start
	for it.First(); it.Valid(); it.Next() {
		h, err := readHeader(it.Value())
		if err != nil {
			it.Close()
			return 0, err
		}
		base := int64(binary.BigEndian.Uint64(it.Key()[9:]))
		if h.appendTime >= cutoff || base+h.count > limit {
			break
		}
		newStart = base + h.count
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	if newStart == start {
		return 0, nil
	}
	b := l.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(dataKey(tid, part, 0), dataKey(tid, part, newStart), nil); err != nil {
		return 0, err
	}
	if err := b.Set(partKey(kindStart, tid, part), binary.BigEndian.AppendUint64(nil, uint64(newStart)), nil); err != nil {
		return 0, err
	}
	p.mu.Lock()
	p.start = newStart // readers below newStart now get ErrOffsetOutOfRange
	p.mu.Unlock()
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, err
	}
	return newStart - start, nil
}

// enter admits an operation on the database, or fails with ErrClosed; an admitted
// operation must call exit.
func (l *Log) enter() error {
	l.gate.Lock()
	defer l.gate.Unlock()
	if l.gate.closed {
		return eventlog.ErrClosed
	}
	l.gate.active++
	return nil
}

func (l *Log) exit() {
	l.gate.Lock()
	l.gate.active--
	if l.gate.active == 0 {
		l.gate.idle.Broadcast()
	}
	l.gate.Unlock()
}

// Close refuses new operations, wakes waiting readers with ErrClosed, waits for
// admitted operations (appends finish their sync) and closes the database.
func (l *Log) Close() error {
	l.gate.Lock()
	if l.gate.closed {
		l.gate.Unlock()
		return nil
	}
	l.gate.closed = true
	close(l.done)
	for l.gate.active > 0 {
		l.gate.idle.Wait()
	}
	l.gate.Unlock()
	return l.db.Close()
}
