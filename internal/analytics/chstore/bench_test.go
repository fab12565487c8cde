package chstore

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/analytics/chtest"
)

// BenchmarkRead compares query-time deduplication by argMax(col, version)
// with FINAL, on 1M keys written twice (2M rows in unmerged parts), then after
// OPTIMIZE ... FINAL.
//
//	go test -run '^$' -bench Read -benchtime 20x ./internal/analytics/chstore/
func BenchmarkRead(b *testing.B) {
	s, err := Open(b.Context(), Config{DSN: chtest.Start(b), SpoolDir: b.TempDir()},
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	base := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	const ads, countries, minutes = 1000, 5, 200
	rows := make([]analytics.Row, 0, ads*countries*minutes)
	for m := range minutes {
		for a := range ads {
			for c := range countries {
				rows = append(rows, analytics.Row{AdID: fmt.Sprintf("ad-%04d", a), Country: fmt.Sprintf("C%d", c),
					Start: base.Add(time.Duration(m) * time.Minute), Clicks: int64(a*m%97 + c), Bot: int64(c)})
			}
		}
	}
	for pass := range 2 {
		for i := range rows {
			rows[i].Clicks += int64(pass)
		}
		for i := 0; i < len(rows); i += 250_000 {
			if err := s.Upsert(b.Context(), rows[i:min(i+250_000, len(rows))]); err != nil {
				b.Fatal(err)
			}
		}
	}
	from, to := base, base.Add(minutes*time.Minute)
	hour := base.Add(time.Hour)
	queries := []struct {
		name string
		fn   func() error
	}{
		{"Top/all", func() error { _, err := s.Top(b.Context(), "", from, to, 10); return err }},
		{"Top/hour", func() error { _, err := s.Top(b.Context(), "", hour, hour.Add(time.Hour), 10); return err }},
		{"Top/country", func() error { _, err := s.Top(b.Context(), "C1", from, to, 10); return err }},
		{"Series/hour", func() error {
			_, err := s.Series(b.Context(), "ad-0500", "", from, to, analytics.Hour)
			return err
		}},
		{"Quality/all", func() error { _, err := s.Quality(b.Context(), "", from, to); return err }},
	}
	for _, merged := range []bool{false, true} {
		if merged {
			if err := s.conn.Exec(b.Context(), "OPTIMIZE TABLE "+s.table+" FINAL"); err != nil {
				b.Fatal(err)
			}
		}
		for _, final := range []bool{false, true} {
			for _, q := range queries {
				name := fmt.Sprintf("merged=%v/final=%v/%s", merged, final, q.name)
				b.Run(name, func(b *testing.B) {
					s.argMax = !final
					for b.Loop() {
						if err := q.fn(); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
