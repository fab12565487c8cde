package routedb

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/pgtest"
)

func TestMain(m *testing.M) {
	m.Run()
	pgtest.Stop()
}

// backend is one database the store runs on; every test runs on each.
type backend struct {
	name string
	// place returns where a new, empty database lives (a file or a DSN).
	place func(t *testing.T) string
	open  func(ctx context.Context, where string) (*Store, error)
}

var backends = []backend{
	{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "routes.db") }, Open},
	{"postgres", func(t *testing.T) string { return pgtest.DSN(t) }, OpenPostgres},
}

// run runs f as a parallel subtest per backend.
func run(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, b)
		})
	}
}

// openAt opens one more store on the database at where.
func (b backend) openAt(t *testing.T, where string) *Store {
	t.Helper()
	s, err := b.open(t.Context(), where)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fresh opens a store on a new database, and says where it is.
func (b backend) fresh(t *testing.T) (*Store, string) {
	t.Helper()
	where := b.place(t)
	return b.openAt(t, where), where
}

func route(id, pattern string) Route {
	return Route{ID: id, PathPattern: pattern, TargetCluster: "query", MaxConcurrency: 100, IsActive: true,
		Auth: AuthAuthenticated, Timeout: 5 * time.Second}
}

func TestSeedSchemaConstraints(t *testing.T) { run(t, testSeedSchemaConstraints) }

func testSeedSchemaConstraints(t *testing.T, b backend) {
	s, _ := b.fresh(t)
	ctx := t.Context()
	with := func(f func(r *Route)) Route {
		r := route("r1", "GET /a")
		f(&r)
		return r
	}
	for _, c := range []struct {
		name string
		r    Route
		want error
	}{
		{"concurrency below 10", with(func(r *Route) { r.MaxConcurrency = 9 }), ErrConstraint},
		{"concurrency above 100000", with(func(r *Route) { r.MaxConcurrency = 100001 }), ErrConstraint},
		{"unknown auth policy", with(func(r *Route) { r.Auth = "nobody" }), ErrConstraint},
		{"zero timeout", with(func(r *Route) { r.Timeout = 0 }), ErrConstraint},
		{"negative rate limit", with(func(r *Route) { r.RateLimitPerMinute = -1 }), ErrConstraint},
	} {
		if _, _, err := s.PutRoute(ctx, c.r); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if b.name == "postgres" { // SQLite ignores VARCHAR(n)
		long := with(func(r *Route) { r.ID = strings.Repeat("x", 65) })
		if _, _, err := s.PutRoute(ctx, long); !errors.Is(err, ErrConstraint) {
			t.Errorf("a 65-byte route_id: %v, want %v", err, ErrConstraint)
		}
	}
	for _, n := range []int{10, 100000} {
		r := route("edge", "GET /edge")
		r.MaxConcurrency = n
		if _, _, err := s.PutRoute(ctx, r); err != nil {
			t.Errorf("max_concurrency %d: %v", n, err)
		}
	}
	// The partial unique index: one active route per pattern; inactive ones may repeat it.
	if _, _, err := s.PutRoute(ctx, route("a", "GET /dup")); err != nil {
		t.Fatal(err)
	}
	// Replacing a route with its own pattern is no conflict.
	if _, created, err := s.PutRoute(ctx, route("a", "GET /dup")); err != nil || created {
		t.Errorf("replacing a route unchanged: %v created=%v", err, created)
	}
	if _, _, err := s.PutRoute(ctx, route("b", "GET /dup")); !errors.Is(err, ErrConflict) {
		t.Errorf("a second active route on one pattern: %v", err)
	}
	off := route("b", "GET /dup")
	off.IsActive = false
	if _, _, err := s.PutRoute(ctx, off); err != nil {
		t.Errorf("an inactive route on an active pattern: %v", err)
	}
	// Activating the inactive duplicate conflicts, and leaves it inactive.
	if _, _, err := s.PutRoute(ctx, route("b", "GET /dup")); !errors.Is(err, ErrConflict) {
		t.Errorf("activating a duplicate: %v", err)
	}
	if got, err := s.GetRoute(ctx, "b"); err != nil || got.IsActive {
		t.Errorf("after a refused activation: %+v, %v", got, err)
	}
	// A failed write leaves nothing behind.
	if _, err := s.GetRoute(ctx, "r1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused route was stored: %v", err)
	}
	// Clusters: checks, and endpoints of a cluster only.
	for _, c := range []struct {
		name string
		c    Cluster
	}{
		{"unknown kind", Cluster{Name: "c", Kind: "carrier-pigeon", Balancing: RoundRobin, MaxConcurrency: 10}},
		{"unknown balancing", Cluster{Name: "c", Kind: KindHTTP, Balancing: "random", MaxConcurrency: 10}},
		{"concurrency 0", Cluster{Name: "c", Kind: KindHTTP, Balancing: RoundRobin}},
		{"an endpoint twice", Cluster{Name: "c", Kind: KindHTTP, Balancing: RoundRobin, MaxConcurrency: 10,
			Endpoints: []string{"http://a", "http://a"}}},
	} {
		if err := s.PutCluster(ctx, c.c); !errors.Is(err, ErrConstraint) {
			t.Errorf("%s: %v, want %v", c.name, err, ErrConstraint)
		}
	}
	if cfg, err := s.Load(ctx); err != nil || len(cfg.Clusters) != 0 {
		t.Errorf("refused clusters were stored: %+v, %v", cfg.Clusters, err)
	}
}

func TestPutLoadDeleteAndVersion(t *testing.T) { run(t, testPutLoadDeleteAndVersion) }

func testPutLoadDeleteAndVersion(t *testing.T, b backend) {
	s, _ := b.fresh(t)
	ctx := t.Context()
	v := version(t, s)
	// bumped checks that the version moved since the last call.
	bumped := func(what string) {
		t.Helper()
		if nv := version(t, s); nv <= v {
			t.Errorf("%s: version %d, was %d", what, nv, v)
		} else {
			v = nv
		}
	}
	up := Cluster{Name: "up", Kind: KindHTTP, Balancing: LeastRequests, MaxConcurrency: 50,
		HealthPath: "/healthz", Endpoints: []string{"http://127.0.0.1:9001", "http://127.0.0.1:9002"}}
	if err := s.PutCluster(ctx, up); err != nil {
		t.Fatal(err)
	}
	bumped("put cluster")
	r := route("q", "GET /v1/ads/{ad_id}/clicks")
	r.RateLimitPerMinute, r.RateLimitBurst, r.Auth = 600, 20, AuthPublic
	before := time.Now().Add(-time.Second)
	stored, created, err := s.PutRoute(ctx, r)
	if err != nil || !created {
		t.Fatalf("put: %v created=%v", err, created)
	}
	bumped("create route")
	if stored.CreatedAt.Before(before) || stored.CreatedAt.After(time.Now().Add(time.Second)) ||
		stored.CreatedAt.Location() != time.UTC || !stored.UpdatedAt.Equal(stored.CreatedAt) {
		t.Errorf("stored times %v, %v", stored.CreatedAt, stored.UpdatedAt)
	}
	want := r
	want.CreatedAt, want.UpdatedAt = stored.CreatedAt, stored.UpdatedAt
	if diff := cmp.Diff(want, stored); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}
	r.MaxConcurrency = 200
	if _, created, err := s.PutRoute(ctx, r); err != nil || created {
		t.Fatalf("replace: %v created=%v", err, created)
	}
	bumped("replace route")
	got, err := s.GetRoute(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	if !got.CreatedAt.Equal(stored.CreatedAt) || got.UpdatedAt.Before(stored.UpdatedAt) || got.MaxConcurrency != 200 {
		t.Errorf("replaced: %+v, first stored %+v", got, stored)
	}
	cfg, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Version != v {
		t.Errorf("loaded version %d, Version said %d", cfg.Version, v)
	}
	if diff := cmp.Diff([]Route{got}, cfg.Routes); diff != "" {
		t.Errorf("loaded routes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Cluster{up}, cfg.Clusters); diff != "" {
		t.Errorf("loaded clusters (-want +got):\n%s", diff)
	}
	up.Endpoints, up.HealthPath = []string{"http://127.0.0.1:9003"}, ""
	if err := s.PutCluster(ctx, up); err != nil {
		t.Fatal(err)
	}
	bumped("replace cluster")
	if cfg, err := s.Load(ctx); err != nil || len(cfg.Clusters) != 1 || !cmp.Equal(up, cfg.Clusters[0]) {
		t.Errorf("after replacing the cluster: %+v, %v", cfg.Clusters, err)
	}
	if err := s.DeleteRoute(ctx, "q"); err != nil {
		t.Fatal(err)
	}
	bumped("delete route")
	if err := s.DeleteRoute(ctx, "q"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleting twice: %v", err)
	}
	if _, err := s.GetRoute(ctx, "q"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get after delete: %v", err)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM route_policies`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the policy outlived its route")
	}
}

func version(t *testing.T, s *Store) int64 {
	t.Helper()
	v, err := s.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var seedClusters = []Cluster{{Name: "query", Kind: KindInProcess, Balancing: RoundRobin, MaxConcurrency: 100}}

func TestSeedOnlyOnce(t *testing.T) { run(t, testSeedOnlyOnce) }

func testSeedOnlyOnce(t *testing.T, b backend) {
	s, _ := b.fresh(t)
	ctx := t.Context()
	seeded, err := s.Seed(ctx, []Route{route("a", "GET /a"), route("b", "GET /b")}, seedClusters)
	if err != nil || !seeded {
		t.Fatalf("first seed: %v %v", seeded, err)
	}
	if err := s.DeleteRoute(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if seeded, err := s.Seed(ctx, []Route{route("a", "GET /a")}, nil); err != nil || seeded {
		t.Errorf("second seed: %v %v", seeded, err)
	}
	if cfg, err := s.Load(ctx); err != nil || len(cfg.Routes) != 1 || cfg.Routes[0].ID != "b" {
		t.Errorf("after the second seed: %+v, %v", cfg.Routes, err)
	}
	// A seed that fails stores nothing.
	s2, _ := b.fresh(t)
	bad := route("c", "GET /c")
	bad.MaxConcurrency = 1
	v0 := version(t, s2)
	if _, err := s2.Seed(ctx, []Route{route("a", "GET /a"), bad}, seedClusters); !errors.Is(err, ErrConstraint) {
		t.Fatalf("bad seed: %v", err)
	}
	cfg, err := s2.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Routes) != 0 || len(cfg.Clusters) != 0 || cfg.Version != v0 {
		t.Errorf("a failed seed left %d routes, %d clusters, version %d (was %d)", len(cfg.Routes), len(cfg.Clusters), cfg.Version, v0)
	}
}

// Gateways starting at once on one database: exactly one seeds.
func TestSeedConcurrently(t *testing.T) { run(t, testSeedConcurrently) }

func testSeedConcurrently(t *testing.T, b backend) {
	_, where := b.fresh(t)
	const n = 4
	stores := make([]*Store, n)
	for i := range stores {
		stores[i] = b.openAt(t, where)
	}
	routes := []Route{route("a", "GET /a"), route("b", "GET /b"), route("c", "GET /c")}
	var (
		wg     sync.WaitGroup
		seeded [n]bool
		errs   [n]error
	)
	for i, s := range stores {
		wg.Go(func() { seeded[i], errs[i] = s.Seed(t.Context(), routes, seedClusters) })
	}
	wg.Wait()
	count := 0
	for i := range n {
		if errs[i] != nil {
			t.Errorf("store %d: %v", i, errs[i])
		}
		if seeded[i] {
			count++
		}
	}
	if count != 1 {
		t.Errorf("%d stores seeded, want 1", count)
	}
	cfg, err := stores[0].Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Routes) != len(routes) || len(cfg.Clusters) != 1 {
		t.Errorf("after seeding: %d routes, %d clusters", len(cfg.Routes), len(cfg.Clusters))
	}
}

// Two stores on one database (two gateways) see each other's changes.
func TestSharedDatabase(t *testing.T) { run(t, testSharedDatabase) }

func testSharedDatabase(t *testing.T, b backend) {
	ctx := t.Context()
	s1, where := b.fresh(t)
	s2 := b.openAt(t, where) // migrations already applied: a no-op
	v := version(t, s2)
	if _, _, err := s1.PutRoute(ctx, route("a", "GET /a")); err != nil {
		t.Fatal(err)
	}
	if nv := version(t, s2); nv <= v {
		t.Errorf("the other store's version %d, was %d", nv, v)
	}
	cfg, err := s2.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Routes) != 1 || cfg.Routes[0].ID != "a" {
		t.Errorf("the other store loads %+v", cfg.Routes)
	}
	// The unique index holds across stores.
	if _, _, err := s2.PutRoute(ctx, route("b", "GET /a")); !errors.Is(err, ErrConflict) {
		t.Errorf("a duplicate through the other store: %v", err)
	}
	if err := s2.DeleteRoute(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.GetRoute(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted through the other store, still there: %v", err)
	}
}

func TestWatch(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		s, _ := backends[0].fresh(t)
		if err := s.Watch(t.Context(), func() {}); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("Watch on SQLite: %v, want ErrUnsupported", err)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		b := backends[1]
		s1, where := b.fresh(t)
		s2 := b.openAt(t, where)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		changes := make(chan struct{}, 100)
		var wg sync.WaitGroup
		var watchErr error
		wg.Go(func() { watchErr = s1.Watch(ctx, func() { changes <- struct{}{} }) })
		next := func(what string) {
			t.Helper()
			select {
			case <-changes:
			case <-ctx.Done():
				t.Fatalf("%s: no call of changed", what)
			}
		}
		next("listening")
		// A change through the other store wakes the watcher, once per transaction.
		if _, _, err := s2.PutRoute(ctx, route("a", "GET /a")); err != nil {
			t.Fatal(err)
		}
		next("put route")
		if err := s2.PutCluster(ctx, Cluster{Name: "up", Kind: KindHTTP, Balancing: RoundRobin, MaxConcurrency: 10,
			Endpoints: []string{"http://a", "http://b"}}); err != nil {
			t.Fatal(err)
		}
		next("put cluster")
		// A failed write notifies nobody: a later change is the next call.
		if _, _, err := s2.PutRoute(ctx, route("b", "GET /a")); !errors.Is(err, ErrConflict) {
			t.Fatalf("duplicate: %v", err)
		}
		if err := s2.DeleteRoute(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		next("delete route")
		select {
		case <-changes:
			t.Errorf("more calls than committed transactions")
		default:
		}
		cancel()
		wg.Wait()
		if watchErr != nil {
			t.Errorf("Watch returned %v", watchErr)
		}
	})
}
