package embedstore

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	gocmp "github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/analytics/analyticstest"
)

func testConfig() Config {
	return Config{Fatal: func(msg string) { panic(msg) }}
}

// harness runs the suite on stores in temporary directories; with mergeMin
// above zero, blocks merge their deltas as soon as they pass it.
func harness(mergeMin int) analyticstest.Harness {
	var mu sync.Mutex
	dirs := map[analytics.Store]string{}
	open := func(t *testing.T, dir string) analytics.Store {
		s, err := Open(dir, testConfig(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if mergeMin > 0 {
			s.t.mergeMin = mergeMin
		}
		mu.Lock()
		dirs[s] = dir
		mu.Unlock()
		return s
	}
	return analyticstest.Harness{
		Open: func(t *testing.T) analytics.Store { return open(t, t.TempDir()) },
		Reopen: func(t *testing.T, s analytics.Store) analytics.Store {
			mu.Lock()
			dir := dirs[s]
			mu.Unlock()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, dir)
		},
	}
}

func TestConformance(t *testing.T) {
	analyticstest.Run(t, harness(0))
}

// TestConformanceMergingOften runs the suite with blocks merging their deltas
// at a few rows, so that lookups, queries and upserts meet sorted rows, deltas
// and both at once.
func TestConformanceMergingOften(t *testing.T) {
	analyticstest.Run(t, harness(2))
}

func minute(m int) time.Time {
	return time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC).Add(time.Duration(m) * time.Minute)
}

func TestDeleteBefore(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	rng := rand.New(rand.NewPCG(5, 6))
	m := analyticstest.Model{}
	var rows []analytics.Row
	for range 500 {
		rows = append(rows, analytics.Row{
			AdID:    []string{"a", "b", "c", "d"}[rng.IntN(4)],
			Country: []string{"US", "DE", ""}[rng.IntN(3)],
			Start:   minute(rng.IntN(120)),
			Clicks:  rng.Int64N(100),
			Bot:     rng.Int64N(3),
		})
	}
	// Ad "old" has rows only before the cutoff: its number is freed.
	rows = append(rows, analytics.Row{AdID: "old", Country: "FR", Start: minute(3), Clicks: 9})
	if err := s.Upsert(t.Context(), rows); err != nil {
		t.Fatal(err)
	}
	m.Add(rows...)
	cutoff := minute(60).Add(-time.Second) // inside minute 59: rows of minute 59 stay
	wantDeleted := 0
	for k, r := range m {
		if r.Start.Before(cutoff) {
			delete(m, k)
			wantDeleted++
		}
	}
	n, err := s.DeleteBefore(t.Context(), cutoff)
	if err != nil {
		t.Fatal(err)
	}
	if n != wantDeleted {
		t.Errorf("DeleteBefore deleted %d rows, want %d", n, wantDeleted)
	}
	analyticstest.CheckAll(t, s, m, minute(0), minute(120))
	if _, ok := s.t.ads.lookup("old"); ok {
		t.Errorf("ad %q still numbered after its rows were deleted", "old")
	}
	if n, err := s.DeleteBefore(t.Context(), cutoff); err != nil || n != 0 {
		t.Errorf("second DeleteBefore = %d, %v; want 0, nil", n, err)
	}

	// Freed numbers are reused by new ads, which must not inherit anything.
	more := []analytics.Row{{AdID: "new", Country: "FR", Start: minute(100), Clicks: 5}}
	if err := s.Upsert(t.Context(), more); err != nil {
		t.Fatal(err)
	}
	m.Add(more...)
	analyticstest.CheckAll(t, s, m, minute(0), minute(120))

	// The deletion is durable.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, testConfig(), nil); err != nil {
		t.Fatal(err)
	}
	analyticstest.CheckAll(t, s, m, minute(0), minute(120))
}

// TestCrash checks that what Upsert acknowledged survives a crash: the
// in-memory file system drops everything not synced.
func TestCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	cfg := testConfig()
	cfg.FS = fs
	s, err := Open("db", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := analyticstest.Model{}
	rng := rand.New(rand.NewPCG(8, 9))
	for i := range 20 {
		var rows []analytics.Row
		for range 50 {
			rows = append(rows, analytics.Row{
				AdID:   []string{"a", "b", "c"}[rng.IntN(3)],
				Start:  minute(rng.IntN(30)),
				Clicks: int64(i),
			})
		}
		if err := s.Upsert(t.Context(), rows); err != nil {
			t.Fatal(err)
		}
		m.Add(rows...)
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	s.Close()
	cfg.FS = crashed
	s, err = Open("db", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	analyticstest.CheckAll(t, s, m, minute(0), minute(30))
}

func TestEncoding(t *testing.T) {
	for _, m := range []int64{-1 << 40, -1, 0, 1, 29_000_000} {
		for _, ad := range []string{"a", "ad:with.chars-_", string(make([]byte, 300))} {
			for _, c := range []string{"", "US"} {
				key := rowKey(nil, m, ad, c)
				gm, gad, gc, err := parseRowKey(key)
				if err != nil || gm != m || string(gad) != ad || string(gc) != c {
					t.Errorf("parseRowKey(rowKey(%d, %q, %q)) = %d, %q, %q, %v", m, ad, c, gm, gad, gc, err)
				}
			}
		}
	}
	if string(minuteKey(nil, -5)) >= string(minuteKey(nil, 3)) {
		t.Error("minute keys do not sort by minute")
	}
	v := totals{0, 1, 1 << 40, 127, 1<<63 - 1}
	got, err := parseTotals(appendTotals(nil, v))
	if err != nil {
		t.Fatal(err)
	}
	if diff := gocmp.Diff(v, got); diff != "" {
		t.Errorf("totals (-want +got):\n%s", diff)
	}
	if _, err := parseTotals(append(appendTotals(nil, v), 0)); err == nil {
		t.Error("parseTotals accepted a trailing byte")
	}
}

func TestCeilMinute(t *testing.T) {
	for _, tt := range []struct {
		t    time.Time
		want int64
	}{
		{time.Unix(0, 0), 0},
		{time.Unix(0, 1), 1},
		{time.Unix(59, 0), 1},
		{time.Unix(60, 0), 1},
		{time.Unix(-1, 0), 0},
		{time.Unix(-60, 0), -1},
		{time.Unix(-61, 0), -1},
		{time.Unix(-60, 1), 0},
	} {
		if got := ceilMinute(tt.t); got != tt.want {
			t.Errorf("ceilMinute(%v) = %d, want %d", tt.t, got, tt.want)
		}
	}
}

// TestInterner checks numbering against a map through adds, frees (with the
// backward shifts of the probe runs), growth and compaction of the names.
func TestInterner(t *testing.T) {
	in := newInterner()
	want := map[string]uint32{} // name → references
	ids := map[string]uint32{}
	rng := rand.New(rand.NewPCG(10, 11))
	name := func() string {
		// Long names, so that frees leave enough garbage to compact.
		return fmt.Sprintf("%04d-%s", rng.IntN(3000), strings.Repeat("x", 600))
	}
	for step := range 40_000 {
		n := name()
		if _, ok := want[n]; !ok || rng.IntN(2) == 0 {
			id, ok := in.lookup(n)
			if !ok {
				id = in.add(n)
			}
			if old, ok := ids[n]; ok && old != id {
				t.Fatalf("step %d: %q numbered %d, was %d", step, n, id, old)
			}
			in.ref(id, 1)
			ids[n] = id
			want[n]++
		} else {
			in.ref(ids[n], -1)
			if want[n]--; want[n] == 0 {
				delete(want, n)
				delete(ids, n)
			}
		}
		if step%1000 == 0 || step == 39_999 {
			for n, id := range ids {
				if got, ok := in.lookup(n); !ok || got != id {
					t.Fatalf("step %d: lookup(%q) = %d, %v; want %d", step, n[:4], got, ok, id)
				}
				if got, ok := in.lookupBytes([]byte(n)); !ok || got != id {
					t.Fatalf("step %d: lookupBytes(%q) = %d, %v; want %d", step, n[:4], got, ok, id)
				}
				if in.name(id) != n {
					t.Fatalf("step %d: name(%d) = %q, want %q", step, id, in.name(id)[:4], n[:4])
				}
			}
			for range 100 {
				if n := name(); want[n] == 0 {
					if id, ok := in.lookup(n); ok {
						t.Fatalf("step %d: lookup(%q) found %d, want none", step, n[:4], id)
					}
				}
			}
			if in.live != len(ids) {
				t.Fatalf("step %d: %d live numbers, want %d", step, in.live, len(ids))
			}
		}
	}
	if in.garbage > len(in.data)/2+1<<20 {
		t.Errorf("garbage %d of %d bytes: names not compacted", in.garbage, len(in.data))
	}
}

// TestTopModes interleaves Top calls over ranges with many rows per ad (summed
// into the whole array) and few (through the list of ads touched), which share
// pooled memory that each must leave zeroed.
func TestTopModes(t *testing.T) {
	s, err := Open(t.TempDir(), testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(12, 13))
	m := analyticstest.Model{}
	var rows []analytics.Row
	for k := range 2000 {
		// Ad k has rows in the minutes up to k/20: the later minutes hold few ads.
		for range 1 + rng.IntN(3) {
			rows = append(rows, analytics.Row{
				AdID: fmt.Sprintf("ad-%d", k), Country: []string{"US", "DE"}[rng.IntN(2)],
				Start: minute(rng.IntN(k/20 + 1)), Clicks: rng.Int64N(5),
			})
		}
	}
	if err := s.Upsert(t.Context(), rows); err != nil {
		t.Fatal(err)
	}
	m.Add(rows...)
	for i := range 300 {
		from := minute(rng.IntN(100))
		to := from.Add(time.Duration(1+rng.IntN(3)) * time.Minute)
		if i%3 == 0 {
			from = minute(0)
		}
		c := []string{"", "US", "DE"}[rng.IntN(3)]
		got, err := s.Top(t.Context(), c, from, to, 5)
		if err != nil {
			t.Fatal(err)
		}
		if diff := gocmp.Diff(m.Top(c, from, to, 5), got); diff != "" {
			t.Fatalf("call %d: Top(%q, %v, %v) (-want +got):\n%s", i, c, from, to, diff)
		}
	}
}
