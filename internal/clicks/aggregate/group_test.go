package aggregate

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/clicks"
)

// fencedStore is a rowStore that fences writers by epoch, as ClickHouse does
// with versions: a row never replaces one written with a higher epoch.
type fencedStore struct {
	*rowStore
	epochs  map[winKey]uint64
	refused int // rows refused because a higher epoch wrote them
}

func (s *fencedStore) MinEpoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var m uint64
	for _, e := range s.epochs {
		m = max(m, e)
	}
	return m + 1
}

func (s *fencedStore) UpsertEpoch(ctx context.Context, epoch uint64, rows []analytics.Row) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rows {
		k := winKey{r.AdID, r.Country, uint32(r.Start.Unix() / 60)}
		if s.epochs[k] > epoch {
			s.refused++
			continue
		}
		s.epochs[k] = epoch
		s.rows[k] = r
	}
	return nil
}

// gatedStore holds a writer's upserts while the test holds its gate.
type gatedStore struct {
	*fencedStore
	gate sync.RWMutex
}

func (s *gatedStore) UpsertEpoch(ctx context.Context, epoch uint64, rows []analytics.Row) error {
	s.gate.RLock()
	defer s.gate.RUnlock()
	return s.fencedStore.UpsertEpoch(ctx, epoch, rows)
}

var errFenced = errors.New("fenced")

// fakeGroup is a consumer group over a pebblelog: the test assigns the
// partitions; commits carry the generation of the member's last assignment
// and are refused once the group has moved on without it.
type fakeGroup struct {
	f       *fixture
	mu      sync.Mutex
	gen     int
	commits map[int32][2]string // offset, metadata
}

type fakeMember struct {
	g      *fakeGroup
	gen    int
	joined chan struct{}
}

func (m *fakeMember) Join(ctx context.Context, _ Rebalancer) error {
	close(m.joined)
	<-ctx.Done()
	return nil
}

func (m *fakeMember) Committed(_ context.Context, part int32) (int64, string, bool, error) {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	c, ok := m.g.commits[part]
	if !ok {
		return 0, "", false, nil
	}
	var off int64
	fmt.Sscan(c[0], &off)
	return off, c[1], true, nil
}

func (m *fakeMember) Commit(_ context.Context, part int32, offset int64, md string) error {
	m.g.mu.Lock()
	defer m.g.mu.Unlock()
	if m.gen != m.g.gen {
		return errFenced
	}
	m.g.commits[part] = [2]string{fmt.Sprint(offset), md}
	return nil
}

func (m *fakeMember) OffsetForTime(ctx context.Context, part int32, t time.Time) (int64, error) {
	start, end, err := m.g.f.log.Offsets(ctx, clicks.Topic, part)
	if err != nil {
		return 0, err
	}
	for off := start; off < end; {
		recs, err := m.g.f.log.Fetch(ctx, clicks.Topic, part, off, 1000)
		if err != nil {
			return 0, err
		}
		for _, r := range recs {
			if !r.Timestamp.Before(t) {
				return r.Offset, nil
			}
			off = r.Offset + 1
		}
	}
	return end, nil
}

// groupAggregator is an aggregator of the fake group, running.
type groupAggregator struct {
	*Aggregator
	member *fakeMember
	stop   context.CancelFunc
	done   chan error
}

func (g *fakeGroup) start(t *testing.T, name string, store analytics.Store) *groupAggregator {
	t.Helper()
	m := &fakeMember{g: g, gen: g.gen, joined: make(chan struct{})}
	cfg := g.f.cfg
	cfg.Membership = m
	a, err := Open(t.Context(), filepath.Join(g.f.dir, name), cfg, g.f.log, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ga := &groupAggregator{Aggregator: a, member: m, stop: cancel, done: make(chan error, 1)}
	go func() { ga.done <- a.Run(ctx) }()
	<-m.joined
	t.Cleanup(func() {
		cancel()
		if err := <-ga.done; err != nil {
			t.Errorf("Run of %s: %v", name, err)
		}
		a.Close()
	})
	return ga
}

// rebalance starts a new generation; members keep up only if told.
func (g *fakeGroup) rebalance(members ...*groupAggregator) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gen++
	for _, m := range members {
		m.member.gen = g.gen
	}
}

// waitCaughtUp waits until a owns parts and has processed them to the end.
func waitCaughtUp(t *testing.T, a *groupAggregator, parts ...int32) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := a.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, p := range st.Partitions {
			for _, want := range parts {
				if p.Partition == want && p.CommittedOffset == p.LogEndOffset {
					done++
				}
			}
		}
		if done == len(parts) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not caught up on %v: %+v", parts, st.Partitions)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestGroupTakeoversMatchReferenceModel moves partitions between aggregators
// of a consumer group: handed over cleanly (the new owner rebuilds from the
// log), then taken back from an owner that is not told (a zombie that goes on
// processing and publishing). The totals must equal the reference model's,
// the zombie's stale writes must be refused, and its commits too.
func TestGroupTakeoversMatchReferenceModel(t *testing.T) {
	f := newFixture(t, 4)
	store := &fencedStore{rowStore: f.store, epochs: map[winKey]uint64{}}
	g := &fakeGroup{f: f, gen: 1, commits: map[int32][2]string{}}
	s := newStream(7, 30)
	appendN := func(n int) {
		for range n {
			batch := make([]clicks.Click, 250)
			for i := range batch {
				batch[i] = s.next()
			}
			f.append(batch)
		}
	}
	ctx := t.Context()

	a := g.start(t, "state-a", store)
	a.PartitionsAssigned(ctx, []int32{0, 1, 2, 3})
	appendN(16)
	waitCaughtUp(t, a, 0, 1, 2, 3)

	// A clean handover: a gives 2 and 3 to b, which has no state.
	g.rebalance(a)
	a.PartitionsRevoked(ctx, []int32{2, 3})
	bStore := &gatedStore{fencedStore: store}
	b := g.start(t, "state-b", bStore)
	b.PartitionsAssigned(ctx, []int32{2, 3})
	appendN(8)
	waitCaughtUp(t, a, 0, 1)
	waitCaughtUp(t, b, 2, 3)
	if n := testutil.ToFloat64(b.m.replayed); n == 0 {
		t.Error("b took over without replaying the log")
	}

	// b stalls past its session (its writes held): the group moves on
	// without telling it, and a takes 2 and 3 back while b goes on. b's
	// writes then arrive after a's.
	g.rebalance(a)
	bStore.gate.Lock()
	appendN(8)
	a.PartitionsAssigned(ctx, []int32{2, 3})
	waitCaughtUp(t, a, 0, 1, 2, 3)
	bStore.gate.Unlock()
	waitCaughtUp(t, b, 2, 3) // the zombie processed the new clicks too
	if err := b.member.Commit(ctx, 2, 0, ""); !errors.Is(err, errFenced) {
		t.Fatalf("the zombie's member is not fenced: %v", err)
	}
	store.mu.Lock()
	refused := store.refused
	store.mu.Unlock()
	if refused == 0 {
		t.Error("the zombie published nothing after the takeover; the test did not exercise fencing")
	}
	b.PartitionsLost(ctx, []int32{2, 3})
	f.check()
	if _, md, _, _ := a.member.Committed(ctx, 2); md == "" {
		t.Error("no position metadata committed")
	} else if p, err := parsePosition(md); err != nil || p.epoch == 0 || !p.hasMax {
		t.Errorf("committed position %q: %+v %v", md, p, err)
	}
}

// TestPositionMetadata round-trips the committed metadata and refuses
// another writer's.
func TestPositionMetadata(t *testing.T) {
	for _, p := range []position{{epoch: 1}, {epoch: 1 << 40, hasMax: true, maxTS: 1764504000123}, {epoch: 7, hasMax: true, maxTS: -5}} {
		got, err := parsePosition(p.String())
		if err != nil || got != p {
			t.Errorf("parsePosition(%q) = %+v, %v; want %+v", p.String(), got, err, p)
		}
	}
	for _, s := range []string{"", "kafka-streams", "pedal/1 epoch=x", "pedal/1 max=1.5"} {
		if _, err := parsePosition(s); err == nil {
			t.Errorf("parsePosition(%q) succeeded", s)
		}
	}
}
