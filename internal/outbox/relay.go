package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pedal-project/pedal/internal/retry"
)

// Publisher delivers a batch of messages, in order. It returns nil only once every
// message is durable downstream; on error the relay retries the whole batch.
type Publisher interface {
	Publish(ctx context.Context, msgs []Message) error
}

// Relay publishes PENDING outbox rows and marks them PROCESSED. Set the fields,
// then call Run; zero tunables take their defaults.
type Relay struct {
	DB        *sql.DB
	Publisher Publisher
	// Dialect is the database behind DB; the zero value is SQLite.
	Dialect Dialect
	// BatchSize is the most rows published per pass; default 100.
	BatchSize int
	// PollInterval is the wait after a pass that found nothing; default 200ms.
	PollInterval time.Duration
	// MaxAttempts is how many failed publishes make a row FAILED; default 10.
	MaxAttempts int
	// BackoffBase and BackoffCap shape the wait after a failed pass:
	// random(0, min(cap, base·2^failures)) (full jitter). Defaults 100ms and 30s.
	BackoffBase, BackoffCap time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Metrics; nil records nothing. See NewMetrics.
	Metrics *Metrics
	// Retention is how long PROCESSED rows are kept before Run deletes them;
	// 0 means forever. FAILED rows are kept for inspection.
	Retention time.Duration
	// Now is the clock for updated_at; nil means time.Now.
	Now func() time.Time
}

func (r *Relay) defaults() {
	if r.BatchSize <= 0 {
		r.BatchSize = 100
	}
	if r.PollInterval <= 0 {
		r.PollInterval = 200 * time.Millisecond
	}
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = 10
	}
	if r.BackoffBase <= 0 {
		r.BackoffBase = 100 * time.Millisecond
	}
	if r.BackoffCap <= 0 {
		r.BackoffCap = 30 * time.Second
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.Now == nil {
		r.Now = time.Now
	}
}

// Run relays until ctx is done, then returns nil. Failed passes are logged and
// retried after a full-jitter backoff; they never stop the relay.
func (r *Relay) Run(ctx context.Context) error {
	if r.DB == nil || r.Publisher == nil {
		return errors.New("outbox: relay needs DB and Publisher")
	}
	r.defaults()
	failures := 0
	lastPurge := time.Time{}
	first := true
	for {
		if r.Retention > 0 && time.Since(lastPurge) >= time.Minute {
			lastPurge = time.Now()
			if _, err := r.Purge(ctx); err != nil && ctx.Err() == nil {
				r.Logger.WarnContext(ctx, "outbox purge failed", "err", err)
			}
		}
		n, err := r.RunOnce(ctx)
		if first {
			first = false
			r.Logger.InfoContext(ctx, "outbox relay started", "first_pass_rows", n, "err", err, "poll_interval", r.PollInterval)
		}
		wait := time.Duration(0)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			failures++
			wait = retry.FullJitter(r.BackoffBase, r.BackoffCap, failures)
			r.Logger.WarnContext(ctx, "outbox relay pass failed", "err", err, "failures", failures, "retry_in", wait)
		case n < r.BatchSize:
			failures = 0
			wait = r.PollInterval
		default:
			failures = 0
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
	}
}

// RunOnce publishes at most one batch of PENDING rows and returns how many rows
// it read. On a publish failure the rows stay PENDING with attempts incremented
// (FAILED once they reach MaxAttempts) and the publish error is returned. If
// marking fails after a successful publish, the rows stay PENDING and will be
// published again: a duplicate, never a loss.
//
// On PostgreSQL the batch is read with FOR UPDATE SKIP LOCKED and published and
// marked in one transaction, so relays in several processes may run at once;
// a batch holds at most one row per aggregate (its oldest PENDING row).
func (r *Relay) RunOnce(ctx context.Context) (int, error) {
	r.defaults()
	if r.Dialect == Postgres {
		return r.runOncePostgres(ctx)
	}
	msgs, err := r.pending(ctx)
	if err != nil {
		return 0, err
	}
	if len(msgs) == 0 {
		r.reportBacklog(ctx)
		return 0, nil
	}
	ids := make([]any, len(msgs))
	for i, m := range msgs {
		ids[i] = m.EventID
	}
	if perr := r.Publisher.Publish(ctx, msgs); perr != nil {
		r.Metrics.publishError()
		failed, err := r.recordFailure(ctx, ids, perr)
		r.Metrics.failed(failed)
		r.reportBacklog(ctx)
		if err != nil {
			return len(msgs), errors.Join(fmt.Errorf("outbox: publish: %w", perr), err)
		}
		return len(msgs), fmt.Errorf("outbox: publish: %w", perr)
	}
	now := r.Now().UTC().Format(TimeFormat)
	args := append([]any{StatusProcessed, now}, ids...)
	if _, err := r.DB.ExecContext(ctx, `UPDATE transactional_outbox SET status = ?, updated_at = ?
		WHERE status = 'PENDING' AND event_id IN (`+placeholders(len(ids))+`)`, args...); err != nil {
		return len(msgs), fmt.Errorf("outbox: mark %d published rows processed (they will be published again): %w", len(ids), err)
	}
	r.Metrics.published(len(msgs))
	r.reportBacklog(ctx)
	return len(msgs), nil
}

func (r *Relay) pending(ctx context.Context) ([]Message, error) {
	// Read the whole batch and close the cursor before publishing: with one
	// SQLite connection an open cursor would block the updates that follow.
	rows, err := r.DB.QueryContext(ctx, `SELECT event_id, aggregate_type, aggregate_id, event_type, payload, created_at
		FROM transactional_outbox WHERE status = 'PENDING' ORDER BY created_at, event_id LIMIT ?`, r.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("outbox: read pending: %w", err)
	}
	defer rows.Close()
	var msgs []Message
	for rows.Next() {
		var m Message
		var payload, created string
		if err := rows.Scan(&m.EventID, &m.AggregateType, &m.AggregateID, &m.EventType, &payload, &created); err != nil {
			return nil, fmt.Errorf("outbox: read pending: %w", err)
		}
		m.Payload = []byte(payload)
		if m.CreatedAt, err = time.Parse(time.RFC3339Nano, created); err != nil {
			return nil, fmt.Errorf("outbox: event %s: created_at %q: %w", m.EventID, created, err)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: read pending: %w", err)
	}
	return msgs, nil
}

// recordFailure increments attempts on ids and fails those at the limit; it
// returns how many rows became FAILED.
func (r *Relay) recordFailure(ctx context.Context, ids []any, perr error) (int, error) {
	msg := perr.Error()
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	now := r.Now().UTC().Format(TimeFormat)
	args := append([]any{r.MaxAttempts, msg, now}, ids...)
	_, err := r.DB.ExecContext(ctx, `UPDATE transactional_outbox SET
			attempts = attempts + 1,
			status = CASE WHEN attempts + 1 >= ?1 THEN 'FAILED' ELSE status END,
			last_error = ?2, updated_at = ?3
		WHERE status = 'PENDING' AND event_id IN (`+placeholdersFrom(4, len(ids))+`)`, args...)
	if err != nil {
		return 0, fmt.Errorf("outbox: record failed attempt: %w", err)
	}
	var failed int
	if err := r.DB.QueryRowContext(ctx, `SELECT count(*) FROM transactional_outbox
		WHERE status = 'FAILED' AND updated_at = ? AND event_id IN (`+placeholders(len(ids))+`)`,
		append([]any{now}, ids...)...).Scan(&failed); err != nil {
		return 0, fmt.Errorf("outbox: count failed rows: %w", err)
	}
	return failed, nil
}

func (r *Relay) reportBacklog(ctx context.Context) {
	if r.Metrics == nil {
		return
	}
	var n int
	if err := r.DB.QueryRowContext(ctx, `SELECT count(*) FROM transactional_outbox WHERE status = 'PENDING'`).Scan(&n); err == nil {
		r.Metrics.backlog.Set(float64(n))
	}
}

func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }

func placeholdersFrom(first, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "?%d", first+i)
	}
	return b.String()
}

// Purge deletes PROCESSED rows last updated more than Retention ago and returns
// how many it deleted. It does nothing when Retention is 0.
func (r *Relay) Purge(ctx context.Context) (int64, error) {
	r.defaults()
	if r.Retention <= 0 {
		return 0, nil
	}
	var cutoff any = r.Now().Add(-r.Retention).UTC().Format(TimeFormat)
	query := `DELETE FROM transactional_outbox WHERE status = 'PROCESSED' AND updated_at < ?`
	if r.Dialect == Postgres {
		cutoff, query = r.Now().Add(-r.Retention), strings.Replace(query, "?", "$1", 1)
	}
	res, err := r.DB.ExecContext(ctx, query, cutoff)
	if err != nil {
		return 0, fmt.Errorf("outbox: purge processed rows: %w", err)
	}
	return res.RowsAffected()
}
