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
	"time"

	"github.com/pedal-project/pedal/internal/sqlitedb"

	"github.com/pedal-project/pedal/internal/pgdb"
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
	if err := pgdb.Migrate(ctx, db, migrations, "migrations/postgres", "schema_migrations"); err != nil {
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

// DB returns the database, for the outbox Relay.
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the database (and the replica's connections).
func (s *Store) Close() error {
	if s.replica != nil {
		s.replica.Close()
	}
	return s.db.Close()
}
