package rediscache_test

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pedal-project/pedal/internal/metadata/collect"
	"github.com/pedal-project/pedal/internal/metadata/collect/collecttest"
	"github.com/pedal-project/pedal/internal/metadata/collect/rediscache"
	"github.com/pedal-project/pedal/internal/redistest"
)

func newCache(t *testing.T, addr string) *rediscache.Cache {
	t.Helper()
	c, err := rediscache.New(rediscache.Config{Client: redistest.Client(t, addr)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newCollector returns a Collector on the fake internet fn, caching in the
// Redis at addr.
func newCollector(t *testing.T, fn *collecttest.Net, addr string) (*collect.Collector, *prometheus.Registry) {
	t.Helper()
	cfg := collect.Config{Cache: newCache(t, addr), Retries: -1}
	fn.Use(&cfg.Fetch)
	reg := prometheus.NewRegistry()
	return collect.New(cfg, nil, reg), reg
}

func TestNewNeedsAddr(t *testing.T) {
	if _, err := rediscache.New(rediscache.Config{}); err == nil {
		t.Error("New without a client: no error")
	}
}

func TestGetPutRoundTrip(t *testing.T) {
	srv := redistest.Start(t)
	c := newCache(t, srv.Addr())
	ctx := t.Context()
	if _, ok, err := c.Get(ctx, "k"); ok || err != nil {
		t.Fatalf("Get on an empty cache: %v, %v", ok, err)
	}
	want := collect.Outcome{FinalURL: "https://news.example/a", Result: collect.Result{
		Title: "A", Images: []collect.Image{{URL: "https://cdn.example/a.png", Width: 10, Height: 20}},
		OEmbed: []byte(`{"type":"rich"}`), HTTPStatus: 200, ContentType: "text/html", BytesRead: 123, Truncated: true,
	}}
	if err := c.Put(ctx, "k", want, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, ok, err := c.Get(ctx, "k")
	if !ok || err != nil {
		t.Fatalf("Get after Put: %v, %v", ok, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}

	// The key is hashed under the prefix, and expires with the ttl.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || len(keys[0]) != len(rediscache.DefaultKeyPrefix)+64 || keys[0][:len(rediscache.DefaultKeyPrefix)] != rediscache.DefaultKeyPrefix {
		t.Fatalf("keys %q, want one prefix+sha256", keys)
	}
	if ttl := rdb.PTTL(ctx, keys[0]).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("PTTL %v, want (0, 1m]", ttl)
	}

	// An entry that does not decode is a miss.
	if err := rdb.Set(ctx, keys[0], "not json", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.Get(ctx, "k"); ok || err != nil {
		t.Errorf("Get of a corrupt entry: %v, %v; want a miss", ok, err)
	}
}

// TestSharedBetweenCollectors checks that a result one Collector fetched is a
// hit for another, and that Redis being down makes collections fetch (fail
// open) until it is back.
func TestSharedBetweenCollectors(t *testing.T) {
	srv := redistest.Start(t)
	var fetches atomic.Int32
	fn := collecttest.New(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, "<title>page %s</title>", r.URL.Path)
	}))
	a, _ := newCollector(t, fn, srv.Addr())
	b, regB := newCollector(t, fn, srv.Addr())
	ctx := t.Context()

	out, err := a.Collect(ctx, "http://news.example/one", collect.Options{}, nil)
	if err != nil || out.Cached || out.Result.Title != "page /one" {
		t.Fatalf("A: %+v, %v", out, err)
	}
	out, err = b.Collect(ctx, "http://news.example/one", collect.Options{}, nil)
	if err != nil || !out.Cached || out.Result.Title != "page /one" || out.FinalURL != "http://news.example/one" {
		t.Fatalf("B after A: %+v, %v; want A's result from the cache", out, err)
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
	// Other options are another entry.
	if _, err := b.Collect(ctx, "http://news.example/one", collect.Options{MaxDepthBytes: 4096}, nil); err != nil || fetches.Load() != 2 {
		t.Errorf("other options: %d fetches, %v", fetches.Load(), err)
	}

	// Redis down: a miss, the page is fetched, the error counted.
	srv.Stop()
	start := time.Now()
	out, err = b.Collect(ctx, "http://news.example/two", collect.Options{}, nil)
	if err != nil || out.Cached || out.Result.Title != "page /two" {
		t.Fatalf("with Redis down: %+v, %v; want a fetched result", out, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("with Redis down the collection took %v", d)
	}
	if n := fetches.Load(); n != 3 {
		t.Errorf("%d fetches, want 3", n)
	}
	for _, op := range []string{"get", "put"} {
		if n := cacheErrors(t, regB, op); n != 1 {
			t.Errorf("cache errors op=%s: %v, want 1", op, n)
		}
	}

	// Redis back (empty): caching works again.
	srv.Restart()
	if _, err := b.Collect(ctx, "http://news.example/two", collect.Options{}, nil); err != nil {
		t.Fatal(err)
	}
	out, err = a.Collect(ctx, "http://news.example/two", collect.Options{}, nil)
	if err != nil || !out.Cached {
		t.Errorf("A after Redis came back: %+v, %v; want a hit", out, err)
	}
	if n := fetches.Load(); n != 4 {
		t.Errorf("%d fetches, want 4", n)
	}
}

// TestPausedRedisFailsOpenQuickly checks that a Redis that accepts
// connections but never answers costs a collection at most the timeouts.
func TestPausedRedisFailsOpenQuickly(t *testing.T) {
	srv := redistest.Start(t)
	fn := collecttest.New(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<title>ok</title>")
	}))
	c, _ := newCollector(t, fn, srv.Addr())
	srv.Pause()
	defer srv.Resume()
	start := time.Now()
	out, err := c.Collect(t.Context(), "http://news.example/p", collect.Options{}, nil)
	if err != nil || out.Result.Title != "ok" {
		t.Fatalf("with Redis paused: %+v, %v", out, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("with Redis paused the collection took %v, want about 2×200ms", d)
	}
}

// cacheErrors reads pedal_metadata_cache_errors_total{op}.
func cacheErrors(t *testing.T, reg *prometheus.Registry, op string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pedal_metadata_cache_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == op {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
