package pgdb

import (
	"testing"
	"testing/fstest"

	"github.com/pedal-project/pedal/internal/pgtest"
)

func TestMain(m *testing.M) {
	m.Run()
	pgtest.Stop()
}

func TestRebind(t *testing.T) {
	if got := Rebind(`SELECT a FROM t WHERE b = ? AND c IN (?, ?)`); got != `SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)` {
		t.Errorf("Rebind: %s", got)
	}
}

// TestMigrateTablesApart: two stores numbering their migrations from 1 in
// one database each apply theirs, once.
func TestMigrateTablesApart(t *testing.T) {
	db, err := Open(pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a := fstest.MapFS{"m/0001_a.sql": {Data: []byte(`CREATE TABLE a (v INT); INSERT INTO a VALUES (1);`)}}
	b := fstest.MapFS{"m/0001_b.sql": {Data: []byte(`CREATE TABLE b (v INT); INSERT INTO b VALUES (2);`)}}
	for range 2 {
		if err := Migrate(t.Context(), db, a, "m", "a_migrations"); err != nil {
			t.Fatal(err)
		}
		if err := Migrate(t.Context(), db, b, "m", "b_migrations"); err != nil {
			t.Fatal(err)
		}
	}
	var na, nb int
	db.QueryRow(`SELECT count(*) FROM a`).Scan(&na)
	db.QueryRow(`SELECT count(*) FROM b`).Scan(&nb)
	if na != 1 || nb != 1 {
		t.Errorf("rows %d and %d: each migration once", na, nb)
	}
	bad := fstest.MapFS{"m/0002_x.sql": {Data: []byte(`CREATE TABLE (;`)}}
	if err := Migrate(t.Context(), db, bad, "m", "a_migrations"); err == nil {
		t.Error("a broken migration applied")
	}
}
