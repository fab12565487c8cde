-- URL-metadata collection tasks (issue 5). Times as in 0001: RFC 3339 UTC, ms.
CREATE TABLE metadata_tasks (
    task_id VARCHAR(64) PRIMARY KEY, -- 'tsk_' + ULID, sortable by creation
    status VARCHAR(20) NOT NULL DEFAULT 'QUEUED' CHECK (status IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    target_url TEXT NOT NULL CHECK (length(target_url) BETWEEN 1 AND 2048),
    final_url TEXT,
    requested_by VARCHAR(128) NOT NULL,
    options TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(options)),
    result TEXT CHECK (result IS NULL OR json_valid(result)),
    error_code VARCHAR(64),
    error_message TEXT,
    idempotency_key VARCHAR(255),
    request_hash VARCHAR(128),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    started_at TEXT,
    finished_at TEXT,
    CHECK ((idempotency_key IS NULL) = (request_hash IS NULL))
);

-- One live task per idempotency key; a key older than the window is released
-- (set NULL) before the key is used again.
CREATE UNIQUE INDEX idx_metadata_tasks_idempotency ON metadata_tasks (idempotency_key)
WHERE idempotency_key IS NOT NULL;

-- Queue depth for completion estimates.
CREATE INDEX idx_metadata_tasks_open ON metadata_tasks (status)
WHERE status IN ('QUEUED', 'RUNNING');
