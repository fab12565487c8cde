package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pedal-project/pedal/internal/eventlog/pebblelog"
	"github.com/pedal-project/pedal/internal/metadata/taskstore"
	"github.com/pedal-project/pedal/internal/outbox"
)

// openDB returns a migrated SQLite database holding transactional_outbox.
func openDB(t *testing.T) *sql.DB {
	t.Helper()
	s, err := taskstore.Open(t.Context(), filepath.Join(t.TempDir(), "outbox.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.DB()
}

// enqueue writes one event per (aggregate, n) in the given order, all in one
// millisecond so that event_id decides the order.
func enqueue(t *testing.T, db *sql.DB, aggs ...string) []outbox.Message {
	t.Helper()
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	var out []outbox.Message
	for i, a := range aggs {
		m, err := outbox.Enqueue(t.Context(), db, outbox.Message{AggregateType: "metadata_task", AggregateID: a,
			EventType: "MetadataRequested", Payload: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), CreatedAt: at})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// recorder is a Publisher that keeps what it is given and can fail on demand.
type recorder struct {
	mu    sync.Mutex
	got   []outbox.Message
	fail  error                       // returned instead of publishing while set
	after func(msgs []outbox.Message) // called after a successful publish
}

func (r *recorder) Publish(ctx context.Context, msgs []outbox.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.got = append(r.got, msgs...)
	if r.after != nil {
		r.after(msgs)
	}
	return nil
}

func (r *recorder) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for _, m := range r.got {
		ids = append(ids, m.EventID)
	}
	return ids
}

func statuses(t *testing.T, db *sql.DB) map[string]string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT event_id, status || '/' || attempts FROM transactional_outbox`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	m := map[string]string{}
	for rows.Next() {
		var id, s string
		if err := rows.Scan(&id, &s); err != nil {
			t.Fatal(err)
		}
		m[id] = s
	}
	return m
}

func drain(t *testing.T, r *outbox.Relay) {
	t.Helper()
	for range 100 {
		n, err := r.RunOnce(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("relay did not drain")
}

func ids(msgs []outbox.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.EventID)
	}
	return out
}

func TestRelayPublishesInOrderAndMarksProcessed(t *testing.T) {
	db := openDB(t)
	want := enqueue(t, db, "a", "b", "a", "c", "b", "a", "c")
	pub := &recorder{}
	now := time.Date(2026, 11, 30, 13, 0, 0, 0, time.UTC)
	r := &outbox.Relay{DB: db, Publisher: pub, BatchSize: 3, Now: func() time.Time { return now }}
	drain(t, r)
	if diff := cmp.Diff(ids(want), pub.ids()); diff != "" {
		t.Errorf("published order (-want +got):\n%s", diff)
	}
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT count(*) FROM transactional_outbox
		WHERE status = 'PROCESSED' AND updated_at = '2026-11-30T13:00:00.000Z'`).Scan(&n); err != nil || n != len(want) {
		t.Errorf("%d rows PROCESSED with updated_at set (err %v), want %d", n, err, len(want))
	}
	// Nothing is published twice once marked.
	drain(t, r)
	if got := len(pub.ids()); got != len(want) {
		t.Errorf("%d publishes after a second drain, want %d", got, len(want))
	}
}

func TestRelayPublishFailureKeepsRowsPending(t *testing.T) {
	db := openDB(t)
	want := enqueue(t, db, "a", "b")
	pub := &recorder{fail: errors.New("log unavailable")}
	reg := prometheus.NewRegistry()
	metrics, err := outbox.NewMetrics(reg, "transactional_outbox")
	if err != nil {
		t.Fatal(err)
	}
	r := &outbox.Relay{DB: db, Publisher: pub, MaxAttempts: 5, Metrics: metrics}
	if _, err := r.RunOnce(t.Context()); err == nil {
		t.Fatal("RunOnce: no error from a failing publisher")
	}
	if diff := cmp.Diff(map[string]string{want[0].EventID: "PENDING/1", want[1].EventID: "PENDING/1"}, statuses(t, db)); diff != "" {
		t.Errorf("after a failed publish (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(metrics.Backlog()); got != 2 {
		t.Errorf("backlog = %v, want 2", got)
	}

	pub.mu.Lock()
	pub.fail = nil
	pub.mu.Unlock()
	drain(t, r)
	if diff := cmp.Diff(ids(want), pub.ids()); diff != "" {
		t.Errorf("published after recovery (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{want[0].EventID: "PROCESSED/1", want[1].EventID: "PROCESSED/1"}, statuses(t, db)); diff != "" {
		t.Errorf("after recovery (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(metrics.Backlog()); got != 0 {
		t.Errorf("backlog = %v, want 0", got)
	}
}

// A crash between publish and mark: the publish succeeded, marking fails (the
// process "dies"); a new relay publishes the same rows again. Duplicates, no loss.
func TestRelayCrashBetweenPublishAndMarkRepublishes(t *testing.T) {
	db := openDB(t)
	want := enqueue(t, db, "a", "b", "a")
	pub := &recorder{after: func([]outbox.Message) {
		if _, err := db.ExecContext(context.Background(), `CREATE TRIGGER crash BEFORE UPDATE ON transactional_outbox
			BEGIN SELECT RAISE(ABORT, 'crash before mark'); END`); err != nil {
			panic(err)
		}
	}}
	if _, err := (&outbox.Relay{DB: db, Publisher: pub}).RunOnce(t.Context()); err == nil {
		t.Fatal("RunOnce: no error although marking failed")
	}
	for id, s := range statuses(t, db) {
		if s != "PENDING/0" {
			t.Errorf("%s is %s after the crash, want PENDING/0", id, s)
		}
	}
	if _, err := db.ExecContext(t.Context(), `DROP TRIGGER crash`); err != nil {
		t.Fatal(err)
	}
	pub.after = nil
	drain(t, &outbox.Relay{DB: db, Publisher: pub})
	wantIDs := append(ids(want), ids(want)...)
	if diff := cmp.Diff(wantIDs, pub.ids()); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
	for id, s := range statuses(t, db) {
		if s != "PROCESSED/0" {
			t.Errorf("%s is %s, want PROCESSED/0", id, s)
		}
	}
}

func TestRelayFailsRowAfterMaxAttempts(t *testing.T) {
	db := openDB(t)
	first := enqueue(t, db, "a")
	pub := &recorder{fail: errors.New("rejected")}
	reg := prometheus.NewRegistry()
	metrics, err := outbox.NewMetrics(reg, "transactional_outbox")
	if err != nil {
		t.Fatal(err)
	}
	r := &outbox.Relay{DB: db, Publisher: pub, MaxAttempts: 3, Metrics: metrics}
	for i := range 3 {
		if _, err := r.RunOnce(t.Context()); err == nil {
			t.Fatalf("attempt %d: no error", i+1)
		}
	}
	if diff := cmp.Diff(map[string]string{first[0].EventID: "FAILED/3"}, statuses(t, db)); diff != "" {
		t.Errorf("after 3 failures (-want +got):\n%s", diff)
	}
	var lastErr string
	if err := db.QueryRowContext(t.Context(), `SELECT last_error FROM transactional_outbox`).Scan(&lastErr); err != nil || lastErr != "rejected" {
		t.Errorf("last_error = %q, %v", lastErr, err)
	}
	// A FAILED row is not retried, and later rows still flow.
	pub.mu.Lock()
	pub.fail = nil
	pub.mu.Unlock()
	later := enqueue(t, db, "b")
	drain(t, r)
	if diff := cmp.Diff(ids(later), pub.ids()); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(metrics.Failed()); got != 1 {
		t.Errorf("failed rows counter = %v, want 1", got)
	}
	if got := testutil.ToFloat64(metrics.PublishErrors()); got != 3 {
		t.Errorf("publish errors counter = %v, want 3", got)
	}
}

func TestRelayRunStopsWithContext(t *testing.T) {
	db := openDB(t)
	want := enqueue(t, db, "a", "b")
	done := make(chan struct{})
	var once sync.Once
	pub := &recorder{after: func(msgs []outbox.Message) { once.Do(func() { close(done) }) }}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- (&outbox.Relay{DB: db, Publisher: pub, PollInterval: time.Millisecond}).Run(ctx) }()
	<-done
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
	if diff := cmp.Diff(ids(want), pub.ids()); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
}

func TestLogPublisherKeepsOrderPerAggregate(t *testing.T) {
	db := openDB(t)
	log, err := pebblelog.Open(t.TempDir(), pebblelog.Config{MinFreeBytes: -1, Fatal: func(msg string) { panic(msg) }}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	const topic = "metadata.tasks"
	if err := log.CreateTopic(t.Context(), topic, 4); err != nil {
		t.Fatal(err)
	}
	var aggs []string
	for i := range 40 {
		aggs = append(aggs, fmt.Sprintf("tsk_%d", i%7))
	}
	enqueued := enqueue(t, db, aggs...)
	drain(t, &outbox.Relay{DB: db, Publisher: outbox.LogPublisher{Log: log, Topic: taskstore.Topic}, BatchSize: 6})

	wantPerAgg := map[string][]string{}
	for _, m := range enqueued {
		wantPerAgg[m.AggregateID] = append(wantPerAgg[m.AggregateID], m.EventID)
	}
	gotPerAgg := map[string][]string{}
	partOf := map[string]int32{}
	for p := range int32(4) {
		start, end, err := log.Offsets(t.Context(), topic, p)
		if err != nil {
			t.Fatal(err)
		}
		if start == end {
			continue
		}
		recs, err := log.Fetch(t.Context(), topic, p, start, int(end-start))
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			var m outbox.Message
			if err := json.Unmarshal(rec.Value, &m); err != nil {
				t.Fatal(err)
			}
			if string(rec.Key) != m.AggregateID {
				t.Errorf("record key %q, aggregate %q", rec.Key, m.AggregateID)
			}
			if q, ok := partOf[m.AggregateID]; ok && q != p {
				t.Errorf("aggregate %s in partitions %d and %d", m.AggregateID, q, p)
			}
			partOf[m.AggregateID] = p
			gotPerAgg[m.AggregateID] = append(gotPerAgg[m.AggregateID], m.EventID)
		}
	}
	if diff := cmp.Diff(wantPerAgg, gotPerAgg); diff != "" {
		t.Errorf("events per aggregate, in log order (-want +got):\n%s", diff)
	}
}

func TestRelayPurgeDeletesOldProcessedRows(t *testing.T) {
	db := openDB(t)
	enqueue(t, db, "a", "b")
	pub := &recorder{fail: errors.New("down")}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	r := &outbox.Relay{DB: db, Publisher: pub, MaxAttempts: 1, Retention: time.Hour, Now: func() time.Time { return now }}
	if _, err := r.RunOnce(t.Context()); err == nil { // both rows FAILED
		t.Fatal("no error")
	}
	pub.fail = nil
	enqueue(t, db, "c")
	drain(t, r) // c PROCESSED at 12:00
	now = now.Add(59 * time.Minute)
	if n, err := r.Purge(t.Context()); n != 0 || err != nil {
		t.Errorf("Purge before retention = %d, %v; want 0", n, err)
	}
	now = now.Add(2 * time.Minute)
	if n, err := r.Purge(t.Context()); n != 1 || err != nil {
		t.Errorf("Purge after retention = %d, %v; want 1", n, err)
	}
	var left int
	if err := db.QueryRowContext(t.Context(), `SELECT count(*) FROM transactional_outbox WHERE status = 'FAILED'`).Scan(&left); err != nil || left != 2 {
		t.Errorf("%d FAILED rows kept (err %v), want 2", left, err)
	}
}
