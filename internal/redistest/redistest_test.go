package redistest_test

import (
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pedal-project/pedal/internal/redistest"
)

func TestServerLifecycle(t *testing.T) {
	srv := redistest.Start(t)
	if host, _, err := net.SplitHostPort(srv.Addr()); err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr = %q, want a loopback address", srv.Addr())
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialerRetries: 1,
		ReadTimeout: 200 * time.Millisecond, ContextTimeoutEnabled: true})
	defer rdb.Close()
	ctx := t.Context()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	srv.Pause()
	if err := rdb.Get(ctx, "k").Err(); err == nil {
		t.Fatal("GET on a paused server: no error")
	}
	srv.Resume()
	if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET after Resume = %q, %v; want v", got, err)
	}

	srv.Stop()
	if _, err := net.DialTimeout("tcp", srv.Addr(), time.Second); err == nil {
		t.Fatal("dial after Stop: connected, want refused")
	}
	srv.Stop() // no-op

	srv.Restart()
	if err := rdb.Get(ctx, "k").Err(); err != redis.Nil {
		t.Fatalf("GET after Restart: %v, want redis.Nil (a fresh, empty server)", err)
	}
}

func TestServersArePrivate(t *testing.T) {
	a, b := redistest.Start(t), redistest.Start(t)
	if a.Addr() == b.Addr() || a.Addr() == "127.0.0.1:6379" || b.Addr() == "127.0.0.1:6379" {
		t.Fatalf("addresses %s and %s: want two distinct private servers", a.Addr(), b.Addr())
	}
}
