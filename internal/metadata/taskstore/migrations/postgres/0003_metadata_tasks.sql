-- Mirror of ../0003_metadata_tasks.sql, applied by taskstore.OpenPostgres.
CREATE TABLE metadata_tasks (
    task_id VARCHAR(64) PRIMARY KEY,
    status VARCHAR(20) NOT NULL DEFAULT 'QUEUED' CHECK (status IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    target_url TEXT NOT NULL CHECK (length(target_url) BETWEEN 1 AND 2048),
    final_url TEXT,
    requested_by VARCHAR(128) NOT NULL,
    options JSONB NOT NULL DEFAULT '{}',
    result JSONB,
    error_code VARCHAR(64),
    error_message TEXT,
    idempotency_key VARCHAR(255),
    request_hash VARCHAR(128),
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    CHECK ((idempotency_key IS NULL) = (request_hash IS NULL))
);

CREATE UNIQUE INDEX idx_metadata_tasks_idempotency ON metadata_tasks (idempotency_key)
WHERE idempotency_key IS NOT NULL;

CREATE INDEX idx_metadata_tasks_open ON metadata_tasks (status)
WHERE status IN ('QUEUED', 'RUNNING');
