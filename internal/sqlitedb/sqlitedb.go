// Package sqlitedb opens pedal's embedded SQLite databases (modernc.org/sqlite,
// pure Go) the one way they are used: WAL, full sync, foreign keys, a busy
// timeout, immediate write transactions and a single connection, so writes
// are serialised in the process and every commit is durable on return.
//
// Migrations are SQL files named NNNN_name.sql in an fs.FS, applied in order,
// each in its own transaction with its row in schema_migrations; a migration
// already recorded is never run again, so files may be added but never edited.
//
// A *sql.DB from Open is safe for concurrent use.
package sqlitedb

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"sort"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// TimeFormat is how times are stored: RFC 3339 UTC with milliseconds, fixed
// width, so text order is time order.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// Open opens (creating if needed) the database at file and applies the
// migrations in dir of migrations not yet recorded.
func Open(ctx context.Context, file string, migrations fs.FS, dir string) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+file+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", file, err)
	}
	db.SetMaxOpenConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	if err := Migrate(ctx, db, migrations, dir); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", file, err)
	}
	return db, nil
}

// Migrate applies the migrations in dir not yet recorded in schema_migrations.
func Migrate(ctx context.Context, db *sql.DB, migrations fs.FS, dir string) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	names, err := fs.Glob(migrations, path.Join(dir, "*.sql"))
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		base := strings.TrimPrefix(name, dir+"/")
		var version int
		if _, err := fmt.Sscanf(base, "%d_", &version); err != nil || version <= 0 {
			return fmt.Errorf("migration %s: name must start with a positive version", base)
		}
		body, err := fs.ReadFile(migrations, name)
		if err != nil {
			return err
		}
		if err := apply(ctx, db, version, base, string(body)); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
	}
	return nil
}

func apply(ctx context.Context, db *sql.DB, version int, name, body string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, body); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		version, name, time.Now().UTC().Format(TimeFormat)); err != nil {
		return err
	}
	return tx.Commit()
}
