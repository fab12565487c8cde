package aggregate

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/eventlog/pebblelog"
)

// BenchmarkAggregate measures the aggregator alone: b.N clicks, already in an
// 8-partition log, are processed until every partition has committed and
// published them. The clicks are shaped like loadgen's: 10,000 ads, unique
// click ids, 1% duplicates, 2% bots, event times advancing at 350,000/s.
func BenchmarkAggregate(b *testing.B) {
	const parts = 8
	dir := b.TempDir()
	l, err := pebblelog.Open(filepath.Join(dir, "log"), pebblelog.Config{MinFreeBytes: -1}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	if err := l.CreateTopic(ctx, clicks.Topic, parts); err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	recs := make([]eventlog.Record, 0, 5000)
	for i := 0; i < b.N; i++ {
		id := i
		if i%100 == 99 {
			id = i - 50 // a duplicate
		}
		c := clicks.Click{
			ClickID:    fmt.Sprintf("lg-bench-%d", id),
			AdID:       fmt.Sprintf("ad-%d", (id*7919)%10000),
			Time:       t0.Add(time.Duration(id) * time.Second / 350000).Truncate(time.Millisecond),
			ReceivedAt: t0.Add(time.Duration(i) * time.Second / 350000).Truncate(time.Millisecond),
			IP:         netip.AddrFrom4([4]byte{81, byte(id >> 16), byte(id >> 8), byte(id)}),
			Country:    "US",
			UserAgent:  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		}
		if id%50 == 7 {
			c.UserAgent = "curl/8.5.0"
		}
		recs = append(recs, eventlog.Record{Partition: eventlog.PartitionForString(c.AdID, parts), Timestamp: c.Time, Value: c.AppendBinary(nil)})
		if len(recs) == cap(recs) || i == b.N-1 {
			if err := l.Append(ctx, clicks.Topic, recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	a, err := Open(ctx, filepath.Join(dir, "state"), Config{}, l, newRowStore(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx) }()
	for {
		st, err := a.Status(ctx)
		if err != nil {
			b.Fatal(err)
		}
		caught := true
		for _, p := range st.Partitions {
			caught = caught && p.CommittedOffset == p.LogEndOffset
		}
		if caught {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "clicks/s")
	var keys, bytes int
	for _, p := range a.parts {
		keys += p.fps.Len()
		bytes += p.fps.Bytes()
	}
	if keys > 0 {
		b.ReportMetric(float64(bytes)/float64(keys), "dedupB/key")
	}
	a.Close()
}

// BenchmarkTakeoverRebuild measures a partition moving to an aggregator
// without its state: b.N clicks of one partition, shaped as in
// BenchmarkAggregate, replayed from the log into fresh state up to the
// previous owner's committed position.
func BenchmarkTakeoverRebuild(b *testing.B) {
	dir := b.TempDir()
	l, err := pebblelog.Open(filepath.Join(dir, "log"), pebblelog.Config{MinFreeBytes: -1}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	if err := l.CreateTopic(ctx, clicks.Topic, 1); err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	recs := make([]eventlog.Record, 0, 5000)
	var maxTS time.Time
	for i := 0; i < b.N; i++ {
		id := i
		if i%100 == 99 {
			id = i - 50
		}
		c := clicks.Click{
			ClickID:   fmt.Sprintf("lg-bench-%d", id),
			AdID:      fmt.Sprintf("ad-%d", (id*7919)%10000),
			Time:      t0.Add(time.Duration(id) * time.Second / 5500).Truncate(time.Millisecond), // a partition's share of 350,000/s over 64
			IP:        netip.AddrFrom4([4]byte{81, byte(id >> 16), byte(id >> 8), byte(id)}),
			Country:   "US",
			UserAgent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		}
		c.ReceivedAt = c.Time
		if c.Time.After(maxTS) {
			maxTS = c.Time
		}
		recs = append(recs, eventlog.Record{Timestamp: c.Time, Value: c.AppendBinary(nil)})
		if len(recs) == cap(recs) || i == b.N-1 {
			if err := l.Append(ctx, clicks.Topic, recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	g := &fakeGroup{f: &fixture{log: l}, gen: 1, commits: map[int32][2]string{
		0: {fmt.Sprint(b.N), position{epoch: 1, hasMax: true, maxTS: maxTS.UnixMilli()}.String()},
	}}
	cfg := Config{Membership: &fakeMember{g: g, gen: 1}}
	a, err := Open(ctx, filepath.Join(dir, "state"), cfg, l, newRowStore(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	b.ResetTimer()
	p, err := a.takeOver(ctx, 0)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if p.next != int64(b.N) {
		b.Fatalf("rebuilt to %d, want %d", p.next, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
