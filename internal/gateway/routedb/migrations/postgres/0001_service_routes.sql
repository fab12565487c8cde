-- The seed's service_routes, verbatim, for the PostgreSQL backend
-- (OpenPostgres); ../0001_service_routes.sql is its SQLite adaptation.
CREATE TABLE service_routes (
    route_id VARCHAR(64) PRIMARY KEY,
    path_pattern VARCHAR(512) NOT NULL,
    target_cluster VARCHAR(128) NOT NULL,
    max_concurrency INT NOT NULL DEFAULT 1000,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT chk_concurrency CHECK (max_concurrency BETWEEN 10 AND 100000)
);

-- Optimize route matching queries
CREATE UNIQUE INDEX idx_route_pattern ON service_routes (path_pattern) 
WHERE is_active = TRUE;
