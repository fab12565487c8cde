-- The seed's service_routes (seed/system-design-roadmap.txt), adapted to SQLite
-- only where SQLite forces it: TIMESTAMPTZ is TEXT in RFC 3339 UTC with
-- milliseconds. Columns, defaults, the CHECK and the partial unique index are
-- the seed's. The PostgreSQL text is postgres/0001_service_routes.sql.
CREATE TABLE service_routes (
    route_id VARCHAR(64) PRIMARY KEY,
    path_pattern VARCHAR(512) NOT NULL,
    target_cluster VARCHAR(128) NOT NULL,
    max_concurrency INT NOT NULL DEFAULT 1000,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT chk_concurrency CHECK (max_concurrency BETWEEN 10 AND 100000)
);

-- Optimize route matching queries
CREATE UNIQUE INDEX idx_route_pattern ON service_routes (path_pattern) 
WHERE is_active = TRUE;
