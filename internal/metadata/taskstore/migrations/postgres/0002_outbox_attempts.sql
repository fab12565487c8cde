-- Mirror of ../0002_outbox_attempts.sql, applied by taskstore.OpenPostgres.
ALTER TABLE transactional_outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE transactional_outbox ADD COLUMN last_error TEXT;
