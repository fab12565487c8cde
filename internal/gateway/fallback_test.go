package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/breaker"
	"github.com/pedal-project/pedal/internal/gateway/routedb"
)

// flakyStore is a FallbackStore that really stores, and fails every call
// while down is set.
type flakyStore struct {
	down atomic.Bool
	mu   sync.Mutex
	m    map[string]FallbackEntry
}

var errDown = errors.New("store at 10.1.2.3:6379: connection refused")

func (s *flakyStore) Put(_ context.Context, key string, e FallbackEntry) error {
	if s.down.Load() {
		return errDown
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = e
	return nil
}

func (s *flakyStore) Get(_ context.Context, key string) (FallbackEntry, bool, error) {
	if s.down.Load() {
		return FallbackEntry{}, false, errDown
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	return e, ok, nil
}

func (s *flakyStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func TestFallbackStore(t *testing.T) {
	var failing atomic.Bool
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Extra", "not kept")
		switch r.URL.Path {
		case "/up/personal":
			w.Header().Set("Set-Cookie", "s=1") // personal: never kept
		case "/up/private":
			w.Header().Set("Cache-Control", "private, max-age=60")
		}
		if r.URL.Path == "/up/big" {
			fmt.Fprintf(w, `{"pad": %q}`, strings.Repeat("x", 200))
			return
		}
		fmt.Fprintf(w, `{"path": %q}`, r.URL.Path)
	}))
	defer up.Close()
	routes := []routedb.Route{rt("up", "/up/", "up", routedb.AuthAuthenticated)}
	clusters := []routedb.Cluster{{Name: "up", Kind: routedb.KindHTTP, Balancing: routedb.RoundRobin, MaxConcurrency: 100,
		Endpoints: []string{up.URL}}}
	f := newFixture(t, Config{Breaker: breaker.Config{OpenFor: time.Hour}, MaxRetries: -1, FallbackMaxBytes: 100},
		map[string]http.Handler{}, routes, clusters)
	store := &flakyStore{m: map[string]FallbackEntry{}}
	f.gw.SetFallbackStore(store)

	for _, p := range []string{"/up/data", "/up/big", "/up/gone", "/up/personal", "/up/private"} {
		if a := f.do("GET", p, "user:alice", ""); a.status != 200 {
			t.Fatalf("GET %s: %d", p, a.status)
		}
	}

	failing.Store(true)
	for range 20 {
		f.do("POST", "/up/x", "user:alice", "{}")
	}
	// The answers were stored after being sent: checked only now.
	if n := store.len(); n != 2 {
		t.Fatalf("%d entries stored, want 2 (not the body over FallbackMaxBytes, nor the personal or private answers)", n)
	}
	store.mu.Lock()
	for _, e := range store.m {
		if e.Code != 200 || e.Header.Get("Content-Type") != "application/json" || e.Header.Get("X-Extra") != "" || time.Since(e.At) > time.Minute {
			t.Errorf("stored entry %+v", e)
		}
	}
	store.mu.Unlock()
	if a := f.do("GET", "/up/data", "user:alice", ""); a.status != 200 || a.header.Get(FallbackHeader) == "" || a.header.Get("Set-Cookie") != "" {
		t.Errorf("fallback from the store: %d %v", a.status, a.header)
	}
	// An entry older than FallbackTTL (5m) is not served.
	store.mu.Lock()
	for k, e := range store.m {
		if strings.Contains(k, "/up/gone") {
			e.At = time.Now().Add(-6 * time.Minute)
			store.m[k] = e
		}
	}
	store.mu.Unlock()
	if a := f.do("GET", "/up/gone", "user:alice", ""); a.status != 503 {
		t.Errorf("an expired entry was served: %d", a.status)
	}

	// A store that fails means no fallback: the 503 of an empty store, with
	// nothing of the failure in it.
	store.down.Store(true)
	a := f.do("GET", "/up/data", "user:alice", "")
	if a.status != 503 || a.body["reason"] != "breaker_open" || strings.Contains(fmt.Sprint(a.body), "10.1.2.3") ||
		strings.Contains(fmt.Sprint(a.body), "refused") {
		t.Errorf("store down: %d %v; want a plain 503", a.status, a.body)
	}

	// nil restores the in-process store, which has nothing yet.
	f.gw.SetFallbackStore(nil)
	if a := f.do("GET", "/up/data", "user:alice", ""); a.status != 503 {
		t.Errorf("in-process store after SetFallbackStore(nil): %d, want 503", a.status)
	}
}
