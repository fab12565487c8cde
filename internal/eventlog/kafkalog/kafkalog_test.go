package kafkalog_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/eventlog/eventlogtest"
	"github.com/pedal-project/pedal/internal/eventlog/kafkalog"
)

// newCluster starts an in-process Kafka-protocol cluster on loopback, on random
// ports, closed when the test ends.
func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func openLog(t *testing.T, brokers []string, rf int16) *kafkalog.Log {
	t.Helper()
	l, err := kafkalog.Open(t.Context(), kafkalog.Config{Brokers: brokers, ReplicationFactor: rf}, nil, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() }) // the suite closes it too; Close is idempotent
	return l
}

// testLog is a Log with the brokers it was opened on, to open it again, and a
// prefix for its topic and group names, so that tests sharing a real cluster do
// not see each other's topics. Each Open of a kfake cluster gets a cluster of
// its own and no prefix.
type testLog struct {
	*kafkalog.Log
	brokers []string
	rf      int16
	prefix  string
}

func (l *testLog) CreateTopic(ctx context.Context, topic string, partitions int32) error {
	return l.Log.CreateTopic(ctx, l.prefix+topic, partitions)
}

func (l *testLog) Partitions(ctx context.Context, topic string) (int32, error) {
	return l.Log.Partitions(ctx, l.prefix+topic)
}

func (l *testLog) Append(ctx context.Context, topic string, recs []eventlog.Record) error {
	return l.Log.Append(ctx, l.prefix+topic, recs)
}

func (l *testLog) Fetch(ctx context.Context, topic string, part int32, offset int64, max int) ([]eventlog.Record, error) {
	return l.Log.Fetch(ctx, l.prefix+topic, part, offset, max)
}

func (l *testLog) Offsets(ctx context.Context, topic string, part int32) (int64, int64, error) {
	return l.Log.Offsets(ctx, l.prefix+topic, part)
}

func (l *testLog) CommitOffset(ctx context.Context, group, topic string, part int32, offset int64) error {
	return l.Log.CommitOffset(ctx, l.prefix+group, l.prefix+topic, part, offset)
}

func (l *testLog) CommittedOffset(ctx context.Context, group, topic string, part int32) (int64, error) {
	return l.Log.CommittedOffset(ctx, l.prefix+group, l.prefix+topic, part)
}

// reopen closes l and opens a new client on the same cluster: the data lives in
// the cluster, so this is what a restarted process sees.
func reopen(t *testing.T, l eventlogtest.Log) eventlogtest.Log {
	t.Helper()
	tl := l.(*testLog)
	if err := tl.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return &testLog{Log: openLog(t, tl.brokers, tl.rf), brokers: tl.brokers, rf: tl.rf, prefix: tl.prefix}
}

// CrashDuringSync stays nil in both harnesses: durability is the brokers' (acks=all
// waits for the in-sync replicas), there is no local sync to stall or crash.
func TestConformanceKfake(t *testing.T) {
	eventlogtest.Run(t, eventlogtest.Harness{
		Open: func(t *testing.T) eventlogtest.Log {
			brokers := newCluster(t).ListenAddrs()
			return &testLog{Log: openLog(t, brokers, 1), brokers: brokers, rf: 1}
		},
		Reopen: reopen,
	})
}

// With three brokers the partitions' leaders differ, so Fetch must go to each
// partition's leader.
func TestConformanceKfakeThreeBrokers(t *testing.T) {
	eventlogtest.Run(t, eventlogtest.Harness{
		Open: func(t *testing.T) eventlogtest.Log {
			brokers := newCluster(t, kfake.NumBrokers(3)).ListenAddrs()
			return &testLog{Log: openLog(t, brokers, 3), brokers: brokers, rf: 3}
		},
		Reopen: reopen,
	})
}

// TestConformanceKafka runs the suite against a real cluster when
// TEST_KAFKA_BROKERS (comma-separated host:port) is set. Topics and groups get a
// random prefix per test; they are left behind.
func TestConformanceKafka(t *testing.T) {
	env := os.Getenv("TEST_KAFKA_BROKERS")
	if env == "" {
		t.Skip("TEST_KAFKA_BROKERS not set")
	}
	brokers := strings.Split(env, ",")
	eventlogtest.Run(t, eventlogtest.Harness{
		Open: func(t *testing.T) eventlogtest.Log {
			b := make([]byte, 6)
			rand.Read(b)
			return &testLog{Log: openLog(t, brokers, -1), brokers: brokers, rf: -1, prefix: "pedal-test-" + hex.EncodeToString(b) + "-"}
		},
		Reopen: reopen,
	})
}

func rec(part int32, value string) eventlog.Record {
	return eventlog.Record{Partition: part, Value: []byte(value), Timestamp: time.UnixMilli(1)}
}

// Append returns only once the broker has answered the produce request: while
// the request is held, Append waits and nothing is readable.
func TestAppendWaitsForAck(t *testing.T) {
	ctx := t.Context()
	c := newCluster(t)
	l := openLog(t, c.ListenAddrs(), 1)
	if err := l.CreateTopic(ctx, "t", 1); err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		close(held)
		c.SleepControl(func() { <-release })
		return nil, nil, false // then let the cluster handle it as usual
	})
	recs := []eventlog.Record{rec(0, "a"), rec(0, "b")}
	appended := make(chan error, 1)
	go func() { appended <- l.Append(ctx, "t", recs) }()
	<-held
	if _, end, err := l.Offsets(ctx, "t", 0); err != nil || end != 0 {
		t.Errorf("high watermark while the produce is held = %d, %v; want 0", end, err)
	}
	select {
	case err := <-appended:
		t.Fatalf("Append returned (%v) before the broker answered", err)
	default:
	}
	close(release)
	if err := <-appended; err != nil {
		t.Fatalf("Append: %v", err)
	}
	if recs[0].Offset != 0 || recs[1].Offset != 1 {
		t.Errorf("offsets = %d, %d; want 0, 1", recs[0].Offset, recs[1].Offset)
	}
	if _, end, err := l.Offsets(ctx, "t", 0); err != nil || end != 2 {
		t.Errorf("high watermark after the ack = %d, %v; want 2", end, err)
	}
}

// A produce the broker refuses fails the Append with the broker's error.
func TestAppendProduceError(t *testing.T) {
	ctx := t.Context()
	c := newCluster(t)
	l := openLog(t, c.ListenAddrs(), 1)
	if err := l.CreateTopic(ctx, "t", 2); err != nil {
		t.Fatal(err)
	}
	f := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.InvalidRecord, Count: -1})
	recs := []eventlog.Record{rec(0, "a"), rec(1, "b")}
	err := l.Append(ctx, "t", recs)
	if !errors.Is(err, kerr.InvalidRecord) {
		t.Fatalf("Append with the broker refusing produce: got %v, want INVALID_RECORD", err)
	}
	f.Remove()
	for p := range int32(2) {
		if _, end, err := l.Offsets(ctx, "t", p); err != nil || end != 0 {
			t.Errorf("high watermark of %d after a refused produce = %d, %v; want 0", p, end, err)
		}
	}
	// The log goes on working, from offset 0.
	recs = []eventlog.Record{rec(0, "c")}
	if err := l.Append(ctx, "t", recs); err != nil {
		t.Fatalf("Append after the fault: %v", err)
	}
	if recs[0].Offset != 0 {
		t.Errorf("offset after a refused produce = %d, want 0", recs[0].Offset)
	}
}

// Retriable produce errors are retried by the idempotent producer: Append
// succeeds and nothing is written twice.
func TestAppendRetriesWithoutDuplicates(t *testing.T) {
	ctx := t.Context()
	c := newCluster(t)
	l := openLog(t, c.ListenAddrs(), 1)
	if err := l.CreateTopic(ctx, "t", 1); err != nil {
		t.Fatal(err)
	}
	// NOT_ENOUGH_REPLICAS_AFTER_APPEND: the broker wrote the batch but answers
	// with an error, so the producer retries a batch that is already there.
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.NotEnoughReplicasAfterAppend, Count: 2})
	recs := []eventlog.Record{rec(0, "a"), rec(0, "b"), rec(0, "c")}
	if err := l.Append(ctx, "t", recs); err != nil {
		t.Fatalf("Append: %v", err)
	}
	got := eventlogtest.ReadAll(t, l, "t", 0, 0)
	var vals []string
	for _, r := range got {
		vals = append(vals, string(r.Value))
	}
	if strings.Join(vals, ",") != "a,b,c" {
		t.Errorf("partition holds %q, want a,b,c once each", vals)
	}
	for i, r := range recs {
		if r.Offset != int64(i) {
			t.Errorf("record %d: offset %d, want %d", i, r.Offset, i)
		}
	}
}

// Close wakes a waiting Fetch with ErrClosed, and later calls fail with it.
func TestCloseWakesFetch(t *testing.T) {
	ctx := t.Context()
	c := newCluster(t)
	l := openLog(t, c.ListenAddrs(), 1)
	if err := l.CreateTopic(ctx, "t", 1); err != nil {
		t.Fatal(err)
	}
	fetched := make(chan error, 1)
	go func() {
		_, err := l.Fetch(ctx, "t", 0, 0, 1)
		fetched <- err
	}()
	// Wait until the Fetch is waiting at the broker.
	obs := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Observe: true, Count: -1})
	if err := obs.Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-fetched; !errors.Is(err, eventlog.ErrClosed) {
		t.Errorf("waiting Fetch after Close: got %v, want ErrClosed", err)
	}
	if err := l.Append(ctx, "t", []eventlog.Record{rec(0, "x")}); !errors.Is(err, eventlog.ErrClosed) {
		t.Errorf("Append after Close: got %v, want ErrClosed", err)
	}
}

// Fetch follows a partition whose leader moved to another broker.
func TestFetchFollowsLeaderMove(t *testing.T) {
	ctx := t.Context()
	c := newCluster(t, kfake.NumBrokers(3))
	l := openLog(t, c.ListenAddrs(), 3)
	if err := l.CreateTopic(ctx, "t", 1); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx, "t", []eventlog.Record{rec(0, "a")}); err != nil {
		t.Fatal(err)
	}
	if rs, err := l.Fetch(ctx, "t", 0, 0, 10); err != nil || len(rs) != 1 {
		t.Fatalf("Fetch = %v, %v", rs, err)
	}
	old := c.LeaderFor("t", 0)
	if err := c.MoveTopicPartition("t", 0, (old+1)%3); err != nil {
		t.Fatalf("MoveTopicPartition: %v", err)
	}
	if err := l.Append(ctx, "t", []eventlog.Record{rec(0, "b")}); err != nil {
		t.Fatalf("Append after the move: %v", err)
	}
	rs, err := l.Fetch(ctx, "t", 0, 0, 10)
	if err != nil {
		t.Fatalf("Fetch after the move: %v", err)
	}
	var vals []string
	for _, r := range rs {
		vals = append(vals, string(r.Value))
	}
	if strings.Join(vals, ",") != "a,b" {
		t.Errorf("Fetch after the move = %q, want a,b", vals)
	}
}
