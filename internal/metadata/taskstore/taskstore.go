// Package taskstore stores URL-metadata collection tasks in SQLite and writes
// each task's outbox events (package outbox) in the same transaction as the
// task change they announce, so a task is never accepted without its
// "MetadataRequested" event, nor finished without "MetadataCollected".
//
// The schema is embedded (migrations/*.sql), applied in order at Open and
// recorded in schema_migrations; migrations/postgres holds the PostgreSQL text
// of the same tables for the later backend and is not executed here.
//
// A Store is safe for concurrent use. It holds one SQLite connection (WAL,
// busy timeout, foreign keys), so writes are serialised; the outbox Relay
// shares it through DB.
package taskstore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"time"

	"github.com/pedal-project/pedal/internal/sqlitedb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the task table and its outbox.
type Store struct {
	db  *sql.DB
	now func() time.Time
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

// DB returns the database, for the outbox Relay.
func (s *Store) DB() *sql.DB { return s.db }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }
