// Package pgdb opens pedal's PostgreSQL databases (pgx through database/sql)
// and migrates them: SQL files named NNNN_name.sql in an fs.FS, applied in
// order, all in one transaction under an advisory lock shared by every pedal
// store, so that processes starting at once take turns; each store records
// its migrations in its own table, since each numbers them from 1.
//
// Queries are written once with ? placeholders for SQLite and PostgreSQL
// alike; Rebind turns them into PostgreSQL's $n.
//
// Everything here is safe for concurrent use.
package pgdb

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// migrationLock is the pg_advisory_xact_lock key of every pedal migration.
const migrationLock = 0x7065_6461_6c5f_6d67 // "pedal_mg"

// Open returns a *sql.DB over pgx for dsn (postgres://…); it connects lazily.
func Open(dsn string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	return stdlib.OpenDB(*cfg), nil
}

// Migrate applies the migrations in dir of migrations not yet recorded in
// table (created if missing).
func Migrate(ctx context.Context, db *sql.DB, migrations fs.FS, dir, table string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
		return fmt.Errorf("lock migrations: %w", err)
	}
	t := pgx.Identifier{table}.Sanitize()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+t+` (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create %s: %w", table, err)
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
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM `+t+` WHERE version = $1`, version).Scan(&n); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
		if n > 0 {
			continue
		}
		body, err := fs.ReadFile(migrations, name)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+t+` (version, name) VALUES ($1, $2)`, version, base); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
	}
	return tx.Commit()
}

// Rebind turns ? placeholders into $1, $2, … (the queries it is given hold no
// ? inside string literals).
func Rebind(query string) string {
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}
