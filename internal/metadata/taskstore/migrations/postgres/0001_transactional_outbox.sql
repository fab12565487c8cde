-- The seed's transactional_outbox, verbatim, for the PostgreSQL backend, applied
-- by taskstore.OpenPostgres; SQLite runs ../0001_transactional_outbox.sql.
CREATE TABLE transactional_outbox (
    event_id VARCHAR(64) PRIMARY KEY,
    aggregate_type VARCHAR(128) NOT NULL,
    aggregate_id VARCHAR(128) NOT NULL,
    event_type VARCHAR(128) NOT NULL,
    payload JSONB NOT NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'PENDING', -- PENDING, PROCESSED, FAILED
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_outbox_schedule ON transactional_outbox (status, created_at) 
WHERE status = 'PENDING';
