// Package pgtest gives each test a fresh PostgreSQL database.
//
// DSN(t) creates a database named test_<random> on a server and drops it when
// the test ends, so tests may run in parallel. The server is, in order:
//   - the one named by $PEDAL_TEST_POSTGRES (a DSN of a database the test user
//     may CREATE DATABASE from, e.g. postgres://postgres@127.0.0.1:5432/postgres);
//   - the one answering on 127.0.0.1:5432 (trust auth, user postgres or root);
//   - a private cluster started once per test binary with initdb and pg_ctl
//     (as the postgres user when running as root, since initdb refuses root),
//     listening on a free loopback port, stopped by Stop (call it from TestMain)
//     or left for the OS to reap otherwise.
//
// When none of these is possible the test is skipped with a message saying
// what to install, or fails when $CI is set. Only loopback servers are started;
// DSN is safe for concurrent use.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvServer names the environment variable holding an admin DSN to use.
const EnvServer = "PEDAL_TEST_POSTGRES"

// BinDir is where Debian's postgresql-15 puts initdb and pg_ctl.
const BinDir = "/usr/lib/postgresql/15/bin"

var server struct {
	once    sync.Once
	dsn     string // admin DSN, or "" when none
	err     error  // why there is none
	dataDir string // private cluster to stop, or ""
	owner   string // user the cluster runs as ("" = current)
}

// DSN returns the DSN of a new, empty database that is dropped at cleanup.
func DSN(t testing.TB) string {
	t.Helper()
	server.once.Do(findServer)
	if server.dsn == "" {
		msg := fmt.Sprintf("pgtest: no PostgreSQL: %v (set %s, run one on 127.0.0.1:5432, or apt-get install -y postgresql)",
			server.err, EnvServer)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := "test_" + randomHex(8)
	if err := admin(ctx, server.dsn, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// WITH (FORCE) ends sessions a test left open (PostgreSQL ≥ 13).
		if err := admin(ctx, server.dsn, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(server.dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// Stop stops the private cluster, if one was started; call it from TestMain
// after m.Run. It is a no-op otherwise.
func Stop() {
	if server.dataDir == "" {
		return
	}
	cluster{server.dsn, server.dataDir, server.owner}.stop()
	server.dataDir = ""
}

func findServer() {
	if dsn := os.Getenv(EnvServer); dsn != "" {
		server.dsn = dsn
		return
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:5432", time.Second); err == nil {
		c.Close()
		for _, u := range []string{"postgres", "root"} {
			dsn := "postgres://" + u + "@127.0.0.1:5432/postgres?sslmode=disable"
			if ping(dsn) == nil {
				server.dsn = dsn
				return
			}
		}
	}
	c, err := startCluster()
	if err != nil {
		server.err = err
		return
	}
	server.dsn, server.dataDir, server.owner = c.dsn, c.dataDir, c.owner
}

type cluster struct{ dsn, dataDir, owner string }

func (c cluster) stop() {
	asOwner(c.owner, filepath.Join(BinDir, "pg_ctl"), "-D", c.dataDir, "-m", "immediate", "-w", "stop").Run()
	os.RemoveAll(filepath.Dir(c.dataDir))
}

func ping(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return admin(ctx, dsn, "SELECT 1")
}

// admin runs one statement on its own connection.
func admin(ctx context.Context, dsn, stmt string) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, stmt)
	return err
}

// startCluster runs initdb and pg_ctl start on a free port under a temp dir.
func startCluster() (c cluster, err error) {
	initdb := filepath.Join(BinDir, "initdb")
	if _, err := os.Stat(initdb); err != nil {
		p, lerr := exec.LookPath("initdb")
		if lerr != nil {
			return c, fmt.Errorf("nothing on 127.0.0.1:5432 and no initdb in %s or $PATH", BinDir)
		}
		initdb = p
	}
	pgctl := filepath.Join(filepath.Dir(initdb), "pg_ctl")
	owner := ""
	if os.Geteuid() == 0 {
		owner = "postgres"
	}
	base, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return c, err
	}
	dir := filepath.Join(base, "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return c, err
	}
	if owner != "" {
		u, err := user.Lookup(owner)
		if err != nil {
			return c, fmt.Errorf("running as root and no %q user to run initdb: %w", owner, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, d := range []string{base, dir} {
			if err := os.Chown(d, uid, gid); err != nil {
				return c, err
			}
		}
	}
	out, err := asOwner(owner, initdb, "-D", dir, "-U", "postgres", "--auth=trust", "--no-sync").CombinedOutput()
	if err != nil {
		return c, fmt.Errorf("initdb: %v: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return c, err
	}
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s -c fsync=off", port, dir)
	out, err = asOwner(owner, pgctl, "-D", dir, "-o", opts, "-l", filepath.Join(base, "log"), "-w", "start").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(base, "log"))
		return c, fmt.Errorf("pg_ctl start: %v: %s %s", err, out, log)
	}
	c = cluster{dsn: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), dataDir: dir, owner: owner}
	if err := ping(c.dsn); err != nil {
		c.stop()
		return cluster{}, err
	}
	return c, nil
}

func asOwner(owner, name string, args ...string) *exec.Cmd {
	if owner == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("runuser", append([]string{"-u", owner, "--", name}, args...)...)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
