package routedb

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/pedal-project/pedal/internal/pgdb"
)

// seedLock is the pg_advisory_xact_lock key that makes one gateway seed the
// default routes when several start at once.
const seedLock = 0x7065_6461_6c5f_7273 // "pedal_rs"

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
	// Its own migrations table: the task store may share the database and
	// numbers its migrations from 1 too.
	if err := pgdb.Migrate(ctx, db, migrations, "migrations/postgres", "routedb_schema_migrations"); err != nil {
		db.Close()
		return nil, fmt.Errorf("routedb: open postgres: %w", err)
	}
	return &Store{db: db, pg: cfg}, nil
}

// rebind turns ? placeholders into $n.
func rebind(query string) string { return pgdb.Rebind(query) }

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
