package pgtest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) {
	m.Run()
	Stop()
}

func TestDSNGivesFreshDatabases(t *testing.T) {
	a, b := DSN(t), DSN(t)
	if a == b {
		t.Fatalf("DSN returned %s twice", a)
	}
	for _, dsn := range []string{a, b} {
		db, err := pgx.Connect(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close(context.Background())
		var n int
		if err := db.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s has %d tables, want an empty database", dsn, n)
		}
		if _, err := db.Exec(t.Context(), `CREATE TABLE t (x int)`); err != nil {
			t.Fatal(err)
		}
	}
}

// The private-cluster path, even when a server already answers on 5432.
func TestPrivateCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	if _, err := os.Stat(filepath.Join(BinDir, "initdb")); err != nil {
		t.Skipf("no %s/initdb", BinDir)
	}
	c, err := startCluster()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		c.stop()
		if _, err := os.Stat(c.dataDir); !os.IsNotExist(err) {
			t.Errorf("data dir %s left behind (%v)", c.dataDir, err)
		}
		if ping(c.dsn) == nil {
			t.Errorf("cluster at %s still answers after stop", c.dsn)
		}
	}()
	if err := ping(c.dsn); err != nil {
		t.Fatal(err)
	}
}
