package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/breaker"
	"github.com/pedal-project/pedal/internal/gateway/routedb"
)

// TestEscapedPathsStayEscaped: a path the gateway routed as one segment
// reaches the upstream as one segment.
func TestEscapedPathsStayEscaped(t *testing.T) {
	seen := make(chan string, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.URL.EscapedPath() + " " + r.Header.Get("X_Pedal_Subject") + r.Header.Get("X-Pedal-Role")
		io.WriteString(w, "{}")
	}))
	defer up.Close()
	routes := []routedb.Route{rt("pub", "GET /pub/{id}", "up", routedb.AuthPublic)}
	clusters := []routedb.Cluster{{Name: "up", Kind: routedb.KindHTTP, Balancing: routedb.RoundRobin, MaxConcurrency: 10, Endpoints: []string{up.URL}}}
	f := newFixture(t, Config{}, map[string]http.Handler{}, routes, clusters)
	req, _ := http.NewRequest("GET", f.srv.URL+"/pub/x%2F..%2F..%2Fadmin", nil)
	req.Header["X_Pedal_Subject"] = []string{"root"} // a look-alike of the gateway's identity header
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := <-seen; got != "/pub/x%2F..%2F..%2Fadmin " {
		t.Errorf("the upstream saw %q", got)
	}
}

// TestRefusedConfigurationChangesNothing: a configuration refused as a
// whole does not move traffic to its new endpoints either.
func TestRefusedConfigurationChangesNothing(t *testing.T) {
	var hitsA, hitsB atomic.Int32
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hitsA.Add(1); io.WriteString(w, "{}") }))
	defer a.Close()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hitsB.Add(1); io.WriteString(w, "{}") }))
	defer b.Close()
	routes := []routedb.Route{rt("up", "GET /x/{a}", "up", routedb.AuthPublic)}
	clusters := []routedb.Cluster{{Name: "up", Kind: routedb.KindHTTP, Balancing: routedb.RoundRobin, MaxConcurrency: 10, Endpoints: []string{a.URL}}}
	f := newFixture(t, Config{}, map[string]http.Handler{}, routes, clusters)
	// Behind the gateway's back: a new endpoint and an ambiguous pattern.
	if err := f.store.PutCluster(t.Context(), routedb.Cluster{Name: "up", Kind: routedb.KindHTTP, Balancing: routedb.RoundRobin,
		MaxConcurrency: 10, Endpoints: []string{b.URL}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.store.PutRoute(t.Context(), rt("clash", "GET /{b}/y", "up", routedb.AuthPublic)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for f.gw.Status().LastError == "" {
		if time.Now().After(deadline) {
			t.Fatal("the ambiguous configuration was not refused")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 4 {
		f.do("GET", "/x/1", "", "")
	}
	if hitsA.Load() != 4 || hitsB.Load() != 0 {
		t.Errorf("after a refused change: %d requests to the old endpoint, %d to the new one", hitsA.Load(), hitsB.Load())
	}
}

// TestPanickingHandlerCountsAsFailure: a handler that panics reports a
// failure to its breaker (and so never holds a half-open probe slot).
func TestPanickingHandlerCountsAsFailure(t *testing.T) {
	boom := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
	routes := []routedb.Route{rt("boom", "GET /boom", "boom", routedb.AuthPublic)}
	f := newFixture(t, Config{Breaker: breaker.Config{MinCalls: 1, OpenFor: time.Hour}}, map[string]http.Handler{"boom": boom},
		routes, []routedb.Cluster{inprocCluster("boom")})
	resp, err := f.srv.Client().Get(f.srv.URL + "/boom")
	if err == nil {
		resp.Body.Close()
	}
	f.gw.mu.Lock()
	state := f.gw.clusters["boom"].breaker.State()
	f.gw.mu.Unlock()
	if state != breaker.Open {
		t.Errorf("breaker %v after a panic with MinCalls 1; want open (the failure counted)", state)
	}
}

func TestAdminGuards(t *testing.T) {
	routes, clusters, inproc := baseRoutes()
	f := newFixture(t, Config{}, inproc, routes, clusters)
	// In-process clusters cannot be turned into proxies to elsewhere.
	for _, name := range []string{"query", "admin"} {
		a := f.do("PUT", "/v1/admin/clusters/"+name, "admin:root", `{"endpoints": ["http://127.0.0.1:9"]}`)
		if a.status != 400 {
			t.Errorf("PUT cluster %s: %d %v", name, a.status, a.body)
		}
	}
	// The admin cluster is reachable by admins only, whatever a route says.
	a := f.do("PUT", "/v1/admin/routes/sneaky", "admin:root", `{"path_pattern": "PUT /v1/admin/routes/{route_id}", "target_cluster": "admin", "auth": "public"}`)
	if a.status != 400 || a.body["parameter"] != "auth" {
		t.Errorf("a public route to the admin cluster: %d %v", a.status, a.body)
	}
	// A missing trailing slash is a redirect the client can follow.
	req, _ := http.NewRequest("GET", f.srv.URL+"/v1/admin", nil)
	req.Header.Set("Authorization", "Bearer admin:root")
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 3 || !strings.HasSuffix(resp.Header.Get("Location"), "/v1/admin/") {
		t.Errorf("GET /v1/admin: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// An empty chunked body revokes the caller's own token.
	req, _ = http.NewRequest("POST", f.srv.URL+"/v1/auth/revoke", io.NopCloser(strings.NewReader("")))
	req.Header.Set("Authorization", "Bearer user:carol")
	resp, err = f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Errorf("revoke with an empty chunked body: %d", resp.StatusCode)
	}
}

// TestConcurrentOverlappingRoutes: of two overlapping patterns put at once,
// one is refused, so the configuration stays loadable.
func TestConcurrentOverlappingRoutes(t *testing.T) {
	routes, clusters, inproc := baseRoutes()
	f := newFixture(t, Config{}, inproc, routes, clusters)
	for i := range 20 {
		codes := make(chan int, 2)
		for j, body := range []string{
			fmt.Sprintf(`{"path_pattern": "GET /c%d/x/{a}", "target_cluster": "query"}`, i),
			fmt.Sprintf(`{"path_pattern": "GET /c%d/{b}/y", "target_cluster": "query"}`, i),
		} {
			id := fmt.Sprintf("r%d-%d", i, j)
			go func() { codes <- f.do("PUT", "/v1/admin/routes/"+id, "admin:root", body).status }()
		}
		a, b := <-codes, <-codes
		if min(a, b) != 201 || max(a, b) != 409 {
			t.Fatalf("round %d: %d and %d; want one created (201) and one refused (409)", i, a, b)
		}
	}
	if f.gw.Status().LastError != "" {
		t.Errorf("a refused configuration: %s", f.gw.Status().LastError)
	}
}
