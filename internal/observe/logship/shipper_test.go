package logship

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/protobuf/proto"
)

// TestBurstWithEndpointKilled ships a burst of records with unique sequence
// numbers, kills the endpoint a quarter into the burst and brings a new one
// up on the same address afterwards. It shows that the shipper's failures
// never come back as log records (no loop) and reach stderr as a few
// rate-limited lines; that the spool stays within its cap throughout and,
// when the cap is too small for the outage, drops the oldest records and
// counts them; and that after recovery every record not dropped is delivered
// at least once, oldest first, with at most one batch delivered twice.
func TestBurstWithEndpointKilled(t *testing.T) {
	const n, batch = 20_000, 256
	for _, tc := range []struct {
		name       string
		spoolBytes int64
		overflow   bool
	}{
		{"spool holds the outage", 64 << 20, false},
		{"spool overflows", 64 << 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaked := catchLeaks(t)
			rc1, rc2 := newReceiver(t), newReceiver(t)
			srv1 := serve(t, "127.0.0.1:0", rc1)
			addr := srv1.Listener.Addr().String()
			dir := t.TempDir()
			var stderr lockedBuffer
			s, err := New(Config{
				Endpoint:      "http://" + addr + "/v1/logs",
				Resource:      map[string]string{"service.name": "burst"},
				Dir:           dir,
				MaxSpoolBytes: tc.spoolBytes,
				MaxQueue:      n, // no queue drops: every drop here is the spool's
				BatchSize:     batch,
				BatchDelay:    10 * time.Millisecond,
				MinBackoff:    time.Millisecond,
				MaxBackoff:    20 * time.Millisecond,
			}, prometheus.NewRegistry(), &stderr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close(canceled) })

			// Sample the spool's size on disk and in its gauge throughout.
			var maxDisk, maxGauge atomic.Int64
			sampleCtx, stopSampling := context.WithCancel(t.Context())
			var sampling sync.WaitGroup
			t.Cleanup(sampling.Wait)
			sampling.Go(func() {
				tick := time.NewTicker(time.Millisecond)
				defer tick.Stop()
				for {
					maxDisk.Store(max(maxDisk.Load(), spoolBytesOnDisk(dir)))
					maxGauge.Store(max(maxGauge.Load(), int64(testutil.ToFloat64(s.m.spoolBytes))))
					select {
					case <-sampleCtx.Done():
						return
					case <-tick.C:
					}
				}
			})

			var entered atomic.Int64
			logger := slog.New(slog.NewMultiHandler(counter{&entered}, s.Handler()))
			start := time.Now()
			for i := range n {
				if i == n/4 {
					waitFor(t, "the first deliveries", func() bool { return rc1.records() > 0 })
					srv1.Close()
				}
				logger.Info("burst", "seq", i)
			}
			// The burst is over: every record is spooled (or exported before
			// the kill, or dropped), and the sender has failed again and again.
			waitFor(t, "the burst to reach the spool", func() bool {
				return s.q.len() == 0 && accounted(s) == n && failures(s) >= 50
			})
			if tc.overflow {
				waitFor(t, "spool overflow", func() bool { return dropped(s, reasonSpoolFull) > 0 })
			}
			serve(t, addr, rc2)
			waitFor(t, "delivery after recovery", func() bool { return exported(s)+droppedTotal(s) == n })
			stopSampling()
			sampling.Wait()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			if err := s.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
			elapsed := time.Since(start)

			// (a) No loop: exactly the test's records entered the pipeline,
			// nothing reached slog's default logger, and stderr got a few
			// rate-limited lines (one per 10s at most, plus the closing count
			// of suppressed lines) for many failures.
			if got := entered.Load(); got != n {
				t.Errorf("%d records entered the logger, want the %d logged", got, n)
			}
			if l := leaked.String(); l != "" {
				t.Error(l)
			}
			// Two kinds of problem occur here, failed exports and a full
			// spool: each may have a line per 10s and a closing count.
			lines := stderr.lines()
			if limit := 2 * (2 + int(elapsed/(10*time.Second))); len(lines) == 0 || len(lines) > limit {
				t.Errorf("%d lines on stderr in %v for %d failures, want 1 to %d:\n%s", len(lines), elapsed.Round(time.Millisecond), failures(s), limit, stderr.String())
			}
			if out := stderr.String(); !strings.Contains(out, "pedal: log export: ") || !strings.Contains(out, "http://"+addr+"/v1/logs") {
				t.Errorf("stderr does not report the failed exports with the endpoint:\n%s", out)
			}

			// (b) The spool stayed within its cap; drops are counted, and only
			// the spool's.
			if d, g := maxDisk.Load(), maxGauge.Load(); d > tc.spoolBytes || g > tc.spoolBytes || d == 0 {
				t.Errorf("spool peaked at %d bytes on disk, %d in its gauge; cap %d (and want it used)", d, g, tc.spoolBytes)
			}
			if got := dropped(s, reasonSpoolFull); tc.overflow != (got > 0) {
				t.Errorf("%d records dropped for a full spool; want some: %v", got, tc.overflow)
			}
			if got := droppedTotal(s) - dropped(s, reasonSpoolFull); got != 0 {
				t.Errorf("%d records dropped for other reasons", got)
			}
			if left, _ := s.spool.size(); left != 0 || spoolBytesOnDisk(dir) != 0 {
				t.Errorf("spool not empty after delivery: %d records, %d bytes on disk", left, spoolBytesOnDisk(dir))
			}

			// (c) Delivery: at least once for every record not dropped; the
			// drops are the oldest spooled records; each server got records
			// oldest first.
			reqs1, seen1 := rc1.snapshot()
			reqs2, seen2 := rc2.snapshot()
			if len(seen2) == 0 {
				t.Fatal("nothing delivered after recovery")
			}
			distinct, dups := 0, 0
			var missing []int64
			for i := range int64(n) {
				c := seen1[i] + seen2[i]
				if c == 0 {
					missing = append(missing, i)
					continue
				}
				distinct++
				dups += c - 1
			}
			if len(seen1)+len(seen2)-dups > n {
				t.Errorf("records outside the burst delivered")
			}
			if got, want := distinct, n-droppedTotal(s); got != want {
				t.Errorf("%d distinct records delivered; want %d (logged %d, dropped %d)", got, want, n, droppedTotal(s))
			}
			if exported(s) != distinct {
				t.Errorf("exported counter %d, but %d distinct records arrived", exported(s), distinct)
			}
			if dups > batch {
				t.Errorf("%d records delivered twice; want at most one batch (%d)", dups, batch)
			}
			t.Logf("%d delivered before the kill, %d after, %d dropped, %d duplicates, %d failed attempts, %d stderr lines, spool peak %d bytes, in %v",
				len(seen1), len(seen2), len(missing), dups, failures(s), len(lines), maxDisk.Load(), elapsed.Round(time.Millisecond))
			if seen1[n-1]+seen2[n-1] == 0 {
				t.Errorf("the newest record was not delivered: drops must take the oldest")
			}
			var firstAfter int64 = n
			for seq := range seen2 {
				if seen1[seq] == 0 {
					firstAfter = min(firstAfter, seq)
				}
			}
			if len(missing) > 0 && missing[len(missing)-1] > firstAfter {
				t.Errorf("record %d dropped although the older record %d was kept and delivered after recovery", missing[len(missing)-1], firstAfter)
			}
			for i, reqs := range [][]request{reqs1, reqs2} {
				var all []int64
				for _, r := range reqs {
					all = append(all, r.seqs...)
					if got := resourceAttr(r.req, "service.name"); got != "burst" {
						t.Fatalf("service.name %q, want burst", got)
					}
				}
				if !slices.IsSorted(all) || len(slices.Compact(slices.Clone(all))) != len(all) {
					t.Errorf("server %d received records out of order or twice", i+1)
				}
			}
		})
	}
}

// TestRestartSendsTheSpool: records spooled by one shipper, which stopped
// while the endpoint was down, are delivered by the next one opened on the
// same directory, once each, with the resource of the process that logged
// them. A truncated file and a leftover temporary file are cleaned up.
func TestRestartSendsTheSpool(t *testing.T) {
	const n = 1000
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close() // nothing listens there now
	a, err := New(Config{
		Endpoint: "http://" + down + "/v1/logs", Resource: map[string]string{"service.name": "first"},
		Dir: dir, BatchSize: 100, BatchDelay: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	}, prometheus.NewRegistry(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(canceled) })
	la := slog.New(a.Handler())
	for i := range n {
		la.Info("before restart", "seq", i)
	}
	stopped, cancel := context.WithCancel(t.Context())
	cancel()
	if err := a.Close(stopped); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d log records", n)) {
		t.Fatalf("Close with the endpoint down: %v; want an error saying %d records are kept", err, n)
	}
	la.Info("after close", "seq", n) // counted as dropped, never spooled
	if got := dropped(a, reasonClosed); got != 1 {
		t.Errorf("%d records dropped after Close, want 1", got)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"+spoolSuffix))
	if len(files) != n/100 {
		t.Fatalf("%d spool files, want %d", len(files), n/100)
	}
	// A machine crash can leave a file cut short, and a write cut short
	// leaves a temporary file.
	b, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		t.Fatal(err)
	}
	torn := filepath.Join(dir, fmt.Sprintf("%020d%s", 999, spoolSuffix))
	if err := os.WriteFile(torn, b[:len(b)-10], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(torn+".tmp", b[:20], 0o644); err != nil {
		t.Fatal(err)
	}

	rc := newReceiver(t)
	srv := serve(t, "127.0.0.1:0", rc)
	var stderr lockedBuffer
	bs, err := New(Config{Endpoint: srv.URL + "/v1/logs", Resource: map[string]string{"service.name": "second"}, Dir: dir},
		prometheus.NewRegistry(), &stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close(canceled) })
	waitFor(t, "the spool to be delivered", func() bool { return exported(bs) == n })
	if err := bs.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	reqs, seen := rc.snapshot()
	for i := range int64(n) {
		if seen[i] != 1 {
			t.Fatalf("record %d delivered %d times, want once", i, seen[i])
		}
	}
	var all []int64
	for _, r := range reqs {
		all = append(all, r.seqs...)
		if got := resourceAttr(r.req, "service.name"); got != "first" {
			t.Errorf("service.name %q, want first (the process that logged them)", got)
		}
	}
	if len(all) != n || !slices.IsSorted(all) {
		t.Errorf("delivered %d records, sorted %v; want %d in order", len(all), slices.IsSorted(all), n)
	}
	if got := dropped(bs, reasonCorrupt); got != 100 {
		t.Errorf("%d records counted corrupt, want the torn file's 100", got)
	}
	if !strings.Contains(stderr.String(), "checksum") {
		t.Errorf("stderr does not report the torn file: %q", stderr.String())
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("files left in the spool: %v", left)
	}
}

// TestRejectionsAndRetries: 429/502/503/504 are retried (after Retry-After),
// any other refusal drops the batch once, counted; a partial success counts
// its rejected records as dropped and the rest as exported.
func TestRejectionsAndRetries(t *testing.T) {
	rc := newReceiver(t)
	rc.answer = func(n int) (int, []byte) {
		switch n {
		case 1:
			return http.StatusServiceUnavailable, []byte("busy")
		case 2:
			return http.StatusBadRequest, []byte("malformed batch")
		case 3:
			b, _ := proto.Marshal(&collogspb.ExportLogsServiceResponse{PartialSuccess: &collogspb.ExportLogsPartialSuccess{RejectedLogRecords: 3}})
			return http.StatusOK, b
		}
		return http.StatusOK, nil
	}
	srv := serve(t, "127.0.0.1:0", rc)
	var stderr lockedBuffer
	s, err := New(Config{
		Endpoint: srv.URL + "/v1/logs", Dir: t.TempDir(), BatchSize: 100, BatchDelay: time.Hour,
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	}, prometheus.NewRegistry(), &stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(canceled) })
	l := slog.New(s.Handler())
	for i := range 300 {
		l.Info("r", "seq", i)
	}
	waitFor(t, "every record accounted", func() bool { return exported(s)+droppedTotal(s) == 300 })
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	reqs, _ := rc.snapshot()
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 4 (a retry after 503, none after 400)", len(reqs))
	}
	if !slices.Equal(reqs[0].seqs, reqs[1].seqs) || slices.Equal(reqs[1].seqs, reqs[2].seqs) {
		t.Errorf("request batches %v..., want the first retried once and then the next batch", [][]int64{reqs[0].seqs[:1], reqs[1].seqs[:1], reqs[2].seqs[:1]})
	}
	if got, want := dropped(s, reasonRejected), 100+3; got != want {
		t.Errorf("%d records dropped as rejected, want %d", got, want)
	}
	if got, want := exported(s), 200-3; got != want {
		t.Errorf("%d records exported, want %d", got, want)
	}
	if got := failures(s); got != 2 {
		t.Errorf("%d failures counted, want 2", got)
	}
	if !strings.Contains(stderr.String(), "400 Bad Request: malformed batch") {
		t.Errorf("stderr does not report the refusal: %q", stderr.String())
	}
	for _, r := range reqs {
		if r.header.Get("Content-Type") != "application/x-protobuf" || r.path != "/v1/logs" {
			t.Errorf("request %s with Content-Type %q", r.path, r.header.Get("Content-Type"))
		}
	}
}

// TestQueueFullDropsOldest: when the writer cannot keep up, Handle still
// returns at once and the oldest queued records are dropped and counted.
func TestQueueFullDropsOldest(t *testing.T) {
	var q queue
	q.ring = make([]entry, 4)
	for i := range 6 {
		_, dropped, _ := q.push(entry{rec: nil, size: i}, 100, 1<<20)
		if want := i >= 4; dropped != want {
			t.Errorf("push %d: dropped %v, want %v", i, dropped, want)
		}
	}
	if n := q.takeDropped(); n != 2 || q.takeDropped() != 0 {
		t.Errorf("dropped %d records to report, want 2 and then none", n)
	}
	if q.len() != 4 || q.bytes != 2+3+4+5 {
		t.Errorf("queue holds %d records, %d bytes; want the newest 4 (14 bytes)", q.len(), q.bytes)
	}
	if got := q.take(5, 1<<20, true); got != nil {
		t.Errorf("took %d records without a full batch", len(got))
	}
	if got := q.take(3, 1<<20, false); len(got) != 3 || q.len() != 1 || q.bytes != 5 {
		t.Errorf("took %d, left %d records (%d bytes); want 3 and 1 (5 bytes)", len(got), q.len(), q.bytes)
	}
}

// TestRetryAfter: a throttled answer's Retry-After is kept for the backoff.
func TestRetryAfter(t *testing.T) {
	srv := serve(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	s, err := New(Config{Endpoint: srv.URL + "/v1/logs", Dir: t.TempDir()}, prometheus.NewRegistry(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(canceled)
	_, err = s.post(t.Context(), nil)
	var ra retryAfterError
	var pe *permanentError
	if !errors.As(err, &ra) || time.Duration(ra) != 7*time.Second || errors.As(err, &pe) {
		t.Errorf("post: %v; want a retryable error carrying Retry-After 7s", err)
	}
}

// TestHandleNeverBlocks: with the writer stuck (the spool's lock held, as
// a hung disk would), logging goes on; the memory queue keeps the newest
// records, drops and counts the oldest, and the writer reports it once it
// can.
func TestHandleNeverBlocks(t *testing.T) {
	const n, queue, batch = 100, 10, 5
	rc := newReceiver(t)
	srv := serve(t, "127.0.0.1:0", rc)
	var stderr lockedBuffer
	s, err := New(Config{Endpoint: srv.URL + "/v1/logs", Dir: t.TempDir(), MaxQueue: queue, BatchSize: batch, BatchDelay: time.Millisecond},
		prometheus.NewRegistry(), &stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(canceled) })
	l := slog.New(s.Handler())
	s.spool.mu.Lock()
	for i := range n {
		l.Info("r", "seq", i) // would hang here if Handle waited for the writer
	}
	s.spool.mu.Unlock()
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	d := dropped(s, reasonQueueFull)
	if d < n-queue-batch {
		t.Errorf("%d records dropped from the queue, want at least %d", d, n-queue-batch)
	}
	if exported(s)+d != n || droppedTotal(s) != d {
		t.Errorf("exported %d + dropped %d (of which queue_full %d), want %d", exported(s), droppedTotal(s), d, n)
	}
	_, seen := rc.snapshot()
	if seen[n-1] != 1 {
		t.Errorf("the newest record was not delivered: the queue must drop the oldest")
	}
	if !strings.Contains(stderr.String(), "memory queue full") {
		t.Errorf("stderr does not report the full queue: %q", stderr.String())
	}
}
