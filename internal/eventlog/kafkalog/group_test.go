package kafkalog_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/eventlog/kafkalog"
)

// owner records what a member owns, as its Rebalancer.
type owner struct {
	mu    sync.Mutex
	parts map[int32]bool
	lost  int
}

func (o *owner) PartitionsAssigned(_ context.Context, ps []int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range ps {
		o.parts[p] = true
	}
}

func (o *owner) PartitionsRevoked(_ context.Context, ps []int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range ps {
		delete(o.parts, p)
	}
}

func (o *owner) PartitionsLost(_ context.Context, ps []int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lost += len(ps)
	for _, p := range ps {
		delete(o.parts, p)
	}
}

func (o *owner) owned() []int32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ps []int32
	for p := range o.parts {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMembersSharePartitions: two members split a topic's partitions, each
// partition owned by exactly one; when one leaves, the other owns them all.
// Positions are committed with metadata under the member's generation, and a
// member that left cannot commit any more.
func TestMembersSharePartitions(t *testing.T) {
	c := newCluster(t)
	l := openLog(t, c.ListenAddrs(), 1)
	ctx := t.Context()
	if err := l.CreateTopic(ctx, "clicks", 4); err != nil {
		t.Fatal(err)
	}
	cfg := kafkalog.MemberConfig{Group: "agg", Topic: "clicks", SessionTimeout: 6 * time.Second, RebalanceTimeout: 5 * time.Second}
	join := func() (*kafkalog.Member, *owner, context.CancelFunc, chan error) {
		m, err := l.NewMember(cfg)
		if err != nil {
			t.Fatal(err)
		}
		o := &owner{parts: map[int32]bool{}}
		jctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- m.Join(jctx, o) }()
		return m, o, cancel, done
	}
	ma, a, stopA, doneA := join()
	waitFor(t, "the first member to own every partition", func() bool { return len(a.owned()) == 4 })
	mb, b, stopB, doneB := join()
	defer stopB()
	waitFor(t, "the partitions to be split", func() bool {
		pa, pb := a.owned(), b.owned()
		return len(pa) == 2 && len(pb) == 2 && !slices.ContainsFunc(pa, func(p int32) bool { return slices.Contains(pb, p) })
	})
	mine := b.owned()[0]
	if err := mb.Commit(ctx, mine, 0, "e=7"); err != nil {
		t.Fatalf("owner's commit: %v", err)
	}
	off, md, ok, err := ma.Committed(ctx, mine)
	if err != nil || !ok || off != 0 || md != "e=7" {
		t.Fatalf("Committed: %d %q %v %v, want 0 \"e=7\" true", off, md, ok, err)
	}
	if _, _, ok, err := ma.Committed(ctx, a.owned()[0]); err != nil || ok {
		t.Errorf("Committed of a partition without commits: ok=%v err=%v", ok, err)
	}

	stopA()
	if err := <-doneA; err != nil {
		t.Errorf("Join of the member that left: %v", err)
	}
	waitFor(t, "the remaining member to own every partition", func() bool { return len(b.owned()) == 4 })
	if got := a.owned(); len(got) != 0 {
		t.Errorf("the member that left still owns %v", got)
	}
	// The member that left commits nothing more.
	if err := ma.Commit(ctx, mine, 0, "e=6"); err == nil {
		t.Error("commit by a member that left succeeded")
	}
	if _, md, _, _ := mb.Committed(ctx, mine); md != "e=7" {
		t.Errorf("metadata after the fenced commit: %q", md)
	}
	stopB()
	if err := <-doneB; err != nil {
		t.Errorf("Join: %v", err)
	}
}

// TestOffsetForTime: the first offset whose timestamp is at or after t, with
// out-of-order timestamps, and the end offset when none is that recent.
func TestOffsetForTime(t *testing.T) {
	c := newCluster(t)
	l := openLog(t, c.ListenAddrs(), 1)
	ctx := t.Context()
	if err := l.CreateTopic(ctx, "t", 1); err != nil {
		t.Fatal(err)
	}
	base := time.UnixMilli(1_700_000_000_000)
	var recs []eventlog.Record
	for _, s := range []int{10, 5, 20, 15, 30, 25} {
		recs = append(recs, eventlog.Record{Timestamp: base.Add(time.Duration(s) * time.Second), Value: []byte{byte(s)}})
	}
	if err := l.Append(ctx, "t", recs); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   int
		want int64
	}{{0, 0}, {10, 0}, {11, 2}, {20, 2}, {21, 4}, {26, 4}, {30, 4}, {31, 6}} {
		got, err := l.OffsetForTime(ctx, "t", 0, base.Add(time.Duration(tc.at)*time.Second))
		if err != nil || got != tc.want {
			t.Errorf("OffsetForTime(+%ds) = %d, %v; want %d", tc.at, got, err, tc.want)
		}
	}
}
