// Package embedstore is the embedded implementation of analytics.Store: every
// row is held in memory, in one column block per minute that queries scan,
// and persisted in a Pebble database that Open reads back into memory.
//
// Upsert writes its rows to Pebble as one batch and waits for the WAL sync
// before it applies them to memory and returns, so a returned Upsert survives
// a crash, and readers see a call's rows all at once, and only once they are
// durable. Upserts are serialized (one sync each); queries run concurrently
// with each other and wait only for the in-memory apply of an upsert.
//
// Memory bounds the store: about 46 bytes a row, plus the ad id's length and
// about 30 bytes per distinct ad id, plus 8 bytes per ad id for each Top call
// running (docs/analytics-engine.md has the measurements). DeleteBefore drops
// old minutes from memory and disk: call it on a schedule to bound both.
//
// A *Store is safe for concurrent use.
package embedstore

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/pebbleslog"
)

// Config tunes a Store. The zero value is usable.
type Config struct {
	// FS is the file system; nil means the operating system's.
	FS vfs.FS
	// Fatal is called when the store fails in a way that could lose
	// acknowledged writes if the process went on (a failed WAL sync, an error
	// Pebble reports as fatal). It must not return. Nil logs and exits the
	// process with status 70, like the event log: a supervisor restarts it and
	// the store recovers what is durable. Tests set it to panic.
	Fatal func(msg string)
}

// Store is the embedded analytics store. Open one per directory.
type Store struct {
	db     *pebble.DB
	cfg    Config
	logger *slog.Logger

	// Lock order: wmu, then mu. Writers (Upsert, DeleteBefore, Close) hold wmu
	// throughout, so under wmu alone the table can be read; they change it only
	// while also holding mu.
	wmu    sync.Mutex
	mu     sync.RWMutex
	t      *table
	closed bool

	encs sync.Pool // *encoded, for Upsert
	tops sync.Pool // *topScratch
}

var _ analytics.Store = (*Store)(nil)

// Open opens (creating if needed) the store in dir and reads every row into
// memory. logger may be nil.
func Open(dir string, cfg Config, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.Fatal = pebbleslog.FailStop(cfg.Fatal, logger, "analytics store")
	opts := &pebble.Options{
		FS:                 cfg.FS,
		Logger:             pebbleslog.Logger{L: logger, Fatal: cfg.Fatal},
		FormatMajorVersion: pebble.FormatNewest,
		MemTableSize:       32 << 20,
	}
	start := time.Now()
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open analytics store in %s: %w", dir, err)
	}
	s := &Store{db: db, cfg: cfg, logger: logger, t: newTable()}
	if err := s.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open analytics store in %s: %w", dir, err)
	}
	logger.Info("analytics store open", "dir", dir, "rows", s.t.rows, "ads", s.t.ads.live,
		"minutes", len(s.t.blocks), "duration", time.Since(start))
	return s, nil
}

// load reads every row from Pebble into memory. Keys come in minute order, so
// each block is complete, and sorted once, when the next one starts.
func (s *Store) load() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindRow}, UpperBound: []byte{kindRow + 1}})
	if err != nil {
		return err
	}
	var cur *block
	for it.First(); it.Valid(); it.Next() {
		m, ad, country, err := parseRowKey(it.Key())
		if err != nil {
			it.Close()
			return fmt.Errorf("key %q: %w", it.Key(), err)
		}
		v, err := parseTotals(it.Value())
		if err != nil {
			it.Close()
			return fmt.Errorf("value of key %q: %w", it.Key(), err)
		}
		if _, ok := s.t.countryIDs[string(country)]; !ok && len(s.t.countryNames) == 1<<16 {
			it.Close()
			return fmt.Errorf("key %q: more than %d countries", it.Key(), 1<<16)
		}
		if b := s.t.loadRow(ad, country, m, v); b != cur {
			if cur != nil {
				s.t.replace(cur.merged())
			}
			cur = b
		}
	}
	if cur != nil {
		s.t.replace(cur.merged())
	}
	return it.Close()
}

// encoded is the rows of an Upsert as Pebble keys and values, in buf.
type encoded struct {
	buf  []byte
	rows []encRow
}

type encRow struct {
	start, key, end int // key: buf[start:start+key], value: up to end
	i               int // index in the call
}

func (e *encoded) keyOf(r encRow) []byte { return e.buf[r.start : r.start+r.key] }

func (s *Store) releaseEncoded(e *encoded) {
	if cap(e.buf) > 4<<20 {
		return
	}
	e.buf, e.rows = e.buf[:0], e.rows[:0]
	s.encs.Put(e)
}

// Upsert implements analytics.Store. It returns once the rows are durable.
// Rows must have an ad id, a Start on a whole minute and no negative total;
// otherwise nothing is written.
func (s *Store) Upsert(ctx context.Context, rows []analytics.Row) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for i, r := range rows {
		if err := validate(r); err != nil {
			return fmt.Errorf("upsert row %d: %w", i, err)
		}
	}
	if len(rows) == 0 {
		return nil
	}
	// Set the keys in key order: Pebble's memtable inserts sorted keys faster.
	// Keys of one call that are equal keep their order, so the last one wins.
	enc, _ := s.encs.Get().(*encoded)
	if enc == nil {
		enc = new(encoded)
	}
	defer s.releaseEncoded(enc)
	for i, r := range rows {
		start := len(enc.buf)
		enc.buf = rowKey(enc.buf, r.Start.Unix()/60, r.AdID, r.Country)
		keyEnd := len(enc.buf)
		enc.buf = appendTotals(enc.buf, totalsOf(r))
		enc.rows = append(enc.rows, encRow{start: start, key: keyEnd - start, end: len(enc.buf), i: i})
	}
	slices.SortFunc(enc.rows, func(x, y encRow) int {
		return cmp.Or(bytes.Compare(enc.keyOf(x), enc.keyOf(y)), cmp.Compare(x.i, y.i))
	})
	b := s.db.NewBatch()
	defer b.Close()
	for _, e := range enc.rows {
		if err := b.Set(enc.keyOf(e), enc.buf[e.start+e.key:e.end], nil); err != nil {
			return fmt.Errorf("upsert: %w", err)
		}
	}

	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return analytics.ErrClosed
	}
	if err := s.checkCountries(rows); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		// The batch may or may not survive a crash, and Pebble fails every
		// later sync: stop, a restart recovers what is durable.
		s.cfg.Fatal("analytics store commit failed: " + err.Error())
		return fmt.Errorf("upsert: %w", err)
	}
	var merge []*block
	s.mu.Lock()
	for _, r := range rows {
		b := s.t.set(r.AdID, r.Country, r.Start.Unix()/60, totalsOf(r))
		if s.t.needsMerge(b) && !slices.Contains(merge, b) {
			merge = append(merge, b)
		}
	}
	s.mu.Unlock()
	// Merge deltas outside mu: only writers change blocks, and this one holds
	// wmu, so readers go on with the old copy until the swap.
	for _, b := range merge {
		nb := b.merged()
		s.mu.Lock()
		s.t.replace(nb)
		s.mu.Unlock()
	}
	return nil
}

// checkCountries fails if rows would number more countries than the table
// can. Callers hold wmu.
func (s *Store) checkCountries(rows []analytics.Row) error {
	var added map[string]bool
	for _, r := range rows {
		if _, ok := s.t.countryID(r.Country); !ok {
			if added == nil {
				added = map[string]bool{}
			}
			added[r.Country] = true
		}
	}
	if len(s.t.countryNames)+len(added) > 1<<16 {
		return fmt.Errorf("upsert: more than %d distinct countries", 1<<16)
	}
	return nil
}

func totalsOf(r analytics.Row) totals {
	return totals{r.Clicks, r.Bot, r.IPRate, r.Duplicates, r.TooLate}
}

func validate(r analytics.Row) error {
	switch {
	case r.AdID == "" || len(r.AdID) > maxNameLen:
		return fmt.Errorf("ad id of %d bytes", len(r.AdID))
	case r.Start.IsZero() || r.Start.Unix()%60 != 0 || r.Start.Nanosecond() != 0:
		return fmt.Errorf("start %v is not a whole minute", r.Start)
	case r.Clicks < 0 || r.Bot < 0 || r.IPRate < 0 || r.Duplicates < 0 || r.TooLate < 0:
		return fmt.Errorf("negative total in %+v", r)
	}
	return nil
}

// minuteRange returns the minutes [lo, hi) whose start is in [from, to).
func minuteRange(from, to time.Time) (lo, hi int64) {
	return ceilMinute(from), ceilMinute(to)
}

func ceilMinute(t time.Time) int64 {
	s := t.Unix()
	m := floorDiv(s, 60)
	if s-m*60 > 0 || t.Nanosecond() > 0 {
		m++
	}
	return m
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// rlock takes the read lock unless the store is closed.
func (s *Store) rlock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return analytics.ErrClosed
	}
	return nil
}

// Series implements analytics.Store. The granularity must be a whole number
// of minutes that divides a day.
func (s *Store) Series(ctx context.Context, adID, country string, from, to time.Time, g analytics.Granularity) ([]analytics.Point, error) {
	d := time.Duration(g)
	if d <= 0 || d%time.Minute != 0 || (24*time.Hour)%d != 0 {
		return nil, fmt.Errorf("series: granularity %v does not divide a day in whole minutes", d)
	}
	gm := int64(d / time.Minute)
	if err := s.rlock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	out := []analytics.Point{}
	id, ok := s.t.ads.lookup(adID)
	if !ok {
		return out, nil
	}
	cid, ok := s.t.countryID(country)
	if !ok && country != "" {
		return out, nil
	}
	lo, hi := minuteRange(from, to)
	bucket, cur := int64(0), -1
	for _, b := range s.t.blockRange(lo, hi) {
		b.eachRow(id, func(i int) {
			if country != "" && b.country[i] != cid {
				return
			}
			if bk := floorDiv(b.minute, gm) * gm; cur < 0 || bk != bucket {
				bucket = bk
				out = append(out, analytics.Point{Start: time.Unix(bk*60, 0).UTC()})
				cur = len(out) - 1
			}
			out[cur].Clicks += b.clicks[i]
			out[cur].Invalid += b.other[i][0] + b.other[i][1]
		})
	}
	return out, nil
}

// Quality implements analytics.Store.
func (s *Store) Quality(ctx context.Context, adID string, from, to time.Time) (analytics.Quality, error) {
	if err := s.rlock(ctx); err != nil {
		return analytics.Quality{}, err
	}
	defer s.mu.RUnlock()
	lo, hi := minuteRange(from, to)
	var sum totals
	if adID == "" {
		for _, b := range s.t.blockRange(lo, hi) {
			for k := range sum {
				sum[k] += b.sum[k]
			}
		}
	} else if id, ok := s.t.ads.lookup(adID); ok {
		for _, b := range s.t.blockRange(lo, hi) {
			b.eachRow(id, func(i int) {
				for k, x := range b.totals(i) {
					sum[k] += x
				}
			})
		}
	}
	return analytics.Quality{Valid: sum[0], Bot: sum[1], IPRate: sum[2], Duplicates: sum[3], TooLate: sum[4]}, nil
}

// topScratch is the memory of one Top call, pooled: acc, indexed by ad
// number, is all zero between calls.
type topScratch struct {
	acc     []int64
	touched []uint32
}

// Top implements analytics.Store.
func (s *Store) Top(ctx context.Context, country string, from, to time.Time, limit int) ([]analytics.AdClicks, error) {
	if err := s.rlock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	out := []analytics.AdClicks{}
	cid, ok := s.t.countryID(country)
	if limit <= 0 || (!ok && country != "") {
		return out, nil
	}
	lo, hi := minuteRange(from, to)
	blocks := s.t.blockRange(lo, hi)
	if len(blocks) == 0 {
		return out, nil
	}

	// Sum each ad's clicks in an array indexed by ad number. When the blocks
	// hold many rows for the ads there are, sum blindly and scan the whole
	// array for the best; otherwise list the ads touched, to select from and to
	// zero the array again. In a sorted block the array is walked forwards.
	n := s.t.ads.len()
	sc, _ := s.tops.Get().(*topScratch)
	if sc == nil {
		sc = &topScratch{}
	}
	if len(sc.acc) < n {
		sc.acc = make([]int64, n+n/4)
	}
	acc := sc.acc[:n]
	rows := 0
	for _, b := range blocks {
		rows += len(b.ad)
	}
	dense := rows >= n/4
	var touched []uint32
	if !dense {
		touched = sc.touched[:0]
	}
	defer func() {
		if dense {
			clear(acc)
		} else {
			for _, id := range touched {
				acc[id] = 0
			}
		}
		if cap(touched) <= 1<<20 {
			sc.touched = touched[:0]
			s.tops.Put(sc)
		}
	}()
	for _, b := range blocks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ads, clicks := b.ad, b.clicks[:len(b.ad)]
		switch {
		case dense && country == "":
			for i, id := range ads {
				acc[id] += clicks[i]
			}
		case dense:
			cs := b.country[:len(ads)]
			for i, id := range ads {
				c := clicks[i]
				if cs[i] != cid {
					c = 0 // a conditional move, not a branch the CPU mispredicts
				}
				acc[id] += c
			}
		default:
			cs := b.country[:len(ads)]
			for i, id := range ads {
				if c := clicks[i]; c > 0 && (country == "" || cs[i] == cid) {
					if acc[id] == 0 {
						touched = append(touched, id)
					}
					acc[id] += c
				}
			}
		}
	}
	return s.selectTop(out, acc, touched, dense, limit), nil
}

// selectTop appends to out, best first, the limit best ads with clicks in
// acc: of touched or, if all, of every ad number. It keeps the best so far in
// a min-heap (the worst of them on top).
func (s *Store) selectTop(out []analytics.AdClicks, acc []int64, touched []uint32, all bool, limit int) []analytics.AdClicks {
	ads := &s.t.ads
	// better orders by clicks descending, then ad id ascending.
	better := func(a, b uint32) bool {
		if acc[a] != acc[b] {
			return acc[a] > acc[b]
		}
		return ads.less(a, b)
	}
	h := make([]uint32, 0, min(limit, len(acc)))
	down := func(i int) {
		for {
			w, l, r := i, 2*i+1, 2*i+2
			if l < len(h) && better(h[w], h[l]) {
				w = l
			}
			if r < len(h) && better(h[w], h[r]) {
				w = r
			}
			if w == i {
				return
			}
			h[i], h[w] = h[w], h[i]
			i = w
		}
	}
	consider := func(id uint32) {
		if len(h) < limit {
			h = append(h, id)
			for i := len(h) - 1; i > 0 && better(h[(i-1)/2], h[i]); i = (i - 1) / 2 {
				h[i], h[(i-1)/2] = h[(i-1)/2], h[i]
			}
		} else if better(id, h[0]) {
			h[0] = id
			down(0)
		}
	}
	if all {
		for id, c := range acc {
			// Most ads have fewer clicks than the worst kept: skip them cheaply.
			if c > 0 && (len(h) < limit || c >= acc[h[0]]) {
				consider(uint32(id))
			}
		}
	} else {
		for _, id := range touched {
			consider(id)
		}
	}
	slices.SortFunc(h, func(a, b uint32) int {
		if better(a, b) {
			return -1
		}
		return 1
	})
	for _, id := range h {
		out = append(out, analytics.AdClicks{AdID: ads.name(id), Clicks: acc[id]})
	}
	return out
}

// DeleteBefore deletes the rows whose Start is before cutoff, from memory and
// disk, and returns how many there were. It costs one range deletion on disk
// and a pass over the deleted rows in memory.
func (s *Store) DeleteBefore(ctx context.Context, cutoff time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return 0, analytics.ErrClosed
	}
	if len(s.t.blocks) == 0 {
		return 0, nil
	}
	m := ceilMinute(cutoff)
	if first := s.t.blocks[0].minute; first >= m {
		return 0, nil
	}
	if err := s.db.DeleteRange([]byte{kindRow}, minuteKey(nil, m), pebble.Sync); err != nil {
		s.cfg.Fatal("analytics store range deletion failed: " + err.Error())
		return 0, fmt.Errorf("delete before %v: %w", cutoff, err)
	}
	s.mu.Lock()
	n := s.t.deleteBefore(m)
	s.mu.Unlock()
	return n, nil
}

// Close waits for running calls, makes later ones fail with ErrClosed and
// closes the database.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.t = newTable() // let the rows be collected
	s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close analytics store: %w", err)
	}
	return nil
}
