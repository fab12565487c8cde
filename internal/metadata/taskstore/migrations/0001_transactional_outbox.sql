-- The seed's transactional_outbox (seed/system-design-roadmap.txt), adapted to
-- SQLite only where SQLite forces it: JSONB is TEXT holding valid JSON, and
-- TIMESTAMPTZ is TEXT in RFC 3339 UTC with millisecond precision, so that text
-- order is time order. The PostgreSQL text is postgres/0001_transactional_outbox.sql.
CREATE TABLE transactional_outbox (
    event_id VARCHAR(64) PRIMARY KEY,
    aggregate_type VARCHAR(128) NOT NULL,
    aggregate_id VARCHAR(128) NOT NULL,
    event_type VARCHAR(128) NOT NULL,
    payload TEXT NOT NULL CHECK (json_valid(payload)),
    status VARCHAR(20) NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'PROCESSED', 'FAILED')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX idx_outbox_schedule ON transactional_outbox (status, created_at) 
WHERE status = 'PENDING';
