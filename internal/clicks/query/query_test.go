package query

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/analytics"
)

var update = flag.Bool("update", false, "rewrite testdata/*.json with the handlers' answers")

var (
	// testNow is the wall clock of every test; the handlers round it up to now.
	testNow = time.Date(2026, 11, 30, 13, 5, 17, 250_000_000, time.UTC)
	now     = time.Date(2026, 11, 30, 13, 5, 18, 0, time.UTC)
)

// storeCall is what the store was asked.
type storeCall struct {
	Op       string
	AdID     string
	Country  string
	From, To time.Time
	G        analytics.Granularity
	Limit    int
}

// fakeStore records its queries and answers with the rows it was given.
type fakeStore struct {
	mu      sync.Mutex
	calls   []storeCall
	points  []analytics.Point
	top     []analytics.AdClicks
	quality analytics.Quality
	err     error
}

func (s *fakeStore) record(ctx context.Context, c storeCall) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, c)
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.err
}

func (s *fakeStore) Series(ctx context.Context, adID, country string, from, to time.Time, g analytics.Granularity) ([]analytics.Point, error) {
	if err := s.record(ctx, storeCall{Op: "Series", AdID: adID, Country: country, From: from, To: to, G: g}); err != nil {
		return nil, err
	}
	return s.points, nil
}

func (s *fakeStore) Top(ctx context.Context, country string, from, to time.Time, limit int) ([]analytics.AdClicks, error) {
	if err := s.record(ctx, storeCall{Op: "Top", Country: country, From: from, To: to, Limit: limit}); err != nil {
		return nil, err
	}
	return s.top, nil
}

func (s *fakeStore) Quality(ctx context.Context, adID string, from, to time.Time) (analytics.Quality, error) {
	if err := s.record(ctx, storeCall{Op: "Quality", AdID: adID, From: from, To: to}); err != nil {
		return analytics.Quality{}, err
	}
	return s.quality, nil
}

func (s *fakeStore) Upsert(context.Context, []analytics.Row) error {
	return errors.New("the query API never writes")
}

func (s *fakeStore) Close() error { return nil }

func (s *fakeStore) queries() []storeCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]storeCall(nil), s.calls...)
}

// fakePipeline answers with the watermarks and status it was given.
type fakePipeline struct {
	wm     map[string]time.Time
	status Status
	err    error
}

func (p *fakePipeline) Watermark(adID string) (time.Time, bool) {
	wm, ok := p.wm[adID]
	return wm, ok
}

func (p *fakePipeline) Status(ctx context.Context) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	return p.status, p.err
}

type fixture struct {
	store *fakeStore
	pipe  *fakePipeline
	mux   *http.ServeMux
	logs  *bytes.Buffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{store: &fakeStore{}, pipe: &fakePipeline{wm: map[string]time.Time{}}, logs: new(bytes.Buffer)}
	logger := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	api := New(Config{Now: func() time.Time { return testNow }}, f.store, f.pipe, logger)
	f.mux = http.NewServeMux()
	f.mux.Handle("GET /v1/ads/{ad_id}/clicks", api.HandleSeries())
	f.mux.Handle("GET /v1/ads/top", api.HandleTop())
	f.mux.Handle("GET /v1/traffic/quality", api.HandleQuality())
	f.mux.Handle("GET /v1/pipeline/status", api.HandleStatus())
	return f
}

func (f *fixture) serve(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	f.mux.ServeHTTP(w, r)
	return w
}

func (f *fixture) get(target string) *httptest.ResponseRecorder {
	return f.serve(httptest.NewRequest(http.MethodGet, target, nil))
}

// decode returns the JSON body of an answer, checking its status and media type.
func decode[T any](t *testing.T, w *httptest.ResponseRecorder, status int) T {
	t.Helper()
	wantType := "application/json"
	if status >= 400 {
		wantType = "application/problem+json"
	}
	if w.Code != status || w.Header().Get("Content-Type") != wantType {
		t.Fatalf("status %d %q, want %d %q; body: %s", w.Code, w.Header().Get("Content-Type"), status, wantType, w.Body)
	}
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %s: %v", w.Body, err)
	}
	return v
}

type problem struct {
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Instance  string `json:"instance"`
	Parameter string `json:"parameter"`
}

// golden compares body with testdata/name.json, or rewrites it with -update.
func golden(t *testing.T, name string, body []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".json")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, body, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(body)); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, diff)
	}
}

func TestDefaults(t *testing.T) {
	hourAgo := now.Add(-time.Hour)
	tests := []struct {
		name   string
		target string
		want   storeCall
	}{
		{"series: last hour per minute", "/v1/ads/ad-1001/clicks",
			storeCall{Op: "Series", AdID: "ad-1001", From: hourAgo, To: now, G: analytics.Minute}},
		{"series: from an hour before to", "/v1/ads/ad-1001/clicks?to=2026-11-30T10:00:00Z",
			storeCall{Op: "Series", AdID: "ad-1001", From: date(9, 0), To: date(10, 0), G: analytics.Minute}},
		{"series: to now", "/v1/ads/ad-1001/clicks?from=2026-11-30T10:00:00Z",
			storeCall{Op: "Series", AdID: "ad-1001", From: date(10, 0), To: now, G: analytics.Minute}},
		{"top: last hour, 10 ads", "/v1/ads/top",
			storeCall{Op: "Top", From: hourAgo, To: now, Limit: 10}},
		{"top: from an hour before to", "/v1/ads/top?to=2026-11-30T10:00:00Z",
			storeCall{Op: "Top", From: date(9, 0), To: date(10, 0), Limit: 10}},
		{"top: to now", "/v1/ads/top?from=2026-11-30T10:00:00Z",
			storeCall{Op: "Top", From: date(10, 0), To: now, Limit: 10}},
		{"top: window ends now", "/v1/ads/top?window=5m",
			storeCall{Op: "Top", From: now.Add(-5 * time.Minute), To: now, Limit: 10}},
		{"quality: last hour, every ad", "/v1/traffic/quality",
			storeCall{Op: "Quality", From: hourAgo, To: now}},
		{"quality: from an hour before to", "/v1/traffic/quality?to=2026-11-30T10:00:00Z",
			storeCall{Op: "Quality", From: date(9, 0), To: date(10, 0)}},
		{"quality: to now", "/v1/traffic/quality?from=2026-11-30T10:00:00Z",
			storeCall{Op: "Quality", From: date(10, 0), To: now}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			got := decode[map[string]any](t, f.get(tt.target), http.StatusOK)
			if diff := cmp.Diff([]storeCall{tt.want}, f.store.queries()); diff != "" {
				t.Errorf("store queries (-want +got):\n%s", diff)
			}
			if got["from"] != formatTime(tt.want.From) || got["to"] != formatTime(tt.want.To) {
				t.Errorf("answered from %v to %v, want %v to %v", got["from"], got["to"], tt.want.From, tt.want.To)
			}
			if strings.Contains(tt.target, "/clicks") && got["granularity"] != "1m" {
				t.Errorf("granularity = %v, want 1m", got["granularity"])
			}
		})
	}
}

// date returns a time on 2026-11-30, in UTC.
func date(hour, min int) time.Time { return time.Date(2026, 11, 30, hour, min, 0, 0, time.UTC) }

func TestParameters(t *testing.T) {
	tests := []struct {
		name   string
		target string
		want   storeCall
	}{
		{"series: every parameter", "/v1/ads/ad-1001/clicks?from=2026-11-30T10:00:00Z&to=2026-11-30T12:00:00Z&granularity=1h&country=DE",
			storeCall{Op: "Series", AdID: "ad-1001", Country: "DE", From: date(10, 0), To: date(12, 0), G: analytics.Hour}},
		{"series: day granularity", "/v1/ads/ad-1001/clicks?from=2026-11-01T00:00:00Z&granularity=1d",
			storeCall{Op: "Series", AdID: "ad-1001", From: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), To: now, G: analytics.Day}},
		{"series: offsets converted to UTC", "/v1/ads/ad-1001/clicks?from=2026-11-30T11:00:00%2B01:00&to=2026-11-30T07:30:00-05:00",
			storeCall{Op: "Series", AdID: "ad-1001", From: date(10, 0), To: date(12, 30), G: analytics.Minute}},
		{"series: an unencoded + in an offset", "/v1/ads/ad-1001/clicks?from=2026-11-30T11:00:00+01:00",
			storeCall{Op: "Series", AdID: "ad-1001", From: date(10, 0), To: now, G: analytics.Minute}},
		{"series: fractional seconds", "/v1/ads/ad-1001/clicks?to=2026-11-30T12:00:00.5Z",
			storeCall{Op: "Series", AdID: "ad-1001", From: date(11, 0).Add(500 * time.Millisecond), To: date(12, 0).Add(500 * time.Millisecond), G: analytics.Minute}},
		{"series: the longest ad id", "/v1/ads/" + strings.Repeat("a", 128) + "/clicks",
			storeCall{Op: "Series", AdID: strings.Repeat("a", 128), From: now.Add(-time.Hour), To: now, G: analytics.Minute}},
		{"series: lower-case country", "/v1/ads/ad-1001/clicks?country=de",
			storeCall{Op: "Series", AdID: "ad-1001", Country: "DE", From: now.Add(-time.Hour), To: now, G: analytics.Minute}},
		{"series: mixed-case country", "/v1/ads/ad-1001/clicks?country=gB",
			storeCall{Op: "Series", AdID: "ad-1001", Country: "GB", From: now.Add(-time.Hour), To: now, G: analytics.Minute}},
		{"top: every parameter", "/v1/ads/top?from=2026-11-30T10:00:00Z&to=2026-11-30T12:00:00Z&limit=3&country=fr",
			storeCall{Op: "Top", Country: "FR", From: date(10, 0), To: date(12, 0), Limit: 3}},
		{"top: window with fractions", "/v1/ads/top?window=1h30m&limit=1000",
			storeCall{Op: "Top", From: now.Add(-90 * time.Minute), To: now, Limit: 1000}},
		{"top: smallest limit", "/v1/ads/top?limit=1",
			storeCall{Op: "Top", From: now.Add(-time.Hour), To: now, Limit: 1}},
		{"top: largest limit", "/v1/ads/top?limit=1000",
			storeCall{Op: "Top", From: now.Add(-time.Hour), To: now, Limit: 1000}},
		{"quality: one ad", "/v1/traffic/quality?ad_id=ad-1001&from=2026-11-30T10:00:00Z&to=2026-11-30T12:00:00Z",
			storeCall{Op: "Quality", AdID: "ad-1001", From: date(10, 0), To: date(12, 0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			got := decode[map[string]any](t, f.get(tt.target), http.StatusOK)
			if diff := cmp.Diff([]storeCall{tt.want}, f.store.queries()); diff != "" {
				t.Errorf("store queries (-want +got):\n%s", diff)
			}
			if got["from"] != formatTime(tt.want.From) || got["to"] != formatTime(tt.want.To) {
				t.Errorf("answered from %v to %v, want %s to %s", got["from"], got["to"], formatTime(tt.want.From), formatTime(tt.want.To))
			}
			if c, ok := got["country"]; (ok || tt.want.Country != "") && c != tt.want.Country {
				t.Errorf("answered country %v, want %q", c, tt.want.Country)
			}
		})
	}
}

func TestBadParameters(t *testing.T) {
	long := strings.Repeat("a", 129)
	tests := []struct {
		name      string
		target    string
		parameter string
	}{
		{"series: ad_id with a space", "/v1/ads/a%20b/clicks", "ad_id"},
		{"series: ad_id with a slash", "/v1/ads/a%2Fb/clicks", "ad_id"},
		{"series: ad_id too long", "/v1/ads/" + long + "/clicks", "ad_id"},
		{"series: unknown parameter", "/v1/ads/ad-1001/clicks?limit=5", "limit"},
		{"series: misspelt parameter", "/v1/ads/ad-1001/clicks?From=2026-11-30T10:00:00Z", "From"},
		{"series: from twice", "/v1/ads/ad-1001/clicks?from=2026-11-30T10:00:00Z&from=2026-11-30T11:00:00Z", "from"},
		{"series: from not a time", "/v1/ads/ad-1001/clicks?from=yesterday", "from"},
		{"series: from a date", "/v1/ads/ad-1001/clicks?from=2026-11-30", "from"},
		{"series: from without offset", "/v1/ads/ad-1001/clicks?from=2026-11-30T10:00:00", "from"},
		{"series: from Unix seconds", "/v1/ads/ad-1001/clicks?from=1795599000", "from"},
		{"series: from empty", "/v1/ads/ad-1001/clicks?from=", "from"},
		{"series: to not a time", "/v1/ads/ad-1001/clicks?to=now", "to"},
		{"series: to empty", "/v1/ads/ad-1001/clicks?to=", "to"},
		{"series: from equals to", "/v1/ads/ad-1001/clicks?from=2026-11-30T10:00:00Z&to=2026-11-30T10:00:00Z", "from"},
		{"series: from after to", "/v1/ads/ad-1001/clicks?from=2026-11-30T11:00:00Z&to=2026-11-30T10:00:00Z", "from"},
		{"series: from after now", "/v1/ads/ad-1001/clicks?from=2026-12-01T00:00:00Z", "from"},
		{"series: granularity 5m", "/v1/ads/ad-1001/clicks?granularity=5m", "granularity"},
		{"series: granularity upper case", "/v1/ads/ad-1001/clicks?granularity=1H", "granularity"},
		{"series: granularity empty", "/v1/ads/ad-1001/clicks?granularity=", "granularity"},
		{"series: country alpha-3", "/v1/ads/ad-1001/clicks?country=DEU", "country"},
		{"series: country unassigned", "/v1/ads/ad-1001/clicks?country=XX", "country"},
		{"series: country digits", "/v1/ads/ad-1001/clicks?country=1A", "country"},
		{"series: country one letter", "/v1/ads/ad-1001/clicks?country=D", "country"},
		{"series: country empty", "/v1/ads/ad-1001/clicks?country=", "country"},
		{"series: country not ASCII", "/v1/ads/ad-1001/clicks?country=%C3%84", "country"},
		{"series: too many points", "/v1/ads/ad-1001/clicks?from=2026-01-01T00:00:00Z", "granularity"},

		{"top: unknown parameter", "/v1/ads/top?ad_id=ad-1001", "ad_id"},
		{"top: limit 0", "/v1/ads/top?limit=0", "limit"},
		{"top: limit 1001", "/v1/ads/top?limit=1001", "limit"},
		{"top: limit negative", "/v1/ads/top?limit=-1", "limit"},
		{"top: limit fractional", "/v1/ads/top?limit=1.5", "limit"},
		{"top: limit a word", "/v1/ads/top?limit=ten", "limit"},
		{"top: limit empty", "/v1/ads/top?limit=", "limit"},
		{"top: limit huge", "/v1/ads/top?limit=99999999999999999999", "limit"},
		{"top: window without unit", "/v1/ads/top?window=5", "window"},
		{"top: window zero", "/v1/ads/top?window=0s", "window"},
		{"top: window negative", "/v1/ads/top?window=-5m", "window"},
		{"top: window in days", "/v1/ads/top?window=1d", "window"},
		{"top: window empty", "/v1/ads/top?window=", "window"},
		{"top: window with from", "/v1/ads/top?window=5m&from=2026-11-30T10:00:00Z", "window"},
		{"top: window with to", "/v1/ads/top?window=5m&to=2026-11-30T10:00:00Z", "window"},
		{"top: window with from and to", "/v1/ads/top?from=2026-11-30T10:00:00Z&to=2026-11-30T11:00:00Z&window=5m", "window"},
		{"top: country unassigned", "/v1/ads/top?country=ZZ", "country"},
		{"top: from not a time", "/v1/ads/top?from=noon", "from"},
		{"top: from after to", "/v1/ads/top?from=2026-11-30T11:00:00Z&to=2026-11-30T10:00:00Z", "from"},

		{"quality: country not taken", "/v1/traffic/quality?country=DE", "country"},
		{"quality: ad_id with a slash", "/v1/traffic/quality?ad_id=a%2Fb", "ad_id"},
		{"quality: ad_id empty", "/v1/traffic/quality?ad_id=", "ad_id"},
		{"quality: ad_id too long", "/v1/traffic/quality?ad_id=" + long, "ad_id"},
		{"quality: ad_id twice", "/v1/traffic/quality?ad_id=a&ad_id=b", "ad_id"},
		{"quality: to not a time", "/v1/traffic/quality?to=tomorrow", "to"},
		{"quality: from equals to", "/v1/traffic/quality?from=2026-11-30T10:00:00Z&to=2026-11-30T10:00:00Z", "from"},

		{"status: any parameter", "/v1/pipeline/status?verbose=1", "verbose"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			got := decode[problem](t, f.serve(r), http.StatusBadRequest)
			if got.Parameter != tt.parameter || !strings.HasPrefix(got.Detail, tt.parameter+": ") {
				t.Errorf("parameter %q, detail %q; want both to name %q", got.Parameter, got.Detail, tt.parameter)
			}
			if got.Status != http.StatusBadRequest || got.Title != "Bad Request" || got.Instance != r.URL.Path {
				t.Errorf("problem = %+v", got)
			}
			if q := f.store.queries(); len(q) != 0 {
				t.Errorf("the store was queried: %+v", q)
			}
			t.Log(got.Detail)
		})
	}
}

func TestBadParameterDetails(t *testing.T) {
	tests := []struct {
		target string
		detail string
	}{
		{"/v1/ads/ad-1001/clicks?from=yesterday",
			`from: want an RFC 3339 time such as 2026-11-30T13:00:00Z, got "yesterday"`},
		{"/v1/ads/ad-1001/clicks?from=2026-12-01T00:00:00Z",
			`from: must be before to, 2026-11-30T13:05:18Z (now, the default); got 2026-12-01T00:00:00Z`},
		{"/v1/ads/ad-1001/clicks?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
			`granularity: from 2026-01-01T00:00:00Z to 2026-02-01T00:00:00Z spans more than 10000 buckets of 1m; use a coarser granularity or a shorter range`},
		{"/v1/ads/ad-1001/clicks?foo=1",
			`foo: unknown query parameter; this endpoint takes from, to, granularity, country`},
		{"/v1/ads/ad-1001/clicks?country=" + strings.Repeat("x", 100),
			`country: want an ISO 3166-1 alpha-2 country code such as US, got "` + strings.Repeat("x", 64) + `"…`},
		{"/v1/ads/top?window=5m&to=2026-11-30T10:00:00Z",
			`window: give either window or from and to, not both; got window and to`},
		{"/v1/ads/top?limit=0", `limit: want an integer from 1 to 1000, got "0"`},
		{"/v1/pipeline/status?x%20y=1", `"x y": unknown query parameter; this endpoint takes none`},
		{"/v1/traffic/quality?=1", `"": unknown query parameter; this endpoint takes from, to, ad_id`},
	}
	for _, tt := range tests {
		f := newFixture(t)
		if got := decode[problem](t, f.get(tt.target), http.StatusBadRequest); got.Detail != tt.detail {
			t.Errorf("GET %s: detail\n%s\nwant\n%s", tt.target, got.Detail, tt.detail)
		}
	}
}

func TestMalformedQueryString(t *testing.T) {
	for _, target := range []string{"/v1/ads/ad-1001/clicks?from=%zz", "/v1/ads/top?limit=1;window=5m", "/v1/pipeline/status?%"} {
		f := newFixture(t)
		got := decode[problem](t, f.get(target), http.StatusBadRequest)
		if !strings.HasPrefix(got.Detail, "malformed query string: ") || got.Parameter != "" {
			t.Errorf("GET %s: %+v", target, got)
		}
	}
}

func TestSeriesPointLimit(t *testing.T) {
	t0 := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		granularity string
		span        time.Duration
		ok          bool
	}{
		{"1m", 10_000 * time.Minute, true},
		{"1m", 10_000*time.Minute + time.Second, false},
		{"1m", 10_001 * time.Minute, false},
		{"1h", 10_000 * time.Hour, true},
		{"1h", 10_001 * time.Hour, false},
		{"1d", 10_000 * 24 * time.Hour, true},
		{"1d", 10_001 * 24 * time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s_%v", tt.granularity, tt.span), func(t *testing.T) {
			f := newFixture(t)
			target := fmt.Sprintf("/v1/ads/ad-1001/clicks?granularity=%s&from=%s&to=%s", tt.granularity, formatTime(t0), formatTime(t0.Add(tt.span)))
			w := f.get(target)
			if !tt.ok {
				if got := decode[problem](t, w, http.StatusBadRequest); got.Parameter != "granularity" {
					t.Errorf("parameter = %q, want granularity", got.Parameter)
				}
				if q := f.store.queries(); len(q) != 0 {
					t.Errorf("the store was queried: %+v", q)
				}
				return
			}
			decode[map[string]any](t, w, http.StatusOK)
			if q := f.store.queries(); len(q) != 1 || !q[0].From.Equal(t0) || !q[0].To.Equal(t0.Add(tt.span)) {
				t.Errorf("store queries = %+v", q)
			}
		})
	}
}

func TestFinal(t *testing.T) {
	type pt struct {
		Start string
		Final bool
	}
	tests := []struct {
		name        string
		granularity string
		watermark   string // "" for none yet
		points      []pt
	}{
		{"minute: no watermark yet", "1m", "", []pt{{"2026-11-30T12:00:00Z", false}, {"2026-11-30T13:04:00Z", false}}},
		{"minute: ending at the watermark", "1m", "2026-11-30T13:05:00Z",
			[]pt{{"2026-11-30T13:03:00Z", true}, {"2026-11-30T13:04:00Z", true}, {"2026-11-30T13:05:00Z", false}}},
		{"minute: a millisecond short", "1m", "2026-11-30T13:04:59.999Z",
			[]pt{{"2026-11-30T13:03:00Z", true}, {"2026-11-30T13:04:00Z", false}}},
		{"hour: ending at the watermark", "1h", "2026-11-30T13:00:00Z",
			[]pt{{"2026-11-30T11:00:00Z", true}, {"2026-11-30T12:00:00Z", true}, {"2026-11-30T13:00:00Z", false}}},
		{"hour: minutes short", "1h", "2026-11-30T12:59:00Z",
			[]pt{{"2026-11-30T11:00:00Z", true}, {"2026-11-30T12:00:00Z", false}}},
		{"day: ending at the watermark", "1d", "2026-11-30T00:00:00Z",
			[]pt{{"2026-11-28T00:00:00Z", true}, {"2026-11-29T00:00:00Z", true}, {"2026-11-30T00:00:00Z", false}}},
		{"day: the last minute open", "1d", "2026-11-29T23:59:00Z",
			[]pt{{"2026-11-28T00:00:00Z", true}, {"2026-11-29T00:00:00Z", false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.watermark != "" {
				f.pipe.wm["ad-1001"] = mustTime(t, tt.watermark)
			}
			f.pipe.wm["ad-other"] = now // another partition's watermark must not count
			for i, p := range tt.points {
				f.store.points = append(f.store.points, analytics.Point{Start: mustTime(t, p.Start), Clicks: int64(10 + i), Invalid: int64(i)})
			}
			target := "/v1/ads/ad-1001/clicks?granularity=" + tt.granularity + "&from=2026-11-28T00:00:00Z"
			got := decode[seriesResponse](t, f.get(target), http.StatusOK)
			var gotPts []pt
			for i, p := range got.Points {
				gotPts = append(gotPts, pt{p.WindowStart, p.Final})
				if p.Clicks != int64(10+i) || p.InvalidClicks != int64(i) {
					t.Errorf("point %d = %+v, want clicks %d, invalid %d", i, p, 10+i, i)
				}
			}
			if diff := cmp.Diff(tt.points, gotPts); diff != "" {
				t.Errorf("points (-want +got):\n%s", diff)
			}
		})
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// seed gives the fakes the rows of the golden answers.
func seed(f *fixture) {
	f.pipe.wm["ad-1001"] = date(13, 5)
	f.store.points = []analytics.Point{
		{Start: date(12, 6), Clicks: 42, Invalid: 3},
		{Start: date(13, 4), Clicks: 17},
		{Start: date(13, 5), Clicks: 5, Invalid: 1},
	}
	f.store.top = []analytics.AdClicks{{AdID: "ad-1001", Clicks: 5120}, {AdID: "ad-0042", Clicks: 880}, {AdID: "ad-0043", Clicks: 880}}
	f.store.quality = analytics.Quality{Valid: 1250000, Bot: 18200, IPRate: 3100, Duplicates: 940, TooLate: 12}
	f.pipe.status = Status{
		Partitions: []PartitionStatus{
			{Partition: 1, LogEndOffset: 998001, CommittedOffset: 997001, Watermark: time.Date(2026, 11, 30, 13, 4, 40, 0, time.FixedZone("CET", 3600))},
			{Partition: 0, LogEndOffset: 1048576, CommittedOffset: 1048576, Watermark: time.Date(2026, 11, 30, 13, 4, 55, 0, time.UTC)},
			{Partition: 2},
		},
		EventsInPerSecond:    3512.5,
		EventsOutPerSecond:   3498,
		OldestUnprocessedAge: 1250 * time.Millisecond,
		Freshness:            2500 * time.Millisecond,
	}
}

func TestGoldenAnswers(t *testing.T) {
	tests := []struct {
		name   string
		target string
		status int
		setup  func(*fixture)
	}{
		{"series_defaults", "/v1/ads/ad-1001/clicks", 200, seed},
		{"series_hours_country", "/v1/ads/ad-1001/clicks?from=2026-11-30T10:00:00%2B01:00&to=2026-11-30T14:00:00Z&granularity=1h&country=de", 200, func(f *fixture) {
			f.pipe.wm["ad-1001"] = date(13, 5)
			f.store.points = []analytics.Point{{Start: date(9, 0), Clicks: 310, Invalid: 4}, {Start: date(13, 0), Clicks: 22}}
		}},
		{"series_empty", "/v1/ads/ad-1001/clicks", 200, nil},
		{"top_window", "/v1/ads/top?window=5m&limit=3", 200, seed},
		{"top_country_empty", "/v1/ads/top?country=fr", 200, nil},
		{"quality_all", "/v1/traffic/quality", 200, seed},
		{"quality_ad", "/v1/traffic/quality?ad_id=ad-1001&from=2026-11-30T00:00:00Z&to=2026-11-30T12:00:00Z", 200, seed},
		{"status_running", "/v1/pipeline/status", 200, seed},
		{"status_starting", "/v1/pipeline/status", 200, func(f *fixture) {
			f.pipe.status = Status{Partitions: []PartitionStatus{{Partition: 0}}, Freshness: -1}
		}},
		{"bad_from", "/v1/ads/ad-1001/clicks?from=yesterday", 400, nil},
		{"store_failed", "/v1/ads/ad-1001/clicks", 500, func(f *fixture) { f.store.err = errors.New("clickhouse: dial 10.0.0.7:9000") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			w := f.get(tt.target)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			golden(t, tt.name, w.Body.Bytes())
		})
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		name   string
		status Status
		want   string
	}{
		{
			"caught up, unsorted, lag never negative",
			Status{
				Partitions: []PartitionStatus{
					{Partition: 3, LogEndOffset: 10, CommittedOffset: 12, Watermark: date(13, 0)},
					{Partition: 1, LogEndOffset: 10, CommittedOffset: 4},
				},
				EventsInPerSecond: 1, EventsOutPerSecond: 2, OldestUnprocessedAge: 0, Freshness: 0,
			},
			`{"partitions":[{"partition":1,"log_end_offset":10,"committed_offset":4,"lag":6,"watermark":null},` +
				`{"partition":3,"log_end_offset":10,"committed_offset":12,"lag":0,"watermark":"2026-11-30T13:00:00Z"}],` +
				`"events_in_per_second":1,"events_out_per_second":2,"oldest_unprocessed_event_age_seconds":0,"freshness_seconds":0}`,
		},
		{
			"nothing processed yet, no partitions",
			Status{Freshness: -1},
			`{"partitions":[],"events_in_per_second":0,"events_out_per_second":0,"oldest_unprocessed_event_age_seconds":0,"freshness_seconds":null}`,
		},
		{
			"rates that JSON cannot carry, clicks from the future",
			Status{EventsInPerSecond: math.NaN(), EventsOutPerSecond: math.Inf(1), OldestUnprocessedAge: -time.Second, Freshness: -3 * time.Second},
			`{"partitions":[],"events_in_per_second":0,"events_out_per_second":0,"oldest_unprocessed_event_age_seconds":0,"freshness_seconds":0}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.pipe.status = tt.status
			w := f.get("/v1/pipeline/status")
			decode[statusResponse](t, w, http.StatusOK)
			if got := strings.TrimSpace(w.Body.String()); got != tt.want {
				t.Errorf("body\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestReadFailures(t *testing.T) {
	const secret = "dial tcp 10.0.0.7:9000: password=hunter2"
	for _, target := range []string{"/v1/ads/ad-1001/clicks", "/v1/ads/top", "/v1/traffic/quality", "/v1/pipeline/status"} {
		t.Run(target, func(t *testing.T) {
			f := newFixture(t)
			f.store.err = errors.New(secret)
			f.pipe.err = errors.New(secret)
			w := f.get(target)
			got := decode[problem](t, w, http.StatusInternalServerError)
			if strings.Contains(w.Body.String(), "hunter2") || strings.Contains(w.Body.String(), "10.0.0.7") {
				t.Errorf("the answer leaks the cause: %s", w.Body)
			}
			if !strings.HasSuffix(got.Detail, " failed; retry later") || got.Instance != target {
				t.Errorf("problem = %+v", got)
			}
			if logs := f.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "hunter2") {
				t.Errorf("the cause was not logged as an error: %s", logs)
			}
		})
	}
}

func TestClientGone(t *testing.T) {
	for _, target := range []string{"/v1/ads/ad-1001/clicks", "/v1/ads/top", "/v1/traffic/quality", "/v1/pipeline/status"} {
		t.Run(target, func(t *testing.T) {
			f := newFixture(t)
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			w := f.serve(httptest.NewRequestWithContext(ctx, http.MethodGet, target, nil))
			if w.Body.Len() != 0 || w.Header().Get("Content-Type") != "" {
				t.Errorf("answered a gone client: %d %s", w.Code, w.Body)
			}
			if strings.Contains(f.logs.String(), "level=ERROR") {
				t.Errorf("logged an error for a gone client: %s", f.logs)
			}
		})
	}
}

func TestNilLoggerAndClock(t *testing.T) {
	store := &fakeStore{err: errors.New("boom")}
	api := New(Config{}, store, &fakePipeline{}, nil)
	w := httptest.NewRecorder()
	api.HandleQuality().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/traffic/quality", nil))
	if w.Code != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", w.Code)
	}
	q := store.queries()
	if len(q) != 1 || q[0].To.Sub(q[0].From) != time.Hour || time.Since(q[0].To) > time.Minute || q[0].To.Nanosecond() != 0 {
		t.Errorf("store queries = %+v, want the hour before now, whole seconds", q)
	}
}
