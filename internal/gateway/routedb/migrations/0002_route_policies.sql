-- Per-route policy, beside the seed's table (which stays as the seed wrote it):
-- who may call the route, its time limit and its rate limit per client.
CREATE TABLE route_policies (
    route_id VARCHAR(64) PRIMARY KEY REFERENCES service_routes (route_id) ON DELETE CASCADE,
    auth VARCHAR(16) NOT NULL DEFAULT 'authenticated' CHECK (auth IN ('public', 'authenticated', 'admin')),
    timeout_ms INT NOT NULL DEFAULT 30000 CHECK (timeout_ms BETWEEN 1 AND 3600000),
    rate_limit_per_minute INT NOT NULL DEFAULT 0 CHECK (rate_limit_per_minute >= 0), -- 0: none
    rate_limit_burst INT NOT NULL DEFAULT 0 CHECK (rate_limit_burst >= 0)
);

-- Clusters that routes name in target_cluster: in-process services of this
-- binary, or HTTP upstreams with endpoints.
CREATE TABLE route_clusters (
    cluster VARCHAR(128) PRIMARY KEY,
    kind VARCHAR(16) NOT NULL CHECK (kind IN ('in_process', 'http')),
    balancing VARCHAR(16) NOT NULL DEFAULT 'round_robin' CHECK (balancing IN ('round_robin', 'least_requests')),
    max_concurrency INT NOT NULL DEFAULT 1000 CHECK (max_concurrency BETWEEN 1 AND 100000),
    health_path VARCHAR(512), -- GET this on every endpoint; NULL: no active checks
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE cluster_endpoints (
    cluster VARCHAR(128) NOT NULL REFERENCES route_clusters (cluster) ON DELETE CASCADE,
    url VARCHAR(2048) NOT NULL,
    PRIMARY KEY (cluster, url)
);

-- One number that changes with every change of the tables above, so that
-- gateways notice a change with one cheap query.
CREATE TABLE route_config_version (
    id INT PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO route_config_version (id, version) VALUES (1, 0);

CREATE TRIGGER service_routes_ins AFTER INSERT ON service_routes BEGIN UPDATE route_config_version SET version = version + 1; END;
CREATE TRIGGER service_routes_upd AFTER UPDATE ON service_routes BEGIN UPDATE route_config_version SET version = version + 1; END;
CREATE TRIGGER service_routes_del AFTER DELETE ON service_routes BEGIN UPDATE route_config_version SET version = version + 1; END;
CREATE TRIGGER route_policies_ins AFTER INSERT ON route_policies BEGIN UPDATE route_config_version SET version = version + 1; END;
CREATE TRIGGER route_policies_upd AFTER UPDATE ON route_policies BEGIN UPDATE route_config_version SET version = version + 1; END;
CREATE TRIGGER route_policies_del AFTER DELETE ON route_policies BEGIN UPDATE route_config_version SET version = version + 1; END;
CREATE TRIGGER route_clusters_ins AFTER INSERT ON route_clusters BEGIN UPDATE route_config_version SET version = version + 1; END;
CREATE TRIGGER route_clusters_upd AFTER UPDATE ON route_clusters BEGIN UPDATE route_config_version SET version = version + 1; END;
CREATE TRIGGER route_clusters_del AFTER DELETE ON route_clusters BEGIN UPDATE route_config_version SET version = version + 1; END;
CREATE TRIGGER cluster_endpoints_ins AFTER INSERT ON cluster_endpoints BEGIN UPDATE route_config_version SET version = version + 1; END;
CREATE TRIGGER cluster_endpoints_upd AFTER UPDATE ON cluster_endpoints BEGIN UPDATE route_config_version SET version = version + 1; END;
CREATE TRIGGER cluster_endpoints_del AFTER DELETE ON cluster_endpoints BEGIN UPDATE route_config_version SET version = version + 1; END;
