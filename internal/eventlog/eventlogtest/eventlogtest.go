// Package eventlogtest is the conformance suite for eventlog implementations: every
// backend runs it unchanged (like testing/slogtest). It checks topics and
// partitions, offsets and order, reads that wait, consumer positions, reopening,
// concurrent appenders and crashes between a write and its sync.
package eventlogtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/eventlog"
)

// Log is the behaviour under test.
type Log interface {
	CreateTopic(ctx context.Context, topic string, partitions int32) error
	Partitions(ctx context.Context, topic string) (int32, error)
	Append(ctx context.Context, topic string, recs []eventlog.Record) error
	Fetch(ctx context.Context, topic string, partition int32, offset int64, max int) ([]eventlog.Record, error)
	Offsets(ctx context.Context, topic string, partition int32) (start, end int64, err error)
	CommitOffset(ctx context.Context, group, topic string, partition int32, offset int64) error
	CommittedOffset(ctx context.Context, group, topic string, partition int32) (int64, error)
	Close() error
}

// Harness adapts a backend to the suite. Open is required; a nil Reopen or
// CrashDuringSync skips the tests that need it.
type Harness struct {
	// Open returns a new, empty log. The suite closes it.
	Open func(t *testing.T) Log
	// Reopen closes l cleanly and opens its storage again.
	Reopen func(t *testing.T, l Log) Log
	// CrashDuringSync makes the storage stall every sync, calls start (which begins
	// appends in the background), waits until a sync is stalled, calls whileStalled,
	// then simulates a crash at that moment: it returns the log opened from a copy
	// of the storage holding only what was synced, and disposes of l. With a nil
	// start it crashes at once.
	CrashDuringSync func(t *testing.T, l Log, start func(), whileStalled func()) Log
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Topics", testTopics},
		{"AppendAndFetch", testAppendAndFetch},
		{"FetchWaits", testFetchWaits},
		{"FetchLimits", testFetchLimits},
		{"CanceledAppend", testCanceledAppend},
		{"CommitOffsets", testCommitOffsets},
		{"Reopen", testReopen},
		{"ConcurrentAppenders", testConcurrentAppenders},
		{"CrashAfterAck", testCrashAfterAck},
		{"CrashBetweenWriteAndSync", testCrashBetweenWriteAndSync},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, h) })
	}
}

const topicName = "events"

func open(t *testing.T, h Harness, partitions int32) Log {
	t.Helper()
	l := h.Open(t)
	if err := l.CreateTopic(t.Context(), topicName, partitions); err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	return l
}

func closeLog(t *testing.T, l Log) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func rec(part int32, key, value string, ts time.Time) eventlog.Record {
	return eventlog.Record{Partition: part, Key: []byte(key), Value: []byte(value), Timestamp: ts}
}

// simple is what the suite compares: the fields a reader sees.
type simple struct {
	Partition int32
	Offset    int64
	TimeMs    int64
	Key       string
	Value     string
}

func simplify(rs []eventlog.Record) []simple {
	out := make([]simple, len(rs))
	for i, r := range rs {
		out[i] = simple{r.Partition, r.Offset, r.Timestamp.UnixMilli(), string(r.Key), string(r.Value)}
	}
	return out
}

// Reader is what ReadAll needs of a log.
type Reader interface {
	Offsets(ctx context.Context, topic string, partition int32) (start, end int64, err error)
	Fetch(ctx context.Context, topic string, partition int32, offset int64, max int) ([]eventlog.Record, error)
}

// ReadAll returns the records of a partition from offset to its current end,
// failing t on any error. Other packages' tests use it to look into a log.
func ReadAll(t testing.TB, l Reader, topic string, part int32, from int64) []eventlog.Record {
	t.Helper()
	ctx := context.Background()
	_, end, err := l.Offsets(ctx, topic, part)
	if err != nil {
		t.Fatalf("Offsets(%s/%d): %v", topic, part, err)
	}
	var out []eventlog.Record
	for off := from; off < end; {
		rs, err := l.Fetch(ctx, topic, part, off, 10_000)
		if err != nil {
			t.Fatalf("Fetch(%s/%d, %d): %v", topic, part, off, err)
		}
		if len(rs) == 0 {
			t.Fatalf("Fetch(%s/%d, %d) returned nothing below end %d", topic, part, off, end)
		}
		out = append(out, rs...)
		off = rs[len(rs)-1].Offset + 1
	}
	return out
}

func readAll(t *testing.T, l Log, part int32, from int64) []eventlog.Record {
	t.Helper()
	return ReadAll(t, l, topicName, part, from)
}

func testTopics(t *testing.T, h Harness) {
	ctx := t.Context()
	l := open(t, h, 4)
	defer closeLog(t, l)
	if err := l.CreateTopic(ctx, topicName, 4); err != nil {
		t.Errorf("CreateTopic again with the same count: %v", err)
	}
	if err := l.CreateTopic(ctx, topicName, 5); !errors.Is(err, eventlog.ErrTopicExists) {
		t.Errorf("CreateTopic with another count: got %v, want ErrTopicExists", err)
	}
	if n, err := l.Partitions(ctx, topicName); err != nil || n != 4 {
		t.Errorf("Partitions = %d, %v; want 4", n, err)
	}
	if _, err := l.Partitions(ctx, "nope"); !errors.Is(err, eventlog.ErrUnknownTopic) {
		t.Errorf("Partitions(unknown): got %v, want ErrUnknownTopic", err)
	}
	if err := l.Append(ctx, "nope", []eventlog.Record{rec(0, "k", "v", time.Time{})}); !errors.Is(err, eventlog.ErrUnknownTopic) {
		t.Errorf("Append(unknown topic): got %v, want ErrUnknownTopic", err)
	}
	if err := l.Append(ctx, topicName, []eventlog.Record{rec(4, "k", "v", time.Time{})}); !errors.Is(err, eventlog.ErrBadPartition) {
		t.Errorf("Append(partition 4 of 4): got %v, want ErrBadPartition", err)
	}
	if _, err := l.Fetch(ctx, topicName, -1, 0, 1); !errors.Is(err, eventlog.ErrBadPartition) {
		t.Errorf("Fetch(partition -1): got %v, want ErrBadPartition", err)
	}
	for p := range int32(4) {
		if start, end, err := l.Offsets(ctx, topicName, p); err != nil || start != 0 || end != 0 {
			t.Errorf("Offsets(%d) of a new topic = %d, %d, %v; want 0, 0", p, start, end, err)
		}
	}
}

func testAppendAndFetch(t *testing.T, h Harness) {
	ctx := t.Context()
	l := open(t, h, 3)
	defer closeLog(t, l)
	ts := time.UnixMilli(1_700_000_000_123)
	batch1 := []eventlog.Record{
		rec(0, "a", "a0", ts), rec(1, "b", "b0", ts.Add(time.Second)), rec(0, "a", "a1", ts.Add(-time.Minute)),
		rec(2, "", "", ts), rec(0, "a", "a2", ts),
	}
	if err := l.Append(ctx, topicName, batch1); err != nil {
		t.Fatalf("Append: %v", err)
	}
	gotOffsets := []int64{}
	for _, r := range batch1 {
		gotOffsets = append(gotOffsets, r.Offset)
	}
	if diff := cmp.Diff([]int64{0, 0, 1, 0, 2}, gotOffsets); diff != "" {
		t.Errorf("offsets set by Append (-want +got):\n%s", diff)
	}
	batch2 := []eventlog.Record{rec(0, "a", "a3", ts), rec(1, "b", "b1", ts)}
	if err := l.Append(ctx, topicName, batch2); err != nil {
		t.Fatalf("Append: %v", err)
	}
	want := map[int32][]simple{
		0: {{0, 0, ts.UnixMilli(), "a", "a0"}, {0, 1, ts.Add(-time.Minute).UnixMilli(), "a", "a1"}, {0, 2, ts.UnixMilli(), "a", "a2"}, {0, 3, ts.UnixMilli(), "a", "a3"}},
		1: {{1, 0, ts.Add(time.Second).UnixMilli(), "b", "b0"}, {1, 1, ts.UnixMilli(), "b", "b1"}},
		2: {{2, 0, ts.UnixMilli(), "", ""}},
	}
	for p, w := range want {
		if diff := cmp.Diff(w, simplify(readAll(t, l, p, 0))); diff != "" {
			t.Errorf("partition %d (-want +got):\n%s", p, diff)
		}
		if start, end, err := l.Offsets(ctx, topicName, p); err != nil || start != 0 || end != int64(len(w)) {
			t.Errorf("Offsets(%d) = %d, %d, %v; want 0, %d", p, start, end, err, len(w))
		}
	}
	// Reading from the middle of a batch starts at the requested offset.
	rs, err := l.Fetch(ctx, topicName, 0, 2, 10)
	if err != nil {
		t.Fatalf("Fetch(0, 2): %v", err)
	}
	if diff := cmp.Diff(want[0][2:], simplify(rs)); diff != "" {
		t.Errorf("Fetch from offset 2 (-want +got):\n%s", diff)
	}
	// A zero timestamp becomes the time of append.
	before := time.Now().Add(-time.Second)
	z := []eventlog.Record{{Partition: 2, Value: []byte("z")}}
	if err := l.Append(ctx, topicName, z); err != nil {
		t.Fatalf("Append: %v", err)
	}
	rs, err = l.Fetch(ctx, topicName, 2, 1, 1)
	if err != nil || len(rs) != 1 {
		t.Fatalf("Fetch(2, 1) = %v, %v", rs, err)
	}
	if got := rs[0].Timestamp; got.Before(before) || got.After(time.Now().Add(time.Second)) {
		t.Errorf("zero timestamp stored as %v, want about now", got)
	}
}

func testFetchWaits(t *testing.T, h Harness) {
	l := open(t, h, 2)
	defer closeLog(t, l)
	// A fetch at the end of the partition waits until ctx is done...
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if rs, err := l.Fetch(ctx, topicName, 1, 0, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Fetch at the end of an empty partition = %v, %v; want DeadlineExceeded", rs, err)
	}
	// ...or until a record arrives.
	got := make(chan []eventlog.Record, 1)
	errc := make(chan error, 1)
	go func() {
		rs, err := l.Fetch(t.Context(), topicName, 1, 0, 10)
		got <- rs
		errc <- err
	}()
	if err := l.Append(t.Context(), topicName, []eventlog.Record{rec(1, "k", "late", time.UnixMilli(1))}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	select {
	case rs := <-got:
		if err := <-errc; err != nil {
			t.Fatalf("waiting Fetch: %v", err)
		}
		if diff := cmp.Diff([]simple{{1, 0, 1, "k", "late"}}, simplify(rs)); diff != "" {
			t.Errorf("waiting Fetch (-want +got):\n%s", diff)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting Fetch was not woken by an append")
	}
}

func testFetchLimits(t *testing.T, h Harness) {
	ctx := t.Context()
	l := open(t, h, 1)
	defer closeLog(t, l)
	var recs []eventlog.Record
	for i := range 10 {
		recs = append(recs, rec(0, "k", fmt.Sprint(i), time.UnixMilli(int64(i))))
	}
	if err := l.Append(ctx, topicName, recs[:5]); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx, topicName, recs[5:]); err != nil {
		t.Fatal(err)
	}
	rs, err := l.Fetch(ctx, topicName, 0, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for _, r := range rs {
		offs = append(offs, r.Offset)
	}
	if diff := cmp.Diff([]int64{3, 4, 5, 6}, offs); diff != "" {
		t.Errorf("Fetch(offset 3, max 4) across two batches (-want +got):\n%s", diff)
	}
	if _, err := l.Fetch(ctx, topicName, 0, 11, 1); !errors.Is(err, eventlog.ErrOffsetOutOfRange) {
		t.Errorf("Fetch past the end: got %v, want ErrOffsetOutOfRange", err)
	}
	if _, err := l.Fetch(ctx, topicName, 0, -1, 1); !errors.Is(err, eventlog.ErrOffsetOutOfRange) {
		t.Errorf("Fetch at -1: got %v, want ErrOffsetOutOfRange", err)
	}
}

func testCanceledAppend(t *testing.T, h Harness) {
	l := open(t, h, 1)
	defer closeLog(t, l)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := l.Append(ctx, topicName, []eventlog.Record{rec(0, "k", "v", time.Time{})}); !errors.Is(err, context.Canceled) {
		t.Errorf("Append with a canceled context: got %v, want context.Canceled", err)
	}
	if _, end, err := l.Offsets(t.Context(), topicName, 0); err != nil || end != 0 {
		t.Errorf("end offset after a canceled append = %d, %v; want 0", end, err)
	}
}

func testCommitOffsets(t *testing.T, h Harness) {
	ctx := t.Context()
	l := open(t, h, 2)
	if got, err := l.CommittedOffset(ctx, "g", topicName, 0); err != nil || got != -1 {
		t.Errorf("CommittedOffset before any commit = %d, %v; want -1", got, err)
	}
	if err := l.Append(ctx, topicName, []eventlog.Record{rec(0, "", "1", time.Time{}), rec(0, "", "2", time.Time{})}); err != nil {
		t.Fatal(err)
	}
	if err := l.CommitOffset(ctx, "g", topicName, 0, 2); err != nil {
		t.Fatalf("CommitOffset: %v", err)
	}
	if err := l.CommitOffset(ctx, "other", topicName, 0, 1); err != nil {
		t.Fatalf("CommitOffset: %v", err)
	}
	if err := l.CommitOffset(ctx, "g", topicName, 0, 3); !errors.Is(err, eventlog.ErrOffsetOutOfRange) {
		t.Errorf("CommitOffset past the end: got %v, want ErrOffsetOutOfRange", err)
	}
	if h.Reopen != nil {
		l = h.Reopen(t, l)
	}
	defer closeLog(t, l)
	for _, c := range []struct {
		group string
		part  int32
		want  int64
	}{{"g", 0, 2}, {"other", 0, 1}, {"g", 1, -1}} {
		if got, err := l.CommittedOffset(ctx, c.group, topicName, c.part); err != nil || got != c.want {
			t.Errorf("CommittedOffset(%q, %d) = %d, %v; want %d", c.group, c.part, got, err, c.want)
		}
	}
}

func testReopen(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("backend cannot reopen")
	}
	ctx := t.Context()
	l := open(t, h, 2)
	if err := l.Append(ctx, topicName, []eventlog.Record{rec(0, "k", "v0", time.UnixMilli(5)), rec(1, "k", "w0", time.UnixMilli(6))}); err != nil {
		t.Fatal(err)
	}
	l = h.Reopen(t, l)
	defer closeLog(t, l)
	if n, err := l.Partitions(ctx, topicName); err != nil || n != 2 {
		t.Fatalf("Partitions after reopen = %d, %v; want 2", n, err)
	}
	r := []eventlog.Record{rec(0, "k", "v1", time.UnixMilli(7))}
	if err := l.Append(ctx, topicName, r); err != nil {
		t.Fatal(err)
	}
	if r[0].Offset != 1 {
		t.Errorf("first offset after reopen = %d, want 1", r[0].Offset)
	}
	want := []simple{{0, 0, 5, "k", "v0"}, {0, 1, 7, "k", "v1"}}
	if diff := cmp.Diff(want, simplify(readAll(t, l, 0, 0))); diff != "" {
		t.Errorf("partition 0 after reopen (-want +got):\n%s", diff)
	}
}

func testConcurrentAppenders(t *testing.T, h Harness) {
	const (
		producers = 8
		appends   = 60
		perAppend = 7
		parts     = 4
	)
	ctx := t.Context()
	l := open(t, h, parts)
	defer closeLog(t, l)
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := range producers {
		wg.Go(func() {
			for a := range appends {
				recs := make([]eventlog.Record, perAppend)
				for i := range recs {
					seq := a*perAppend + i
					recs[i] = rec(int32(seq%parts), fmt.Sprint(p), fmt.Sprintf("%d/%d", p, seq), time.UnixMilli(int64(seq)))
				}
				if err := l.Append(ctx, topicName, recs); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Append: %v", err)
	}
	seen := map[string]bool{}
	for part := range int32(parts) {
		rs := readAll(t, l, part, 0)
		last := map[string]int{} // per producer: last seq seen in this partition
		for i, r := range rs {
			if r.Offset != int64(i) {
				t.Fatalf("partition %d: record %d has offset %d", part, i, r.Offset)
			}
			var p, seq int
			if _, err := fmt.Sscanf(string(r.Value), "%d/%d", &p, &seq); err != nil {
				t.Fatalf("bad value %q", r.Value)
			}
			if seen[string(r.Value)] {
				t.Errorf("record %q stored twice", r.Value)
			}
			seen[string(r.Value)] = true
			if prev, ok := last[string(r.Key)]; ok && seq <= prev {
				t.Errorf("partition %d: producer %s's records out of order: %d after %d", part, r.Key, seq, prev)
			}
			last[string(r.Key)] = seq
		}
	}
	if want := producers * appends * perAppend; len(seen) != want {
		t.Errorf("stored %d distinct records, want %d", len(seen), want)
	}
}

func testCrashAfterAck(t *testing.T, h Harness) {
	if h.CrashDuringSync == nil {
		t.Skip("backend cannot simulate a crash")
	}
	ctx := t.Context()
	l := open(t, h, 2)
	var acked []eventlog.Record
	for i := range 20 {
		r := []eventlog.Record{rec(int32(i%2), "k", fmt.Sprint(i), time.UnixMilli(int64(i)))}
		if err := l.Append(ctx, topicName, r); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, r...)
	}
	l = h.CrashDuringSync(t, l, nil, nil)
	defer closeLog(t, l)
	got := map[int32][]simple{}
	for p := range int32(2) {
		got[p] = simplify(readAll(t, l, p, 0))
	}
	want := map[int32][]simple{}
	for _, r := range acked {
		want[r.Partition] = append(want[r.Partition], simplify([]eventlog.Record{r})...)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("acknowledged records after a crash (-want +got):\n%s", diff)
	}
}

func testCrashBetweenWriteAndSync(t *testing.T, h Harness) {
	if h.CrashDuringSync == nil {
		t.Skip("backend cannot simulate a crash")
	}
	ctx := t.Context()
	l := open(t, h, 1)
	durable := []eventlog.Record{rec(0, "k", "durable", time.UnixMilli(1))}
	if err := l.Append(ctx, topicName, durable); err != nil {
		t.Fatal(err)
	}
	stalled := make(chan error, 1)
	start := func() {
		go func() {
			stalled <- l.Append(context.WithoutCancel(ctx), topicName, []eventlog.Record{rec(0, "k", "unsynced", time.UnixMilli(2))})
		}()
	}
	whileStalled := func() {
		select {
		case err := <-stalled:
			t.Errorf("Append returned (%v) while its sync was stalled", err)
		default:
		}
		// Nothing unsynced is readable.
		_, end, err := l.Offsets(ctx, topicName, 0)
		if err != nil || end != 1 {
			t.Errorf("high watermark while a sync is stalled = %d, %v; want 1", end, err)
		}
		fctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if rs, err := l.Fetch(fctx, topicName, 0, 1, 10); err == nil {
			t.Errorf("Fetch returned unsynced records %v", simplify(rs))
		}
	}
	l = h.CrashDuringSync(t, l, start, whileStalled)
	defer closeLog(t, l)
	got := readAll(t, l, 0, 0)
	if len(got) == 0 || !bytes.Equal(got[0].Value, []byte("durable")) {
		t.Fatalf("after the crash the partition holds %v, want the durable record first", simplify(got))
	}
	// Whatever the crash kept, offsets go on without a gap or reuse.
	next := []eventlog.Record{rec(0, "k", "after", time.UnixMilli(3))}
	if err := l.Append(ctx, topicName, next); err != nil {
		t.Fatal(err)
	}
	if next[0].Offset != int64(len(got)) {
		t.Errorf("first offset after the crash = %d, want %d", next[0].Offset, len(got))
	}
	all := readAll(t, l, 0, 0)
	if last := all[len(all)-1]; string(last.Value) != "after" {
		t.Errorf("last record after the crash = %q, want %q", last.Value, "after")
	}
}
