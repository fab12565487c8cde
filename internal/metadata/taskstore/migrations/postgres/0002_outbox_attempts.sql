-- Mirror of ../0002_outbox_attempts.sql. Not executed by taskstore.
ALTER TABLE transactional_outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE transactional_outbox ADD COLUMN last_error TEXT;
