package embedstore

// Candidate (a) of the engine choice (docs/analytics-engine.md), Pebble alone,
// kept for one commit so that its figures can be reproduced.

import (
	"cmp"
	"context"
	"encoding/binary"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/analytics/analyticstest"
)

// pebbleOnly keeps each row twice: under 'a'|ad|minute|country for one ad's
// series and quality, and under 'm'|minute|ad|country for top and quality of
// all ads.
type pebbleOnly struct {
	db     *pebble.DB
	mu     sync.RWMutex
	closed bool
}

func openPebbleOnly(dir string) (*pebbleOnly, error) {
	db, err := pebble.Open(dir, &pebble.Options{FormatMajorVersion: pebble.FormatNewest, MemTableSize: 32 << 20,
		Logger: pebbleLogger{l: discardLogger(), fatal: func(s string) { panic(s) }}})
	if err != nil {
		return nil, err
	}
	return &pebbleOnly{db: db}, nil
}

func adKey(dst []byte, ad string, m int64) []byte {
	dst = append(dst, 'a')
	dst = binary.AppendUvarint(dst, uint64(len(ad)))
	dst = append(dst, ad...)
	return binary.BigEndian.AppendUint64(dst, uint64(m)^(1<<63))
}

func mKey(dst []byte, m int64) []byte {
	dst = append(dst, 'm')
	return binary.BigEndian.AppendUint64(dst, uint64(m)^(1<<63))
}

func (p *pebbleOnly) Upsert(ctx context.Context, rows []analytics.Row) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, r := range rows {
		if err := validate(r); err != nil {
			return err
		}
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return analytics.ErrClosed
	}
	b := p.db.NewBatch()
	defer b.Close()
	var k, v []byte
	for _, r := range rows {
		m := r.Start.Unix() / 60
		v = appendTotals(v[:0], totalsOf(r))
		k = append(adKey(k[:0], r.AdID, m), r.Country...)
		b.Set(k, v, nil)
		k = mKey(k[:0], m)
		k = binary.AppendUvarint(k, uint64(len(r.AdID)))
		k = append(append(k, r.AdID...), r.Country...)
		b.Set(k, v, nil)
	}
	return b.Commit(pebble.Sync)
}

func (p *pebbleOnly) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return analytics.ErrClosed
	}
	return nil
}

func (p *pebbleOnly) Series(ctx context.Context, adID, country string, from, to time.Time, g analytics.Granularity) ([]analytics.Point, error) {
	if err := p.enter(ctx); err != nil {
		return nil, err
	}
	defer p.mu.RUnlock()
	gm := int64(time.Duration(g) / time.Minute)
	lo, hi := minuteRange(from, to)
	out := []analytics.Point{}
	if hi <= lo {
		return out, nil
	}
	prefix := len(adKey(nil, adID, 0)) - 8
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: adKey(nil, adID, lo), UpperBound: adKey(nil, adID, hi)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	bucket := int64(-1 << 62)
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if country != "" && string(k[prefix+8:]) != country {
			continue
		}
		v, err := parseTotals(it.Value())
		if err != nil {
			return nil, err
		}
		m := int64(binary.BigEndian.Uint64(k[prefix:]) ^ (1 << 63))
		if bk := floorDiv(m, gm) * gm; len(out) == 0 || bk != bucket {
			bucket = bk
			out = append(out, analytics.Point{Start: time.Unix(bk*60, 0).UTC()})
		}
		out[len(out)-1].Clicks += v[0]
		out[len(out)-1].Invalid += v[1] + v[2]
	}
	return out, it.Error()
}

func (p *pebbleOnly) Top(ctx context.Context, country string, from, to time.Time, limit int) ([]analytics.AdClicks, error) {
	if err := p.enter(ctx); err != nil {
		return nil, err
	}
	defer p.mu.RUnlock()
	lo, hi := minuteRange(from, to)
	out := []analytics.AdClicks{}
	if hi <= lo || limit <= 0 {
		return out, nil
	}
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: mKey(nil, lo), UpperBound: mKey(nil, hi)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	sums := map[string]int64{}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[9:]
		n, w := binary.Uvarint(k)
		ad, c := k[w:w+int(n)], k[w+int(n):]
		if country != "" && string(c) != country {
			continue
		}
		v := it.Value()
		clicks, _ := binary.Uvarint(v)
		if clicks > 0 {
			sums[string(ad)] += int64(clicks)
		}
	}
	for ad, n := range sums {
		out = append(out, analytics.AdClicks{AdID: ad, Clicks: n})
	}
	slices.SortFunc(out, func(a, b analytics.AdClicks) int {
		return cmp.Or(cmp.Compare(b.Clicks, a.Clicks), cmp.Compare(a.AdID, b.AdID))
	})
	return out[:min(limit, len(out))], it.Error()
}

func (p *pebbleOnly) Quality(ctx context.Context, adID string, from, to time.Time) (analytics.Quality, error) {
	if err := p.enter(ctx); err != nil {
		return analytics.Quality{}, err
	}
	defer p.mu.RUnlock()
	lo, hi := minuteRange(from, to)
	var q analytics.Quality
	if hi <= lo {
		return q, nil
	}
	opts := &pebble.IterOptions{LowerBound: mKey(nil, lo), UpperBound: mKey(nil, hi)}
	if adID != "" {
		opts = &pebble.IterOptions{LowerBound: adKey(nil, adID, lo), UpperBound: adKey(nil, adID, hi)}
	}
	it, err := p.db.NewIter(opts)
	if err != nil {
		return q, err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		v, err := parseTotals(it.Value())
		if err != nil {
			return q, err
		}
		q.Valid += v[0]
		q.Bot += v[1]
		q.IPRate += v[2]
		q.Duplicates += v[3]
		q.TooLate += v[4]
	}
	return q, it.Error()
}

func (p *pebbleOnly) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return p.db.Close()
}

func TestPebbleOnlyConformance(t *testing.T) {
	var mu sync.Mutex
	dirs := map[analytics.Store]string{}
	analyticstest.Run(t, analyticstest.Harness{
		Open: func(t *testing.T) analytics.Store {
			dir := t.TempDir()
			s, err := openPebbleOnly(dir)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			dirs[s] = dir
			mu.Unlock()
			return s
		},
		Reopen: func(t *testing.T, s analytics.Store) analytics.Store {
			mu.Lock()
			dir := dirs[s]
			mu.Unlock()
			s.Close()
			s2, err := openPebbleOnly(dir)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			dirs[s2] = dir
			mu.Unlock()
			return s2
		},
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
