// Package analyticstest is the conformance suite for analytics.Store
// implementations: every backend runs it unchanged (like testing/slogtest).
//
// It checks that upserts replace rather than add and are idempotent, that a
// call is applied atomically, series bucketing (1m, 1h, 1d, with from and to
// cutting buckets), the country and ad filters, top-ads ordering and limits,
// quality sums, empty answers (non-nil empty slices), persistence across a
// reopen, ErrClosed after Close, and concurrent upserts and reads (run it under
// -race). Answers are compared with a brute-force model of the rows written,
// generated with a fixed seed.
package analyticstest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/analytics"
)

// Harness adapts a backend to the suite. Open is required; a nil Reopen skips
// the persistence tests.
type Harness struct {
	// Open returns a new, empty store. The suite closes it.
	Open func(t *testing.T) analytics.Store
	// Reopen closes s cleanly and opens its storage again.
	Reopen func(t *testing.T, s analytics.Store) analytics.Store
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Empty", testEmpty},
		{"UpsertReplaces", testUpsertReplaces},
		{"Idempotent", testIdempotent},
		{"SeriesBuckets", testSeriesBuckets},
		{"TopOrder", testTopOrder},
		{"Quality", testQuality},
		{"InvalidRows", testInvalidRows},
		{"CanceledContext", testCanceledContext},
		{"RandomAgainstModel", testRandomAgainstModel},
		{"Reopen", testReopen},
		{"Closed", testClosed},
		{"Concurrent", testConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, h) })
	}
}

// base is a Monday midnight, UTC; the suite's rows are around it.
var base = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

func minute(m int) time.Time { return base.Add(time.Duration(m) * time.Minute) }

func open(t *testing.T, h Harness) analytics.Store {
	t.Helper()
	s := h.Open(t)
	t.Cleanup(func() { s.Close() })
	return s
}

func upsert(t *testing.T, s analytics.Store, rows ...analytics.Row) {
	t.Helper()
	if err := s.Upsert(t.Context(), rows); err != nil {
		t.Fatalf("Upsert: %v", err)
	}
}

func row(ad, country string, m int, clicks, bot, ipRate, dup, late int64) analytics.Row {
	return analytics.Row{AdID: ad, Country: country, Start: minute(m), Clicks: clicks, Bot: bot, IPRate: ipRate, Duplicates: dup, TooLate: late}
}

// key identifies a row.
type key struct {
	ad, country string
	start       int64 // Unix seconds
}

// Model is the brute-force reference: the last row written for each key.
type Model map[key]analytics.Row

// Add records rows as an Upsert of them would.
func (m Model) Add(rows ...analytics.Row) {
	for _, r := range rows {
		r.Start = r.Start.UTC()
		m[key{r.AdID, r.Country, r.Start.Unix()}] = r
	}
}

func inRange(r analytics.Row, from, to time.Time) bool {
	return !r.Start.Before(from) && r.Start.Before(to)
}

// Series answers Store.Series from the model.
func (m Model) Series(adID, country string, from, to time.Time, g analytics.Granularity) []analytics.Point {
	sums := map[time.Time]*analytics.Point{}
	for _, r := range m {
		if r.AdID != adID || (country != "" && r.Country != country) || !inRange(r, from, to) {
			continue
		}
		b := r.Start.Truncate(time.Duration(g))
		p := sums[b]
		if p == nil {
			p = &analytics.Point{Start: b}
			sums[b] = p
		}
		p.Clicks += r.Clicks
		p.Invalid += r.Bot + r.IPRate
	}
	out := []analytics.Point{}
	for _, p := range sums {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b analytics.Point) int { return a.Start.Compare(b.Start) })
	return out
}

// Top answers Store.Top from the model.
func (m Model) Top(country string, from, to time.Time, limit int) []analytics.AdClicks {
	sums := map[string]int64{}
	for _, r := range m {
		if (country != "" && r.Country != country) || !inRange(r, from, to) {
			continue
		}
		sums[r.AdID] += r.Clicks
	}
	out := []analytics.AdClicks{}
	for ad, n := range sums {
		if n > 0 {
			out = append(out, analytics.AdClicks{AdID: ad, Clicks: n})
		}
	}
	slices.SortFunc(out, func(a, b analytics.AdClicks) int {
		return cmp.Or(cmp.Compare(b.Clicks, a.Clicks), cmp.Compare(a.AdID, b.AdID))
	})
	return out[:min(len(out), max(limit, 0))]
}

// Quality answers Store.Quality from the model.
func (m Model) Quality(adID string, from, to time.Time) analytics.Quality {
	var q analytics.Quality
	for _, r := range m {
		if (adID != "" && r.AdID != adID) || !inRange(r, from, to) {
			continue
		}
		q.Valid += r.Clicks
		q.Bot += r.Bot
		q.IPRate += r.IPRate
		q.Duplicates += r.Duplicates
		q.TooLate += r.TooLate
	}
	return q
}

func series(t *testing.T, s analytics.Store, ad, country string, from, to time.Time, g analytics.Granularity) []analytics.Point {
	t.Helper()
	got, err := s.Series(t.Context(), ad, country, from, to, g)
	if err != nil {
		t.Fatalf("Series(%q, %q, %v, %v, %v): %v", ad, country, from, to, time.Duration(g), err)
	}
	if got == nil {
		t.Errorf("Series(%q, %q, %v, %v, %v) = nil, want a non-nil slice", ad, country, from, to, time.Duration(g))
	}
	for _, p := range got {
		if p.Start.Location() != time.UTC {
			t.Errorf("Series(%q, ...): point %v is not in UTC", ad, p.Start)
			break
		}
	}
	return got
}

func top(t *testing.T, s analytics.Store, country string, from, to time.Time, limit int) []analytics.AdClicks {
	t.Helper()
	got, err := s.Top(t.Context(), country, from, to, limit)
	if err != nil {
		t.Fatalf("Top(%q, %v, %v, %d): %v", country, from, to, limit, err)
	}
	if got == nil {
		t.Errorf("Top(%q, %v, %v, %d) = nil, want a non-nil slice", country, from, to, limit)
	}
	return got
}

func quality(t *testing.T, s analytics.Store, ad string, from, to time.Time) analytics.Quality {
	t.Helper()
	got, err := s.Quality(t.Context(), ad, from, to)
	if err != nil {
		t.Fatalf("Quality(%q, %v, %v): %v", ad, from, to, err)
	}
	return got
}

// CheckAll compares every kind of answer of s with m over [from, to): series
// of each ad at each granularity, with and without each country, top ads with
// and without each country, and quality with and without each ad.
func CheckAll(t *testing.T, s analytics.Store, m Model, from, to time.Time) {
	t.Helper()
	ads, countries := map[string]bool{}, map[string]bool{"": true}
	for k := range m {
		ads[k.ad], countries[k.country] = true, true
	}
	for ad := range ads {
		for c := range countries {
			for _, g := range []analytics.Granularity{analytics.Minute, analytics.Hour, analytics.Day} {
				if diff := gocmp.Diff(m.Series(ad, c, from, to, g), series(t, s, ad, c, from, to, g)); diff != "" {
					t.Errorf("Series(%q, %q, %v) (-want +got):\n%s", ad, c, time.Duration(g), diff)
				}
			}
		}
		if diff := gocmp.Diff(m.Quality(ad, from, to), quality(t, s, ad, from, to)); diff != "" {
			t.Errorf("Quality(%q) (-want +got):\n%s", ad, diff)
		}
	}
	for c := range countries {
		if diff := gocmp.Diff(m.Top(c, from, to, len(ads)+1), top(t, s, c, from, to, len(ads)+1)); diff != "" {
			t.Errorf("Top(%q) (-want +got):\n%s", c, diff)
		}
	}
	if diff := gocmp.Diff(m.Quality("", from, to), quality(t, s, "", from, to)); diff != "" {
		t.Errorf("Quality(all) (-want +got):\n%s", diff)
	}
}

func testEmpty(t *testing.T, h Harness) {
	s := open(t, h)
	from, to := minute(0), minute(24*60)
	for _, g := range []analytics.Granularity{analytics.Minute, analytics.Hour, analytics.Day} {
		if got := series(t, s, "ad-1", "", from, to, g); len(got) != 0 {
			t.Errorf("Series on an empty store = %v, want none", got)
		}
	}
	if got := top(t, s, "", from, to, 10); len(got) != 0 {
		t.Errorf("Top on an empty store = %v, want none", got)
	}
	if got := quality(t, s, "", from, to); got != (analytics.Quality{}) {
		t.Errorf("Quality on an empty store = %+v, want zero", got)
	}
	if err := s.Upsert(t.Context(), nil); err != nil {
		t.Errorf("Upsert(nil): %v", err)
	}

	upsert(t, s, row("ad-1", "US", 10, 5, 1, 0, 0, 0))
	// Empty ranges and filters that match nothing are empty too.
	for _, q := range []struct {
		ad, country string
		from, to    time.Time
	}{
		{"ad-1", "", minute(10), minute(10)},          // from == to
		{"ad-1", "", minute(11), minute(10)},          // to before from
		{"ad-1", "", minute(11), minute(20)},          // after the row
		{"ad-1", "", minute(0), minute(10)},           // to is exclusive
		{"ad-1", "DE", minute(0), minute(20)},         // other country
		{"ad-2", "", minute(0), minute(20)},           // other ad
		{"ad-1", "", minute(10).Add(time.Second), to}, // from after the row's start
	} {
		if got := series(t, s, q.ad, q.country, q.from, q.to, analytics.Minute); len(got) != 0 {
			t.Errorf("Series(%q, %q, %v, %v) = %v, want none", q.ad, q.country, q.from, q.to, got)
		}
		if q.ad == "ad-1" {
			if got := top(t, s, q.country, q.from, q.to, 10); len(got) != 0 {
				t.Errorf("Top(%q, %v, %v) = %v, want none", q.country, q.from, q.to, got)
			}
			if got := quality(t, s, q.ad, q.from, q.to); q.country == "" && got != (analytics.Quality{}) {
				t.Errorf("Quality(%q, %v, %v) = %+v, want zero", q.ad, q.from, q.to, got)
			}
		}
	}
	if got := top(t, s, "", from, to, 0); len(got) != 0 {
		t.Errorf("Top with limit 0 = %v, want none", got)
	}
}

func testUpsertReplaces(t *testing.T, h Harness) {
	s := open(t, h)
	m := Model{}
	first := []analytics.Row{
		row("ad-1", "US", 0, 10, 1, 2, 3, 4),
		row("ad-1", "DE", 0, 7, 0, 0, 0, 0),
		row("ad-2", "US", 1, 3, 0, 1, 0, 0),
	}
	upsert(t, s, first...)
	m.Add(first...)
	// The same keys again with other totals, smaller and larger: the last wins.
	second := []analytics.Row{
		row("ad-1", "US", 0, 4, 0, 0, 1, 0),
		row("ad-2", "US", 1, 30, 2, 0, 0, 5),
	}
	upsert(t, s, second...)
	m.Add(second...)
	// Within one call, too, the later row of a key wins.
	third := []analytics.Row{
		row("ad-1", "DE", 0, 100, 0, 0, 0, 0),
		row("ad-1", "DE", 0, 8, 1, 0, 0, 0),
	}
	upsert(t, s, third...)
	m.Add(third...)

	want := []analytics.Point{{Start: minute(0), Clicks: 12, Invalid: 1}}
	if diff := gocmp.Diff(want, series(t, s, "ad-1", "", minute(0), minute(60), analytics.Minute)); diff != "" {
		t.Errorf("Series(ad-1) (-want +got):\n%s", diff)
	}
	wantTop := []analytics.AdClicks{{AdID: "ad-2", Clicks: 30}, {AdID: "ad-1", Clicks: 12}}
	if diff := gocmp.Diff(wantTop, top(t, s, "", minute(0), minute(60), 10)); diff != "" {
		t.Errorf("Top (-want +got):\n%s", diff)
	}
	wantQ := analytics.Quality{Valid: 42, Bot: 3, IPRate: 0, Duplicates: 1, TooLate: 5}
	if diff := gocmp.Diff(wantQ, quality(t, s, "", minute(0), minute(60))); diff != "" {
		t.Errorf("Quality (-want +got):\n%s", diff)
	}
	// A row set back to zero stays a zero row: no clicks, so not in Top.
	zero := row("ad-2", "US", 1, 0, 0, 0, 0, 0)
	upsert(t, s, zero)
	m.Add(zero)
	CheckAll(t, s, m, minute(-60), minute(120))
}

func testIdempotent(t *testing.T, h Harness) {
	once, twice := open(t, h), open(t, h)
	rng := rand.New(rand.NewPCG(1, 2))
	m := Model{}
	for range 5 {
		batch := randomRows(rng, 200, 10, 3*24*60)
		m.Add(batch...)
		upsert(t, once, batch...)
		upsert(t, twice, batch...)
		upsert(t, twice, batch...)
	}
	from, to := minute(-1), minute(3*24*60+1)
	CheckAll(t, once, m, from, to)
	CheckAll(t, twice, m, from, to)
}

func testSeriesBuckets(t *testing.T, h Harness) {
	s := open(t, h)
	day := 24 * 60
	rows := []analytics.Row{
		row("ad-1", "US", 59, 1, 1, 0, 0, 0),      // 00:59
		row("ad-1", "US", 60, 2, 0, 1, 0, 0),      // 01:00
		row("ad-1", "DE", 60, 4, 0, 0, 0, 0),      // 01:00, another country
		row("ad-1", "US", 90, 8, 0, 0, 0, 0),      // 01:30
		row("ad-1", "US", day-1, 16, 0, 0, 0, 0),  // 23:59
		row("ad-1", "", day, 32, 2, 2, 0, 0),      // next day 00:00, unknown country
		row("ad-1", "US", day+61, 64, 0, 0, 0, 0), // next day 01:01
		row("ad-2", "US", 60, 1000, 0, 0, 0, 0),   // another ad
	}
	upsert(t, s, rows...)
	p := func(m int, clicks, invalid int64) analytics.Point {
		return analytics.Point{Start: minute(m), Clicks: clicks, Invalid: invalid}
	}
	sec := time.Second
	tests := []struct {
		name     string
		country  string
		from, to time.Time
		g        analytics.Granularity
		want     []analytics.Point
	}{
		{"minutes", "", minute(0), minute(2 * day), analytics.Minute,
			[]analytics.Point{p(59, 1, 1), p(60, 6, 1), p(90, 8, 0), p(day-1, 16, 0), p(day, 32, 4), p(day+61, 64, 0)}},
		{"minutes of US", "US", minute(0), minute(2 * day), analytics.Minute,
			[]analytics.Point{p(59, 1, 1), p(60, 2, 1), p(90, 8, 0), p(day-1, 16, 0), p(day+61, 64, 0)}},
		{"hours", "", minute(0), minute(2 * day), analytics.Hour,
			[]analytics.Point{p(0, 1, 1), p(60, 14, 1), p(day-60, 16, 0), p(day, 32, 4), p(day+60, 64, 0)}},
		{"days", "", minute(0), minute(2 * day), analytics.Day,
			[]analytics.Point{p(0, 31, 2), p(day, 96, 4)}},
		{"days of DE", "DE", minute(-day), minute(3 * day), analytics.Day,
			[]analytics.Point{p(0, 4, 0)}},
		// from and to cut buckets; the points keep their bucket's start.
		{"hours cut", "", minute(60), minute(day + 61), analytics.Hour,
			[]analytics.Point{p(60, 14, 1), p(day-60, 16, 0), p(day, 32, 4)}},
		{"days cut", "", minute(60), minute(day + 1), analytics.Day,
			[]analytics.Point{p(0, 30, 1), p(day, 32, 4)}},
		{"to exclusive", "", minute(0), minute(60), analytics.Hour,
			[]analytics.Point{p(0, 1, 1)}},
		{"from inside a minute", "", minute(59).Add(sec), minute(91), analytics.Hour,
			[]analytics.Point{p(60, 14, 1)}},
		{"from a nanosecond into a minute", "", minute(59).Add(time.Nanosecond), minute(91), analytics.Minute,
			[]analytics.Point{p(60, 6, 1), p(90, 8, 0)}},
		{"to a nanosecond into a minute", "", minute(0), minute(59).Add(time.Nanosecond), analytics.Minute,
			[]analytics.Point{p(59, 1, 1)}},
		{"to inside a minute", "", minute(59), minute(90).Add(sec), analytics.Minute,
			[]analytics.Point{p(59, 1, 1), p(60, 6, 1), p(90, 8, 0)}},
		{"other time zone", "", minute(0).In(time.FixedZone("X", 5*3600+1800)), minute(2 * day).In(time.FixedZone("Y", -7*3600)), analytics.Day,
			[]analytics.Point{p(0, 31, 2), p(day, 96, 4)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := series(t, s, "ad-1", tt.country, tt.from, tt.to, tt.g)
			if diff := gocmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func testTopOrder(t *testing.T, h Harness) {
	s := open(t, h)
	rows := []analytics.Row{
		row("b", "US", 0, 5, 0, 0, 0, 0),
		row("b", "DE", 1, 5, 0, 0, 0, 0),  // b: 10
		row("a", "US", 2, 10, 0, 0, 0, 0), // a: 10, ties with b, sorts first
		row("c", "US", 0, 3, 0, 0, 0, 0),
		row("c", "US", 5, 30, 0, 0, 0, 0), // c: 33, but only 3 before minute 5
		row("d", "FR", 3, 7, 0, 0, 0, 0),
		row("z", "US", 1, 0, 50, 50, 50, 50), // invalid clicks only: never in Top
		row("aa", "DE", 4, 10, 0, 0, 0, 0),   // ties with a and b
	}
	upsert(t, s, rows...)
	m := Model{}
	m.Add(rows...)
	ac := func(ad string, n int64) analytics.AdClicks { return analytics.AdClicks{AdID: ad, Clicks: n} }
	tests := []struct {
		name     string
		country  string
		from, to time.Time
		limit    int
		want     []analytics.AdClicks
	}{
		{"all", "", minute(0), minute(10), 10, []analytics.AdClicks{ac("c", 33), ac("a", 10), ac("aa", 10), ac("b", 10), ac("d", 7)}},
		{"limit", "", minute(0), minute(10), 3, []analytics.AdClicks{ac("c", 33), ac("a", 10), ac("aa", 10)}},
		{"limit 1", "", minute(0), minute(10), 1, []analytics.AdClicks{ac("c", 33)}},
		{"range", "", minute(0), minute(5), 10, []analytics.AdClicks{ac("a", 10), ac("aa", 10), ac("b", 10), ac("d", 7), ac("c", 3)}},
		{"country", "US", minute(0), minute(10), 10, []analytics.AdClicks{ac("c", 33), ac("a", 10), ac("b", 5)}},
		{"country and range", "DE", minute(1), minute(4), 10, []analytics.AdClicks{ac("b", 5)}},
		{"nothing valid", "US", minute(1), minute(2), 10, []analytics.AdClicks{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := top(t, s, tt.country, tt.from, tt.to, tt.limit)
			if diff := gocmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			// The hand-written answer and the model agree.
			if diff := gocmp.Diff(tt.want, m.Top(tt.country, tt.from, tt.to, tt.limit)); diff != "" {
				t.Errorf("model disagrees (-want +model):\n%s", diff)
			}
		})
	}
}

func testQuality(t *testing.T, h Harness) {
	s := open(t, h)
	upsert(t, s,
		row("ad-1", "US", 0, 1, 2, 3, 4, 5),
		row("ad-1", "DE", 1, 10, 20, 30, 40, 50),
		row("ad-2", "US", 1, 100, 200, 300, 400, 500),
		row("ad-2", "", 2, 1000, 2000, 3000, 4000, 5000),
	)
	tests := []struct {
		ad       string
		from, to time.Time
		want     analytics.Quality
	}{
		{"", minute(0), minute(3), analytics.Quality{Valid: 1111, Bot: 2222, IPRate: 3333, Duplicates: 4444, TooLate: 5555}},
		{"", minute(1), minute(2), analytics.Quality{Valid: 110, Bot: 220, IPRate: 330, Duplicates: 440, TooLate: 550}},
		{"ad-1", minute(0), minute(3), analytics.Quality{Valid: 11, Bot: 22, IPRate: 33, Duplicates: 44, TooLate: 55}},
		{"ad-2", minute(0), minute(2), analytics.Quality{Valid: 100, Bot: 200, IPRate: 300, Duplicates: 400, TooLate: 500}},
		{"ad-3", minute(0), minute(3), analytics.Quality{}},
	}
	for _, tt := range tests {
		got := quality(t, s, tt.ad, tt.from, tt.to)
		if diff := gocmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Quality(%q, %v, %v) (-want +got):\n%s", tt.ad, tt.from, tt.to, diff)
		}
	}
}

func testInvalidRows(t *testing.T, h Harness) {
	s := open(t, h)
	good := row("ad-1", "US", 0, 1, 0, 0, 0, 0)
	bad := map[string]analytics.Row{
		"start not a whole minute": {AdID: "ad-1", Country: "US", Start: minute(1).Add(time.Second), Clicks: 1},
		"zero start":               {AdID: "ad-1", Country: "US", Clicks: 1},
		"empty ad":                 row("", "US", 1, 1, 0, 0, 0, 0),
		"negative clicks":          row("ad-1", "US", 1, -1, 0, 0, 0, 0),
		"negative too late":        row("ad-1", "US", 1, 0, 0, 0, 0, -1),
	}
	for name, r := range bad {
		// The whole call fails: the good row beside the bad one is not written.
		if err := s.Upsert(t.Context(), []analytics.Row{good, r}); err == nil {
			t.Errorf("Upsert with %s: no error", name)
		}
	}
	if got := quality(t, s, "", time.Unix(0, 0), minute(10)); got != (analytics.Quality{}) {
		t.Errorf("after failed upserts, Quality = %+v, want zero", got)
	}
}

func testCanceledContext(t *testing.T, h Harness) {
	s := open(t, h)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Upsert(ctx, []analytics.Row{row("ad-1", "US", 0, 1, 0, 0, 0, 0)}); !errors.Is(err, context.Canceled) {
		t.Errorf("Upsert with a canceled context: %v, want context.Canceled", err)
	}
	if got := quality(t, s, "", minute(0), minute(10)); got != (analytics.Quality{}) {
		t.Errorf("after a canceled upsert, Quality = %+v, want zero", got)
	}
}

// randomRows returns n rows over ads ad-0..ad-(ads-1), five countries and
// minutes [0, span), with Zipf-like clicks; some rows have no valid click.
func randomRows(rng *rand.Rand, n, ads, span int) []analytics.Row {
	countries := []string{"US", "US", "DE", "FR", "", "JP"}
	rows := make([]analytics.Row, n)
	for i := range rows {
		r := analytics.Row{
			AdID:    fmt.Sprintf("ad-%d", int(float64(ads)*rng.Float64()*rng.Float64())),
			Country: countries[rng.IntN(len(countries))],
			Start:   minute(rng.IntN(span)),
			Clicks:  int64(rng.IntN(100) * rng.IntN(3)),
		}
		if rng.IntN(4) == 0 {
			r.Bot, r.IPRate = int64(rng.IntN(10)), int64(rng.IntN(10))
		}
		if rng.IntN(8) == 0 {
			r.Duplicates, r.TooLate = int64(rng.IntN(5)), int64(rng.IntN(5))
		}
		rows[i] = r
	}
	return rows
}

// randomInstant returns a time in [minute(lo), minute(hi)], on a minute, an
// hour or a day boundary or not.
func randomInstant(rng *rand.Rand, lo, hi int) time.Time {
	t := minute(lo + rng.IntN(hi-lo+1))
	switch rng.IntN(4) {
	case 0:
		return t.Truncate(time.Hour)
	case 1:
		return t.Truncate(24 * time.Hour)
	case 2:
		return t.Add(time.Duration(rng.IntN(60_000)) * time.Millisecond)
	}
	return t
}

func testRandomAgainstModel(t *testing.T, h Harness) {
	s := open(t, h)
	rng := rand.New(rand.NewPCG(42, 7))
	const ads, span = 30, 3 * 24 * 60
	m := Model{}
	var written []analytics.Row
	for range 20 {
		batch := randomRows(rng, 100, ads, span)
		// Rewrite some earlier keys with new totals, as the aggregator does
		// while a window is open.
		for range 20 {
			if len(written) == 0 {
				break
			}
			r := written[rng.IntN(len(written))]
			r.Clicks, r.Bot = int64(rng.IntN(1000)), int64(rng.IntN(3))
			batch = append(batch, r)
		}
		rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		upsert(t, s, batch...)
		m.Add(batch...)
		written = append(written, batch...)
	}
	grans := []analytics.Granularity{analytics.Minute, analytics.Hour, analytics.Day}
	countries := []string{"", "US", "DE", "FR", "JP", "XX"}
	for i := range 300 {
		from := randomInstant(rng, -60, span+60)
		to := from.Add(time.Duration(rng.IntN(span)) * time.Minute)
		if i%10 == 0 {
			to = randomInstant(rng, -60, span+60) // sometimes before from
		}
		ad := fmt.Sprintf("ad-%d", rng.IntN(ads+2))
		c := countries[rng.IntN(len(countries))]
		g := grans[rng.IntN(len(grans))]
		if diff := gocmp.Diff(m.Series(ad, c, from, to, g), series(t, s, ad, c, from, to, g)); diff != "" {
			t.Errorf("Series(%q, %q, %v, %v, %v) (-want +got):\n%s", ad, c, from, to, time.Duration(g), diff)
		}
		limit := rng.IntN(ads + 5)
		if diff := gocmp.Diff(m.Top(c, from, to, limit), top(t, s, c, from, to, limit)); diff != "" {
			t.Errorf("Top(%q, %v, %v, %d) (-want +got):\n%s", c, from, to, limit, diff)
		}
		if rng.IntN(3) == 0 {
			ad = ""
		}
		if diff := gocmp.Diff(m.Quality(ad, from, to), quality(t, s, ad, from, to)); diff != "" {
			t.Errorf("Quality(%q, %v, %v) (-want +got):\n%s", ad, from, to, diff)
		}
		if t.Failed() {
			return
		}
	}
	CheckAll(t, s, m, minute(-60), minute(span+60))
}

func testReopen(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("no Reopen in the harness")
	}
	s := h.Open(t)
	rng := rand.New(rand.NewPCG(3, 4))
	m := Model{}
	for range 4 {
		batch := randomRows(rng, 300, 20, 2*24*60)
		upsert(t, s, batch...)
		m.Add(batch...)
	}
	s = h.Reopen(t, s)
	t.Cleanup(func() { s.Close() })
	from, to := minute(0), minute(2*24*60)
	CheckAll(t, s, m, from, to)
	// After a reopen, upserts still replace what was there before it.
	var again []analytics.Row
	for _, r := range m {
		if len(again) == 50 {
			break
		}
		r.Clicks += 17
		again = append(again, r)
	}
	again = append(again, randomRows(rng, 50, 25, 2*24*60)...)
	upsert(t, s, again...)
	m.Add(again...)
	CheckAll(t, s, m, from, to)
	s = h.Reopen(t, s)
	CheckAll(t, s, m, from, to)
}

func testClosed(t *testing.T, h Harness) {
	s := h.Open(t)
	upsert(t, s, row("ad-1", "US", 0, 1, 0, 0, 0, 0))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := t.Context()
	from, to := minute(0), minute(10)
	if err := s.Upsert(ctx, []analytics.Row{row("ad-1", "US", 0, 2, 0, 0, 0, 0)}); !errors.Is(err, analytics.ErrClosed) {
		t.Errorf("Upsert after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Series(ctx, "ad-1", "", from, to, analytics.Minute); !errors.Is(err, analytics.ErrClosed) {
		t.Errorf("Series after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Top(ctx, "", from, to, 10); !errors.Is(err, analytics.ErrClosed) {
		t.Errorf("Top after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Quality(ctx, "", from, to); !errors.Is(err, analytics.ErrClosed) {
		t.Errorf("Quality after Close: %v, want ErrClosed", err)
	}
	s.Close() // a second Close does not panic or hang
}

// testConcurrent runs writers that own disjoint ads beside readers. Each call of
// writer w sets every row of its ad to the same version v, so a reader that
// sees two versions in one answer saw a call half applied.
func testConcurrent(t *testing.T, h Harness) {
	s := open(t, h)
	const writers, calls, minutes = 4, 40, 30
	countries := []string{"US", "DE", "FR"}
	rowsOf := func(w, v int) []analytics.Row {
		var rows []analytics.Row
		for m := range minutes {
			for _, c := range countries {
				rows = append(rows, row(fmt.Sprintf("w%d", w), c, m, int64(v), int64(v), 0, 0, 0))
			}
		}
		return rows
	}
	from, to := minute(0), minute(minutes)
	ctx := t.Context()
	var wg sync.WaitGroup
	done := make(chan struct{})
	var werr error
	var once sync.Once
	for w := range writers {
		wg.Go(func() {
			for v := 1; v <= calls; v++ {
				if err := s.Upsert(ctx, rowsOf(w, v)); err != nil {
					once.Do(func() { werr = err })
					return
				}
			}
		})
	}
	var rwg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for r := range 2 {
		rwg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				ad := fmt.Sprintf("w%d", (i+r)%writers)
				pts, err := s.Series(ctx, ad, "", from, to, analytics.Minute)
				if err != nil {
					errs <- fmt.Errorf("Series: %w", err)
					return
				}
				if len(pts) != 0 && len(pts) != minutes {
					errs <- fmt.Errorf("Series(%s) has %d points, want 0 or %d", ad, len(pts), minutes)
					return
				}
				for _, p := range pts {
					if p.Clicks != pts[0].Clicks || p.Invalid != p.Clicks {
						errs <- fmt.Errorf("Series(%s) saw a call half applied: %+v", ad, pts)
						return
					}
				}
				q, err := s.Quality(ctx, ad, from, to)
				if err != nil {
					errs <- fmt.Errorf("Quality: %w", err)
					return
				}
				if n := int64(minutes * len(countries)); q.Valid%n != 0 || q.Bot != q.Valid {
					errs <- fmt.Errorf("Quality(%s) saw a call half applied: %+v", ad, q)
					return
				}
				tops, err := s.Top(ctx, "US", from, to, writers)
				if err != nil {
					errs <- fmt.Errorf("Top: %w", err)
					return
				}
				for _, a := range tops {
					if a.Clicks%minutes != 0 {
						errs <- fmt.Errorf("Top saw a call half applied: %+v", tops)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(done)
	rwg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if werr != nil {
		t.Fatalf("Upsert: %v", werr)
	}
	m := Model{}
	for w := range writers {
		m.Add(rowsOf(w, calls)...)
	}
	CheckAll(t, s, m, from, to)
}
