// Package outbox implements the transactional outbox: a service writes an event
// row into transactional_outbox in the same database transaction as the state
// change it announces (Enqueue), and a Relay publishes PENDING rows afterwards.
//
// Invariants:
//   - Delivery is at least once. A row becomes PROCESSED only after Publish
//     returned nil, so a crash between publishing and marking publishes the row
//     again; consumers deduplicate on Message.EventID.
//   - Rows are published in (created_at, event_id) order. Rows of one aggregate
//     are published in that order as long as none of them reaches FAILED; the log
//     adapter keys records by aggregate id so that order holds per partition.
//   - A publish failure increments attempts on every row of the batch; a row that
//     reaches MaxAttempts becomes FAILED and is no longer retried.
//
// The table itself belongs to its owner's migrations (metadata/taskstore);
// this package only reads and updates it. Enqueue (SQLite) and EnqueuePostgres
// are safe for concurrent use with any transaction. On SQLite run one Relay per
// table; on PostgreSQL (Relay.Dialect = Postgres) any number of relays, in any
// processes, may share a table without breaking the per-aggregate order.
package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
)

// TimeFormat is how outbox and task timestamps are stored in SQLite: RFC 3339
// UTC with milliseconds, fixed width, so text order is time order.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// Status values of transactional_outbox.status.
const (
	StatusPending   = "PENDING"
	StatusProcessed = "PROCESSED"
	StatusFailed    = "FAILED"
)

// Message is one outbox event.
type Message struct {
	EventID       string          `json:"event_id"`
	AggregateType string          `json:"aggregate_type"`
	AggregateID   string          `json:"aggregate_id"`
	EventType     string          `json:"event_type"`
	Payload       json.RawMessage `json:"payload"`
	CreatedAt     time.Time       `json:"created_at"`
}

// Execer is the part of *sql.Tx (or *sql.DB) that Enqueue needs.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// NewEventID returns a new sortable event id: "evt_" and a ULID.
func NewEventID() string { return "evt_" + ulid.Make().String() }

// Enqueue inserts m as a PENDING row through tx, so that it commits or rolls back
// with the caller's other writes. An empty EventID gets NewEventID, a zero
// CreatedAt the current time; m is returned as stored.
func Enqueue(ctx context.Context, tx Execer, m Message) (Message, error) {
	m, err := prepare(m)
	if err != nil {
		return m, err
	}
	ts := m.CreatedAt.Format(TimeFormat)
	_, err = tx.ExecContext(ctx, `INSERT INTO transactional_outbox
		(event_id, aggregate_type, aggregate_id, event_type, payload, status, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, 'PENDING', ?, ?)`,
		m.EventID, m.AggregateType, m.AggregateID, m.EventType, string(m.Payload), ts, ts)
	if err != nil {
		return m, fmt.Errorf("outbox: enqueue %s: %w", m.EventType, err)
	}
	return m, nil
}

// prepare validates m and fills in EventID and CreatedAt.
func prepare(m Message) (Message, error) {
	if m.AggregateType == "" || m.AggregateID == "" || m.EventType == "" {
		return m, errors.New("outbox: enqueue: aggregate type, aggregate id and event type are required")
	}
	if !json.Valid(m.Payload) {
		return m, errors.New("outbox: enqueue: payload is not valid JSON")
	}
	if m.EventID == "" {
		m.EventID = NewEventID()
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now()
	}
	m.CreatedAt = m.CreatedAt.UTC().Truncate(time.Millisecond)
	return m, nil
}
