package redisfallback_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pedal-project/pedal/internal/breaker"
	"github.com/pedal-project/pedal/internal/gateway"
	"github.com/pedal-project/pedal/internal/gateway/redisfallback"
	"github.com/pedal-project/pedal/internal/gateway/routedb"
	"github.com/pedal-project/pedal/internal/principal"
	"github.com/pedal-project/pedal/internal/ratelimit"
	"github.com/pedal-project/pedal/internal/redistest"
)

// noAuth refuses every token; the test routes are public.
type noAuth struct{}

func (noAuth) Authenticate(context.Context, string) (principal.Principal, error) {
	return principal.Principal{}, errors.New("no tokens here")
}
func (noAuth) Revoke(context.Context, string) (principal.Principal, error) {
	return principal.Principal{}, errors.New("no tokens here")
}
func (noAuth) Token(*http.Request) (string, error) { return "", errors.New("no tokens here") }

func newStore(t *testing.T, cfg redisfallback.Config, reg prometheus.Registerer) *redisfallback.Store {
	t.Helper()
	s, err := redisfallback.New(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitFor polls s until key is stored: Put only queues the write.
func waitFor(t *testing.T, s *redisfallback.Store, key string) gateway.FallbackEntry {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		e, ok, err := s.Get(t.Context(), key)
		if ok {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q not stored after 5s (last error %v)", key, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewNeedsAddr(t *testing.T) {
	if _, err := redisfallback.New(redisfallback.Config{}, nil); err == nil {
		t.Error("New without a client: no error")
	}
}

func TestPutGet(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, redisfallback.Config{Client: redistest.Client(t, srv.Addr()), MaxBytes: 10}, nil)
	at := time.Now().Truncate(time.Millisecond).UTC()
	want := gateway.FallbackEntry{Code: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"a":1}`), At: at}
	if err := s.Put(t.Context(), "k", want); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, s, "k")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	// A body over MaxBytes is not stored.
	if err := s.Put(t.Context(), "big", gateway.FallbackEntry{Code: 200, Body: make([]byte, 11), At: at}); err != nil {
		t.Fatal(err)
	}
	s.Put(t.Context(), "after", want) // writes are FIFO per writer; wait for a later one
	waitFor(t, s, "after")
	if _, ok, err := s.Get(t.Context(), "big"); ok || err != nil {
		t.Errorf("an oversized body was stored: %v, %v", ok, err)
	}
}

func TestQueueFullDrops(t *testing.T) {
	srv := redistest.Start(t)
	reg := prometheus.NewRegistry()
	s := newStore(t, redisfallback.Config{Client: redistest.Client(t, srv.Addr()), QueueSize: 1, Writers: 1}, reg)
	srv.Pause() // the writer hangs on its first SET until the timeout
	defer srv.Resume()
	var dropped int
	for range 20 {
		if err := s.Put(t.Context(), "k", gateway.FallbackEntry{Code: 200, At: time.Now()}); errors.Is(err, redisfallback.ErrQueueFull) {
			dropped++
		}
	}
	if dropped < 18 {
		t.Errorf("%d of 20 writes dropped with a queue of 1 and a hung Redis, want at least 18", dropped)
	}
	if got := counter(t, reg, "pedal_gateway_fallback_redis_dropped_total", ""); got != float64(dropped) {
		t.Errorf("dropped metric %v, want %d", got, dropped)
	}
}

// gw is one gateway instance in front of the shared upstream.
type gw struct {
	t   *testing.T
	srv *httptest.Server
}

func newGateway(t *testing.T, upstream string, store gateway.FallbackStore) *gw {
	t.Helper()
	db, err := routedb.Open(t.Context(), filepath.Join(t.TempDir(), "routes.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	routes := []routedb.Route{{ID: "up", PathPattern: "/up/", TargetCluster: "up", MaxConcurrency: 1000, IsActive: true,
		Auth: routedb.AuthPublic, Timeout: 5 * time.Second}}
	clusters := []routedb.Cluster{{Name: "up", Kind: routedb.KindHTTP, Balancing: routedb.RoundRobin, MaxConcurrency: 100,
		Endpoints: []string{upstream}}}
	if _, err := db.Seed(t.Context(), routes, clusters); err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(t.Context(), gateway.Config{Breaker: breaker.Config{OpenFor: time.Hour}, MaxRetries: -1},
		db, nil, noAuth{}, ratelimit.NewLocal(ratelimit.Config{}), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.SetFallbackStore(store)
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return &gw{t: t, srv: srv}
}

func (g *gw) do(method, path string) (int, http.Header, string) {
	g.t.Helper()
	req, _ := http.NewRequest(method, g.srv.URL+path, nil)
	req.Host = "api.example" // as behind a load balancer: the fallback key has the Host
	resp, err := g.srv.Client().Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// TestSharedBetweenGateways checks that an answer gateway A stored is served
// by gateway B while B's breaker is open; that with Redis down B answers 503
// without details, quickly; and that it works again once Redis is back.
func TestSharedBetweenGateways(t *testing.T) {
	srv := redistest.Start(t)
	var failing atomic.Bool
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Secret", "not kept")
		fmt.Fprintf(w, `{"path": %q}`, r.URL.Path)
	}))
	defer up.Close()
	regB := prometheus.NewRegistry()
	storeA := newStore(t, redisfallback.Config{Client: redistest.Client(t, srv.Addr())}, nil)
	storeB := newStore(t, redisfallback.Config{Client: redistest.Client(t, srv.Addr())}, regB)
	a, b := newGateway(t, up.URL, storeA), newGateway(t, up.URL, storeB)

	if code, _, body := a.do("GET", "/up/data"); code != 200 || body != `{"path": "/up/data"}` {
		t.Fatalf("A: %d %s", code, body)
	}
	openBreaker(t, b, &failing)

	var (
		code int
		h    http.Header
		body string
	)
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, h, body = b.do("GET", "/up/data")
		if code == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // A's write is queued, not yet in Redis
	}
	if code != 200 || body != `{"path": "/up/data"}` || !strings.HasPrefix(h.Get(gateway.FallbackHeader), "stale") ||
		h.Get("Content-Type") != "application/json" || h.Get("X-Secret") != "" {
		t.Fatalf("B with its breaker open: %d %v %s; want A's answer, stale", code, h, body)
	}

	// Redis down: no fallback, a plain 503 that says nothing of Redis.
	srv.Stop()
	start := time.Now()
	code, h, body = b.do("GET", "/up/data")
	if code != 503 || h.Get(gateway.FallbackHeader) != "" || strings.Contains(strings.ToLower(body), "redis") ||
		strings.Contains(body, srv.Addr()) || strings.Contains(body, "refused") {
		t.Errorf("B with Redis down: %d %v %s; want a plain 503", code, h, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("B with Redis down answered in %v", d)
	}
	if n := counter(t, regB, "pedal_gateway_fallback_redis_errors_total", "get"); n < 1 {
		t.Errorf("get errors %v, want at least 1", n)
	}
	// Writes while Redis is down are forgotten, and do not hold requests up.
	failing.Store(false)
	start = time.Now()
	for range 5 {
		if code, _, _ := a.do("GET", "/up/other"); code != 200 {
			t.Errorf("A with Redis down: %d", code)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("5 GETs through A with Redis down took %v", d)
	}

	// Redis back (empty): A's new answers are served by B again.
	srv.Restart()
	if code, _, _ := b.do("GET", "/up/data"); code != 503 {
		t.Errorf("B after a Redis restart, before A answered again: %d, want 503", code)
	}
	if code, _, _ := a.do("GET", "/up/data"); code != 200 {
		t.Fatalf("A: %d", code)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		code, h, body = b.do("GET", "/up/data")
		if code == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code != 200 || body != `{"path": "/up/data"}` || !strings.HasPrefix(h.Get(gateway.FallbackHeader), "stale") {
		t.Errorf("B after Redis came back: %d %v %s", code, h, body)
	}
}

// openBreaker fails 20 POSTs through g: more than half of at least 20 calls.
func openBreaker(t *testing.T, g *gw, failing *atomic.Bool) {
	t.Helper()
	failing.Store(true)
	defer failing.Store(false)
	for range 20 {
		g.do("POST", "/up/x")
	}
	if code, _, body := g.do("POST", "/up/x"); code != 503 || !strings.Contains(body, "breaker_open") {
		t.Fatalf("breaker not open: %d %s", code, body)
	}
}

// counter reads a counter, of label value label if not "".
func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || (len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
