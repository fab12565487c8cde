-- Mirror of ../0002_route_policies.sql for the PostgreSQL backend (OpenPostgres).
-- The triggers are per statement, not per row: the version may move by less
-- than SQLite's, but it moves with every change.
CREATE TABLE route_policies (
    route_id VARCHAR(64) PRIMARY KEY REFERENCES service_routes (route_id) ON DELETE CASCADE,
    auth VARCHAR(16) NOT NULL DEFAULT 'authenticated' CHECK (auth IN ('public', 'authenticated', 'admin')),
    timeout_ms INT NOT NULL DEFAULT 30000 CHECK (timeout_ms BETWEEN 1 AND 3600000),
    rate_limit_per_minute INT NOT NULL DEFAULT 0 CHECK (rate_limit_per_minute >= 0),
    rate_limit_burst INT NOT NULL DEFAULT 0 CHECK (rate_limit_burst >= 0)
);

CREATE TABLE route_clusters (
    cluster VARCHAR(128) PRIMARY KEY,
    kind VARCHAR(16) NOT NULL CHECK (kind IN ('in_process', 'http')),
    balancing VARCHAR(16) NOT NULL DEFAULT 'round_robin' CHECK (balancing IN ('round_robin', 'least_requests')),
    max_concurrency INT NOT NULL DEFAULT 1000 CHECK (max_concurrency BETWEEN 1 AND 100000),
    health_path VARCHAR(512),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE cluster_endpoints (
    cluster VARCHAR(128) NOT NULL REFERENCES route_clusters (cluster) ON DELETE CASCADE,
    url VARCHAR(2048) NOT NULL,
    PRIMARY KEY (cluster, url)
);

-- Gateways LISTEN on this channel; the version table mirrors SQLite's.
CREATE TABLE route_config_version (
    id INT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO route_config_version (id, version) VALUES (1, 0);

CREATE FUNCTION bump_route_config_version() RETURNS trigger AS $$
BEGIN
    UPDATE route_config_version SET version = version + 1;
    PERFORM pg_notify('route_config', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER service_routes_changed AFTER INSERT OR UPDATE OR DELETE ON service_routes
    FOR EACH STATEMENT EXECUTE FUNCTION bump_route_config_version();
CREATE TRIGGER route_policies_changed AFTER INSERT OR UPDATE OR DELETE ON route_policies
    FOR EACH STATEMENT EXECUTE FUNCTION bump_route_config_version();
CREATE TRIGGER route_clusters_changed AFTER INSERT OR UPDATE OR DELETE ON route_clusters
    FOR EACH STATEMENT EXECUTE FUNCTION bump_route_config_version();
CREATE TRIGGER cluster_endpoints_changed AFTER INSERT OR UPDATE OR DELETE ON cluster_endpoints
    FOR EACH STATEMENT EXECUTE FUNCTION bump_route_config_version();
