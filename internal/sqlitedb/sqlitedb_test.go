package sqlitedb

import (
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func TestMigrationsApplyOnceInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	fs := fstest.MapFS{
		"m/0002_b.sql": {Data: []byte(`INSERT INTO t (v) VALUES ('second');`)},
		"m/0001_a.sql": {Data: []byte(`CREATE TABLE t (v TEXT); INSERT INTO t (v) VALUES ('first');`)},
	}
	for range 2 { // a reopen applies nothing again
		db, err := Open(t.Context(), path, fs, "m")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		rows, err := db.Query(`SELECT v FROM t ORDER BY rowid`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var v string
			rows.Scan(&v)
			got = append(got, v)
		}
		rows.Close()
		db.Close()
		if strings.Join(got, ",") != "first,second" {
			t.Fatalf("rows %v", got)
		}
	}
	// A new migration is applied on the next open.
	fs["m/0003_c.sql"] = &fstest.MapFile{Data: []byte(`INSERT INTO t (v) VALUES ('third');`)}
	db, err := Open(t.Context(), path, fs, "m")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM t`).Scan(&n)
	db.Close()
	if n != 3 {
		t.Errorf("%d rows after a third migration", n)
	}
}

func TestBadMigrations(t *testing.T) {
	for name, fs := range map[string]fstest.MapFS{
		"unnumbered": {"m/init.sql": {Data: []byte(`SELECT 1;`)}},
		"broken SQL": {"m/0001_x.sql": {Data: []byte(`CREATE TABLE (;`)}},
	} {
		if _, err := Open(t.Context(), filepath.Join(t.TempDir(), "x.db"), fs, "m"); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
	// A failed migration leaves no trace: fixed, it applies.
	path := filepath.Join(t.TempDir(), "y.db")
	bad := fstest.MapFS{"m/0001_x.sql": {Data: []byte(`CREATE TABLE t (v TEXT); INSERT INTO nowhere VALUES (1);`)}}
	if _, err := Open(t.Context(), path, bad, "m"); err == nil {
		t.Fatal("a failing migration succeeded")
	}
	good := fstest.MapFS{"m/0001_x.sql": {Data: []byte(`CREATE TABLE t (v TEXT);`)}}
	db, err := Open(t.Context(), path, good, "m")
	if err != nil {
		t.Fatalf("after a rolled-back migration: %v", err)
	}
	db.Close()
}
