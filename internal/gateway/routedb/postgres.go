package routedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Advisory lock keys (pg_advisory_xact_lock). migrationLock is the task
// store's key too, so all of pedal's migrations on one database take turns.
const (
	migrationLock = 0x7065_6461_6c5f_6d67 // "pedal_mg"
	seedLock      = 0x7065_6461_6c5f_7273 // "pedal_rs"
)

// notifyChannel is the channel migrations/postgres/0002_route_policies.sql
// notifies on every change.
const notifyChannel = "route_config"

// OpenPostgres connects to the PostgreSQL database named by dsn (a URL or
// key=value string as pgx accepts) and applies any migration not yet
// recorded. Several gateways may open one database, at once too; each sees
// the others' changes through Version, Load and Watch.
func OpenPostgres(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("routedb: open postgres: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	if err := migratePostgres(ctx, db, migrations, "migrations/postgres"); err != nil {
		db.Close()
		return nil, fmt.Errorf("routedb: open postgres: %w", err)
	}
	return &Store{db: db, pg: cfg}, nil
}

// migratePostgres applies the migrations in dir not yet recorded in
// routedb_schema_migrations, all in one transaction under an advisory lock:
// a second process starting at the same time waits, then finds them
// recorded. It is the task store's migratePostgres but for the table name:
// both number their migrations from 1, so they cannot share the task store's
// schema_migrations when they share a database.
func migratePostgres(ctx context.Context, db *sql.DB, migrations fs.FS, dir string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
		return fmt.Errorf("lock migrations: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS routedb_schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create routedb_schema_migrations: %w", err)
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
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM routedb_schema_migrations WHERE version = $1`, version).Scan(&n); err != nil {
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
		if _, err := tx.ExecContext(ctx, `INSERT INTO routedb_schema_migrations (version, name) VALUES ($1, $2)`, version, base); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
	}
	return tx.Commit()
}

// rebind turns SQLite's ? placeholders into PostgreSQL's $1, $2, … (the
// store's queries hold no ? inside string literals).
func rebind(query string) string {
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

// pgConstraintError classifies a write refused by PostgreSQL, as
// constraintError does SQLite's.
func pgConstraintError(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return fmt.Errorf("routedb: %w", err)
	}
	switch {
	case pe.Code == "23505" && pe.ConstraintName == "idx_route_pattern":
		return fmt.Errorf("%w: %v", ErrConflict, err)
	case pe.Code == "23505", // another unique violation, e.g. an endpoint listed twice
		pe.Code == "23514", // check_violation
		pe.Code == "23503", // foreign_key_violation
		pe.Code == "23502", // not_null_violation
		pe.Code == "22001", // string_data_right_truncation: longer than VARCHAR(n)
		pe.Code == "22003": // numeric_value_out_of_range: beyond INT
		return fmt.Errorf("%w: %v", ErrConstraint, err)
	}
	return fmt.Errorf("routedb: %w", err)
}

// Watch calls changed once it listens for changes, then after every
// committed change made by any process on the database, until ctx is done;
// it then returns nil. Changes committed close together may give one call.
// It holds a connection of its own (LISTEN route_config); when that fails it
// reconnects, with backoff, and calls changed again, since changes may have
// been missed meanwhile. changed runs on Watch's goroutine: a slow one
// delays the next call, never loses it.
//
// On SQLite, Watch returns an error wrapping errors.ErrUnsupported at once;
// poll Version instead.
func (s *Store) Watch(ctx context.Context, changed func()) error {
	if s.pg == nil {
		return fmt.Errorf("routedb: watch: %w", errors.ErrUnsupported)
	}
	const minWait, maxWait = 100 * time.Millisecond, 5 * time.Second
	wait := minWait
	for {
		// listen returns when ctx is done or its connection fails; the
		// gateway's polling of Version covers the time without one.
		if err := s.listen(ctx, changed, func() { wait = minWait }); err == nil || ctx.Err() != nil {
			return nil
		}
		t := time.NewTimer(rand.N(wait) + wait/2)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, maxWait)
	}
}

// listen runs one LISTEN session until ctx is done or the connection fails.
func (s *Store) listen(ctx context.Context, changed, listening func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.pg)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	listening()
	changed()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		changed()
	}
}
