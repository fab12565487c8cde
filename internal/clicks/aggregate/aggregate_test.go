package aggregate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/clicks/reference"
	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/eventlog/eventlogtest"
	"github.com/pedal-project/pedal/internal/eventlog/pebblelog"
)

// rowStore records the rows upserted by the aggregator, as the analytics store
// would hold them: the last write of a key wins.
type rowStore struct {
	mu      sync.Mutex
	rows    map[winKey]analytics.Row
	upserts int
	fail    error // returned by Upsert while set
}

func newRowStore() *rowStore { return &rowStore{rows: map[winKey]analytics.Row{}} }

func (s *rowStore) Upsert(ctx context.Context, rows []analytics.Row) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.upserts++
	for _, r := range rows {
		s.rows[winKey{r.AdID, r.Country, uint32(r.Start.Unix() / 60)}] = r
	}
	return nil
}

func (s *rowStore) snapshot() map[winKey]analytics.Row {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[winKey]analytics.Row, len(s.rows))
	for k, v := range s.rows {
		out[k] = v
	}
	return out
}

var errUnused = errors.New("not used by the aggregator")

func (s *rowStore) Series(context.Context, string, string, time.Time, time.Time, analytics.Granularity) ([]analytics.Point, error) {
	return nil, errUnused
}
func (s *rowStore) Top(context.Context, string, time.Time, time.Time, int) ([]analytics.AdClicks, error) {
	return nil, errUnused
}
func (s *rowStore) Quality(context.Context, string, time.Time, time.Time) (analytics.Quality, error) {
	return analytics.Quality{}, errUnused
}
func (s *rowStore) Close() error { return nil }

// stream generates clicks shaped to exercise every rule: duplicates within and
// beyond the horizon, click ids reused on other ads, bots, bursts from a few
// ips, clicks without ip or user agent, late clicks within and beyond the late
// horizon, and out-of-order event times.
type stream struct {
	r    *rand.Rand
	now  int64 // ms
	seq  int
	sent []clicks.Click
	ads  int
}

func newStream(seed uint64, ads int) *stream {
	return &stream{r: rand.New(rand.NewPCG(seed, seed^0x9e37)), now: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).UnixMilli(), ads: ads}
}

var (
	testAgents = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile Safari/604.1",
		"", // unknown
		"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
		"CURL/8.5.0",
	}
	testCountries = []string{"US", "DE", "IN", ""}
)

func (s *stream) next() clicks.Click {
	r := s.r
	s.now += r.Int64N(400)
	if r.IntN(2000) == 0 {
		s.now += r.Int64N(int64(20 * time.Minute / time.Millisecond)) // a gap
	}
	if len(s.sent) > 0 && r.IntN(100) < 8 {
		c := s.sent[r.IntN(len(s.sent))]
		switch r.IntN(4) {
		case 0: // a retry with another event time, maybe beyond the horizon
			c.Time = c.Time.Add(time.Duration(r.Int64N(int64(24*time.Minute))) - 12*time.Minute)
		case 1: // the same click id on another ad is another click
			c.AdID = fmt.Sprintf("ad-%d", r.IntN(s.ads))
		}
		return c
	}
	s.seq++
	ts := s.now - r.Int64N(5000)
	switch x := r.IntN(100); {
	case x < 3:
		ts -= r.Int64N(int64(2 * time.Hour / time.Millisecond)) // late, maybe too late
	case x < 5:
		ts -= int64(time.Hour/time.Millisecond) + r.Int64N(60_000) // near the late horizon
	}
	c := clicks.Click{
		ClickID:    fmt.Sprintf("c-%d", s.seq),
		AdID:       fmt.Sprintf("ad-%d", int(float64(s.ads)*r.Float64()*r.Float64())),
		Time:       time.UnixMilli(ts),
		ReceivedAt: time.UnixMilli(s.now),
		Country:    testCountries[r.IntN(len(testCountries))],
		UserAgent:  testAgents[r.IntN(len(testAgents))],
	}
	if r.IntN(10) > 0 {
		c.IP = netip.AddrFrom4([4]byte{81, 2, 3, byte(r.IntN(12))}) // few ips: bursts
	}
	if r.IntN(20) == 0 { // a burst from one ip on one ad
		c.IP, c.AdID = netip.AddrFrom4([4]byte{81, 2, 3, 200}), "ad-0"
	}
	if r.IntN(50) == 0 {
		c.IP = netip.MustParseAddr("2001:db8::1")
	}
	s.sent = append(s.sent, c)
	return c
}

type fixture struct {
	t     *testing.T
	dir   string
	log   *pebblelog.Log
	store *rowStore
	cfg   Config
	parts int32
}

func newFixture(t *testing.T, parts int32) *fixture {
	t.Helper()
	dir := t.TempDir()
	l, err := pebblelog.Open(filepath.Join(dir, "log"), pebblelog.Config{MinFreeBytes: -1}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if err := l.CreateTopic(t.Context(), clicks.Topic, parts); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, dir: dir, log: l, store: newRowStore(), parts: parts,
		cfg: Config{FlushInterval: 5 * time.Millisecond, FetchMax: 97}}
}

func (f *fixture) append(cs []clicks.Click) {
	f.t.Helper()
	recs := make([]eventlog.Record, len(cs))
	for i := range cs {
		recs[i] = eventlog.Record{
			Partition: eventlog.PartitionForString(cs[i].AdID, f.parts),
			Timestamp: cs[i].Time,
			Value:     cs[i].AppendBinary(nil),
		}
	}
	if err := f.log.Append(f.t.Context(), clicks.Topic, recs); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) open() *Aggregator {
	f.t.Helper()
	a, err := Open(f.t.Context(), filepath.Join(f.dir, "state"), f.cfg, f.log, f.store, nil, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return a
}

// runUntilCaughtUp runs a until every partition's committed offset reaches the
// log's end, then stops it and closes it.
func (f *fixture) runUntilCaughtUp(a *Aggregator) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(f.t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := a.Status(f.t.Context())
		if err != nil {
			f.t.Fatal(err)
		}
		caught := true
		for _, p := range st.Partitions {
			caught = caught && p.CommittedOffset == p.LogEndOffset
		}
		if caught {
			break
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("not caught up: %+v", st)
		}
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		f.t.Fatalf("Run: %v", err)
	}
	if err := a.Close(); err != nil {
		f.t.Fatal(err)
	}
}

// expected runs the reference model over the log, partition by partition.
func (f *fixture) expected() reference.Result {
	f.t.Helper()
	rules := reference.DefaultRules(clicks.DefaultBotSubstrings())
	var results []reference.Result
	for part := range f.parts {
		m := reference.New(rules)
		for _, rec := range eventlogtest.ReadAll(f.t, f.log, clicks.Topic, part, 0) {
			c, err := clicks.Decode(rec.Value)
			if err != nil {
				f.t.Fatal(err)
			}
			rc := reference.Click{ClickID: c.ClickID, AdID: c.AdID, Country: c.Country, UserAgent: c.UserAgent, Time: c.Time}
			if c.IP.IsValid() {
				rc.IP = c.IP.String()
			}
			m.Add(rc)
		}
		results = append(results, m.Result())
	}
	return reference.Merge(results...)
}

// check compares the store with the reference model: every window's valid and
// invalid clicks, and the totals of every verdict.
func (f *fixture) check() {
	f.t.Helper()
	want := f.expected()
	got := map[reference.WindowKey]reference.Counts{}
	verdicts := map[reference.Verdict]int64{}
	for _, r := range f.store.snapshot() {
		if r.Clicks != 0 || r.Invalid() != 0 {
			got[reference.WindowKey{AdID: r.AdID, Country: r.Country, Start: r.Start}] = reference.Counts{Clicks: r.Clicks, Invalid: r.Invalid()}
		}
		verdicts[reference.Valid] += r.Clicks
		verdicts[reference.BotUserAgent] += r.Bot
		verdicts[reference.IPRate] += r.IPRate
		verdicts[reference.Duplicate] += r.Duplicates
		verdicts[reference.TooLate] += r.TooLate
	}
	if d := cmp.Diff(want.Windows, got); d != "" {
		f.t.Errorf("windows differ from the reference model (-want +got):\n%s", d)
	}
	for v, n := range want.Verdicts {
		if verdicts[v] != n {
			f.t.Errorf("%s: %d in the store, %d in the reference model", v, verdicts[v], n)
		}
	}
	for _, v := range []reference.Verdict{reference.Duplicate, reference.TooLate, reference.BotUserAgent, reference.IPRate} {
		if want.Verdicts[v] == 0 {
			f.t.Errorf("the stream has no %s click; it does not test that rule", v)
		}
	}
}

func TestMatchesReferenceModel(t *testing.T) {
	f := newFixture(t, 4)
	s := newStream(1, 40)
	for range 40 {
		batch := make([]clicks.Click, 250)
		for i := range batch {
			batch[i] = s.next()
		}
		f.append(batch)
	}
	f.runUntilCaughtUp(f.open())
	f.check()
}

// TestRestartsMatchReferenceModel stops and reopens the aggregator between
// appends; results must not depend on where commits fall.
func TestRestartsMatchReferenceModel(t *testing.T) {
	f := newFixture(t, 3)
	s := newStream(2, 25)
	for round := range 12 {
		batch := make([]clicks.Click, 400+round*37)
		for i := range batch {
			batch[i] = s.next()
		}
		f.append(batch)
		f.runUntilCaughtUp(f.open())
	}
	f.check()
}

// TestReprocessingLeavesStoreUnchanged processes the log, then throws the
// aggregator's state away and processes the whole log again: every window
// total is rewritten with the same numbers.
func TestReprocessingLeavesStoreUnchanged(t *testing.T) {
	f := newFixture(t, 2)
	s := newStream(3, 30)
	for range 10 {
		batch := make([]clicks.Click, 300)
		for i := range batch {
			batch[i] = s.next()
		}
		f.append(batch)
	}
	f.runUntilCaughtUp(f.open())
	before := f.store.snapshot()
	upserts := f.store.upserts
	if err := os.RemoveAll(filepath.Join(f.dir, "state")); err != nil {
		t.Fatal(err)
	}
	f.runUntilCaughtUp(f.open())
	if f.store.upserts == upserts {
		t.Fatal("nothing was reprocessed")
	}
	if d := cmp.Diff(before, f.store.snapshot(), cmp.AllowUnexported(winKey{})); d != "" {
		t.Errorf("reprocessing changed the store (-before +after):\n%s", d)
	}
	f.check()
}

// TestRepublishesAfterLostPublication: state committed but its upsert never
// reached the store (a crash between the two) is published at the next start.
func TestRepublishesAfterLostPublication(t *testing.T) {
	f := newFixture(t, 1)
	s := newStream(4, 10)
	batch := make([]clicks.Click, 500)
	for i := range batch {
		batch[i] = s.next()
	}
	f.append(batch)
	f.runUntilCaughtUp(f.open())
	want := f.store.snapshot()

	// Simulate the crash: the store lost everything and the publication
	// marker says the last commit was not published.
	f.store = newRowStore()
	a := f.open()
	if err := a.db.Set(partKey(kindPublished, 0), meta{next: 1}.encode(), nil); err != nil {
		t.Fatal(err)
	}
	a.Close()
	f.runUntilCaughtUp(f.open())
	got := f.store.snapshot()
	// Windows older than the late horizon left the state when they became
	// immutable; every window the state still holds must be back, with the
	// totals published before.
	a = f.open()
	held := a.parts[0].windows
	a.Close()
	if len(held) == 0 {
		t.Fatal("the state holds no window; the test checks nothing")
	}
	for k := range held {
		if g, ok := got[k]; !ok || g != want[k] {
			t.Errorf("window %v: republished %+v (%v), want %+v", k, g, ok, want[k])
		}
	}
	if len(got) != len(held) {
		t.Errorf("republished %d windows, the state holds %d", len(got), len(held))
	}
}

// TestSplitPartitions: two aggregators owning half the partitions each, with
// their own state, produce together the totals of one owning all.
func TestSplitPartitions(t *testing.T) {
	f := newFixture(t, 4)
	s := newStream(4, 30)
	for range 20 {
		batch := make([]clicks.Click, 250)
		for i := range batch {
			batch[i] = s.next()
		}
		f.append(batch)
	}
	for i, parts := range [][]int32{{0, 2}, {1, 3}} {
		f.cfg.Partitions = parts
		a, err := Open(t.Context(), filepath.Join(f.dir, fmt.Sprintf("state-%d", i)), f.cfg, f.log, f.store, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := a.Status(t.Context()); err != nil || len(st.Partitions) != 2 || st.Partitions[0].Partition != parts[0] {
			t.Fatalf("status of an aggregator of %v: %+v, %v", parts, st.Partitions, err)
		}
		f.runUntilCaughtUp(a)
	}
	f.check()

	// An ad of a partition another aggregator owns has no watermark here.
	f.cfg.Partitions = []int32{0}
	a, err := Open(t.Context(), filepath.Join(f.dir, "state-0"), f.cfg, f.log, f.store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for ad := range 30 {
		id := fmt.Sprintf("ad-%d", ad)
		if _, ok := a.Watermark(id); ok != (eventlog.PartitionForString(id, 4) == 0) {
			t.Errorf("Watermark(%s) ok=%v, partition %d", id, ok, eventlog.PartitionForString(id, 4))
		}
	}
	f.cfg.Partitions = []int32{4}
	if _, err := Open(t.Context(), filepath.Join(f.dir, "state-x"), f.cfg, f.log, f.store, nil, nil); err == nil {
		t.Error("an aggregator of partition 4 of 4 opened")
	}
}

// stallingStore blocks the first Upsert after arm until its context ends,
// as a publication interrupted by a stop.
type stallingStore struct {
	*rowStore
	mu      sync.Mutex
	armed   bool
	stalled chan struct{}
}

func (s *stallingStore) Upsert(ctx context.Context, rows []analytics.Row) error {
	s.mu.Lock()
	stall := s.armed
	s.armed = false
	s.mu.Unlock()
	if stall {
		close(s.stalled)
		<-ctx.Done()
		return ctx.Err()
	}
	return s.rowStore.Upsert(ctx, rows)
}

// TestStopDuringPublishLosesNothing stops the aggregator while a publication
// is in flight: the totals it carried must still reach the store, on the way
// out or at the next start, not be skipped by a later empty publication.
func TestStopDuringPublishLosesNothing(t *testing.T) {
	f := newFixture(t, 1)
	s := newStream(9, 20)
	batch := make([]clicks.Click, 400)
	for i := range batch {
		batch[i] = s.next()
	}
	f.append(batch)
	store := &stallingStore{rowStore: f.store, armed: true, stalled: make(chan struct{})}
	a, err := Open(t.Context(), filepath.Join(f.dir, "state"), f.cfg, f.log, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	<-store.stalled
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	a.Close()
	f.runUntilCaughtUp(f.open())
	f.check()
}
