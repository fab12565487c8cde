package collect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pedal-project/pedal/internal/metadata/collect/collecttest"
)

// newTest returns a Collector whose requests reach handler through a fake
// internet.
func newTest(t *testing.T, handler http.Handler, cfg Config) (*Collector, *collecttest.Net, *prometheus.Registry) {
	t.Helper()
	fn := collecttest.New(t, handler)
	fn.Use(&cfg.Fetch)
	reg := prometheus.NewRegistry()
	c := New(cfg, nil, reg)
	t.Cleanup(c.client.CloseIdleConnections)
	return c, fn, reg
}

func pngBytes(t *testing.T, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, w, h))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

const articleHTML = `<!doctype html><html lang="en"><head>
<meta charset="utf-8">
<title>Fallback title</title>
<meta property="og:title" content="Bikes &amp; Pedals">
<meta property="og:description" content="How pedals work.">
<meta property="og:site_name" content="News Example">
<meta property="og:image" content="/img/hero.png">
<link rel="canonical" href="https://news.example/articles/pedals">
<link rel="alternate" type="application/json+oembed" href="http://news.example/oembed?url=pedals">
<link rel="icon" href="//cdn.example/favicon.png">
</head><body><h1>Pedals</h1><img src="http://cdn.example/inline.png" alt="inline"></body></html>`

func TestCollectArticle(t *testing.T) {
	hero, inline := pngBytes(t, 1200, 630), pngBytes(t, 64, 32)
	mux := http.NewServeMux()
	mux.HandleFunc("news.example/articles/pedals", func(w http.ResponseWriter, r *http.Request) {
		if ua := r.Header.Get("User-Agent"); ua != "pedal-test/1" {
			t.Errorf("User-Agent %q", ua)
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, articleHTML)
	})
	mux.HandleFunc("news.example/old", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/articles/pedals", http.StatusMovedPermanently)
	})
	mux.HandleFunc("news.example/oembed", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"type": "rich", "version": "1.0", "html": "<iframe></iframe>"}`)
	})
	mux.HandleFunc("news.example/img/hero.png", func(w http.ResponseWriter, r *http.Request) { w.Write(hero) })
	mux.HandleFunc("cdn.example/inline.png", func(w http.ResponseWriter, r *http.Request) { w.Write(inline) })
	c, _, _ := newTest(t, mux, Config{UserAgent: "pedal-test/1"})

	out, err := c.Collect(t.Context(), "http://news.example/old", Options{IncludeImages: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.FinalURL != "http://news.example/articles/pedals" {
		t.Errorf("final URL %q", out.FinalURL)
	}
	r := out.Result
	for _, c := range []struct{ field, got, want string }{
		{"title", r.Title, "Bikes & Pedals"},
		{"description", r.Description, "How pedals work."},
		{"site_name", r.SiteName, "News Example"},
		{"canonical_url", r.CanonicalURL, "https://news.example/articles/pedals"},
		{"lang", r.Lang, "en"},
		{"favicon", r.Favicon, "http://cdn.example/favicon.png"},
		{"oembed", string(r.OEmbed), `{"type":"rich","version":"1.0","html":"<iframe></iframe>"}`},
		{"content_type", r.ContentType, "text/html; charset=utf-8"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
		}
	}
	if r.HTTPStatus != 200 || r.Truncated || r.BytesRead != int64(len(articleHTML)) {
		t.Errorf("status %d truncated %v bytes %d, want 200 false %d", r.HTTPStatus, r.Truncated, r.BytesRead, len(articleHTML))
	}
	want := []Image{{URL: "http://news.example/img/hero.png", Width: 1200, Height: 630},
		{URL: "http://cdn.example/inline.png", Width: 64, Height: 32, Alt: "inline"}}
	if fmt.Sprint(r.Images) != fmt.Sprint(want) {
		t.Errorf("images %+v\nwant %+v", r.Images, want)
	}

	// Without include_images: no images and no probes.
	out, err = c.Collect(t.Context(), "http://news.example/articles/pedals", Options{}, nil)
	if err != nil || len(out.Result.Images) != 0 {
		t.Errorf("without images: %+v, %v", out.Result.Images, err)
	}
}

func TestCollectTruncates(t *testing.T) {
	page := `<html><head><title>Big page</title></head><body>` + strings.Repeat("<p>filler</p>", 1000) + `</body></html>`
	c, _, _ := newTest(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, page)
	}), Config{MaxDepthBytes: 4096})
	for _, max := range []int64{1024, 4096} { // 4096 is also the client's own cap
		out, err := c.Collect(t.Context(), "http://news.example/big", Options{MaxDepthBytes: max}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !out.Result.Truncated || out.Result.BytesRead != max || out.Result.Title != "Big page" {
			t.Errorf("max %d: truncated %v, bytes %d, title %q", max, out.Result.Truncated, out.Result.BytesRead, out.Result.Title)
		}
	}
	// A page exactly at the cap is not truncated.
	exact := page[:2048]
	c2, _, _ := newTest(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, exact) }), Config{})
	out, err := c2.Collect(t.Context(), "http://news.example/exact", Options{MaxDepthBytes: 2048}, nil)
	if err != nil || out.Result.Truncated || out.Result.BytesRead != 2048 {
		t.Errorf("exact: %+v, %v", out.Result, err)
	}
	if err := c.CheckOptions(&Options{MaxDepthBytes: 4097}); err == nil {
		t.Error("max_depth_bytes above the cap accepted")
	}
	if err := c.CheckOptions(&Options{MaxDepthBytes: 1023}); err == nil {
		t.Error("max_depth_bytes below 1024 accepted")
	}
	o := Options{}
	if err := c.CheckOptions(&o); err != nil || o.MaxDepthBytes != 4096 {
		t.Errorf("default under a 4 KiB cap: %d, %v", o.MaxDepthBytes, err)
	}
}

func code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return fmt.Sprintf("not an *Error: %v", err)
}

func TestCollectBlockedNeverDials(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("news.example/to-internal", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://internal.example/admin", http.StatusFound)
	})
	mux.HandleFunc("news.example/to-metadata", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	})
	c, fn, _ := newTest(t, mux, Config{CacheTTL: -1})
	for _, u := range []string{"http://internal.example/", "http://meta.example/latest", "http://10.1.2.3/",
		"http://[::ffff:127.0.0.1]/", "http://0x7f000001/"} {
		_, err := c.Collect(t.Context(), u, Options{}, nil)
		if code(err) != CodeBlockedDestination {
			t.Errorf("%s: %v, want %s", u, err, CodeBlockedDestination)
		}
		if strings.Contains(err.Error(), "10.0.0.5") {
			t.Errorf("%s: the message reveals the resolved address: %v", u, err)
		}
	}
	if d := fn.Dialled(); len(d) != 0 {
		t.Fatalf("dialled %v for blocked destinations", d)
	}
	// A public page redirecting inward: the first hop is dialled, the second is not.
	for _, u := range []string{"http://news.example/to-internal", "http://news.example/to-metadata"} {
		if _, err := c.Collect(t.Context(), u, Options{}, nil); code(err) != CodeBlockedDestination {
			t.Errorf("%s: %v, want %s", u, err, CodeBlockedDestination)
		}
	}
	for _, d := range fn.Dialled() {
		if !strings.HasPrefix(d, "93.184.215.14:") {
			t.Errorf("dialled %s", d)
		}
	}
}

func TestCollectFailures(t *testing.T) {
	var unavailable atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("news.example/pdf", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pdf")
		w.Write([]byte("%PDF-1.4"))
	})
	mux.HandleFunc("news.example/missing", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	mux.HandleFunc("news.example/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	mux.HandleFunc("news.example/busy", func(w http.ResponseWriter, r *http.Request) {
		if unavailable.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		fmt.Fprint(w, "<title>Finally</title>")
	})
	mux.HandleFunc("slow.example/", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	mux.HandleFunc("news.example/sniffed", func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = nil // no Content-Type at all: sniffed
		fmt.Fprint(w, "<!DOCTYPE html><title>Sniffed</title>")
	})
	c, _, _ := newTest(t, mux, Config{CacheTTL: -1, Timeout: 2 * time.Second, RetryBase: time.Millisecond})

	for _, tc := range []struct{ url, code string }{
		{"http://news.example/pdf", CodeUnsupportedContentType},
		{"http://news.example/missing", CodeHTTPError},
		{"http://news.example/loop", CodeTooManyRedirects},
		{"http://nowhere.example/", CodeDNSFailed},
		{"ftp://news.example/", CodeBlockedDestination},
		{"http://slow.example/", CodeTimeout},
	} {
		var attempts []int
		_, err := c.Collect(t.Context(), tc.url, Options{}, func(n int) { attempts = append(attempts, n) })
		if code(err) != tc.code {
			t.Errorf("%s: %v, want %s", tc.url, err, tc.code)
		}
		if tc.code == CodeHTTPError && len(attempts) != 0 {
			t.Errorf("%s: a 404 was retried (%v)", tc.url, attempts)
		}
	}

	// 429 with Retry-After: 1 is retried once, no sooner than a second later.
	var attempts []int
	start := time.Now()
	out, err := c.Collect(t.Context(), "http://news.example/busy", Options{}, func(n int) { attempts = append(attempts, n) })
	if err != nil || out.Result.Title != "Finally" {
		t.Fatalf("busy: %+v, %v", out, err)
	}
	if fmt.Sprint(attempts) != "[2]" || time.Since(start) < time.Second {
		t.Errorf("busy: attempts %v after %v; want [2] after at least Retry-After (1s)", attempts, time.Since(start))
	}

	out, err = c.Collect(t.Context(), "http://news.example/sniffed", Options{}, nil)
	if err != nil || out.Result.Title != "Sniffed" {
		t.Errorf("sniffed: %+v, %v", out.Result, err)
	}
}

func TestBreakerOpensPerHost(t *testing.T) {
	var flaky, healthy atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("flaky.example/", func(w http.ResponseWriter, r *http.Request) {
		flaky.Add(1)
		http.Error(w, "down", http.StatusInternalServerError)
	})
	mux.HandleFunc("news.example/", func(w http.ResponseWriter, r *http.Request) {
		healthy.Add(1)
		fmt.Fprint(w, "<title>ok</title>")
	})
	c, _, reg := newTest(t, mux, Config{CacheTTL: -1, Retries: -1, BreakerOpenFor: time.Hour})
	for i := range 20 {
		if _, err := c.Collect(t.Context(), fmt.Sprintf("http://flaky.example/%d", i), Options{}, nil); code(err) != CodeHTTPError {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	_, err := c.Collect(t.Context(), "http://flaky.example/next", Options{}, nil)
	if code(err) != CodeHostUnavailable {
		t.Fatalf("after 20 failures: %v, want %s", err, CodeHostUnavailable)
	}
	if n := flaky.Load(); n != 20 {
		t.Errorf("the open breaker let a request through: %d requests", n)
	}
	// Other hosts are unaffected.
	if _, err := c.Collect(t.Context(), "http://news.example/", Options{}, nil); err != nil {
		t.Errorf("healthy host: %v", err)
	}
	if got := testutil.ToFloat64(c.metrics.openHosts); got != 1 {
		t.Errorf("open hosts gauge %v", got)
	}
	if n, _ := testutil.GatherAndCount(reg, "pedal_metadata_breaker_rejections_total"); n != 1 {
		t.Errorf("rejections metric series: %d", n)
	}
}

func TestBreakerNeedsMinimumAndMajority(t *testing.T) {
	var calls atomic.Int32
	c, _, _ := newTest(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every other call fails: exactly 50%, which must not trip.
		if calls.Add(1)%2 == 0 {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		fmt.Fprint(w, "<title>ok</title>")
	}), Config{CacheTTL: -1, Retries: -1, BreakerOpenFor: time.Hour})
	for i := range 40 {
		if _, err := c.Collect(t.Context(), fmt.Sprintf("http://flaky.example/%d", i), Options{}, nil); code(err) == CodeHostUnavailable {
			t.Fatalf("call %d: breaker opened at 50%% failures", i)
		}
	}
}

func TestCacheAndSharedFetch(t *testing.T) {
	var hits atomic.Int32
	gate := make(chan struct{})
	c, _, _ := newTest(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		<-gate
		fmt.Fprint(w, "<title>shared</title>")
	}), Config{})
	var wg sync.WaitGroup
	var cached atomic.Int32
	for range 5 {
		wg.Go(func() {
			out, err := c.Collect(t.Context(), "http://news.example/p", Options{}, nil)
			if err != nil || out.Result.Title != "shared" {
				t.Errorf("%+v, %v", out, err)
			}
			if out.Cached {
				cached.Add(1)
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	close(gate)
	wg.Wait()
	if hits.Load() != 1 || cached.Load() != 4 {
		t.Errorf("5 identical requests: %d fetches, %d cached; want 1 and 4", hits.Load(), cached.Load())
	}
	// Other options are another entry.
	if _, err := c.Collect(t.Context(), "http://news.example/p", Options{MaxDepthBytes: 2048}, nil); err != nil || hits.Load() != 2 {
		t.Errorf("other options: %d fetches, %v", hits.Load(), err)
	}
}

func TestCacheExpiresAndBounds(t *testing.T) {
	c := newCache(time.Minute, 3)
	now := time.Now()
	for i := range 5 {
		c.put(fmt.Sprint(i), Outcome{FinalURL: fmt.Sprint(i)}, now)
	}
	if c.len() != 3 {
		t.Fatalf("%d entries, want the bound 3", c.len())
	}
	if _, ok := c.get("0", now); ok {
		t.Error("the oldest entry survived eviction")
	}
	if out, ok := c.get("4", now); !ok || out.FinalURL != "4" {
		t.Error("the newest entry is missing")
	}
	c.put("4", Outcome{FinalURL: "4b"}, now.Add(30*time.Second)) // refreshed
	if _, ok := c.get("3", now.Add(61*time.Second)); ok {
		t.Error("an expired entry was returned")
	}
	if out, ok := c.get("4", now.Add(61*time.Second)); !ok || out.FinalURL != "4b" {
		t.Error("a refreshed entry expired with its first insertion")
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "3": 3 * time.Second, " 120 ": 2 * time.Minute, "-1": 0, "soon": 0,
		"Mon, 30 Nov 2026 12:00:10 GMT": 10 * time.Second, "Mon, 30 Nov 2026 11:00:00 GMT": 0,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", v, got, want)
		}
	}
}

// TestCloseEndsSharedFetches: a fetch outlives the caller that started it
// (others may share it), but not the Collector.
func TestCloseEndsSharedFetches(t *testing.T) {
	started := make(chan struct{}, 1)
	c, _, _ := newTest(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
	}), Config{CacheTTL: -1, Timeout: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Collect(ctx, "http://slow.example/", Options{}, nil)
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; err != context.Canceled {
		t.Fatalf("the caller's Collect: %v", err)
	}
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the fetch in flight")
	}
}
