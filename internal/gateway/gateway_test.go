package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/cors"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pedal-project/pedal/internal/breaker"
	"github.com/pedal-project/pedal/internal/gateway/routedb"
	"github.com/pedal-project/pedal/internal/principal"
	"github.com/pedal-project/pedal/internal/ratelimit"
)

// fakeAuth accepts "user:<sub>" and "admin:<sub>" tokens.
type fakeAuth struct {
	mu      sync.Mutex
	revoked map[string]bool
}

func (a *fakeAuth) Token(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return "", errors.New("no bearer token")
	}
	return tok, nil
}

func (a *fakeAuth) Authenticate(_ context.Context, tok string) (principal.Principal, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.revoked[tok] {
		return principal.Principal{}, errors.New("token revoked")
	}
	role, sub, ok := strings.Cut(tok, ":")
	if role == "down" {
		return principal.Principal{}, fmt.Errorf("%w: revocations: dial tcp 10.9.8.7:6379: connection refused", ErrAuthUnavailable)
	}
	if !ok || (role != principal.RoleUser && role != principal.RoleAdmin) {
		return principal.Principal{}, errors.New("invalid token")
	}
	return principal.Principal{Subject: sub, Role: role}, nil
}

func (a *fakeAuth) Revoke(ctx context.Context, tok string) (principal.Principal, error) {
	p, err := a.Authenticate(ctx, tok)
	if err != nil {
		return p, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.revoked == nil {
		a.revoked = map[string]bool{}
	}
	a.revoked[tok] = true
	return p, nil
}

type fixture struct {
	t     *testing.T
	spans *tracetest.SpanRecorder
	store *routedb.Store
	gw    *Gateway
	srv   *httptest.Server
	reg   *prometheus.Registry
	stop  func()
}

// echo answers with the route it was reached by and the caller it sees.
func echo(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := principal.From(r.Context())
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"service": name, "path": r.URL.Path, "subject": p.Subject,
			"header_subject": r.Header.Get("X-Pedal-Subject")})
	})
}

func TestMain(m *testing.M) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	m.Run()
}

func newFixture(t *testing.T, cfg Config, inproc map[string]http.Handler, routes []routedb.Route, clusters []routedb.Cluster) *fixture {
	t.Helper()
	store, err := routedb.Open(t.Context(), filepath.Join(t.TempDir(), "routes.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.Seed(t.Context(), routes, clusters); err != nil {
		t.Fatal(err)
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = 20 * time.Millisecond
	}
	reg := prometheus.NewRegistry()
	f := &fixture{t: t, store: store, reg: reg}
	f.spans = tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(f.spans))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	gw, err := New(t.Context(), cfg, store, inproc, &fakeAuth{}, ratelimit.NewLocal(ratelimit.Config{}), nil, reg, tp)
	if err != nil {
		t.Fatal(err)
	}
	f.gw = gw
	f.srv = httptest.NewServer(gw)
	t.Cleanup(f.srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { gw.Run(ctx); close(done) }()
	f.stop = func() { cancel(); <-done }
	t.Cleanup(f.stop)
	return f
}

func rt(id, pattern, cluster, auth string) routedb.Route {
	return routedb.Route{ID: id, PathPattern: pattern, TargetCluster: cluster, MaxConcurrency: 1000, IsActive: true,
		Auth: auth, Timeout: 5 * time.Second}
}

func inprocCluster(name string) routedb.Cluster {
	return routedb.Cluster{Name: name, Kind: routedb.KindInProcess, Balancing: routedb.RoundRobin, MaxConcurrency: 1000}
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func (f *fixture) do(method, path, token, body string) answer {
	f.t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header}
	if ct := resp.Header.Get("Content-Type"); len(b) > 0 && (ct == "application/json" || ct == "application/problem+json") {
		if err := json.Unmarshal(b, &a.body); err != nil {
			f.t.Fatalf("%s %s: %d %q", method, path, resp.StatusCode, b)
		}
	}
	return a
}

func baseRoutes() ([]routedb.Route, []routedb.Cluster, map[string]http.Handler) {
	routes := []routedb.Route{
		rt("ads-top", "GET /v1/ads/top", "query", routedb.AuthAuthenticated),
		rt("ads-one", "GET /v1/ads/{ad_id}", "query", routedb.AuthAuthenticated),
		rt("health", "GET /healthz", "query", routedb.AuthPublic),
		rt("clicks", "POST /v1/clicks", "clicks", routedb.AuthAuthenticated),
		rt("admin-routes", "/v1/admin/", "admin", routedb.AuthAdmin),
		rt("revoke", "POST /v1/auth/revoke", "auth", routedb.AuthAuthenticated),
	}
	clusters := []routedb.Cluster{inprocCluster("query"), inprocCluster("clicks"), inprocCluster("admin"), inprocCluster("auth")}
	inproc := map[string]http.Handler{"query": echo("query"), "clicks": echo("clicks")}
	return routes, clusters, inproc
}

func TestRoutingAndAuth(t *testing.T) {
	routes, clusters, inproc := baseRoutes()
	f := newFixture(t, Config{}, inproc, routes, clusters)

	// The most specific pattern wins.
	if a := f.do("GET", "/v1/ads/top", "user:alice", ""); a.status != 200 || a.body["path"] != "/v1/ads/top" || a.body["subject"] != "alice" {
		t.Errorf("GET /v1/ads/top: %d %v", a.status, a.body)
	}
	if a := f.do("GET", "/v1/ads/ad-1", "user:alice", ""); a.status != 200 || a.body["service"] != "query" {
		t.Errorf("GET /v1/ads/ad-1: %d %v", a.status, a.body)
	}
	// No route, and a route of another method.
	if a := f.do("GET", "/nowhere", "", ""); a.status != 404 || a.header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("no route: %d %v", a.status, a.header)
	}
	if a := f.do("DELETE", "/v1/clicks", "user:alice", ""); a.status != 405 || a.header.Get("Allow") == "" {
		t.Errorf("wrong method: %d %v", a.status, a.header)
	}
	// Public, authenticated, admin.
	if a := f.do("GET", "/healthz", "", ""); a.status != 200 {
		t.Errorf("public route without a token: %d", a.status)
	}
	for _, tok := range []string{"", "garbage", "root:eve"} {
		a := f.do("GET", "/v1/ads/top", tok, "")
		if a.status != 401 || a.body["reason"] != "unauthorized" || !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("token %q: %d %v %v", tok, a.status, a.body, a.header)
		}
	}
	// An authenticator that cannot decide is a 503 that says nothing of why.
	if a := f.do("GET", "/v1/ads/top", "down:x", ""); a.status != 503 || a.header.Get("Retry-After") == "" ||
		strings.Contains(fmt.Sprint(a.body), "10.9.8.7") {
		t.Errorf("authenticator unavailable: %d %v", a.status, a.body)
	}
	if a := f.do("GET", "/v1/admin/routes", "user:alice", ""); a.status != 403 || a.body["reason"] != "forbidden" {
		t.Errorf("admin route as a user: %d %v", a.status, a.body)
	}
	if a := f.do("GET", "/v1/admin/routes", "admin:root", ""); a.status != 200 || len(a.body["routes"].([]any)) != len(routes) {
		t.Errorf("admin route as an admin: %d %v", a.status, a.body)
	}
	// A client cannot claim an identity with the gateway's headers.
	req, _ := http.NewRequest("GET", f.srv.URL+"/healthz", nil)
	req.Header.Set("X-Pedal-Subject", "root")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if got["header_subject"] != "" || got["subject"] != "" {
		t.Errorf("a forged X-Pedal-Subject reached the service: %v", got)
	}
	// Revocation: the token is refused from then on; another user's token needs an admin.
	if a := f.do("POST", "/v1/auth/revoke", "user:bob", `{"token": "user:alice"}`); a.status != 403 {
		t.Errorf("revoking another's token: %d %v", a.status, a.body)
	}
	if a := f.do("POST", "/v1/auth/revoke", "user:alice", ""); a.status != 204 {
		t.Errorf("revoking one's own token: %d %v", a.status, a.body)
	}
	if a := f.do("GET", "/v1/ads/top", "user:alice", ""); a.status != 401 {
		t.Errorf("a revoked token: %d", a.status)
	}
	if n := testutil.ToFloat64(f.gw.m.rejections.WithLabelValues("ads-top", "unauthorized")); n != 4 {
		t.Errorf("unauthorized rejections on ads-top: %v", n)
	}
}

func TestRateLimit(t *testing.T) {
	routes, clusters, inproc := baseRoutes()
	routes[0].RateLimitPerMinute, routes[0].RateLimitBurst = 2, 2
	f := newFixture(t, Config{}, inproc, routes, clusters)
	for i := range 2 {
		if a := f.do("GET", "/v1/ads/top", "user:alice", ""); a.status != 200 || a.header.Get("RateLimit") == "" || a.header.Get("RateLimit-Policy") == "" {
			t.Fatalf("request %d: %d %v", i, a.status, a.header)
		}
	}
	a := f.do("GET", "/v1/ads/top", "user:alice", "")
	if a.status != 429 || a.body["reason"] != "rate_limited" || a.header.Get("Retry-After") != "30" {
		t.Errorf("third request: %d %v %v", a.status, a.body, a.header)
	}
	// Per client: another subject has its own budget; another route is not limited.
	if a := f.do("GET", "/v1/ads/top", "user:bob", ""); a.status != 200 {
		t.Errorf("another client: %d", a.status)
	}
	if a := f.do("GET", "/v1/ads/ad-1", "user:alice", ""); a.status != 200 {
		t.Errorf("another route: %d", a.status)
	}
}

// blocker holds requests until released and counts the peak in flight.
type blocker struct {
	gate      chan struct{}
	now, peak atomic.Int32
}

func newBlocker() *blocker { return &blocker{gate: make(chan struct{})} }

func (b *blocker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := b.now.Add(1)
	defer b.now.Add(-1)
	for {
		m := b.peak.Load()
		if n <= m || b.peak.CompareAndSwap(m, n) {
			break
		}
	}
	select {
	case <-b.gate:
	case <-r.Context().Done():
	}
	io.WriteString(w, "{}")
}

func TestBulkheads(t *testing.T) {
	slow, fast := newBlocker(), echo("fast")
	routes := []routedb.Route{rt("slow", "GET /slow/", "slow", routedb.AuthPublic), rt("slow2", "GET /slow2/", "slow", routedb.AuthPublic),
		rt("fast", "GET /fast", "fast", routedb.AuthPublic)}
	routes[0].MaxConcurrency = 10
	clusters := []routedb.Cluster{inprocCluster("slow"), inprocCluster("fast")}
	clusters[0].MaxConcurrency = 15
	f := newFixture(t, Config{Breaker: breaker.Config{MinCalls: 1 << 20}}, map[string]http.Handler{"slow": slow, "fast": fast}, routes, clusters)
	var release sync.Once
	open := func() { release.Do(func() { close(slow.gate) }) }
	t.Cleanup(open)

	var wg sync.WaitGroup
	codes := make(chan int, 64)
	for i := range 30 {
		path := "/slow/"
		if i%2 == 1 {
			path = "/slow2/"
		}
		wg.Go(func() {
			resp, err := f.srv.Client().Get(f.srv.URL + path)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			codes <- resp.StatusCode
		})
	}
	// Wait until the cluster's pool is full; the rejections have answered at once.
	rejected := func() float64 {
		return testutil.ToFloat64(f.gw.m.rejections.WithLabelValues("slow", "concurrency")) +
			testutil.ToFloat64(f.gw.m.rejections.WithLabelValues("slow2", "concurrency"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for (slow.now.Load() < 15 || rejected() < 15) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// A slow cluster does not starve another.
	if a := f.do("GET", "/fast", "", ""); a.status != 200 {
		t.Errorf("the fast cluster while the slow one is full: %d", a.status)
	}
	open()
	wg.Wait()
	close(codes)
	ok, refused := 0, 0
	for c := range codes {
		switch c {
		case 200:
			ok++
		case 503:
			refused++
		default:
			t.Errorf("status %d", c)
		}
	}
	if slow.peak.Load() > 15 || ok != 15 || refused != 15 {
		t.Errorf("peak %d in flight, %d served, %d rejected; want at most 15 (the cluster's pool), 15 and 15", slow.peak.Load(), ok, refused)
	}
	route := testutil.ToFloat64(f.gw.m.rejections.WithLabelValues("slow", "concurrency"))
	cluster := testutil.ToFloat64(f.gw.m.rejections.WithLabelValues("slow2", "concurrency"))
	if route+cluster != 15 || route < 5 {
		t.Errorf("rejections: %v on the route slow (limit 10), %v on slow2 (cluster limit)", route, cluster)
	}
}

func TestBreakerFallbackAndRetries(t *testing.T) {
	var failing atomic.Bool
	var calls, firstFails atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		switch {
		case strings.HasSuffix(r.URL.Path, "/flaky") && firstFails.Add(1) == 1:
			http.Error(w, "try again", http.StatusServiceUnavailable)
		case failing.Load():
			http.Error(w, "down", http.StatusInternalServerError)
		default:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"path": %q, "subject": %q, "traceparent": %t}`, r.URL.Path, r.Header.Get("X-Pedal-Subject"), r.Header.Get("traceparent") != "")
		}
	}))
	defer up.Close()
	routes := []routedb.Route{rt("up", "/up/", "up", routedb.AuthAuthenticated)}
	clusters := []routedb.Cluster{{Name: "up", Kind: routedb.KindHTTP, Balancing: routedb.RoundRobin, MaxConcurrency: 100,
		Endpoints: []string{up.URL}}}
	f := newFixture(t, Config{Breaker: breaker.Config{OpenFor: time.Hour}, RetryBase: time.Millisecond, RetryCap: 2 * time.Millisecond},
		map[string]http.Handler{}, routes, clusters)

	a := f.do("GET", "/up/data", "user:alice", "")
	if a.status != 200 || a.body["subject"] != "alice" || a.body["traceparent"] != true {
		t.Fatalf("through the gateway: %d %v", a.status, a.body)
	}
	// A server span named after the route, and a client span per attempt.
	var names []string
	for _, sp := range f.spans.Ended() {
		names = append(names, sp.SpanKind().String()+" "+sp.Name())
	}
	if fmt.Sprint(names) != "[client GET server GET /up/]" {
		t.Errorf("spans %v", names)
	}
	// A 503 on an idempotent request is retried; a POST is not.
	if a := f.do("GET", "/up/flaky", "user:alice", ""); a.status != 200 {
		t.Errorf("GET after one 503: %d", a.status)
	}
	if n := testutil.ToFloat64(f.gw.m.retries.WithLabelValues("up")); n != 1 {
		t.Errorf("retries %v, want 1", n)
	}
	resends := 0
	for _, sp := range f.spans.Ended() {
		for _, kv := range sp.Attributes() {
			if kv.Key == "http.request.resend_count" && kv.Value.AsInt64() == 1 {
				resends++
			}
		}
	}
	if resends != 1 {
		t.Errorf("%d client spans with http.request.resend_count 1, want 1", resends)
	}
	firstFails.Store(0)
	if a := f.do("POST", "/up/flaky", "user:alice", "{}"); a.status != 503 {
		t.Errorf("POST after a 503: %d, want the 503 passed on", a.status)
	}

	// Failures open the breaker: 20 calls, more than half failed.
	failing.Store(true)
	for range 20 {
		f.do("POST", "/up/x", "user:alice", "{}")
	}
	before := calls.Load()
	if a := f.do("POST", "/up/x", "user:alice", "{}"); a.status != 503 || a.body["reason"] != "breaker_open" || a.header.Get("Retry-After") == "" {
		t.Errorf("open breaker: %d %v", a.status, a.body)
	}
	// A GET answered before is served stale, marked; another caller's is not.
	a = f.do("GET", "/up/data", "user:alice", "")
	if a.status != 200 || !strings.HasPrefix(a.header.Get(FallbackHeader), "stale") || a.body["path"] != "/up/data" {
		t.Errorf("fallback: %d %v %v", a.status, a.header, a.body)
	}
	if a := f.do("GET", "/up/data", "user:bob", ""); a.status != 503 {
		t.Errorf("another caller's cached answer was served: %d", a.status)
	}
	if calls.Load() != before {
		t.Errorf("the open breaker let %d calls through", calls.Load()-before)
	}
	if got := testutil.ToFloat64(f.gw.m.breakerState.WithLabelValues("up")); got != 1 {
		t.Errorf("breaker state metric %v", got)
	}
	if got := testutil.ToFloat64(f.gw.m.breakerTransitions.WithLabelValues("up", "open")); got != 1 {
		t.Errorf("transitions to open: %v", got)
	}
}

func TestBalancingAndHealth(t *testing.T) {
	var hitsA, hitsB atomic.Int32
	var bHealthy atomic.Bool
	bHealthy.Store(true)
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			hitsA.Add(1)
		}
		io.WriteString(w, "{}")
	}))
	defer a.Close()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if !bHealthy.Load() {
				http.Error(w, "sick", 500)
				return
			}
		} else {
			hitsB.Add(1)
		}
		io.WriteString(w, "{}")
	}))
	defer b.Close()
	routes := []routedb.Route{rt("up", "/up/", "up", routedb.AuthPublic)}
	clusters := []routedb.Cluster{{Name: "up", Kind: routedb.KindHTTP, Balancing: routedb.RoundRobin, MaxConcurrency: 100,
		HealthPath: "/healthz", Endpoints: []string{a.URL, b.URL}}}
	f := newFixture(t, Config{HealthInterval: 10 * time.Millisecond}, map[string]http.Handler{}, routes, clusters)
	for range 10 {
		f.do("GET", "/up/x", "", "")
	}
	if hitsA.Load() != 5 || hitsB.Load() != 5 {
		t.Errorf("round robin: %d and %d", hitsA.Load(), hitsB.Load())
	}
	bHealthy.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	f.gw.mu.Lock()
	_, _, eps := f.gw.clusters["up"].snapshot()
	f.gw.mu.Unlock()
	sick := eps[0]
	if sick.raw != b.URL {
		sick = eps[1]
	}
	for !sick.down.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("the failing endpoint was not taken out: fails %d", sick.fails.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	hitsB.Store(0)
	for range 10 {
		f.do("GET", "/up/x", "", "")
	}
	if hitsB.Load() != 0 {
		t.Errorf("an unhealthy endpoint got %d requests", hitsB.Load())
	}
}

func TestAdminAPIAndReload(t *testing.T) {
	routes, clusters, inproc := baseRoutes()
	f := newFixture(t, Config{CORS: cors.Options{AllowedOrigins: []string{"https://dash.example"}, AllowedMethods: []string{"GET", "PUT"},
		AllowedHeaders: []string{"Authorization"}, MaxAge: 600}}, inproc, routes, clusters)
	put := func(id, body string) answer { return f.do("PUT", "/v1/admin/routes/"+id, "admin:root", body) }

	a := put("extra", `{"path_pattern": "GET /v1/extra/{x}", "target_cluster": "query", "auth": "public"}`)
	if a.status != 201 || a.body["max_concurrency"] != 1000.0 || a.body["is_active"] != true {
		t.Fatalf("create: %d %v", a.status, a.body)
	}
	// Served within a moment.
	deadline := time.Now().Add(2 * time.Second)
	for f.do("GET", "/v1/extra/1", "", "").status != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the new route was not served within 2s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range []struct {
		id, body string
		status   int
		param    string
	}{
		{"dup", `{"path_pattern": "GET /v1/ads/top", "target_cluster": "query"}`, 409, "path_pattern"},
		{"overlap", `{"path_pattern": "GET /v1/{y}/1", "target_cluster": "query"}`, 409, "path_pattern"},
		{"small", `{"path_pattern": "GET /v1/small", "target_cluster": "query", "max_concurrency": 5}`, 400, "max_concurrency"},
		{"nocluster", `{"path_pattern": "GET /v1/n", "target_cluster": "nope"}`, 400, "target_cluster"},
		{"badpattern", `{"path_pattern": "GET /v1/{bad", "target_cluster": "query"}`, 400, "path_pattern"},
		{"Bad ID", `{"path_pattern": "GET /v1/b", "target_cluster": "query"}`, 400, "route_id"},
		{"unknown", `{"path_pattern": "GET /v1/u", "target_cluster": "query", "colour": "red"}`, 400, "body"},
		{"auth", `{"path_pattern": "GET /v1/a", "target_cluster": "query", "auth": "everyone"}`, 400, "auth"},
	} {
		a := put(strings.ReplaceAll(c.id, " ", "%20"), c.body)
		if a.status != c.status || a.body["parameter"] != c.param {
			t.Errorf("%s: %d %v; want %d naming %s", c.id, a.status, a.body, c.status, c.param)
		}
	}
	if a := put("extra", `{"path_pattern": "GET /v1/extra/{x}", "target_cluster": "query", "max_concurrency": 50}`); a.status != 200 || a.body["max_concurrency"] != 50.0 {
		t.Errorf("replace: %d %v", a.status, a.body)
	}
	if a := f.do("GET", "/v1/admin/routes/extra", "admin:root", ""); a.status != 200 || a.body["auth"] != "authenticated" {
		t.Errorf("get: %d %v", a.status, a.body)
	}
	if a := f.do("DELETE", "/v1/admin/routes/extra", "admin:root", ""); a.status != 204 {
		t.Errorf("delete: %d", a.status)
	}
	if a := f.do("DELETE", "/v1/admin/routes/extra", "admin:root", ""); a.status != 404 {
		t.Errorf("delete again: %d", a.status)
	}

	// A broken configuration written behind the gateway's back: the last
	// good table stays, and the admin API says why.
	if _, _, err := f.store.PutRoute(t.Context(), rt("broken", "GET /v1/broken", "missing", routedb.AuthPublic)); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(2 * time.Second)
	for f.gw.Status().LastError == "" {
		if time.Now().After(deadline) {
			t.Fatal("the broken configuration was not noticed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if a := f.do("GET", "/v1/ads/top", "user:alice", ""); a.status != 200 {
		t.Errorf("after a broken change: %d", a.status)
	}
	if a := f.do("GET", "/v1/admin/routes", "admin:root", ""); !strings.Contains(fmt.Sprint(a.body["last_error"]), "missing") {
		t.Errorf("admin status: %v", a.body["last_error"])
	}

	// CORS preflight.
	req, _ := http.NewRequest("OPTIONS", f.srv.URL+"/v1/ads/top", nil)
	req.Header.Set("Origin", "https://dash.example")
	req.Header.Set("Access-Control-Request-Method", "GET")
	req.Header.Set("Access-Control-Request-Headers", "authorization")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://dash.example" ||
		resp.Header.Get("Access-Control-Max-Age") != "600" {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	req.Header.Set("Origin", "https://evil.example")
	resp, err = f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("a foreign origin was allowed: %v", resp.Header)
	}
}

func TestRouteChangesUnderLoadDropNothing(t *testing.T) {
	routes, clusters, inproc := baseRoutes()
	f := newFixture(t, Config{ReloadInterval: 5 * time.Millisecond}, inproc, routes, clusters)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var served, failed atomic.Int64
	for range 8 {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", f.srv.URL+"/v1/ads/top", nil)
			req.Header.Set("Authorization", "Bearer user:load")
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := f.srv.Client().Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					served.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	for i := range 40 {
		body := fmt.Sprintf(`{"path_pattern": "GET /v1/ads/top", "target_cluster": "query", "max_concurrency": %d}`, 100+i)
		if a := f.do("PUT", "/v1/admin/routes/ads-top", "admin:root", body); a.status != 200 {
			t.Errorf("change %d: %d %v", i, a.status, a.body)
		}
		if a := f.do("PUT", fmt.Sprintf("/v1/admin/routes/r%d", i), "admin:root",
			fmt.Sprintf(`{"path_pattern": "GET /v1/r%d", "target_cluster": "query"}`, i)); a.status != 201 {
			t.Errorf("add %d: %d %v", i, a.status, a.body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || served.Load() == 0 {
		t.Errorf("%d requests served, %d failed during 80 route changes", served.Load(), failed.Load())
	}
	if v := f.gw.Status().Version; v < 80 {
		t.Errorf("serving version %d after 80 changes", v)
	}
}
