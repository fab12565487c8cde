package taskstore

import (
	"database/sql"

	"github.com/pedal-project/pedal/internal/pgdb"
)

// openPostgres returns a *sql.DB over pgx (its database/sql driver).
func openPostgres(dsn string) (*sql.DB, error) { return pgdb.Open(dsn) }

// rebind turns ? placeholders into $n.
func rebind(query string) string { return pgdb.Rebind(query) }
