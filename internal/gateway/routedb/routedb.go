// Package routedb stores the gateway's routing configuration in SQLite (Open,
// one process) or PostgreSQL (OpenPostgres, several gateways sharing one
// configuration): the seed's service_routes table as the seed wrote it, a
// route_policies table beside it (auth policy, timeout and rate limit per
// route), the clusters routes name in target_cluster and their endpoints. Every change bumps
// route_config_version (by triggers), so a gateway notices a change with one
// cheap query and then loads the whole configuration in one transaction. On
// PostgreSQL every committed change is also announced on the route_config
// channel, which Watch listens to.
//
// The store validates nothing beyond the tables' constraints: the gateway
// checks a configuration (patterns, clusters) before writing it, and once more
// when it builds a routing table from what it loads.
//
// A Store is safe for concurrent use.
package routedb

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pedal-project/pedal/internal/sqlitedb"
)

//go:embed migrations/*.sql migrations/postgres/*.sql
var migrations embed.FS

// Auth policies of a route.
const (
	AuthPublic        = "public"
	AuthAuthenticated = "authenticated"
	AuthAdmin         = "admin"
)

// Cluster kinds and balancing.
const (
	KindInProcess = "in_process"
	KindHTTP      = "http"

	RoundRobin    = "round_robin"
	LeastRequests = "least_requests"
)

// Route is one row of service_routes with its policy.
type Route struct {
	ID             string
	PathPattern    string // Go net/http pattern, e.g. "GET /v1/ads/{ad_id}/clicks"
	TargetCluster  string
	MaxConcurrency int
	IsActive       bool
	CreatedAt      time.Time
	UpdatedAt      time.Time

	Auth               string        // AuthPublic, AuthAuthenticated or AuthAdmin
	Timeout            time.Duration // whole request, retries included
	RateLimitPerMinute int           // per client; 0 means none
	RateLimitBurst     int
}

// Cluster is a target of routes.
type Cluster struct {
	Name           string
	Kind           string // KindInProcess or KindHTTP
	Balancing      string // RoundRobin or LeastRequests
	MaxConcurrency int
	HealthPath     string   // "" means no active health checks
	Endpoints      []string // base URLs, for KindHTTP, in text order
}

// Config is the whole routing configuration at one version.
type Config struct {
	Version  int64
	Routes   []Route
	Clusters []Cluster
}

// Errors; match with errors.Is.
var (
	ErrNotFound = errors.New("routedb: not found")
	// ErrConflict: another active route has the same path pattern.
	ErrConflict = errors.New("routedb: an active route has this path pattern")
	// ErrConstraint: a value the tables' constraints refuse.
	ErrConstraint = errors.New("routedb: constraint violated")
)

// Store is the routing configuration.
type Store struct {
	db *sql.DB
	pg *pgx.ConnConfig // nil on SQLite; Watch's connections use it
}

// q returns query with SQLite's ? placeholders, or PostgreSQL's $n.
func (s *Store) q(query string) string {
	if s.pg == nil {
		return query
	}
	return rebind(query)
}

// now returns the time to store as created_at or updated_at: TEXT in
// sqlitedb.TimeFormat on SQLite, a time.Time for TIMESTAMPTZ on PostgreSQL.
func (s *Store) now() any {
	t := time.Now().UTC()
	if s.pg == nil {
		return t.Format(sqlitedb.TimeFormat)
	}
	return t
}

// Open opens (creating if needed) the database at path and applies its
// migrations.
func Open(ctx context.Context, path string) (*Store, error) {
	db, err := sqlitedb.Open(ctx, path, migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("routedb: %w", err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Version returns the configuration's version; it changes with every change.
func (s *Store) Version(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, s.q(`SELECT version FROM route_config_version WHERE id = 1`)).Scan(&v); err != nil {
		return 0, fmt.Errorf("routedb: version: %w", err)
	}
	return v, nil
}

const routeColumns = `r.route_id, r.path_pattern, r.target_cluster, r.max_concurrency, r.is_active, r.created_at, r.updated_at,
	coalesce(p.auth, 'authenticated'), coalesce(p.timeout_ms, 30000), coalesce(p.rate_limit_per_minute, 0), coalesce(p.rate_limit_burst, 0)
	FROM service_routes r LEFT JOIN route_policies p ON p.route_id = r.route_id`

type scanner interface{ Scan(dest ...any) error }

func scanRoute(sc scanner) (Route, error) {
	var (
		r         Route
		timeoutMS int64
	)
	if err := sc.Scan(&r.ID, &r.PathPattern, &r.TargetCluster, &r.MaxConcurrency, &r.IsActive,
		(*dbTime)(&r.CreatedAt), (*dbTime)(&r.UpdatedAt),
		&r.Auth, &timeoutMS, &r.RateLimitPerMinute, &r.RateLimitBurst); err != nil {
		return Route{}, err
	}
	r.Timeout = time.Duration(timeoutMS) * time.Millisecond
	return r, nil
}

// dbTime scans a timestamp column: TEXT in RFC 3339 on SQLite, TIMESTAMPTZ
// on PostgreSQL. Times are in UTC either way.
type dbTime time.Time

func (t *dbTime) Scan(src any) error {
	switch v := src.(type) {
	case time.Time:
		*t = dbTime(v.UTC())
		return nil
	case string:
		return t.parse(v)
	case []byte:
		return t.parse(string(v))
	}
	return fmt.Errorf("routedb: cannot scan %T into a time", src)
}

func (t *dbTime) parse(s string) error {
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("routedb: time %q: %w", s, err)
	}
	*t = dbTime(v.UTC())
	return nil
}

// Load reads the whole configuration in one transaction.
func (s *Store) Load(ctx context.Context) (Config, error) {
	opts := &sql.TxOptions{ReadOnly: true}
	if s.pg != nil {
		// One snapshot for every query below; PostgreSQL's default, READ
		// COMMITTED, takes one per statement.
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return Config{}, fmt.Errorf("routedb: load: %w", err)
	}
	defer tx.Rollback()
	var c Config
	if err := tx.QueryRowContext(ctx, s.q(`SELECT version FROM route_config_version WHERE id = 1`)).Scan(&c.Version); err != nil {
		return Config{}, fmt.Errorf("routedb: load: %w", err)
	}
	rows, err := tx.QueryContext(ctx, s.q(`SELECT `+routeColumns+` ORDER BY r.route_id`))
	if err != nil {
		return Config{}, fmt.Errorf("routedb: load routes: %w", err)
	}
	for rows.Next() {
		r, err := scanRoute(rows)
		if err != nil {
			rows.Close()
			return Config{}, fmt.Errorf("routedb: load routes: %w", err)
		}
		c.Routes = append(c.Routes, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Config{}, fmt.Errorf("routedb: load routes: %w", err)
	}
	rows, err = tx.QueryContext(ctx, s.q(`SELECT cluster, kind, balancing, max_concurrency, coalesce(health_path, '')
		FROM route_clusters ORDER BY cluster`))
	if err != nil {
		return Config{}, fmt.Errorf("routedb: load clusters: %w", err)
	}
	index := map[string]int{}
	for rows.Next() {
		var cl Cluster
		if err := rows.Scan(&cl.Name, &cl.Kind, &cl.Balancing, &cl.MaxConcurrency, &cl.HealthPath); err != nil {
			rows.Close()
			return Config{}, fmt.Errorf("routedb: load clusters: %w", err)
		}
		index[cl.Name] = len(c.Clusters)
		c.Clusters = append(c.Clusters, cl)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Config{}, fmt.Errorf("routedb: load clusters: %w", err)
	}
	rows, err = tx.QueryContext(ctx, s.q(`SELECT cluster, url FROM cluster_endpoints ORDER BY cluster, url`))
	if err != nil {
		return Config{}, fmt.Errorf("routedb: load endpoints: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, u string
		if err := rows.Scan(&name, &u); err != nil {
			return Config{}, fmt.Errorf("routedb: load endpoints: %w", err)
		}
		if i, ok := index[name]; ok {
			c.Clusters[i].Endpoints = append(c.Clusters[i].Endpoints, u)
		}
	}
	if err := rows.Err(); err != nil {
		return Config{}, fmt.Errorf("routedb: load endpoints: %w", err)
	}
	return c, nil
}

// GetRoute returns one route, or ErrNotFound.
func (s *Store) GetRoute(ctx context.Context, id string) (Route, error) {
	r, err := scanRoute(s.db.QueryRowContext(ctx, s.q(`SELECT `+routeColumns+` WHERE r.route_id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Route{}, ErrNotFound
	}
	if err != nil {
		return Route{}, fmt.Errorf("routedb: route %s: %w", id, err)
	}
	return r, nil
}

// PutRoute creates or replaces the route r.ID (its policy with it) and
// returns it as stored, and whether it was created.
func (s *Store) PutRoute(ctx context.Context, r Route) (Route, bool, error) {
	var (
		stored  Route
		created bool
	)
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		stored, created, err = s.putRoute(ctx, tx, r)
		return err
	})
	return stored, created, err
}

func (s *Store) inTx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("routedb: %w", err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("routedb: commit: %w", err)
	}
	return nil
}

func (s *Store) putRoute(ctx context.Context, tx *sql.Tx, r Route) (Route, bool, error) {
	now := s.now()
	// Insert, or else update: two writers creating one route at once (two
	// gateways on PostgreSQL) then both succeed, the later one updating.
	res, err := tx.ExecContext(ctx, s.q(`INSERT INTO service_routes (route_id, path_pattern, target_cluster, max_concurrency,
		is_active, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (route_id) DO NOTHING`),
		r.ID, r.PathPattern, r.TargetCluster, r.MaxConcurrency, r.IsActive, now, now)
	if err != nil {
		return Route{}, false, s.constraintError(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return Route{}, false, fmt.Errorf("routedb: put route: %w", err)
	}
	created := n == 1
	if !created {
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE service_routes SET path_pattern = ?, target_cluster = ?, max_concurrency = ?,
			is_active = ?, updated_at = ? WHERE route_id = ?`),
			r.PathPattern, r.TargetCluster, r.MaxConcurrency, r.IsActive, now, r.ID); err != nil {
			return Route{}, false, s.constraintError(err)
		}
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO route_policies (route_id, auth, timeout_ms, rate_limit_per_minute, rate_limit_burst)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (route_id) DO UPDATE SET auth = excluded.auth, timeout_ms = excluded.timeout_ms,
		rate_limit_per_minute = excluded.rate_limit_per_minute, rate_limit_burst = excluded.rate_limit_burst`),
		r.ID, r.Auth, r.Timeout.Milliseconds(), r.RateLimitPerMinute, r.RateLimitBurst); err != nil {
		return Route{}, false, s.constraintError(err)
	}
	stored, err := scanRoute(tx.QueryRowContext(ctx, s.q(`SELECT `+routeColumns+` WHERE r.route_id = ?`), r.ID))
	if err != nil {
		return Route{}, false, fmt.Errorf("routedb: put route: %w", err)
	}
	return stored, created, nil
}

// DeleteRoute deletes a route, or returns ErrNotFound.
func (s *Store) DeleteRoute(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM service_routes WHERE route_id = ?`), id)
	if err != nil {
		return fmt.Errorf("routedb: delete route: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// PutCluster creates or replaces a cluster and its endpoints.
func (s *Store) PutCluster(ctx context.Context, c Cluster) error {
	return s.inTx(ctx, func(tx *sql.Tx) error { return s.putCluster(ctx, tx, c) })
}

func (s *Store) putCluster(ctx context.Context, tx *sql.Tx, c Cluster) error {
	now := s.now()
	var health any
	if c.HealthPath != "" {
		health = c.HealthPath
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO route_clusters (cluster, kind, balancing, max_concurrency, health_path, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cluster) DO UPDATE SET kind = excluded.kind, balancing = excluded.balancing,
		max_concurrency = excluded.max_concurrency, health_path = excluded.health_path, updated_at = excluded.updated_at`),
		c.Name, c.Kind, c.Balancing, c.MaxConcurrency, health, now, now); err != nil {
		return s.constraintError(err)
	}
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM cluster_endpoints WHERE cluster = ?`), c.Name); err != nil {
		return fmt.Errorf("routedb: put cluster: %w", err)
	}
	for _, u := range c.Endpoints {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO cluster_endpoints (cluster, url) VALUES (?, ?)`), c.Name, u); err != nil {
			return s.constraintError(err)
		}
	}
	return nil
}

// Seed stores routes and clusters, in one transaction, if the store holds no
// route yet (the first start), and reports whether it did.
func (s *Store) Seed(ctx context.Context, routes []Route, clusters []Cluster) (bool, error) {
	seeded := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if s.pg != nil {
			// Two gateways starting at once: the second waits here, then
			// counts the first one's routes. (SQLite's write transactions
			// are already serialised: BEGIN IMMEDIATE.)
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(seedLock)); err != nil {
				return fmt.Errorf("routedb: seed: %w", err)
			}
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM service_routes`).Scan(&n); err != nil {
			return fmt.Errorf("routedb: seed: %w", err)
		}
		if n > 0 {
			return nil
		}
		for _, c := range clusters {
			if err := s.putCluster(ctx, tx, c); err != nil {
				return fmt.Errorf("routedb: seed cluster %s: %w", c.Name, err)
			}
		}
		for _, r := range routes {
			if _, _, err := s.putRoute(ctx, tx, r); err != nil {
				return fmt.Errorf("routedb: seed route %s: %w", r.ID, err)
			}
		}
		seeded = true
		return nil
	})
	return seeded, err
}

// constraintError classifies a write refused by the database.
func (s *Store) constraintError(err error) error {
	if s.pg != nil {
		return pgConstraintError(err)
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "UNIQUE constraint failed: service_routes.path_pattern"):
		return fmt.Errorf("%w: %v", ErrConflict, err)
	case strings.Contains(msg, "constraint failed"):
		return fmt.Errorf("%w: %v", ErrConstraint, err)
	}
	return fmt.Errorf("routedb: %w", err)
}
