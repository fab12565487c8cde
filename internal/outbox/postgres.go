package outbox

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Dialect is the SQL database a Relay works on.
type Dialect int

// Dialects.
const (
	SQLite   Dialect = iota // one process; the table is read and updated without row locks
	Postgres                // several relays may share the table; see Relay.RunOnce
)

// EnqueuePostgres is Enqueue for a PostgreSQL transaction ($n placeholders,
// TIMESTAMPTZ created_at).
func EnqueuePostgres(ctx context.Context, tx Execer, m Message) (Message, error) {
	m, err := prepare(m)
	if err != nil {
		return m, err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO transactional_outbox
		(event_id, aggregate_type, aggregate_id, event_type, payload, status, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $6)`,
		m.EventID, m.AggregateType, m.AggregateID, m.EventType, string(m.Payload), m.CreatedAt)
	if err != nil {
		return m, fmt.Errorf("outbox: enqueue %s: %w", m.EventType, err)
	}
	return m, nil
}

// pgPending selects the publishable PENDING rows and locks them. A row is
// publishable when no older PENDING row of its aggregate exists: the NOT
// EXISTS sees rows locked by another relay (locks do not hide committed
// rows), so while one relay holds an aggregate's oldest row no other relay
// can take that aggregate's next one, and one batch holds at most one row
// per aggregate. SKIP LOCKED lets relays take disjoint batches instead of
// waiting. Rows are found by status, not by a high-water mark, so a row whose
// transaction commits after later rows is still found on a later pass.
const pgPending = `SELECT o.event_id, o.aggregate_type, o.aggregate_id, o.event_type, o.payload::text, o.created_at
	FROM transactional_outbox o
	WHERE o.status = 'PENDING' AND NOT EXISTS (
		SELECT 1 FROM transactional_outbox p
		WHERE p.status = 'PENDING' AND p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id
			AND (p.created_at, p.event_id) < (o.created_at, o.event_id))
	ORDER BY o.created_at, o.event_id
	LIMIT $1
	FOR UPDATE OF o SKIP LOCKED`

// runOncePostgres is RunOnce on PostgreSQL: select, publish and mark in one
// transaction, so the rows stay locked while they are published and become
// PROCESSED (or count the failed attempt) at commit. If the process dies or
// the commit fails after a publish, the rows unlock still PENDING and are
// published again: at least once.
func (r *Relay) runOncePostgres(ctx context.Context) (int, error) {
	tx, err := r.DB.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("outbox: begin: %w", err)
	}
	defer tx.Rollback()
	msgs, err := pgRead(ctx, tx, r.BatchSize)
	if err != nil {
		return 0, err
	}
	if len(msgs) == 0 {
		tx.Rollback()
		r.reportBacklog(ctx)
		return 0, nil
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.EventID
	}
	now := r.Now().UTC().Truncate(time.Millisecond)
	if perr := r.Publisher.Publish(ctx, msgs); perr != nil {
		r.Metrics.publishError()
		msg := perr.Error()
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
		var failed int
		err := tx.QueryRowContext(ctx, `WITH u AS (UPDATE transactional_outbox SET
				attempts = attempts + 1,
				status = CASE WHEN attempts + 1 >= $1 THEN 'FAILED' ELSE status END,
				last_error = $2, updated_at = $3
			WHERE event_id = ANY($4) RETURNING status)
			SELECT count(*) FROM u WHERE status = 'FAILED'`, r.MaxAttempts, msg, now, ids).Scan(&failed)
		if err == nil {
			err = tx.Commit()
		}
		if err != nil {
			return len(msgs), errors.Join(fmt.Errorf("outbox: publish: %w", perr), fmt.Errorf("outbox: record failed attempt: %w", err))
		}
		r.Metrics.failed(failed)
		r.reportBacklog(ctx)
		return len(msgs), fmt.Errorf("outbox: publish: %w", perr)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE transactional_outbox SET status = 'PROCESSED', updated_at = $1
		WHERE event_id = ANY($2)`, now, ids); err != nil {
		return len(msgs), fmt.Errorf("outbox: mark %d published rows processed (they will be published again): %w", len(ids), err)
	}
	if err := tx.Commit(); err != nil {
		return len(msgs), fmt.Errorf("outbox: commit %d published rows (they will be published again): %w", len(ids), err)
	}
	r.Metrics.published(len(msgs))
	r.reportBacklog(ctx)
	return len(msgs), nil
}

func pgRead(ctx context.Context, tx *sql.Tx, limit int) ([]Message, error) {
	rows, err := tx.QueryContext(ctx, pgPending, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: read pending: %w", err)
	}
	defer rows.Close()
	var msgs []Message
	for rows.Next() {
		var m Message
		var payload string
		if err := rows.Scan(&m.EventID, &m.AggregateType, &m.AggregateID, &m.EventType, &payload, &m.CreatedAt); err != nil {
			return nil, fmt.Errorf("outbox: read pending: %w", err)
		}
		var b bytes.Buffer
		if err := json.Compact(&b, []byte(payload)); err != nil {
			return nil, fmt.Errorf("outbox: event %s: payload: %w", m.EventID, err)
		}
		m.Payload, m.CreatedAt = b.Bytes(), m.CreatedAt.UTC()
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: read pending: %w", err)
	}
	return msgs, nil
}
