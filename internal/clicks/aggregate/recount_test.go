package aggregate

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/analytics/embedstore"
	"github.com/pedal-project/pedal/internal/clicks"
)

// TestRecountAgreesAndReplayRepairs recounts a live aggregator's windows
// from the log: no difference; then one stored window is tampered with, the
// recount names exactly that ad's minute and quality figures, and a replay
// (apply) puts the recomputed totals back.
func TestRecountAgreesAndReplayRepairs(t *testing.T) {
	f := newFixture(t, 2)
	store, err := embedstore.Open(filepath.Join(f.dir, "analytics"), embedstore.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	s := newStream(11, 25)
	for range 30 {
		batch := make([]clicks.Click, 250)
		for i := range batch {
			batch[i] = s.next()
		}
		f.append(batch)
	}
	a, err := Open(t.Context(), filepath.Join(f.dir, "state"), f.cfg, f.log, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	from := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	to := from.Add(48 * time.Hour)
	var progressed RecountProgress
	res, err := a.Recount(t.Context(), from, to, false, func(p RecountProgress) { progressed = p })
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 30*250 || progressed.Done != progressed.Total || progressed.Total != 30*250 {
		t.Errorf("recounted %d records, progress %+v; want 7500", res.Records, progressed)
	}
	if res.Windows == 0 || res.Ads == 0 || !res.To.Before(to) || res.To.Before(from) {
		t.Fatalf("recount result %+v: want windows, ads, and To moved back before the open windows", res)
	}
	if len(res.Diffs) != 0 {
		t.Fatalf("recount of an untouched store differs: %+v", res.Diffs[:min(5, len(res.Diffs))])
	}

	// Tamper with one final window: ad-0's first US minute gets 7 more
	// clicks and loses its other totals.
	points, err := store.Series(t.Context(), "ad-0", "US", res.From, res.To, analytics.Minute)
	if err != nil || len(points) == 0 {
		t.Fatalf("series of ad-0 in the US: %v %v", points, err)
	}
	bad := analytics.Row{AdID: "ad-0", Country: "US", Start: points[0].Start, Clicks: points[0].Clicks + 7}
	if err := store.Upsert(t.Context(), []analytics.Row{bad}); err != nil {
		t.Fatal(err)
	}
	res, err = a.Recount(t.Context(), from, to, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Diffs) != 2 || res.Diffs[0].AdID != "ad-0" || !res.Diffs[0].Start.IsZero() || !res.Diffs[1].Start.Equal(bad.Start) ||
		res.Diffs[1].Stored.Valid-res.Diffs[1].Count.Valid != 7 || res.Diffs[0].Stored.Valid-res.Diffs[0].Count.Valid != 7 {
		t.Fatalf("diffs after tampering: %+v", res.Diffs)
	}

	// A replay writes the recomputed totals back.
	res, err = a.Recount(t.Context(), from, to, true, nil)
	if err != nil || res.Replaced != res.Windows || len(res.Diffs) != 2 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	res, err = a.Recount(t.Context(), from, to, false, nil)
	if err != nil || len(res.Diffs) != 0 {
		t.Fatalf("recount after the replay: %+v %v", res.Diffs, err)
	}
}

// TestRecountWithQuietPartitions: partitions without clicks set no bound on
// what is compared.
func TestRecountWithQuietPartitions(t *testing.T) {
	f := newFixture(t, 8)
	store, err := embedstore.Open(filepath.Join(f.dir, "analytics"), embedstore.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	s := newStream(12, 25)
	var batch []clicks.Click
	for len(batch) < 3000 {
		if c := s.next(); c.AdID == "ad-0" {
			batch = append(batch, c)
		}
	}
	f.append(batch)
	a, err := Open(t.Context(), filepath.Join(f.dir, "state"), f.cfg, f.log, store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	from := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	res, err := a.Recount(t.Context(), from, from.Add(48*time.Hour), false, nil)
	if err != nil || res.Windows == 0 || res.Ads != 1 || len(res.Diffs) != 0 || !res.To.After(from.Add(3*time.Hour)) {
		t.Fatalf("recount with 7 quiet partitions: %+v %v", res, err)
	}
}
