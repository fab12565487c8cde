package taskstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/pgtest"
)

func TestMain(m *testing.M) {
	m.Run()
	pgtest.Stop()
}

// backend is one database the store runs on; every test below that is not
// about SQLite's own schema runs on each.
type backend struct {
	name string
	// place returns where a new, empty database lives (a file or a DSN).
	place func(t *testing.T) string
	open  func(ctx context.Context, where string) (*Store, error)
	// failOutboxInsert makes every later outbox insert fail.
	failOutboxInsert []string
}

var backends = []backend{
	{
		name:  "sqlite",
		place: func(t *testing.T) string { return filepath.Join(t.TempDir(), "tasks.db") },
		open:  Open,
		failOutboxInsert: []string{`CREATE TRIGGER fail_outbox BEFORE INSERT ON transactional_outbox
			BEGIN SELECT RAISE(ABORT, 'injected failure'); END`},
	},
	{
		name:  "postgres",
		place: func(t *testing.T) string { return pgtest.DSN(t) },
		open:  OpenPostgres,
		failOutboxInsert: []string{
			`CREATE FUNCTION fail_outbox() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$`,
			`CREATE TRIGGER fail_outbox BEFORE INSERT ON transactional_outbox FOR EACH ROW EXECUTE FUNCTION fail_outbox()`,
		},
	},
}

func forEachBackend(t *testing.T, test func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, b) })
	}
}

func (b backend) openStore(t *testing.T) (*Store, string) {
	t.Helper()
	where := b.place(t)
	s, err := b.open(t.Context(), where)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, where
}

func (b backend) failOutbox(t *testing.T, s *Store) {
	t.Helper()
	for _, q := range b.failOutboxInsert {
		if _, err := s.db.ExecContext(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
}

// compact removes JSONB's spaces from a payload read back as text.
func compact(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("payload %q: %v", s, err)
	}
	return b.String()
}

func count(t *testing.T, s *Store, query string, args ...any) int {
	t.Helper()
	var n int
	if err := s.db.QueryRowContext(t.Context(), s.q(query), args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestMigrationsIdempotentOnReopen(t *testing.T) {
	forEachBackend(t, testMigrationsIdempotentOnReopen)
}

func testMigrationsIdempotentOnReopen(t *testing.T, b backend) {
	s, path := b.openStore(t)
	if _, _, err := s.CreateTask(t.Context(), NewTask{TargetURL: "https://example.com/", RequestedBy: "a"}); err != nil {
		t.Fatal(err)
	}
	want := count(t, s, `SELECT count(*) FROM schema_migrations`)
	if want != 3 {
		t.Errorf("schema_migrations has %d rows, want 3", want)
	}
	s.Close()
	for range 2 {
		s2, err := b.open(t.Context(), path)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		if got := count(t, s2, `SELECT count(*) FROM schema_migrations`); got != want {
			t.Errorf("after reopen schema_migrations has %d rows, want %d", got, want)
		}
		if got := count(t, s2, `SELECT count(*) FROM metadata_tasks`); got != 1 {
			t.Errorf("after reopen %d tasks, want 1", got)
		}
		s2.Close()
	}
}

func TestSchema(t *testing.T) {
	s, _ := backends[0].openStore(t)
	var sqlText string
	if err := s.db.QueryRowContext(t.Context(), `SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'idx_outbox_schedule'
		AND tbl_name = 'transactional_outbox'`).Scan(&sqlText); err != nil {
		t.Fatalf("partial index idx_outbox_schedule: %v", err)
	}
	if !strings.Contains(sqlText, "(status, created_at)") || !strings.Contains(sqlText, "WHERE status = 'PENDING'") {
		t.Errorf("idx_outbox_schedule is %q, want the seed's partial index", sqlText)
	}
	// The seed's columns, in the seed's order, then the additive ones.
	rows, err := s.db.QueryContext(t.Context(), `SELECT name, "notnull" FROM pragma_table_info('transactional_outbox') ORDER BY cid`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var name string
		var notnull bool
		if err := rows.Scan(&name, &notnull); err != nil {
			t.Fatal(err)
		}
		if notnull {
			name += " NOT NULL"
		}
		got = append(got, name)
	}
	want := []string{"event_id", "aggregate_type NOT NULL", "aggregate_id NOT NULL", "event_type NOT NULL", "payload NOT NULL",
		"status NOT NULL", "created_at NOT NULL", "updated_at NOT NULL", "attempts NOT NULL", "last_error"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("transactional_outbox columns (-want +got):\n%s", diff)
	}
	// CHECKs: bad status and bad JSON are refused.
	for _, q := range []string{
		`INSERT INTO transactional_outbox (event_id, aggregate_type, aggregate_id, event_type, payload, status) VALUES ('e1','a','b','c','{}','DONE')`,
		`INSERT INTO transactional_outbox (event_id, aggregate_type, aggregate_id, event_type, payload) VALUES ('e2','a','b','c','{not json')`,
	} {
		if _, err := s.db.ExecContext(t.Context(), q); err == nil {
			t.Errorf("%s: accepted", q)
		}
	}
	// Defaults: PENDING and an RFC 3339 UTC millisecond timestamp.
	if _, err := s.db.ExecContext(t.Context(), `INSERT INTO transactional_outbox (event_id, aggregate_type, aggregate_id, event_type, payload)
		VALUES ('e3','a','b','c','{}')`); err != nil {
		t.Fatal(err)
	}
	var status, created string
	if err := s.db.QueryRowContext(t.Context(), `SELECT status, created_at FROM transactional_outbox WHERE event_id = 'e3'`).Scan(&status, &created); err != nil {
		t.Fatal(err)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000Z", created); status != "PENDING" || err != nil {
		t.Errorf("defaults: status %q, created_at %q (%v)", status, created, err)
	}
}

func TestCreateTaskWritesTaskAndOutboxTogether(t *testing.T) {
	forEachBackend(t, testCreateTaskWritesTaskAndOutboxTogether)
}

func testCreateTaskWritesTaskAndOutboxTogether(t *testing.T, b backend) {
	s, _ := b.openStore(t)
	ctx := t.Context()
	task, created, err := s.CreateTask(ctx, NewTask{TargetURL: "https://example.com/a", RequestedBy: "svc",
		Options: json.RawMessage(`{"include_images":true,"max_depth_bytes":1048576}`)})
	if err != nil || !created {
		t.Fatalf("CreateTask: created=%v err=%v", created, err)
	}
	if !strings.HasPrefix(task.ID, "tsk_") || len(task.ID) != 30 || task.Status != Queued {
		t.Errorf("task = %+v", task)
	}
	var aggType, eventType, payload, status string
	if err := s.db.QueryRowContext(ctx, s.q(`SELECT aggregate_type, event_type, payload, status FROM transactional_outbox
		WHERE aggregate_id = ?`), task.ID).Scan(&aggType, &eventType, &payload, &status); err != nil {
		t.Fatalf("outbox row: %v", err)
	}
	payload = compact(t, payload)
	if aggType != AggregateType || eventType != EventTaskRequested || status != "PENDING" ||
		!strings.Contains(payload, `"task_id":"`+task.ID+`"`) || !strings.Contains(payload, `"include_images":true`) {
		t.Errorf("outbox row: %s %s %s %s", aggType, eventType, status, payload)
	}

	// Inject a failure after the task insert: the outbox insert aborts, and the
	// task row must roll back with it.
	b.failOutbox(t, s)
	if _, _, err := s.CreateTask(ctx, NewTask{TargetURL: "https://example.com/b", RequestedBy: "svc"}); err == nil {
		t.Fatal("CreateTask succeeded despite the failing outbox insert")
	}
	if n := count(t, s, `SELECT count(*) FROM metadata_tasks`); n != 1 {
		t.Errorf("%d tasks after the failed create, want 1 (the task row must roll back)", n)
	}
	if n := count(t, s, `SELECT count(*) FROM transactional_outbox`); n != 1 {
		t.Errorf("%d outbox rows, want 1", n)
	}
}

func TestIdempotency(t *testing.T) { forEachBackend(t, testIdempotency) }

func testIdempotency(t *testing.T, b backend) {
	s, _ := b.openStore(t)
	ctx := t.Context()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	nt := NewTask{TargetURL: "https://example.com/", RequestedBy: "svc", IdempotencyKey: "k1", RequestHash: "h1"}
	first, created, err := s.CreateTask(ctx, nt)
	if err != nil || !created {
		t.Fatalf("first: created=%v err=%v", created, err)
	}

	now = now.Add(23 * time.Hour)
	again, created, err := s.CreateTask(ctx, nt)
	if err != nil || created || again.ID != first.ID {
		t.Errorf("same key, same body: id %s created=%v err=%v; want %s, false, nil", again.ID, created, err, first.ID)
	}
	other := nt
	other.RequestHash = "h2"
	if _, _, err := s.CreateTask(ctx, other); !errors.Is(err, ErrIdempotencyConflict) {
		t.Errorf("same key, other body: err = %v, want ErrIdempotencyConflict", err)
	}
	if n := count(t, s, `SELECT count(*) FROM transactional_outbox`); n != 1 {
		t.Errorf("%d outbox rows, want 1: a replay must not enqueue work again", n)
	}

	now = now.Add(2 * time.Hour) // 25h after the first: the key is free again
	fresh, created, err := s.CreateTask(ctx, other)
	if err != nil || !created || fresh.ID == first.ID {
		t.Errorf("after the window: id %s created=%v err=%v; want a new task", fresh.ID, created, err)
	}
}

func TestLifecycle(t *testing.T) { forEachBackend(t, testLifecycle) }

func testLifecycle(t *testing.T, b backend) {
	s, _ := b.openStore(t)
	ctx := t.Context()
	a, _, err := s.CreateTask(ctx, NewTask{TargetURL: "https://example.com/a", RequestedBy: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	tb, _, err := s.CreateTask(ctx, NewTask{TargetURL: "https://example.com/b", RequestedBy: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID >= tb.ID {
		t.Errorf("task ids not sortable by creation: %s then %s", a.ID, tb.ID)
	}
	if q, r, err := s.QueueDepth(ctx); q != 2 || r != 0 || err != nil {
		t.Errorf("QueueDepth = %d, %d, %v; want 2, 0", q, r, err)
	}
	if _, err := s.GetTask(ctx, "tsk_nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetTask(unknown) err = %v, want ErrNotFound", err)
	}

	got, err := s.StartAttempt(ctx, a.ID)
	if err != nil || got.Status != Running || got.Attempts != 1 || got.StartedAt.IsZero() {
		t.Fatalf("StartAttempt = %+v, %v", got, err)
	}
	if q, r, _ := s.QueueDepth(ctx); q != 1 || r != 1 {
		t.Errorf("QueueDepth = %d, %d; want 1, 1", q, r)
	}
	done, err := s.Finish(ctx, a.ID, Outcome{FinalURL: "https://example.com/a/", Result: json.RawMessage(`{"title":"A"}`)})
	if err != nil || done.Status != Succeeded || done.FinishedAt.IsZero() || string(done.Result) != `{"title":"A"}` ||
		done.FinalURL != "https://example.com/a/" {
		t.Fatalf("Finish = %+v, %v", done, err)
	}
	// Redelivery after the end changes nothing.
	if _, err := s.StartAttempt(ctx, a.ID); !errors.Is(err, ErrFinished) {
		t.Errorf("StartAttempt on a finished task: %v, want ErrFinished", err)
	}
	if _, err := s.Finish(ctx, a.ID, Outcome{ErrorCode: "timeout"}); !errors.Is(err, ErrFinished) {
		t.Errorf("second Finish: %v, want ErrFinished", err)
	}
	if got, _ := s.GetTask(ctx, a.ID); got.Status != Succeeded || got.Attempts != 1 {
		t.Errorf("after redelivery: %+v", got)
	}

	if _, err := s.StartAttempt(ctx, tb.ID); err != nil {
		t.Fatal(err)
	}
	failed, err := s.Finish(ctx, tb.ID, Outcome{ErrorCode: "blocked_destination", ErrorMessage: "10.0.0.1 is private"})
	if err != nil || failed.Status != Failed || failed.ErrorCode != "blocked_destination" || failed.Result != nil {
		t.Errorf("Finish(error) = %+v, %v", failed, err)
	}
	var payload string
	if err := s.db.QueryRowContext(ctx, s.q(`SELECT payload FROM transactional_outbox WHERE aggregate_id = ? AND event_type = ?`),
		tb.ID, EventTaskCompleted).Scan(&payload); err != nil {
		t.Fatalf("completed event: %v", err)
	}
	payload = compact(t, payload)
	if !strings.Contains(payload, `"code":"blocked_destination"`) || !strings.Contains(payload, `"status":"FAILED"`) {
		t.Errorf("completed payload = %s", payload)
	}
	if n := count(t, s, `SELECT count(*) FROM transactional_outbox WHERE event_type = ?`, EventTaskCompleted); n != 2 {
		t.Errorf("%d completed events, want 2", n)
	}
}

func TestFinishRollsBackWithoutItsEvent(t *testing.T) {
	forEachBackend(t, testFinishRollsBackWithoutItsEvent)
}

func testFinishRollsBackWithoutItsEvent(t *testing.T, b backend) {
	s, _ := b.openStore(t)
	ctx := context.Background()
	task, _, err := s.CreateTask(ctx, NewTask{TargetURL: "https://example.com/", RequestedBy: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	b.failOutbox(t, s)
	if _, err := s.Finish(ctx, task.ID, Outcome{Result: json.RawMessage(`{}`)}); err == nil {
		t.Fatal("Finish succeeded despite the failing outbox insert")
	}
	if got, _ := s.GetTask(ctx, task.ID); got.Status != Queued || got.Result != nil {
		t.Errorf("task after failed Finish = %+v, want unchanged", got)
	}
}

func TestConcurrentSameIdempotencyKeyCreatesOneTask(t *testing.T) {
	forEachBackend(t, testConcurrentSameIdempotencyKeyCreatesOneTask)
}

func testConcurrentSameIdempotencyKeyCreatesOneTask(t *testing.T, b backend) {
	s, _ := b.openStore(t)
	const n = 8
	ids := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			task, _, err := s.CreateTask(t.Context(), NewTask{TargetURL: "https://example.com/", RequestedBy: "svc",
				IdempotencyKey: "same", RequestHash: "h"})
			if err != nil {
				t.Error(err)
				return
			}
			ids <- task.ID
		})
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != 1 {
		t.Errorf("%d distinct task ids for one idempotency key, want 1", len(seen))
	}
	if c := count(t, s, `SELECT count(*) FROM transactional_outbox`); c != 1 {
		t.Errorf("%d outbox rows, want 1", c)
	}
}

// TestReplicaReadsFallBackToPrimary: with a read replica, tasks are read from
// it, and a task it does not have yet comes from the primary.
func TestReplicaReadsFallBackToPrimary(t *testing.T) {
	ctx := t.Context()
	primary, err := OpenPostgres(ctx, pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Close()
	replicaDSN := pgtest.DSN(t)
	replica, err := OpenPostgres(ctx, replicaDSN) // a database that lags: it has none of the primary's rows
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	if err := primary.UseReplica(replicaDSN); err != nil {
		t.Fatal(err)
	}
	task, _, err := primary.CreateTask(ctx, NewTask{TargetURL: "https://news.example/", RequestedBy: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := primary.GetTask(ctx, task.ID)
	if err != nil || got.Status != Queued {
		t.Fatalf("a task the replica lacks: %+v, %v", got, err)
	}
	// Once replicated (here: written to the replica by hand, a step ahead), reads come from the replica.
	if _, err := replica.db.ExecContext(ctx, `INSERT INTO metadata_tasks (task_id, status, attempts, target_url, requested_by, options)
		VALUES ($1, 'RUNNING', 1, 'https://news.example/', 'alice', '{}')`, task.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := primary.GetTask(ctx, task.ID); err != nil || got.Status != Running {
		t.Errorf("a replicated task: %+v, %v; want it read from the replica", got, err)
	}
	if _, err := primary.GetTask(ctx, "tsk_01KBCDEFGHJKMNPQRSTVWXYZ00"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a task nowhere: %v", err)
	}
	sqlite, err := Open(ctx, filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer sqlite.Close()
	if err := sqlite.UseReplica(replicaDSN); err == nil {
		t.Error("a replica for SQLite was accepted")
	}
}

// TestRequeueFindsLostTasks: a task whose request event is no longer pending
// (published and lost, or FAILED) is requeued once it is old enough; a task
// with a pending event, a finished one and a recent one are not.
func TestRequeueFindsLostTasks(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, _ := b.openStore(t)
		ctx := t.Context()
		clock := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
		s.now = func() time.Time { return clock }
		lost, _, err := s.CreateTask(ctx, NewTask{TargetURL: "https://a.example/", RequestedBy: "x"})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.CreateTask(ctx, NewTask{TargetURL: "https://b.example/", RequestedBy: "x"}); err != nil { // its event stays pending
			t.Fatal(err)
		}
		done, _, _ := s.CreateTask(ctx, NewTask{TargetURL: "https://c.example/", RequestedBy: "x"})
		if _, err := s.Finish(ctx, done.ID, Outcome{ErrorCode: "timeout", ErrorMessage: "slow"}); err != nil {
			t.Fatal(err)
		}
		// The lost task's event was published (and then lost), or marked FAILED.
		if _, err := s.db.ExecContext(ctx, s.q(`UPDATE transactional_outbox SET status = 'FAILED' WHERE aggregate_id = ?`), lost.ID); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Requeue(ctx, 10*time.Minute); err != nil || n != 0 {
			t.Fatalf("requeue of recent tasks: %d, %v", n, err)
		}
		clock = clock.Add(11 * time.Minute)
		if n, err := s.Requeue(ctx, 10*time.Minute); err != nil || n != 1 {
			t.Fatalf("requeue: %d, %v; want the lost task only", n, err)
		}
		var count int
		s.db.QueryRowContext(ctx, s.q(`SELECT count(*) FROM transactional_outbox WHERE aggregate_id = ? AND status = 'PENDING' AND event_type = ?`),
			lost.ID, EventTaskRequested).Scan(&count)
		if count != 1 {
			t.Errorf("%d pending requests for the lost task", count)
		}
		// Requeued once: a second pass finds its event pending.
		if n, _ := s.Requeue(ctx, 10*time.Minute); n != 0 {
			t.Errorf("second requeue: %d", n)
		}
	})
}
