package taskstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/pedal-project/pedal/internal/outbox"
)

// Status is a task's state: QUEUED → RUNNING → SUCCEEDED or FAILED. RUNNING may
// repeat (one StartAttempt per delivery); SUCCEEDED and FAILED are final.
type Status string

// Task states.
const (
	Queued    Status = "QUEUED"
	Running   Status = "RUNNING"
	Succeeded Status = "SUCCEEDED"
	Failed    Status = "FAILED"
)

// Outbox event types and the aggregate type written by the store.
const (
	AggregateType      = "metadata_task"
	EventTaskRequested = "MetadataRequested"
	EventTaskCompleted = "MetadataCollected"
)

// IdempotencyWindow is how long an idempotency key names its task.
const IdempotencyWindow = 24 * time.Hour

// Errors; match with errors.Is.
var (
	ErrNotFound            = errors.New("taskstore: task not found")
	ErrIdempotencyConflict = errors.New("taskstore: idempotency key reused with a different request")
	ErrFinished            = errors.New("taskstore: task already finished")
)

// NewTask is what CreateTask needs.
type NewTask struct {
	TargetURL   string
	RequestedBy string
	Options     json.RawMessage // JSON object; empty means {}
	// IdempotencyKey, if set, names the request for IdempotencyWindow;
	// RequestHash identifies its body (e.g. hex SHA-256 of the canonical request).
	IdempotencyKey string
	RequestHash    string
}

// Task is a stored task. Zero times are unset.
type Task struct {
	ID           string
	Status       Status
	Attempts     int
	TargetURL    string
	FinalURL     string
	RequestedBy  string
	Options      json.RawMessage
	Result       json.RawMessage // nil unless SUCCEEDED
	ErrorCode    string          // set when FAILED
	ErrorMessage string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	StartedAt    time.Time
	FinishedAt   time.Time
}

// Outcome ends a task: Result for success, or ErrorCode (and ErrorMessage) for
// failure. FinalURL is the URL after redirects, if known.
type Outcome struct {
	FinalURL     string
	Result       json.RawMessage
	ErrorCode    string
	ErrorMessage string
}

// NewTaskID returns "tsk_" and a ULID: unique and sortable by creation time.
func NewTaskID() string { return "tsk_" + ulid.Make().String() }

// stamp returns the current time and how it is passed to the database:
// RFC 3339 text on SQLite, a time.Time for PostgreSQL's TIMESTAMPTZ.
func (s *Store) stamp() (time.Time, any) {
	t := s.now().UTC().Truncate(time.Millisecond)
	if s.pg {
		return t, t
	}
	return t, t.Format(outbox.TimeFormat)
}

// q adapts a query written with "?" placeholders to the store's database.
func (s *Store) q(query string) string {
	if s.pg {
		return rebind(query)
	}
	return query
}

func (s *Store) enqueue(ctx context.Context, tx outbox.Execer, m outbox.Message) (outbox.Message, error) {
	if s.pg {
		return outbox.EnqueuePostgres(ctx, tx, m)
	}
	return outbox.Enqueue(ctx, tx, m)
}

// dbTime scans a time stored as RFC 3339 text (SQLite) or TIMESTAMPTZ
// (PostgreSQL), or NULL; it is always UTC.
type dbTime struct {
	t     time.Time
	valid bool
}

func (d *dbTime) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*d = dbTime{}
	case time.Time:
		*d = dbTime{v.UTC(), true}
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return err
		}
		*d = dbTime{t.UTC(), true}
	case []byte:
		return d.Scan(string(v))
	default:
		return fmt.Errorf("time: cannot scan %T", v)
	}
	return nil
}

// CreateTask stores a QUEUED task and its MetadataRequested outbox event
// in one transaction. With an IdempotencyKey used within IdempotencyWindow it
// stores nothing: the same RequestHash returns the existing task with created
// false, another hash returns ErrIdempotencyConflict.
func (s *Store) CreateTask(ctx context.Context, nt NewTask) (Task, bool, error) {
	if nt.TargetURL == "" || nt.RequestedBy == "" {
		return Task{}, false, errors.New("taskstore: create task: target URL and requester are required")
	}
	if (nt.IdempotencyKey == "") != (nt.RequestHash == "") {
		return Task{}, false, errors.New("taskstore: create task: idempotency key and request hash go together")
	}
	if len(nt.Options) == 0 {
		nt.Options = json.RawMessage(`{}`)
	}
	if !json.Valid(nt.Options) {
		return Task{}, false, errors.New("taskstore: create task: options are not valid JSON")
	}
	now, ts := s.stamp()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Task{}, false, fmt.Errorf("taskstore: create task: %w", err)
	}
	defer tx.Rollback()
	if s.pg && nt.IdempotencyKey != "" {
		// Serialise creators of one key across processes: the second waits,
		// then (read committed) sees the first one's task. SQLite's write
		// transactions are serialised already.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, nt.IdempotencyKey); err != nil {
			return Task{}, false, fmt.Errorf("taskstore: create task: lock idempotency key: %w", err)
		}
	}

	var key, hash any
	if nt.IdempotencyKey != "" {
		key, hash = nt.IdempotencyKey, nt.RequestHash
		var id, oldHash string
		var created dbTime
		err := tx.QueryRowContext(ctx, s.q(`SELECT task_id, request_hash, created_at FROM metadata_tasks
			WHERE idempotency_key = ?`), nt.IdempotencyKey).Scan(&id, &oldHash, &created)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return Task{}, false, fmt.Errorf("taskstore: create task: look up idempotency key: %w", err)
		default:
			if now.Sub(created.t) < IdempotencyWindow {
				if oldHash != nt.RequestHash {
					return Task{}, false, ErrIdempotencyConflict
				}
				t, err := s.getTask(ctx, tx, id, false)
				return t, false, err
			}
			// Expired: release the key so the new task can take it.
			if _, err := tx.ExecContext(ctx, s.q(`UPDATE metadata_tasks SET idempotency_key = NULL, request_hash = NULL
				WHERE task_id = ?`), id); err != nil {
				return Task{}, false, fmt.Errorf("taskstore: create task: release expired key: %w", err)
			}
		}
	}

	t := Task{ID: NewTaskID(), Status: Queued, TargetURL: nt.TargetURL, RequestedBy: nt.RequestedBy,
		Options: nt.Options, CreatedAt: now, UpdatedAt: now}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO metadata_tasks
		(task_id, status, attempts, target_url, requested_by, options, idempotency_key, request_hash, created_at, updated_at)
		VALUES (?, 'QUEUED', 0, ?, ?, ?, ?, ?, ?, ?)`),
		t.ID, t.TargetURL, t.RequestedBy, string(t.Options), key, hash, ts, ts); err != nil {
		return Task{}, false, fmt.Errorf("taskstore: create task: %w", err)
	}
	payload, err := json.Marshal(RequestedEvent{TaskID: t.ID, TargetURL: t.TargetURL, RequestedBy: t.RequestedBy,
		Options: t.Options, CreatedAt: now})
	if err != nil {
		return Task{}, false, fmt.Errorf("taskstore: create task: %w", err)
	}
	if _, err := s.enqueue(ctx, tx, outbox.Message{AggregateType: AggregateType, AggregateID: t.ID,
		EventType: EventTaskRequested, Payload: payload, CreatedAt: now}); err != nil {
		return Task{}, false, fmt.Errorf("taskstore: create task: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return Task{}, false, fmt.Errorf("taskstore: create task: commit: %w", err)
	}
	return t, true, nil
}

// RequestedEvent is the payload of MetadataRequested: all a worker needs.
type RequestedEvent struct {
	TaskID      string          `json:"task_id"`
	TargetURL   string          `json:"target_url"`
	RequestedBy string          `json:"requested_by"`
	Options     json.RawMessage `json:"extraction_options"`
	CreatedAt   time.Time       `json:"created_at"`
}

// CompletedEvent is the payload of MetadataCollected, for consumers of
// TopicResults.
type CompletedEvent struct {
	TaskID     string          `json:"task_id"`
	Status     Status          `json:"status"`
	Attempts   int             `json:"attempts"`
	TargetURL  string          `json:"target_url"`
	FinalURL   string          `json:"final_url,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      *TaskError      `json:"error,omitempty"`
	FinishedAt time.Time       `json:"finished_at"`
}

// TaskError is why a task failed.
type TaskError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// GetTask returns the task with id, or ErrNotFound.
func (s *Store) GetTask(ctx context.Context, id string) (Task, error) {
	t, err := s.getTask(ctx, s.reader(), id, false)
	if s.replica != nil && (errors.Is(err, ErrNotFound) || (err != nil && ctx.Err() == nil)) {
		// Not replicated yet, or the replica is unavailable: the primary knows.
		return s.getTask(ctx, s.db, id, false)
	}
	return t, err
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// getTask reads a task; with lock (PostgreSQL, in a transaction) it locks the
// row until the transaction ends, so concurrent StartAttempt and Finish calls
// on one task take turns.
func (s *Store) getTask(ctx context.Context, q queryer, id string, lock bool) (Task, error) {
	var (
		t                                 Task
		status                            string
		options                           string
		finalURL, result, errCode, errMsg sql.NullString
		created, updated                  dbTime
		started, finished                 dbTime
	)
	query := `SELECT task_id, status, attempts, target_url, final_url, requested_by, options,
		result, error_code, error_message, created_at, updated_at, started_at, finished_at
		FROM metadata_tasks WHERE task_id = ?`
	if lock && s.pg {
		query += ` FOR UPDATE`
	}
	err := q.QueryRowContext(ctx, s.q(query), id).Scan(&t.ID, &status, &t.Attempts, &t.TargetURL, &finalURL,
		&t.RequestedBy, &options, &result, &errCode, &errMsg, &created, &updated, &started, &finished)
	if errors.Is(err, sql.ErrNoRows) {
		return Task{}, ErrNotFound
	}
	if err != nil {
		return Task{}, fmt.Errorf("taskstore: get task %s: %w", id, err)
	}
	t.Status, t.Options = Status(status), s.json(options)
	t.FinalURL, t.ErrorCode, t.ErrorMessage = finalURL.String, errCode.String, errMsg.String
	if result.Valid {
		t.Result = s.json(result.String)
	}
	t.CreatedAt, t.UpdatedAt, t.StartedAt, t.FinishedAt = created.t, updated.t, started.t, finished.t
	return t, nil
}

// json returns a stored JSON value. JSONB (PostgreSQL) prints with spaces
// after ':' and ','; it is compacted so both databases give the same bytes
// for a compact input.
func (s *Store) json(v string) json.RawMessage {
	if !s.pg {
		return json.RawMessage(v)
	}
	var b bytes.Buffer
	if json.Compact(&b, []byte(v)) != nil {
		return json.RawMessage(v)
	}
	return b.Bytes()
}

// StartAttempt marks a QUEUED or RUNNING task RUNNING, counts the attempt and
// sets started_at (to the first attempt's time). A finished task is left alone
// and ErrFinished returned, so a redelivered task does nothing.
func (s *Store) StartAttempt(ctx context.Context, id string) (Task, error) {
	_, ts := s.stamp()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Task{}, fmt.Errorf("taskstore: start attempt: %w", err)
	}
	defer tx.Rollback()
	t, err := s.getTask(ctx, tx, id, true)
	if err != nil {
		return Task{}, err
	}
	if t.Status == Succeeded || t.Status == Failed {
		return t, ErrFinished
	}
	if _, err := tx.ExecContext(ctx, s.q(`UPDATE metadata_tasks SET status = 'RUNNING', attempts = attempts + 1,
		started_at = coalesce(started_at, ?), updated_at = ? WHERE task_id = ?`), ts, ts, id); err != nil {
		return Task{}, fmt.Errorf("taskstore: start attempt %s: %w", id, err)
	}
	if t, err = s.getTask(ctx, tx, id, false); err != nil {
		return Task{}, err
	}
	if err := tx.Commit(); err != nil {
		return Task{}, fmt.Errorf("taskstore: start attempt %s: commit: %w", id, err)
	}
	return t, nil
}

// Finish records the outcome, SUCCEEDED when o.ErrorCode is empty and FAILED
// otherwise, and its MetadataCollected outbox event in one transaction.
// A task that is already finished is left alone and ErrFinished returned.
func (s *Store) Finish(ctx context.Context, id string, o Outcome) (Task, error) {
	status := Succeeded
	var result, errCode, errMsg, finalURL any
	if o.ErrorCode != "" {
		status, errCode, errMsg = Failed, o.ErrorCode, o.ErrorMessage
	} else {
		if len(o.Result) == 0 || !json.Valid(o.Result) {
			return Task{}, errors.New("taskstore: finish: a success needs a valid JSON result")
		}
		result = string(o.Result)
	}
	if o.FinalURL != "" {
		finalURL = o.FinalURL
	}
	now, ts := s.stamp()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Task{}, fmt.Errorf("taskstore: finish: %w", err)
	}
	defer tx.Rollback()
	t, err := s.getTask(ctx, tx, id, true)
	if err != nil {
		return Task{}, err
	}
	if t.Status == Succeeded || t.Status == Failed {
		return t, ErrFinished
	}
	if _, err := tx.ExecContext(ctx, s.q(`UPDATE metadata_tasks SET status = ?, final_url = coalesce(?, final_url),
		result = ?, error_code = ?, error_message = ?, finished_at = ?, updated_at = ? WHERE task_id = ?`),
		string(status), finalURL, result, errCode, errMsg, ts, ts, id); err != nil {
		return Task{}, fmt.Errorf("taskstore: finish %s: %w", id, err)
	}
	if t, err = s.getTask(ctx, tx, id, false); err != nil {
		return Task{}, err
	}
	ev := CompletedEvent{TaskID: t.ID, Status: t.Status, Attempts: t.Attempts, TargetURL: t.TargetURL,
		FinalURL: t.FinalURL, Result: t.Result, FinishedAt: now}
	if t.Status == Failed {
		ev.Error = &TaskError{Code: t.ErrorCode, Message: t.ErrorMessage}
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		return Task{}, fmt.Errorf("taskstore: finish %s: %w", id, err)
	}
	if _, err := s.enqueue(ctx, tx, outbox.Message{AggregateType: AggregateType, AggregateID: t.ID,
		EventType: EventTaskCompleted, Payload: payload, CreatedAt: now}); err != nil {
		return Task{}, fmt.Errorf("taskstore: finish %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return Task{}, fmt.Errorf("taskstore: finish %s: commit: %w", id, err)
	}
	return t, nil
}

// QueueDepth returns how many tasks are QUEUED and RUNNING, for completion
// estimates.
func (s *Store) QueueDepth(ctx context.Context) (queued, running int, err error) {
	err = s.reader().QueryRowContext(ctx, `SELECT
		coalesce(sum(CASE WHEN status = 'QUEUED' THEN 1 ELSE 0 END), 0),
		coalesce(sum(CASE WHEN status = 'RUNNING' THEN 1 ELSE 0 END), 0)
		FROM metadata_tasks WHERE status IN ('QUEUED', 'RUNNING')`).Scan(&queued, &running)
	if err != nil {
		return 0, 0, fmt.Errorf("taskstore: queue depth: %w", err)
	}
	return queued, running, nil
}

// Topic maps the store's outbox event types to event-log topics (issue 5):
// requests to "metadata.tasks", completions to "metadata.results". Use it as
// outbox.LogPublisher.Topic.
func Topic(eventType string) string {
	switch eventType {
	case EventTaskRequested:
		return TopicTasks
	case EventTaskCompleted:
		return TopicResults
	}
	return ""
}

// The event-log topics of the metadata service.
const (
	TopicTasks   = "metadata.tasks"   // requested tasks, keyed by task id, for the workers
	TopicResults = "metadata.results" // finished tasks, keyed by task id, for whoever wants them
)

// Requeue publishes again, through the outbox, the request of every task
// still QUEUED or RUNNING whose last change is older than olderThan and that
// has no event waiting in the outbox: tasks whose event was lost (marked
// FAILED after repeated publish failures, or dropped from the log by
// retention before a worker read it) or whose worker died without a trace.
// Workers skip a task that finished in between, so a spurious requeue costs
// one lookup. It returns how many tasks it requeued.
func (s *Store) Requeue(ctx context.Context, olderThan time.Duration) (int, error) {
	now, ts := s.stamp()
	cutoff := any(now.Add(-olderThan))
	if !s.pg {
		cutoff = now.Add(-olderThan).Format(outbox.TimeFormat)
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT t.task_id FROM metadata_tasks t
		WHERE t.status IN ('QUEUED', 'RUNNING') AND t.updated_at < ?
		AND NOT EXISTS (SELECT 1 FROM transactional_outbox o
			WHERE o.aggregate_id = t.task_id AND o.status = 'PENDING')
		ORDER BY t.created_at LIMIT 1000`), cutoff)
	if err != nil {
		return 0, fmt.Errorf("taskstore: requeue: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("taskstore: requeue: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("taskstore: requeue: %w", err)
	}
	n := 0
	for _, id := range ids {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return n, fmt.Errorf("taskstore: requeue: %w", err)
		}
		t, err := s.getTask(ctx, tx, id, s.pg)
		if err != nil || (t.Status != Queued && t.Status != Running) {
			tx.Rollback()
			continue
		}
		payload, err := json.Marshal(RequestedEvent{TaskID: t.ID, TargetURL: t.TargetURL, RequestedBy: t.RequestedBy,
			Options: t.Options, CreatedAt: t.CreatedAt})
		if err == nil {
			_, err = s.enqueue(ctx, tx, outbox.Message{AggregateType: AggregateType, AggregateID: t.ID,
				EventType: EventTaskRequested, Payload: payload, CreatedAt: now})
		}
		if err == nil {
			_, err = tx.ExecContext(ctx, s.q(`UPDATE metadata_tasks SET updated_at = ? WHERE task_id = ?`), ts, id)
		}
		if err == nil {
			err = tx.Commit()
		} else {
			tx.Rollback()
		}
		if err != nil {
			return n, fmt.Errorf("taskstore: requeue %s: %w", id, err)
		}
		n++
	}
	return n, nil
}
