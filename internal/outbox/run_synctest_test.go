package outbox_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pedal-project/pedal/internal/metadata/taskstore"
	"github.com/pedal-project/pedal/internal/outbox"
)

// The poll loop under a fake clock: a failed pass waits a full-jitter backoff
// within [0, base·2], then the next pass publishes; an empty pass waits
// PollInterval, so a row enqueued later goes out within one interval.
func TestRunBacksOffThenPolls(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		s, err := taskstore.Open(context.Background(), filepath.Join(dir, "outbox.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		db := s.DB()
		enqueue(t, db, "a")
		pub := &recorder{fail: errors.New("down")}
		r := &outbox.Relay{DB: db, Publisher: pub, PollInterval: time.Second,
			BackoffBase: 100 * time.Millisecond, BackoffCap: 10 * time.Second, MaxAttempts: 100}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()

		synctest.Wait() // first pass failed; Run sleeps its backoff
		pub.mu.Lock()
		pub.fail = nil
		pub.mu.Unlock()
		time.Sleep(200 * time.Millisecond) // the longest first backoff: base·2^1
		synctest.Wait()
		if got := len(pub.ids()); got != 1 {
			t.Fatalf("%d published within the first backoff, want 1", got)
		}

		later := enqueue(t, db, "b")
		time.Sleep(time.Second) // one PollInterval
		synctest.Wait()
		if got := pub.ids(); len(got) != 2 || got[1] != later[0].EventID {
			t.Errorf("published %v, want the later row within one poll interval", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}
