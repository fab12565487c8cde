package chstore_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/analytics/analyticstest"
	"github.com/pedal-project/pedal/internal/analytics/chstore"
	"github.com/pedal-project/pedal/internal/analytics/chtest"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func open(t *testing.T, cfg chstore.Config, reg prometheus.Registerer) *chstore.Store {
	t.Helper()
	s, err := chstore.Open(t.Context(), cfg, discard(), reg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	cfgs := map[analytics.Store]chstore.Config{}
	analyticstest.Run(t, analyticstest.Harness{
		Open: func(t *testing.T) analytics.Store {
			cfg := chstore.Config{DSN: chtest.Start(t), SpoolDir: t.TempDir(), FlushInterval: 5 * time.Millisecond}
			s := open(t, cfg, prometheus.NewRegistry())
			cfgs[s] = cfg
			return s
		},
		Reopen: func(t *testing.T, s analytics.Store) analytics.Store {
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			s2 := open(t, cfgs[s], prometheus.NewRegistry())
			cfgs[s2] = cfgs[s]
			return s2
		},
	})
}

// gather returns the value of each metric of reg without labels.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			out[mf.GetName()] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return 0
}

// eventually polls cond, against a real server, until it holds or 60s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 60s", what)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var base = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

func rowsOf(gen, n int) []analytics.Row {
	rows := make([]analytics.Row, n)
	for i := range rows {
		rows[i] = analytics.Row{
			AdID: fmt.Sprintf("ad-%d", i%7), Country: []string{"US", "DE", ""}[i%3],
			Start:  base.Add(time.Duration(i) * time.Minute),
			Clicks: int64(gen*1000 + i), Bot: int64(gen), Duplicates: int64(i % 2),
		}
	}
	return rows
}

// TestOutage kills ClickHouse: Upserts go on into the spool, the breaker
// opens, and when the server is back the spool drains with nothing lost and
// nothing doubled.
func TestOutage(t *testing.T) {
	srv := chtest.NewServer(t)
	reg := prometheus.NewRegistry()
	cfg := chstore.Config{
		DSN: srv.Database(t), SpoolDir: t.TempDir(), FlushInterval: 20 * time.Millisecond,
		InsertTimeout: 2 * time.Second,
	}
	s := open(t, cfg, reg)
	defer s.Close()
	ctx := t.Context()
	m := analyticstest.Model{}
	upsert := func(rows []analytics.Row) {
		t.Helper()
		if err := s.Upsert(ctx, rows); err != nil {
			t.Fatalf("Upsert: %v", err)
		}
		m.Add(rows...)
	}
	upsert(rowsOf(0, 100))

	srv.Kill(t)
	for gen := 1; gen <= 10; gen++ {
		upsert(rowsOf(gen, 50+gen*10)) // rewrites earlier keys, adds new ones
	}
	got := gather(t, reg)
	if got["pedal_analytics_ch_spool_rows"] == 0 || got["pedal_analytics_ch_spool_bytes"] == 0 {
		t.Errorf("spool metrics while ClickHouse is down: %v, want rows and bytes", got)
	}
	if got["pedal_analytics_ch_breaker_state"] != 1 {
		t.Errorf("breaker state while ClickHouse is down = %v, want 1 (open)", got["pedal_analytics_ch_breaker_state"])
	}
	if got["pedal_analytics_ch_insert_errors_total"] == 0 {
		t.Errorf("no insert errors counted while ClickHouse is down")
	}
	t.Logf("while down: %v", got)

	// A restart of the store while ClickHouse is down would need Open to
	// reach it; instead the same store sees the server come back.
	srv.Restart(t)
	eventually(t, "spool drains", func() bool { return gather(t, reg)["pedal_analytics_ch_spool_rows"] == 0 })
	for gen := 11; gen <= 13; gen++ { // newer than everything spooled; closes the breaker
		upsert(rowsOf(gen, 20))
	}
	analyticstest.CheckAll(t, s, m, base.Add(-time.Hour), base.Add(48*time.Hour))
	got = gather(t, reg)
	if got["pedal_analytics_ch_breaker_state"] != 0 {
		t.Errorf("breaker state after recovery = %v, want 0 (closed)", got["pedal_analytics_ch_breaker_state"])
	}
	t.Logf("after recovery: %v", got)
}

// TestSpoolSurvivesReopen closes a store while ClickHouse is down; the next
// Open drains what the first one spooled. A full spool refuses Upserts.
func TestSpoolSurvivesReopen(t *testing.T) {
	srv := chtest.NewServer(t)
	cfg := chstore.Config{
		DSN: srv.Database(t), SpoolDir: t.TempDir(), FlushInterval: 20 * time.Millisecond,
		InsertTimeout: 2 * time.Second, MaxSpoolBytes: 64 << 10,
	}
	s := open(t, cfg, nil)
	m := analyticstest.Model{}
	srv.Kill(t)
	for gen := range 3 {
		rows := rowsOf(gen, 40)
		if err := s.Upsert(t.Context(), rows); err != nil {
			t.Fatalf("Upsert: %v", err)
		}
		m.Add(rows...)
	}
	if err := s.Upsert(t.Context(), rowsOf(9, 5000)); !errors.Is(err, chstore.ErrSpoolFull) {
		t.Errorf("Upsert beyond MaxSpoolBytes while ClickHouse is down: %v, want ErrSpoolFull", err)
	}
	if err := s.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	srv.Restart(t)
	reg := prometheus.NewRegistry()
	s = open(t, cfg, reg)
	defer s.Close()
	eventually(t, "spool drains", func() bool { return gather(t, reg)["pedal_analytics_ch_spool_rows"] == 0 })
	analyticstest.CheckAll(t, s, m, base.Add(-time.Hour), base.Add(48*time.Hour))
}

// TestBatching checks that Upserts arriving together share INSERTs: at most
// about one per FlushInterval.
func TestBatching(t *testing.T) {
	reg := prometheus.NewRegistry()
	const interval = 500 * time.Millisecond
	s := open(t, chstore.Config{DSN: chtest.Start(t), SpoolDir: t.TempDir(), FlushInterval: interval}, reg)
	defer s.Close()
	const writers, calls = 20, 5
	m := analyticstest.Model{}
	var all [writers][]analytics.Row
	errs := make(chan error, writers)
	start := time.Now()
	for w := range writers {
		for c := range calls {
			rows := rowsOf(c, 30)
			for i := range rows {
				rows[i].AdID = fmt.Sprintf("w%d-%s", w, rows[i].AdID)
			}
			all[w] = append(all[w], rows...)
		}
		go func() {
			for c := range calls {
				if err := s.Upsert(t.Context(), all[w][c*30:(c+1)*30]); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatalf("Upsert: %v", err)
		}
	}
	elapsed := time.Since(start)
	for w := range writers {
		m.Add(all[w]...)
	}
	inserts := gather(t, reg)["pedal_analytics_ch_inserts_total"]
	// Each writer's calls are sequential, so there are at least calls
	// INSERTs; at most one per interval, plus the first.
	if max := float64(elapsed/interval) + 1; inserts > max || inserts < calls {
		t.Errorf("%d Upserts in %v made %v INSERTs, want %d to %v", writers*calls, elapsed, inserts, calls, max)
	}
	t.Logf("%d Upserts in %v made %v INSERTs", writers*calls, elapsed, inserts)
	analyticstest.CheckAll(t, s, m, base.Add(-time.Hour), base.Add(48*time.Hour))
}

// TestOpenWhileDown opens a store while ClickHouse is down: Open succeeds,
// Upserts are spooled, and the table is created and filled once the server
// answers.
func TestOpenWhileDown(t *testing.T) {
	srv := chtest.NewServer(t)
	cfg := chstore.Config{
		DSN: srv.Database(t), SpoolDir: t.TempDir(), FlushInterval: 20 * time.Millisecond,
		InsertTimeout: 2 * time.Second,
	}
	srv.Kill(t)
	reg := prometheus.NewRegistry()
	s := open(t, cfg, reg)
	defer s.Close()
	m := analyticstest.Model{}
	for gen := range 3 {
		rows := rowsOf(gen, 40)
		if err := s.Upsert(t.Context(), rows); err != nil {
			t.Fatalf("Upsert: %v", err)
		}
		m.Add(rows...)
	}
	if got := gather(t, reg)["pedal_analytics_ch_spool_rows"]; got != 120 {
		t.Errorf("spooled rows = %v, want 120", got)
	}
	srv.Restart(t)
	eventually(t, "spool drains", func() bool { return gather(t, reg)["pedal_analytics_ch_spool_rows"] == 0 })
	analyticstest.CheckAll(t, s, m, base.Add(-time.Hour), base.Add(48*time.Hour))
}

// TestOpenRefused checks that Open fails at once on a refusal that is not an
// outage (an unknown user).
func TestOpenRefused(t *testing.T) {
	dsn := strings.Replace(chtest.Start(t), "clickhouse://", "clickhouse://nobody:wrong@", 1)
	s, err := chstore.Open(t.Context(), chstore.Config{DSN: dsn, SpoolDir: t.TempDir()}, discard(), nil)
	if err == nil {
		s.Close()
		t.Fatal("Open with an unknown user: no error")
	}
	t.Logf("Open with an unknown user: %v", err)
}

// TestEpochFencing plays a zombie: a writer whose partitions moved to one
// with a higher epoch writes stale totals after its successor; they must not
// win, whether they arrive directly or from another store (another process),
// and a writer of a later epoch replaces both. A store opened later starts
// its epochs above every version it finds.
func TestEpochFencing(t *testing.T) {
	dsn := chtest.Start(t)
	cfg := chstore.Config{DSN: dsn, SpoolDir: t.TempDir(), FlushInterval: 5 * time.Millisecond}
	a, b := open(t, cfg, nil), open(t, chstore.Config{DSN: dsn, SpoolDir: t.TempDir(), FlushInterval: 5 * time.Millisecond}, nil)
	defer a.Close()
	defer b.Close()
	ctx := t.Context()

	// Clock-versioned totals, then a successor's: its epoch beats the clock.
	if err := a.Upsert(ctx, rowsOf(1, 30)); err != nil {
		t.Fatal(err)
	}
	old := a.MinEpoch()
	next := max(old, b.MinEpoch()) + 1
	if err := b.UpsertEpoch(ctx, next, rowsOf(2, 30)); err != nil {
		t.Fatal(err)
	}
	// The zombie (epoch old) writes later, from its own store, twice.
	for range 2 {
		if err := a.UpsertEpoch(ctx, old, rowsOf(3, 30)); err != nil {
			t.Fatal(err)
		}
	}
	// So does a plain Upsert of the clock, which a takeover fenced too.
	if err := a.Upsert(ctx, rowsOf(4, 30)); err != nil {
		t.Fatal(err)
	}
	m := analyticstest.Model{}
	m.Add(rowsOf(2, 30)...)
	analyticstest.CheckAll(t, a, m, base.Add(-time.Hour), base.Add(48*time.Hour))

	// Within an epoch, the last write and the last row of a call win.
	later := append(rowsOf(5, 30), rowsOf(6, 30)...)
	if err := b.UpsertEpoch(ctx, next, later); err != nil {
		t.Fatal(err)
	}
	m = analyticstest.Model{}
	m.Add(rowsOf(6, 30)...)
	analyticstest.CheckAll(t, a, m, base.Add(-time.Hour), base.Add(48*time.Hour))

	// A store opened now starts above the table's versions.
	c := open(t, chstore.Config{DSN: dsn, SpoolDir: t.TempDir(), FlushInterval: 5 * time.Millisecond}, nil)
	defer c.Close()
	if got := c.MinEpoch(); got <= next {
		t.Errorf("MinEpoch of a new store: %d, want above the table's epoch %d", got, next)
	}
	if err := a.UpsertEpoch(ctx, 0, rowsOf(7, 1)); err == nil {
		t.Error("UpsertEpoch with epoch 0 succeeded")
	}
}
