package aggregate

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/pebbleslog"
)

// RecountProgress reports a recount's progress in records of the log.
type RecountProgress struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
}

// WindowDiff is a window whose stored totals differ from the recount's:
// an ad's minute summed over countries (Valid holds its clicks and Bot all
// its invalid clicks), or, with Start zero, the ad's quality figures over
// the whole range.
type WindowDiff struct {
	AdID          string
	Start         time.Time // zero: the ad's quality figures
	Stored, Count analytics.Quality
}

// RecountResult is the outcome of a recount.
type RecountResult struct {
	From, To   time.Time // To may be earlier than asked: windows still open are left out
	Partitions int
	Records    int64 // read from the log
	Windows    int   // (ad, country, minute) windows recounted in [From, To)
	Ads        int
	Diffs      []WindowDiff
	Replaced   int // windows written to the store (with apply)
}

// Recount recomputes the totals of the windows in [from, to) from the log,
// through the same aggregation code, and compares them with the analytics
// store: every ad's minutes (summed over countries) and every ad's quality
// figures. With apply, it then writes the recomputed totals to the store,
// replacing what it holds (a Kappa-style replay).
//
// It reads the partitions this aggregator owns, each from its log start
// offset to its end offset at the call, into scratch state in a temporary
// directory: live processing goes on undisturbed. Only windows that are
// final at that end (older than AllowedLateness + LateHorizon before the
// partition's newest event) are compared and written; To is moved back to
// exclude open ones. Before comparing, Recount waits (until ctx is done)
// for live processing to reach the same end offsets, so that the store
// holds what the live aggregator computed from the same records.
func (a *Aggregator) Recount(ctx context.Context, from, to time.Time, apply bool, progress func(RecountProgress)) (RecountResult, error) {
	from, to = from.UTC().Truncate(time.Minute), to.UTC()
	if !to.After(from) {
		return RecountResult{}, fmt.Errorf("recount: empty range [%v, %v)", from, to)
	}
	if progress == nil {
		progress = func(RecountProgress) {}
	}
	parts := a.owned()
	type span struct {
		p          *partition
		start, end int64
	}
	var spans []span
	var total int64
	res := RecountResult{From: from, To: to}
	for _, p := range parts {
		start, end, err := a.log.Offsets(ctx, clicks.Topic, p.id)
		if err != nil {
			return RecountResult{}, err
		}
		if start > 0 && start < end {
			// Retention removed the partition's first records: windows are
			// exact only from a replay margin after the oldest one left.
			recs, err := a.log.Fetch(ctx, clicks.Topic, p.id, start, 1)
			if err != nil {
				return RecountResult{}, err
			}
			if len(recs) > 0 {
				if exact := recs[0].Timestamp.Add(a.replayMargin()).UTC().Truncate(time.Minute).Add(time.Minute); exact.After(res.From) {
					res.From = exact
				}
			}
		}
		spans = append(spans, span{p, start, end})
		total += end - start
	}
	res.Partitions = len(spans)
	dir, err := os.MkdirTemp("", "pedal-recount-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	counted := &windowSink{rows: map[winKey]analytics.Row{}}
	var done int64
	// Each partition's windows are final up to its own horizon; a partition
	// without clicks has none to compare and sets no bound.
	finals := map[int32]time.Time{}
	n := int32(len(a.byID))
	asked := res.To
	horizon := func(ad string) time.Time {
		if f, ok := finals[eventlog.PartitionForString(ad, n)]; ok && f.Before(asked) {
			return f
		}
		return asked
	}
	covered := time.Time{}
	for i, s := range spans {
		final, hasClicks, cnt, err := a.recountPartition(ctx, fmt.Sprintf("%s/%d", dir, i), s.p.id, s.start, s.end, counted, func(n int64) {
			progress(RecountProgress{Done: done + n, Total: total})
		})
		if err != nil {
			return res, fmt.Errorf("recount partition %d: %w", s.p.id, err)
		}
		done += cnt
		res.Records += cnt
		if hasClicks {
			finals[s.p.id] = final
			if covered.IsZero() || final.Before(covered) {
				covered = final
			}
		}
	}
	progress(RecountProgress{Done: done, Total: total})
	// To reports the earliest horizon: every partition is covered up to it.
	if !covered.IsZero() && covered.Before(res.To) {
		res.To = covered
		if res.To.Before(res.From) {
			res.To = res.From
		}
	}
	latest := res.From
	for _, f := range finals {
		if f.After(latest) {
			latest = f
		}
	}
	if latest.After(asked) {
		latest = asked
	}
	// Live processing must have reached the same records.
	for _, s := range spans {
		for s.p.snapshot().next < s.end {
			select {
			case <-ctx.Done():
				return res, fmt.Errorf("recount: waiting for partition %d to reach offset %d: %w", s.p.id, s.end, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	rows := counted.in(res.From, horizon)
	res.Windows = len(rows)
	if res.Diffs, res.Ads, err = compareStored(ctx, a.store, rows, res.From, latest, horizon); err != nil {
		return res, err
	}
	if apply && len(rows) > 0 {
		byPart := map[*partition][]analytics.Row{}
		for _, r := range rows {
			for _, s := range spans {
				if eventlog.PartitionForString(r.AdID, int32(len(a.byID))) == s.p.id {
					byPart[s.p] = append(byPart[s.p], r)
				}
			}
		}
		for p, rs := range byPart {
			var err error
			if p.epoch > 0 && a.fenced != nil {
				err = a.fenced.UpsertEpoch(ctx, p.epoch, rs)
			} else {
				err = a.store.Upsert(ctx, rs)
			}
			if err != nil {
				return res, fmt.Errorf("recount: write the recomputed totals: %w", err)
			}
			res.Replaced += len(rs)
		}
	}
	return res, nil
}

// recountPartition aggregates records [start, end) of partition id into
// scratch state under dir, sending every window it writes to sink, and
// returns the time before which windows are final at end.
func (a *Aggregator) recountPartition(ctx context.Context, dir string, id int32, start, end int64, sink *windowSink, progress func(int64)) (final time.Time, hasClicks bool, records int64, err error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleslog.Logger{L: slog.New(slog.DiscardHandler), Fatal: func(msg string) { panic("recount scratch state: " + msg) }}})
	if err != nil {
		return time.Time{}, false, 0, err
	}
	defer db.Close()
	cfg := a.cfg
	cfg.Membership, cfg.Partitions = nil, nil
	scratch := &Aggregator{cfg: cfg, log: a.log, store: sink, db: db, logger: slog.New(slog.DiscardHandler), bots: a.bots, sem: make(chan struct{}, 1)}
	scratch.m = newMetrics(nil, scratch)
	p, err := scratch.loadPartition(id)
	if err != nil {
		return time.Time{}, false, 0, err
	}
	p.next, p.publishedNext = start, start
	p.lastFlush = cfg.Now()
	n, err := p.processUntil(ctx, end, progress)
	if err != nil {
		return time.Time{}, false, n, err
	}
	p.processed = true
	if err := p.flush(ctx); err != nil {
		return time.Time{}, false, n, err
	}
	if !p.hasMax {
		return time.Time{}, false, n, nil
	}
	return time.Unix(int64(p.computeCutoffs().window)*60, 0).UTC(), true, n, nil
}

// windowSink is the analytics store of a recount: it keeps the last totals
// written for each window.
type windowSink struct {
	mu   sync.Mutex
	rows map[winKey]analytics.Row
}

func (s *windowSink) Upsert(_ context.Context, rows []analytics.Row) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rows {
		s.rows[winKey{r.AdID, r.Country, uint32(r.Start.Unix() / 60)}] = r
	}
	return nil
}

// in returns the windows from from up to their ad's horizon with at least
// one click counted or refused, in (ad, start, country) order.
func (s *windowSink) in(from time.Time, horizon func(ad string) time.Time) []analytics.Row {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []analytics.Row
	for _, r := range s.rows {
		if !r.Start.Before(from) && r.Start.Before(horizon(r.AdID)) && r != (analytics.Row{AdID: r.AdID, Country: r.Country, Start: r.Start}) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(x, y analytics.Row) int {
		return cmp.Or(cmp.Compare(x.AdID, y.AdID), x.Start.Compare(y.Start), cmp.Compare(x.Country, y.Country))
	})
	return out
}

func (s *windowSink) Series(context.Context, string, string, time.Time, time.Time, analytics.Granularity) ([]analytics.Point, error) {
	return nil, errNotAStore
}
func (s *windowSink) Top(context.Context, string, time.Time, time.Time, int) ([]analytics.AdClicks, error) {
	return nil, errNotAStore
}
func (s *windowSink) Quality(context.Context, string, time.Time, time.Time) (analytics.Quality, error) {
	return analytics.Quality{}, errNotAStore
}
func (s *windowSink) Close() error { return nil }

var errNotAStore = fmt.Errorf("recount: the scratch store only collects windows")

// compareStored compares rows (sorted by ad) with the store: each ad's
// minutes summed over countries, and each ad's quality figures; and looks
// for ads the store has clicks for that the recount has not.
func compareStored(ctx context.Context, store analytics.Store, rows []analytics.Row, from, latest time.Time, horizon func(ad string) time.Time) ([]WindowDiff, int, error) {
	var diffs []WindowDiff
	ads := 0
	for i := 0; i < len(rows); {
		ad := rows[i].AdID
		j := i
		minutes := map[int64]*analytics.Quality{}
		var q analytics.Quality
		for ; j < len(rows) && rows[j].AdID == ad; j++ {
			r := rows[j]
			m := minutes[r.Start.Unix()]
			if m == nil {
				m = &analytics.Quality{}
				minutes[r.Start.Unix()] = m
			}
			m.Valid += r.Clicks
			m.Bot += r.Invalid()
			q.Valid += r.Clicks
			q.Bot += r.Bot
			q.IPRate += r.IPRate
			q.Duplicates += r.Duplicates
			q.TooLate += r.TooLate
		}
		i = j
		ads++
		to := horizon(ad)
		points, err := store.Series(ctx, ad, "", from, to, analytics.Minute)
		if err != nil {
			return nil, ads, err
		}
		stored := map[int64]analytics.Quality{}
		for _, pt := range points {
			stored[pt.Start.Unix()] = analytics.Quality{Valid: pt.Clicks, Bot: pt.Invalid}
		}
		for m, want := range minutes {
			if got := stored[m]; got != *want {
				diffs = append(diffs, WindowDiff{AdID: ad, Start: time.Unix(m, 0).UTC(), Stored: got, Count: *want})
			}
		}
		for m, got := range stored {
			if _, ok := minutes[m]; !ok && (got != analytics.Quality{}) {
				diffs = append(diffs, WindowDiff{AdID: ad, Start: time.Unix(m, 0).UTC(), Stored: got})
			}
		}
		sq, err := store.Quality(ctx, ad, from, to)
		if err != nil {
			return nil, ads, err
		}
		if sq != q {
			diffs = append(diffs, WindowDiff{AdID: ad, Stored: sq, Count: q})
		}
	}
	top, err := store.Top(ctx, "", from, latest, 1<<20)
	if err != nil {
		return nil, ads, err
	}
	for _, t := range top {
		if _, ok := slices.BinarySearchFunc(rows, t.AdID, func(r analytics.Row, ad string) int { return cmp.Compare(r.AdID, ad) }); !ok {
			sq, err := store.Quality(ctx, t.AdID, from, horizon(t.AdID))
			if err != nil {
				return nil, ads, err
			}
			if sq != (analytics.Quality{}) {
				diffs = append(diffs, WindowDiff{AdID: t.AdID, Stored: sq})
			}
		}
	}
	slices.SortFunc(diffs, func(x, y WindowDiff) int {
		return cmp.Or(cmp.Compare(x.AdID, y.AdID), x.Start.Compare(y.Start))
	})
	return diffs, ads, nil
}
