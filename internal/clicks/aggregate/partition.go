package aggregate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/clicks/aggregate/fpset"
	"github.com/pedal-project/pedal/internal/eventlog"
)

const minuteMs = 60_000

// minuteOf returns the Unix minute holding the Unix millisecond ms.
func minuteOf(ms int64) uint32 {
	m := ms / minuteMs
	if ms%minuteMs < 0 {
		m--
	}
	return uint32(max(m, 0))
}

type winKey struct {
	ad, country string
	minute      uint32
}

type window struct {
	key                             winKey
	clicks, bot, ipRate, dups, late int64
	dirty                           bool
}

func (w *window) row() analytics.Row {
	return analytics.Row{
		AdID: w.key.ad, Country: w.key.country,
		Start:  time.Unix(int64(w.key.minute)*60, 0).UTC(),
		Clicks: w.clicks, Bot: w.bot, IPRate: w.ipRate, Duplicates: w.dups, TooLate: w.late,
	}
}

type ipKey struct {
	ad     string
	ip     netip.Addr
	minute uint32
}

type dedupKey struct {
	minute uint32
	fp     uint64
}

// cutoffs are the minutes below which state is no longer needed or no longer
// held in memory, all derived from the partition's largest event time.
type cutoffs struct {
	window    uint32 // windows (and ip counters) of earlier minutes can no longer change
	dedupCold uint32 // deduplication entries of earlier minutes can no longer match
	dedupHot  uint32 // the fingerprint set holds the entries of this minute on
	ipHot     uint32 // memory holds the ip counters of this minute on
}

// published is what the query side sees of a partition.
type published struct {
	next       int64 // every record before it is queryable
	hasMax     bool
	maxTS      int64
	activeAt   time.Time // last flush that processed records
	dedupKeys  int
	dedupBytes int
}

type partition struct {
	a  *Aggregator
	id int32
	// epoch fences the partition's writes to the analytics store when its
	// ownership comes from a consumer group; 0 otherwise.
	epoch uint64
	// replaying: the partition is rebuilding its state from the log after a
	// takeover, so flushes commit state but publish and commit nothing.
	replaying bool
	// committedNext is the position last committed to the log; -1 before.
	committedNext int64
	// holdsSlot: the partition holds one of the aggregator's worker slots.
	holdsSlot bool
	// unpublished are rows whose publication a stop interrupted; they go
	// out with the next publication, which alone advances publishedNext.
	unpublished []analytics.Row

	// Owned by the partition's goroutine.
	meta
	publishedNext int64 // state of offsets before it is in the analytics store
	windows       map[winKey]*window
	dirty         []*window
	ips           map[ipKey]uint32     // minutes ≥ stored.ipHot
	coldIPs       map[ipKey]uint32     // counters of earlier minutes, of the buckets in coldLoaded
	coldLoaded    map[ipBucketRef]bool // true: changed since the last flush
	fps           *fpset.Set           // minutes ≥ cut.dedupHot
	pend          map[dedupKey][]byte
	cut           cutoffs // as of maxTS
	stored        cutoffs // as applied to the store and memory at the last flush
	firstRecv     time.Time
	processed     bool // since the last flush
	lastFlush     time.Time
	lastLogCommit time.Time
	keyBuf        []byte
	uaCache       map[string]bool
	pendKeys      []dedupKey

	mu  sync.Mutex
	pub published
}

func (p *partition) snapshot() published {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pub
}

func (p *partition) finalWatermark(now time.Time) (time.Time, bool) {
	pub := p.snapshot()
	if !pub.hasMax {
		return time.Time{}, false
	}
	lateness := p.a.cfg.AllowedLateness
	wm := time.UnixMilli(pub.maxTS).UTC().Add(-lateness)
	if now.Sub(pub.activeAt) >= p.a.cfg.IdleTimeout {
		if _, end, err := p.a.log.Offsets(context.Background(), clicks.Topic, p.id); err == nil && end == pub.next {
			if idle := now.UTC().Add(-lateness); idle.After(wm) {
				wm = idle
			}
		}
	}
	return wm, true
}

func (p *partition) computeCutoffs() cutoffs {
	if !p.hasMax {
		return cutoffs{}
	}
	cfg := &p.a.cfg
	w := p.maxTS - cfg.AllowedLateness.Milliseconds()
	lh, h := cfg.LateHorizon.Milliseconds(), cfg.DedupHorizon.Milliseconds()
	return cutoffs{
		window:    minuteOf(w - lh),
		dedupCold: minuteOf(w - lh - h),
		dedupHot:  minuteOf(w - h),
		ipHot:     max(minuteOf(w), 1) - 1,
	}
}

// loadPartition reads a partition's committed state.
func (a *Aggregator) loadPartition(id int32) (*partition, error) {
	p := &partition{
		a: a, id: id,
		windows:    map[winKey]*window{},
		ips:        map[ipKey]uint32{},
		coldIPs:    map[ipKey]uint32{},
		coldLoaded: map[ipBucketRef]bool{},
		pend:       map[dedupKey][]byte{},
		uaCache:    map[string]bool{},
	}
	p.publishedNext = -1
	p.committedNext = -1
	if v, closer, err := a.db.Get(partKey(kindMeta, id)); err == nil {
		p.meta, err = decodeMeta(v)
		closer.Close()
		if err != nil {
			return nil, err
		}
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return nil, err
	}
	if v, closer, err := a.db.Get(partKey(kindPublished, id)); err == nil {
		var m meta
		m, err = decodeMeta(v)
		closer.Close()
		if err != nil {
			return nil, err
		}
		p.publishedNext = m.next
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return nil, err
	}
	p.cut = p.computeCutoffs()
	p.stored = p.cut
	scan := func(kind byte, from uint32, fn func(k, v []byte) error) error {
		it, err := a.db.NewIter(&pebble.IterOptions{LowerBound: minuteKey(kind, id, from), UpperBound: partKey(kind, id+1)})
		if err != nil {
			return err
		}
		for ok := it.First(); ok; ok = it.Next() {
			if err := fn(it.Key(), it.Value()); err != nil {
				it.Close()
				return err
			}
		}
		if err := it.Error(); err != nil {
			it.Close()
			return err
		}
		return it.Close()
	}
	err := scan(kindWindow, p.cut.window, func(k, v []byte) error {
		wk, ok := parseWindowKey(k)
		if !ok {
			return errCorrupt
		}
		w := &window{key: wk}
		if err := w.decode(v); err != nil {
			return err
		}
		p.windows[wk] = w
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("windows: %w", err)
	}
	// Store order is fingerprint order: inserted one by one into a growing
	// set, sorted fingerprints would pile into one cluster. Collect, then
	// insert into a set sized for them.
	var hot []dedupKey
	err = scan(kindDedup, min(p.cut.dedupHot, p.cut.ipHot), func(k, v []byte) error {
		if len(k) != 17 {
			return errCorrupt
		}
		dk := dedupKey{minute: be32(k[5:]), fp: be64(k[9:])}
		if dk.minute >= p.cut.dedupHot {
			hot = append(hot, dk)
		}
		if dk.minute < p.cut.ipHot {
			return nil
		}
		// The ip counters of the minutes in memory: counted clicks with an ip
		// that are not bots.
		return forEachEntry(v, func(e *entry) bool {
			if e.ip.IsValid() && !e.bot {
				p.ips[ipKey{ad: string(e.ad), ip: e.ip, minute: dk.minute}]++
			}
			return true
		})
	})
	if err != nil {
		return nil, fmt.Errorf("deduplication entries: %w", err)
	}
	p.fps = fpset.New(len(hot))
	for _, dk := range hot {
		p.fps.Insert(dk.fp, dk.minute)
	}
	// Until run has republished an unpublished commit, only what was published
	// is reported as queryable.
	p.pub = published{next: max(min(p.publishedNext, p.next), 0), hasMax: p.hasMax, maxTS: p.maxTS, dedupKeys: p.fps.Len(), dedupBytes: p.fps.Bytes()}
	return p, nil
}

// run processes the partition until ctx is done.
func (p *partition) run(ctx context.Context) error {
	cfg := &p.a.cfg
	// The last commit's windows may not have reached the analytics store.
	if err := p.republish(ctx); err != nil {
		return err
	}
	start, _, err := p.a.log.Offsets(ctx, clicks.Topic, p.id)
	if err != nil {
		return err
	}
	if p.next < start {
		// The state store is younger than the log (it was removed): what was
		// retained is all that can be counted again.
		p.a.logger.Warn("aggregator state starts before the log; reprocessing what the log retains",
			"partition", p.id, "state_offset", p.next, "log_start_offset", start)
		p.next = start
	}
	p.lastFlush = cfg.Now()
	for {
		fctx, cancel := ctx, context.CancelFunc(func() {})
		if p.processed || len(p.dirty) > 0 || p.positionDue() {
			fctx, cancel = context.WithDeadline(ctx, p.lastFlush.Add(cfg.FlushInterval))
		}
		recs, err := p.a.log.Fetch(fctx, clicks.Topic, p.id, p.next, cfg.FetchMax)
		cancel()
		switch {
		case ctx.Err() != nil:
			// Commit what was processed so a restart starts from there.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if ferr := p.flush(fctx); ferr != nil {
				return ferr
			}
			// A flush that ctx interrupted committed windows it did not publish.
			if ferr := p.republish(fctx); ferr != nil {
				return ferr
			}
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
		case err != nil:
			return fmt.Errorf("partition %d: read the log at %d: %w", p.id, p.next, err)
		}
		if err := p.step(ctx, recs); err != nil {
			if ctx.Err() != nil {
				continue // stop as above
			}
			return err
		}
	}
}

// republish publishes every window in memory if the state committed last
// has not all reached the analytics store.
func (p *partition) republish(ctx context.Context) error {
	if p.publishedNext == p.next && len(p.unpublished) == 0 {
		return nil
	}
	rows := make([]analytics.Row, 0, len(p.windows))
	for _, w := range p.windows {
		rows = append(rows, w.row())
	}
	if err := p.publish(ctx, rows); err != nil {
		return err
	}
	p.mu.Lock()
	p.pub.next = p.next
	p.mu.Unlock()
	return nil
}

// step processes recs and flushes when the flush interval has passed, holding
// one of the aggregator's worker slots.
func (p *partition) step(ctx context.Context, recs []eventlog.Record) error {
	select {
	case p.a.sem <- struct{}{}:
	case <-ctx.Done():
		return nil // run flushes on its way out
	}
	p.holdsSlot = true
	defer p.releaseSlot()
	for i := range recs {
		if err := p.process(&recs[i]); err != nil {
			return fmt.Errorf("partition %d offset %d: %w", p.id, recs[i].Offset, err)
		}
	}
	if len(recs) > 0 {
		p.next = recs[len(recs)-1].Offset + 1
		p.processed = true
	}
	if p.a.cfg.Now().Sub(p.lastFlush) >= p.a.cfg.FlushInterval {
		return p.flush(ctx)
	}
	return nil
}

// releaseSlot gives back the worker slot step took, if still held.
func (p *partition) releaseSlot() {
	if p.holdsSlot {
		p.holdsSlot = false
		<-p.a.sem
	}
}

// process applies the rules to one record.
func (p *partition) process(rec *eventlog.Record) error {
	c, err := clicks.Decode(rec.Value)
	if err != nil {
		p.a.m.verdicts.malformed.Inc()
		p.a.logger.Warn("skipping a malformed click record", "partition", p.id, "offset", rec.Offset, "err", err)
		return nil
	}
	if p.firstRecv.IsZero() {
		p.firstRecv = c.ReceivedAt
	}
	ts := c.Time.UnixMilli()
	if err := p.classify(&c, ts); err != nil {
		return err
	}
	if !p.hasMax || ts > p.maxTS {
		p.hasMax, p.maxTS = true, ts
		p.cut = p.computeCutoffs()
	}
	return nil
}

func (p *partition) classify(c *clicks.Click, ts int64) error {
	cfg := &p.a.cfg
	m := p.a.m.verdicts
	if p.hasMax && ts < p.maxTS-cfg.AllowedLateness.Milliseconds()-cfg.LateHorizon.Milliseconds() {
		m.tooLate.Inc()
		p.window(c.AdID, c.Country, minuteOf(p.maxTS)).late++
		return nil
	}
	own := minuteOf(ts)
	fp := fingerprint(c.AdID, c.ClickID)
	dup, existing, err := p.checkDup(c.AdID, c.ClickID, ts, fp)
	if err != nil {
		return err
	}
	if dup {
		m.duplicate.Inc()
		p.window(c.AdID, c.Country, own).dups++
		return nil
	}
	bot := p.isBot(c.UserAgent)
	p.pend[dedupKey{own, fp}] = appendEntry(existing, c.AdID, c.ClickID, ts, bot, c.IP)
	if own >= p.cut.dedupHot {
		p.fps.Insert(fp, own)
	}
	w := p.window(c.AdID, c.Country, own)
	if bot {
		m.bot.Inc()
		w.bot++
		return nil
	}
	if c.IP.IsValid() {
		n, err := p.countIP(ipKey{ad: c.AdID, ip: c.IP, minute: own})
		if err != nil {
			return err
		}
		if n > uint32(cfg.IPRateLimit) {
			m.ipRate.Inc()
			w.ipRate++
			return nil
		}
	}
	m.valid.Inc()
	w.clicks++
	return nil
}

func fingerprint(ad, click string) uint64 {
	var buf [2*clicks.MaxIDLen + 1]byte
	b := append(buf[:0], ad...)
	b = append(b, 0)
	b = append(b, click...)
	return xxhash.Sum64(b)
}

// isBot reports whether ua contains a bot substring. User agents repeat, so
// verdicts are cached per partition.
func (p *partition) isBot(ua string) bool {
	if ua == "" {
		return false
	}
	if bot, ok := p.uaCache[ua]; ok {
		return bot
	}
	lower := strings.ToLower(ua)
	bot := false
	for _, b := range p.a.bots {
		if strings.Contains(lower, b) {
			bot = true
			break
		}
	}
	if len(p.uaCache) >= uaCacheSize {
		clear(p.uaCache)
	}
	p.uaCache[ua] = bot
	return bot
}

const uaCacheSize = 8192

// checkDup reports whether (ad, click) was counted within the dedup horizon of
// ts. Otherwise it returns the deduplication value already stored under ts's
// minute and fp (a fingerprint collision), to which the click is appended.
func (p *partition) checkDup(ad, click string, ts int64, fp uint64) (dup bool, existing []byte, err error) {
	h := p.a.cfg.DedupHorizon.Milliseconds()
	lo, hi, own := minuteOf(ts-h), minuteOf(ts+h), minuteOf(ts)
	check := func(m uint32) (bool, error) {
		v, err := p.dedupValue(dedupKey{m, fp})
		if err != nil {
			return false, err
		}
		if m == own {
			existing = v
		}
		return matchEntry(v, ad, click, ts, h)
	}
	hot := p.cut.dedupHot
	if hi >= hot {
		p.fps.Match(fp, max(lo, hot), hi, func(m uint32) bool {
			dup, err = check(m)
			return !dup && err == nil
		})
		if dup || err != nil {
			return dup, nil, err
		}
	}
	for m := lo; m < hot && m <= hi; m++ {
		if dup, err = check(m); dup || err != nil {
			return dup, nil, err
		}
	}
	return false, existing, nil
}

// dedupValue returns the entries under k, pending or committed.
func (p *partition) dedupValue(k dedupKey) ([]byte, error) {
	if v, ok := p.pend[k]; ok {
		return v, nil
	}
	p.keyBuf = dedupStoreKey(p.keyBuf, p.id, k)
	v, closer, err := p.a.db.Get(p.keyBuf)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read deduplication state: %w", err)
	}
	v = append([]byte(nil), v...)
	return v, closer.Close()
}

type ipBucketRef struct {
	minute uint32
	bucket uint16
}

// countIP counts one more click toward k's rate limit and returns the count.
func (p *partition) countIP(k ipKey) (uint32, error) {
	if k.minute >= p.stored.ipHot {
		n := p.ips[k] + 1
		p.ips[k] = n
		return n, nil
	}
	// A late click: its minute's counters are in the store.
	ref := ipBucketRef{k.minute, ipBucketOf(k.ad, k.ip)}
	if _, ok := p.coldLoaded[ref]; !ok {
		p.keyBuf = ipBucketKey(p.keyBuf, p.id, ref.minute, ref.bucket)
		v, closer, err := p.a.db.Get(p.keyBuf)
		switch {
		case errors.Is(err, pebble.ErrNotFound):
		case err != nil:
			return 0, fmt.Errorf("read ip counters: %w", err)
		default:
			err = forEachIPCount(v, func(ad []byte, ip netip.Addr, n uint32) {
				p.coldIPs[ipKey{ad: string(ad), ip: ip, minute: ref.minute}] = n
			})
			closer.Close()
			if err != nil {
				return 0, fmt.Errorf("read ip counters: %w", err)
			}
		}
	}
	p.coldLoaded[ref] = true
	n := p.coldIPs[k] + 1
	p.coldIPs[k] = n
	return n, nil
}

// writeIPBuckets writes the counters of ips whose minute passes keep into
// their buckets.
func (p *partition) writeIPBuckets(b *pebble.Batch, ips map[ipKey]uint32, keep func(ipKey) bool) {
	buckets := map[ipBucketRef][]byte{}
	for k, n := range ips {
		if keep(k) {
			ref := ipBucketRef{k.minute, ipBucketOf(k.ad, k.ip)}
			buckets[ref] = appendIPCount(buckets[ref], k.ad, k.ip, n)
		}
	}
	var kb []byte
	for ref, v := range buckets {
		kb = ipBucketKey(kb, p.id, ref.minute, ref.bucket)
		b.Set(kb, v, nil)
	}
}

func (p *partition) window(ad, country string, m uint32) *window {
	k := winKey{ad, country, m}
	w := p.windows[k]
	if w == nil {
		w = &window{key: k}
		p.windows[k] = w
	}
	if !w.dirty {
		w.dirty = true
		p.dirty = append(p.dirty, w)
	}
	return w
}

// flush commits the partition's state and offset in one synced batch, drops
// state that can no longer change a result, and publishes the changed windows.
func (p *partition) flush(ctx context.Context) error {
	cfg := &p.a.cfg
	now := cfg.Now()
	if !p.processed && len(p.dirty) == 0 {
		p.lastFlush = now
		if p.positionDue() && now.Sub(p.lastLogCommit) >= cfg.LogCommitInterval {
			// Idle since the last commit of the position: commit the rest.
			if err := p.commitPosition(ctx); err != nil && ctx.Err() == nil {
				p.a.logger.Warn("commit aggregator position to the log", "partition", p.id, "err", err)
			}
			p.lastLogCommit = now
		}
		return nil
	}
	start := time.Now()
	b := p.a.db.NewBatch()
	defer b.Close()
	var kb []byte
	// In key order, memtable inserts are cheaper (neighbouring splices).
	p.pendKeys = p.pendKeys[:0]
	for k := range p.pend {
		p.pendKeys = append(p.pendKeys, k)
	}
	slices.SortFunc(p.pendKeys, func(x, y dedupKey) int {
		if c := cmp.Compare(x.minute, y.minute); c != 0 {
			return c
		}
		return cmp.Compare(x.fp, y.fp)
	})
	for _, k := range p.pendKeys {
		kb = dedupStoreKey(kb, p.id, k)
		b.Set(kb, p.pend[k], nil)
	}
	// Late clicks' counters, by whole bucket.
	p.writeIPBuckets(b, p.coldIPs, func(k ipKey) bool {
		return p.coldLoaded[ipBucketRef{k.minute, ipBucketOf(k.ad, k.ip)}]
	})
	rows := make([]analytics.Row, 0, len(p.dirty))
	var vb []byte
	for _, w := range p.dirty {
		kb = windowKey(kb, p.id, w.key)
		vb = w.encode(vb[:0])
		b.Set(kb, vb, nil)
		rows = append(rows, w.row())
		w.dirty = false
	}
	cut := p.cut
	if cut.ipHot > p.stored.ipHot {
		// Minutes leaving memory: their counters go to the store.
		p.writeIPBuckets(b, p.ips, func(k ipKey) bool { return k.minute < cut.ipHot && k.minute >= cut.window })
	}
	if cut.window > p.stored.window {
		b.DeleteRange(minuteKey(kindWindow, p.id, 0), minuteKey(kindWindow, p.id, cut.window), nil)
		b.DeleteRange(minuteKey(kindIP, p.id, 0), minuteKey(kindIP, p.id, cut.window), nil)
	}
	if cut.dedupCold > p.stored.dedupCold {
		b.DeleteRange(minuteKey(kindDedup, p.id, 0), minuteKey(kindDedup, p.id, cut.dedupCold), nil)
	}
	b.Set(partKey(kindMeta, p.id), p.meta.encode(), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("partition %d: commit state: %w", p.id, err)
	}
	p.a.m.commit.Observe(time.Since(start).Seconds())
	clear(p.pend)
	clear(p.coldIPs)
	clear(p.coldLoaded)
	clear(p.dirty)
	p.dirty = p.dirty[:0]

	// Drop from memory what the store now answers for, or what can no longer matter.
	if cut.window > p.stored.window {
		for k := range p.windows {
			if k.minute < cut.window {
				delete(p.windows, k)
			}
		}
	}
	if cut.ipHot > p.stored.ipHot {
		for k := range p.ips {
			if k.minute < cut.ipHot {
				delete(p.ips, k)
			}
		}
	}
	if cut.dedupHot > p.stored.dedupHot {
		p.fps.Expire(cut.dedupHot)
	}
	p.stored = cut

	// Publishing waits on the analytics store (ClickHouse batches a second's
	// upserts into one INSERT): no CPU, so the worker slot goes to another
	// partition meanwhile.
	p.releaseSlot()
	if err := p.publish(ctx, rows); err != nil {
		return err
	}
	if !p.firstRecv.IsZero() {
		p.a.m.visible.Observe(cfg.Now().Sub(p.firstRecv).Seconds())
		p.firstRecv = time.Time{}
	}
	p.mu.Lock()
	p.pub.next, p.pub.hasMax, p.pub.maxTS = p.next, p.hasMax, p.maxTS
	if p.processed {
		p.pub.activeAt = now
	}
	p.pub.dedupKeys, p.pub.dedupBytes = p.fps.Len(), p.fps.Bytes()
	p.mu.Unlock()
	p.processed = false
	// The next flush is due FlushInterval after this one ended: when the
	// store is slow to take a publication (ClickHouse batches a second of
	// them), the partition goes on processing between flushes instead of
	// flushing after every fetch.
	p.lastFlush = cfg.Now()

	if now.Sub(p.lastLogCommit) >= cfg.LogCommitInterval {
		// Failing here only delays retention (and, in a group, lengthens the
		// replay of the partition's next owner).
		if err := p.commitPosition(ctx); err != nil && ctx.Err() == nil {
			p.a.logger.Warn("commit aggregator position to the log", "partition", p.id, "err", err)
		}
		p.lastLogCommit = now
	}
	return nil
}

// commitPosition stores the partition's position in the log's consumer
// group, which lets retention pass what is processed. In a group it carries
// the epoch and the largest event time, for the partition's next owner.
func (p *partition) commitPosition(ctx context.Context) error {
	if p.replaying {
		return nil
	}
	var err error
	if m := p.a.cfg.Membership; m != nil {
		err = m.Commit(ctx, p.id, p.next, position{epoch: p.epoch, hasMax: p.hasMax, maxTS: p.maxTS}.String())
	} else {
		err = p.a.log.CommitOffset(ctx, p.a.cfg.Group, clicks.Topic, p.id, p.next)
	}
	if err == nil {
		p.committedNext = p.next
	}
	return err
}

// positionDue reports whether the log lacks the partition's position.
func (p *partition) positionDue() bool { return !p.replaying && p.committedNext != p.next }

// publish upserts rows to the analytics store, retrying until it succeeds or
// ctx is done: the state is committed, so the rows must reach the store.
func (p *partition) publish(ctx context.Context, rows []analytics.Row) error {
	if p.replaying {
		return nil
	}
	// Rows a stop interrupted go first: until they are in, the store is not
	// up to date with any later position.
	if len(p.unpublished) > 0 {
		rows = append(p.unpublished, rows...)
	}
	if len(rows) > 0 {
		start := time.Now()
		for attempt := 0; ; attempt++ {
			var err error
			if p.epoch > 0 && p.a.fenced != nil {
				err = p.a.fenced.UpsertEpoch(ctx, p.epoch, rows)
			} else {
				err = p.a.store.Upsert(ctx, rows)
			}
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				p.unpublished = rows
				return ctx.Err()
			}
			p.a.m.publishErrors.Inc()
			p.a.logger.Error("publish window totals; retrying", "partition", p.id, "rows", len(rows), "attempt", attempt+1, "err", err)
			t := time.NewTimer(min(100*time.Millisecond<<min(attempt, 6), 5*time.Second))
			select {
			case <-ctx.Done():
				t.Stop()
				p.unpublished = rows
				return ctx.Err()
			case <-t.C:
			}
		}
		p.a.m.publish.Observe(time.Since(start).Seconds())
	}
	p.unpublished = nil
	p.publishedNext = p.next
	// Not synced: if it is lost, the next start publishes the windows again.
	if err := p.a.db.Set(partKey(kindPublished, p.id), meta{next: p.next}.encode(), pebble.NoSync); err != nil {
		return fmt.Errorf("partition %d: record publication: %w", p.id, err)
	}
	return nil
}
