package ingest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/clicks/clicktoken"
	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/eventlog/eventlogtest"
	"github.com/pedal-project/pedal/internal/eventlog/pebblelog"
)

var testNow = time.Date(2026, 5, 23, 8, 0, 0, 0, time.UTC)

type fixture struct {
	log *pebblelog.Log
	fs  *vfs.MemFS
	srv *httptest.Server
	key *clicktoken.Key
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	fs := vfs.NewMem()
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 1 << 40, TotalBytes: 1 << 40})
	log, err := pebblelog.Open("/log", pebblelog.Config{FS: fs, MinFreeBytes: 1 << 20}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	if err := log.CreateTopic(t.Context(), clicks.Topic, 4); err != nil {
		t.Fatal(err)
	}
	cfg.Partitions = 4
	cfg.Now = func() time.Time { return testNow }
	s := New(cfg, log, nil, nil)
	key, _ := clicktoken.NewKey([]byte("0123456789abcdef0123456789abcdef"))
	rd, err := s.Redirects(RedirectConfig{Key: key, PublicURL: "https://clk.example/", TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/clicks", s.HandleClicks())
	mux.Handle("GET /v1/r/{token}", rd.HandleRedirect())
	mux.Handle("POST /v1/ads/{ad_id}/click-urls", rd.HandleMint())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &fixture{log: log, fs: fs, srv: srv, key: key}
}

// stored returns every click in the log, in partition then offset order.
func (f *fixture) stored(t *testing.T) []clicks.Click {
	t.Helper()
	var out []clicks.Click
	for p := range int32(4) {
		for _, r := range eventlogtest.ReadAll(t, f.log, clicks.Topic, p, 0) {
			c, err := clicks.Decode(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c)
		}
	}
	return out
}

func post(t *testing.T, url, contentType, body string) (int, http.Header, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("response %q is not JSON: %v", b, err)
		}
	}
	return resp.StatusCode, resp.Header, m
}

func TestIngestPartialAcceptance(t *testing.T) {
	f := newFixture(t, Config{})
	code, hdr, body := post(t, f.srv.URL+"/v1/clicks", "application/json; charset=utf-8",
		`[{"click_id":"c1","ad_id":"a1","country":"us"},{"click_id":"c2"},{"click_id":"c3","ad_id":"a2","ts":1779523200000}]`)
	if code != http.StatusAccepted || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d %s, want 202 application/json", code, hdr.Get("Content-Type"))
	}
	want := map[string]any{"accepted": 2.0, "rejected": []any{map[string]any{"index": 1.0, "code": "missing", "field": "ad_id", "message": "ad_id is required"}}}
	if diff := cmp.Diff(want, body); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	got := map[string]string{}
	for _, c := range f.stored(t) {
		got[c.ClickID] = c.AdID + "/" + c.Country
	}
	if diff := cmp.Diff(map[string]string{"c1": "a1/US", "c3": "a2/"}, got); diff != "" {
		t.Errorf("stored clicks (-want +got):\n%s", diff)
	}
}

func TestIngestNDJSON(t *testing.T) {
	f := newFixture(t, Config{})
	code, _, body := post(t, f.srv.URL+"/v1/clicks", "application/x-ndjson", "{\"click_id\":\"n1\",\"ad_id\":\"a\"}\n\n{\"click_id\":\"n2\",\"ad_id\":\"a\"}\n")
	if code != http.StatusAccepted || body["accepted"] != 2.0 {
		t.Fatalf("status %d body %v, want 202 with 2 accepted", code, body)
	}
	if n := len(f.stored(t)); n != 2 {
		t.Errorf("stored %d clicks, want 2", n)
	}
}

func TestIngestErrors(t *testing.T) {
	f := newFixture(t, Config{MaxBodyBytes: 2048})
	tests := []struct {
		name, ct, body string
		status         int
		check          func(t *testing.T, body map[string]any)
	}{
		{"all rejected", "application/json", `[{"click_id":"x"},{"ad_id":"y"}]`, 400, func(t *testing.T, b map[string]any) {
			if rej, _ := b["rejected"].([]any); len(rej) != 2 {
				t.Errorf("rejected = %v, want 2 entries", b["rejected"])
			}
		}},
		{"broken JSON", "application/json", `[{"click_id":"x",]`, 400, func(t *testing.T, b map[string]any) {
			if b["offset"] != 17.0 || !strings.Contains(b["detail"].(string), "offset 17") {
				t.Errorf("broken JSON answer %v, want offset 17 named", b)
			}
		}},
		{"bad NDJSON line", "application/x-ndjson", "{\"click_id\":\"x\",\"ad_id\":\"y\"}\nnot json\n", 400, func(t *testing.T, b map[string]any) {
			if b["line"] != 2.0 || !strings.Contains(b["detail"].(string), "line 2") {
				t.Errorf("bad line answer %v, want line 2 named", b)
			}
		}},
		{"empty", "application/json", "  ", 400, nil},
		{"too large", "application/json", "[" + strings.Repeat(`{"click_id":"x","ad_id":"y"},`, 100) + "{}]", 413, nil},
		{"wrong type", "text/csv", "click_id,ad_id", 415, nil},
		{"no type", "", "{}", 415, nil},
		{"latin-1", "application/json; charset=iso-8859-1", "{}", 415, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, hdr, body := post(t, f.srv.URL+"/v1/clicks", tt.ct, tt.body)
			if code != tt.status {
				t.Fatalf("status %d (%v), want %d", code, body, tt.status)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q, want application/problem+json", ct)
			}
			if body["status"] != float64(tt.status) || body["detail"] == "" {
				t.Errorf("problem %v lacks status or detail", body)
			}
			if tt.check != nil {
				tt.check(t, body)
			}
		})
	}
	// A body of unknown length over the limit is cut off with 413 too.
	req, _ := http.NewRequest("POST", f.srv.URL+"/v1/clicks", io.MultiReader(strings.NewReader("["), strings.NewReader(strings.Repeat(" ", 4096)+"]")))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("chunked oversized body: status %d, want 413", resp.StatusCode)
	}
	if n := len(f.stored(t)); n != 0 {
		t.Errorf("stored %d clicks from bad requests, want 0", n)
	}
	// The server still serves.
	if code, _, _ := post(t, f.srv.URL+"/v1/clicks", "application/json", `{"click_id":"ok","ad_id":"a"}`); code != 202 {
		t.Errorf("valid request after bad ones: status %d, want 202", code)
	}
}

func TestIngestLogUnavailable(t *testing.T) {
	f := newFixture(t, Config{})
	f.fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 1024, TotalBytes: 1 << 40})
	// The log notices free space on its periodic check; a reopen checks at once.
	if err := f.log.Close(); err != nil {
		t.Fatal(err)
	}
	code, hdr, _ := post(t, f.srv.URL+"/v1/clicks", "application/json", `{"click_id":"c","ad_id":"a"}`)
	if code != 503 || hdr.Get("Retry-After") == "" {
		t.Errorf("closed log: status %d Retry-After %q, want 503 with Retry-After", code, hdr.Get("Retry-After"))
	}
	log, err := pebblelog.Open("/log", pebblelog.Config{FS: f.fs, MinFreeBytes: 1 << 20}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	s := New(Config{Partitions: 4}, log, nil, nil)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/v1/clicks", strings.NewReader(`{"click_id":"c","ad_id":"a"}`))
	req.Header.Set("Content-Type", "application/json")
	s.HandleClicks().ServeHTTP(rec, req)
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "full") {
		t.Errorf("full log: status %d %s, want 503 naming the full log with Retry-After", rec.Code, rec.Body)
	}
	_, end, _ := log.Offsets(t.Context(), clicks.Topic, eventlog.PartitionForString("a", 4))
	if end != 0 {
		t.Errorf("a refused request left %d records", end)
	}
}

func TestRedirect(t *testing.T) {
	f := newFixture(t, Config{})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	code, _, minted := post(t, f.srv.URL+"/v1/ads/ad-9/click-urls", "application/json", `{"destination":"https://shop.example/p?id=1","impression_id":"imp-1","ttl_seconds":60}`)
	if code != 201 {
		t.Fatalf("mint: status %d %v", code, minted)
	}
	if !strings.HasPrefix(minted["url"].(string), "https://clk.example/v1/r/") || minted["expires_at"] != "2026-05-23T08:01:00Z" {
		t.Errorf("minted %v", minted)
	}
	get := func(token string, hdr map[string]string) *http.Response {
		req, _ := http.NewRequest("GET", f.srv.URL+"/v1/r/"+token, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	tok := minted["token"].(string)
	resp := get(tok, map[string]string{"User-Agent": "Mozilla/5.0 test", "X-Forwarded-For": "198.51.100.4, 127.0.0.9"})
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "https://shop.example/p?id=1" {
		t.Fatalf("redirect: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	got := f.stored(t)
	want := []clicks.Click{{ClickID: "imp-1", AdID: "ad-9", Time: testNow, ReceivedAt: testNow, IP: netip.MustParseAddr("198.51.100.4"), UserAgent: "Mozilla/5.0 test", Source: clicks.SourceRedirect}}
	opts := cmp.Options{cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })}
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Errorf("recorded click (-want +got):\n%s", diff)
	}
	// Tampering, garbage and expiry redirect nowhere.
	b := []byte(tok)
	b[len(b)/2] ^= 1
	expired, _ := f.key.Sign(clicktoken.Claims{AdID: "a", ImpressionID: "i", Destination: "https://x.example/", Expiry: testNow})
	other, _ := clicktoken.NewKey([]byte("another key, another key, another"))
	forged, _ := other.Sign(clicktoken.Claims{AdID: "a", ImpressionID: "i", Destination: "https://evil.example/", Expiry: testNow.Add(time.Hour)})
	for name, bad := range map[string]string{"tampered": string(b), "garbage": "bm9wZQ", "expired": expired, "forged": forged} {
		resp := get(bad, nil)
		if resp.StatusCode != 404 || resp.Header.Get("Location") != "" {
			t.Errorf("%s token: %d Location %q, want 404 and no Location", name, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if n := len(f.stored(t)); n != 1 {
		t.Errorf("bad tokens recorded clicks: %d stored, want 1", n)
	}
	for body, field := range map[string]string{
		`{"destination":"javascript:alert(1)"}`:    "destination",
		`{"destination":"https://u:p@x.example/"}`: "destination",
		`{}`: "destination",
		`{"destination":"https://x.example/","impression_id":"a b"}`:  "impression_id",
		`{"destination":"https://x.example/","ttl_seconds":99999999}`: "ttl_seconds",
		`{"destination":"https://x.example/","ttl_seconds":0}`:        "ttl_seconds",
	} {
		code, _, p := post(t, f.srv.URL+"/v1/ads/ad-9/click-urls", "application/json", body)
		if code != 400 || p["field"] != field {
			t.Errorf("mint %s: %d %v, want 400 naming %s", body, code, p, field)
		}
	}
}

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		remote, xff, want string
	}{
		{"203.0.113.1:5000", "198.51.100.1", "203.0.113.1"},                  // untrusted peer: header ignored
		{"10.0.0.1:5000", "198.51.100.1", "198.51.100.1"},                    // trusted peer
		{"10.0.0.1:5000", "1.2.3.4, 198.51.100.1, 10.0.0.2", "198.51.100.1"}, // right-most untrusted
		{"10.0.0.1:5000", "", "10.0.0.1"},
		{"10.0.0.1:5000", "garbage, 10.0.0.3", "10.0.0.3"},
		{"[::ffff:10.0.0.1]:5000", "2001:db8::5", "2001:db8::5"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		if tt.xff != "" {
			r.Header.Set("X-Forwarded-For", tt.xff)
		}
		if got := clientIP(r, trusted); got.String() != tt.want {
			t.Errorf("clientIP(%s, XFF %q) = %s, want %s", tt.remote, tt.xff, got, tt.want)
		}
	}
}
