-- Additive: the relay counts failed publishes per row and marks the row FAILED
-- after its limit. The seed's columns are unchanged.
ALTER TABLE transactional_outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE transactional_outbox ADD COLUMN last_error TEXT;
