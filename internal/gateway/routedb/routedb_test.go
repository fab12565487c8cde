package routedb

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "routes.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func route(id, pattern string) Route {
	return Route{ID: id, PathPattern: pattern, TargetCluster: "query", MaxConcurrency: 100, IsActive: true,
		Auth: AuthAuthenticated, Timeout: 5 * time.Second}
}

func TestSeedSchemaConstraints(t *testing.T) {
	s := open(t)
	ctx := t.Context()
	for _, c := range []struct {
		name string
		r    Route
		want error
	}{
		{"concurrency below 10", func() Route { r := route("r1", "GET /a"); r.MaxConcurrency = 9; return r }(), ErrConstraint},
		{"concurrency above 100000", func() Route { r := route("r1", "GET /a"); r.MaxConcurrency = 100001; return r }(), ErrConstraint},
		{"unknown auth policy", func() Route { r := route("r1", "GET /a"); r.Auth = "nobody"; return r }(), ErrConstraint},
	} {
		if _, _, err := s.PutRoute(ctx, c.r); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
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
	if _, _, err := s.PutRoute(ctx, route("b", "GET /dup")); !errors.Is(err, ErrConflict) {
		t.Errorf("a second active route on one pattern: %v", err)
	}
	off := route("b", "GET /dup")
	off.IsActive = false
	if _, _, err := s.PutRoute(ctx, off); err != nil {
		t.Errorf("an inactive route on an active pattern: %v", err)
	}
	// A failed write leaves nothing behind.
	if _, err := s.GetRoute(ctx, "r1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused route was stored: %v", err)
	}
}

func TestPutLoadDeleteAndVersion(t *testing.T) {
	s := open(t)
	ctx := t.Context()
	v0 := version(t, s)
	if err := s.PutCluster(ctx, Cluster{Name: "up", Kind: KindHTTP, Balancing: LeastRequests, MaxConcurrency: 50,
		HealthPath: "/healthz", Endpoints: []string{"http://127.0.0.1:9001", "http://127.0.0.1:9002"}}); err != nil {
		t.Fatal(err)
	}
	r := route("q", "GET /v1/ads/{ad_id}/clicks")
	r.RateLimitPerMinute, r.RateLimitBurst, r.Auth = 600, 20, AuthPublic
	stored, created, err := s.PutRoute(ctx, r)
	if err != nil || !created {
		t.Fatalf("put: %v created=%v", err, created)
	}
	if stored.RateLimitPerMinute != 600 || stored.Auth != AuthPublic || stored.Timeout != 5*time.Second || stored.CreatedAt.IsZero() {
		t.Errorf("stored %+v", stored)
	}
	v1 := version(t, s)
	if v1 <= v0 {
		t.Errorf("version %d after a change, was %d", v1, v0)
	}
	r.MaxConcurrency = 200
	if _, created, err := s.PutRoute(ctx, r); err != nil || created {
		t.Fatalf("replace: %v created=%v", err, created)
	}
	cfg, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Version <= v1 || len(cfg.Routes) != 1 || cfg.Routes[0].MaxConcurrency != 200 || len(cfg.Clusters) != 1 ||
		len(cfg.Clusters[0].Endpoints) != 2 || cfg.Clusters[0].Balancing != LeastRequests || cfg.Clusters[0].HealthPath != "/healthz" {
		t.Errorf("loaded %+v", cfg)
	}
	if err := s.DeleteRoute(ctx, "q"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRoute(ctx, "q"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleting twice: %v", err)
	}
	var n int
	s.db.QueryRowContext(ctx, `SELECT count(*) FROM route_policies`).Scan(&n)
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

func TestSeedOnlyOnce(t *testing.T) {
	s := open(t)
	ctx := t.Context()
	seeded, err := s.Seed(ctx, []Route{route("a", "GET /a"), route("b", "GET /b")}, []Cluster{{Name: "query", Kind: KindInProcess, Balancing: RoundRobin, MaxConcurrency: 100}})
	if err != nil || !seeded {
		t.Fatalf("first seed: %v %v", seeded, err)
	}
	if err := s.DeleteRoute(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if seeded, err := s.Seed(ctx, []Route{route("a", "GET /a")}, nil); err != nil || seeded {
		t.Errorf("second seed: %v %v", seeded, err)
	}
	// A seed that fails stores nothing.
	s2 := open(t)
	bad := route("c", "GET /c")
	bad.MaxConcurrency = 1
	if _, err := s2.Seed(ctx, []Route{route("a", "GET /a"), bad}, nil); !errors.Is(err, ErrConstraint) {
		t.Fatalf("bad seed: %v", err)
	}
	if cfg, _ := s2.Load(ctx); len(cfg.Routes) != 0 {
		t.Errorf("a failed seed left %d routes", len(cfg.Routes))
	}
}
