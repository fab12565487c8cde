package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/metadata/taskstore"
	"github.com/pedal-project/pedal/internal/outbox"
	"github.com/pedal-project/pedal/internal/pgtest"
)

func TestMain(m *testing.M) {
	m.Run()
	pgtest.Stop()
}

func openPG(t *testing.T) *sql.DB {
	t.Helper()
	s, err := taskstore.OpenPostgres(t.Context(), pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.DB()
}

func pgStatuses(t *testing.T, db *sql.DB) map[string]string {
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

type publishFunc func(ctx context.Context, msgs []outbox.Message) error

func (f publishFunc) Publish(ctx context.Context, msgs []outbox.Message) error { return f(ctx, msgs) }

// Three relays on one database: every event arrives, each aggregate's events
// in created order, and every row ends PROCESSED.
func TestPostgresConcurrentRelaysKeepAggregateOrder(t *testing.T) {
	db := openPG(t)
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	want := map[string][]string{}
	for i := range 300 {
		agg := fmt.Sprintf("tsk_%d", i%10)
		m, err := outbox.EnqueuePostgres(t.Context(), db, outbox.Message{AggregateType: "metadata_task", AggregateID: agg,
			EventType: "MetadataRequested", Payload: json.RawMessage(fmt.Sprintf(`{"n": %d}`, i)), CreatedAt: at.Add(time.Duration(i) * time.Millisecond)})
		if err != nil {
			t.Fatal(err)
		}
		want[agg] = append(want[agg], m.EventID)
	}
	pub := &recorder{}
	var wg sync.WaitGroup
	for range 3 {
		// A publish that takes a moment, as a broker's does, so that the
		// relays interleave while each holds its rows.
		slow := publishFunc(func(ctx context.Context, msgs []outbox.Message) error {
			time.Sleep(time.Duration(rand.N(3000)) * time.Microsecond)
			return pub.Publish(ctx, msgs)
		})
		r := &outbox.Relay{DB: db, Dialect: outbox.Postgres, Publisher: slow, BatchSize: 4}
		wg.Go(func() {
			for idle := 0; idle < 3; {
				n, err := r.RunOnce(t.Context())
				if err != nil {
					t.Error(err)
					return
				}
				if n == 0 {
					idle++
				} else {
					idle = 0
				}
			}
		})
	}
	wg.Wait()
	// Every row is PROCESSED (idle passes only end the loops once none is left
	// that any relay could take; a last drain covers the races at the end).
	drain(t, &outbox.Relay{DB: db, Dialect: outbox.Postgres, Publisher: pub})
	got := map[string][]string{}
	seen := map[string]bool{}
	pub.mu.Lock()
	for _, m := range pub.got {
		if seen[m.EventID] { // at least once: a duplicate is allowed, not a reorder
			continue
		}
		seen[m.EventID] = true
		got[m.AggregateID] = append(got[m.AggregateID], m.EventID)
		if string(m.Payload) == "" || m.Payload[0] != '{' {
			t.Errorf("payload %q", m.Payload)
		}
	}
	pub.mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events per aggregate in publish order (-want +got):\n%s", diff)
	}
	for id, s := range pgStatuses(t, db) {
		if s != "PROCESSED/0" {
			t.Errorf("%s is %s, want PROCESSED/0", id, s)
		}
	}
}

// A row whose transaction commits after a later row's is still published.
func TestPostgresLateCommitIsPublished(t *testing.T) {
	db := openPG(t)
	ctx := t.Context()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	a, err := outbox.EnqueuePostgres(ctx, tx, outbox.Message{AggregateType: "t", AggregateID: "a", EventType: "E", Payload: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := outbox.EnqueuePostgres(ctx, db, outbox.Message{AggregateType: "t", AggregateID: "b", EventType: "E", Payload: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	pub := &recorder{}
	r := &outbox.Relay{DB: db, Dialect: outbox.Postgres, Publisher: pub}
	drain(t, r)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	drain(t, r)
	if diff := cmp.Diff([]string{b.EventID, a.EventID}, pub.ids()); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
}

func TestPostgresFailsRowAfterMaxAttempts(t *testing.T) {
	db := openPG(t)
	m, err := outbox.EnqueuePostgres(t.Context(), db, outbox.Message{AggregateType: "t", AggregateID: "a", EventType: "E", Payload: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	pub := &recorder{fail: errors.New("rejected")}
	r := &outbox.Relay{DB: db, Dialect: outbox.Postgres, Publisher: pub, MaxAttempts: 3}
	for i := range 3 {
		if _, err := r.RunOnce(t.Context()); err == nil {
			t.Fatalf("attempt %d: no error", i+1)
		}
		if i == 0 {
			if diff := cmp.Diff(map[string]string{m.EventID: "PENDING/1"}, pgStatuses(t, db)); diff != "" {
				t.Errorf("after 1 failure (-want +got):\n%s", diff)
			}
		}
	}
	if diff := cmp.Diff(map[string]string{m.EventID: "FAILED/3"}, pgStatuses(t, db)); diff != "" {
		t.Errorf("after 3 failures (-want +got):\n%s", diff)
	}
	pub.mu.Lock()
	pub.fail = nil
	pub.mu.Unlock()
	drain(t, r)
	if got := pub.ids(); len(got) != 0 {
		t.Errorf("FAILED row published: %v", got)
	}
}
