// Package taskstore stores URL-metadata collection tasks in SQLite (Open) or
// PostgreSQL (OpenPostgres, for several processes sharing one database) and writes
// each task's outbox events (package outbox) in the same transaction as the
// task change they announce, so a task is never accepted without its
// "MetadataRequested" event, nor finished without "MetadataCollected".
//
// The schema is embedded (migrations/*.sql for SQLite, migrations/postgres/*.sql
// for PostgreSQL), applied in order at open and recorded in schema_migrations.
// On PostgreSQL the migrations run in one transaction holding an advisory
// lock, so processes starting at once apply each migration exactly once.
//
// A Store is safe for concurrent use. On SQLite it holds one connection (WAL,
// busy timeout, foreign keys), so writes are serialised. On PostgreSQL,
// several Stores (processes) may share a database: a task's row is locked
// while StartAttempt or Finish changes it, and creators of one idempotency key
// take turns on an advisory lock. The outbox relay (outbox.Relay, with
// Dialect outbox.Postgres on PostgreSQL) shares the database through DB.
package taskstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/pedal-project/pedal/internal/sqlitedb"
)

//go:embed migrations/*.sql migrations/postgres/*.sql
var migrations embed.FS

// Store is the task table and its outbox.
type Store struct {
	db      *sql.DB
	replica *sql.DB // reads that tolerate lag; nil means db
	pg      bool    // PostgreSQL rather than SQLite
	now     func() time.Time
}

// Open opens (creating if needed) the SQLite database at path and applies any
// migration not yet recorded.
func Open(ctx context.Context, path string) (*Store, error) {
	db, err := sqlitedb.Open(ctx, path, migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("taskstore: %w", err)
	}
	return &Store{db: db, now: time.Now}, nil
}

// OpenPostgres connects to the PostgreSQL database named by dsn (a URL or
// key=value string as pgx accepts) and applies any migration not yet recorded.
func OpenPostgres(ctx context.Context, dsn string) (*Store, error) {
	db, err := openPostgres(dsn)
	if err != nil {
		return nil, fmt.Errorf("taskstore: open postgres: %w", err)
	}
	if err := migratePostgres(ctx, db, migrations, "migrations/postgres"); err != nil {
		db.Close()
		return nil, fmt.Errorf("taskstore: open postgres: %w", err)
	}
	return &Store{db: db, pg: true, now: time.Now}, nil
}

// UseReplica sends the reads that tolerate lag (GetTask, QueueDepth) to a
// PostgreSQL read replica at dsn. A task the replica does not have yet (just
// created, not yet replicated) is read from the primary, so it is never
// reported missing. Call it before the Store is used.
func (s *Store) UseReplica(dsn string) error {
	if !s.pg {
		return errors.New("taskstore: a read replica needs PostgreSQL")
	}
	db, err := openPostgres(dsn)
	if err != nil {
		return fmt.Errorf("taskstore: open replica: %w", err)
	}
	s.replica = db
	return nil
}

func (s *Store) reader() *sql.DB {
	if s.replica != nil {
		return s.replica
	}
	return s.db
}

// migrationLock is the pg_advisory_xact_lock key serialising migrations.
const migrationLock = 0x7065_6461_6c5f_6d67 // "pedal_mg"

// migratePostgres applies the migrations in dir not yet in schema_migrations,
// all in one transaction under an advisory lock: a second process starting at
// the same time waits, then finds them recorded.
func migratePostgres(ctx context.Context, db *sql.DB, migrations fs.FS, dir string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
		return fmt.Errorf("lock migrations: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
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
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, version).Scan(&n); err != nil {
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
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, version, base); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
	}
	return tx.Commit()
}

// DB returns the database, for the outbox Relay.
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the database (and the replica's connections).
func (s *Store) Close() error {
	if s.replica != nil {
		s.replica.Close()
	}
	return s.db.Close()
}
