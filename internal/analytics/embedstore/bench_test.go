package embedstore

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/analytics"
)

// The benchmarks run against each engine listed. docs/analytics-engine.md
// compares the candidates measured when the engine was chosen; only the one
// chosen, "memory", is kept.
type engine struct {
	name string
	open func(dir string) (analytics.Store, error)
}

var engines = []engine{
	{"memory", func(dir string) (analytics.Store, error) { return Open(dir, Config{}, nil) }},
}

// benchEnd is the end of the benchmark data: the last five minutes before it
// hold a burst of 1,000,000 distinct ads; seriesAd has rows in five countries
// in every minute of the 24 hours before it.
var benchEnd = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

const (
	burstAds = 1_000_000
	seriesAd = "series-ad"
)

var benchCountries = []string{"US", "DE", "GB", "FR", "JP", "BR", "IN", "CA", "ES", "IT", "NL", "PL", "SE", "MX", "AU", "KR", "TR", "ID", "AR", "ZA", ""}

// country draws a country, the first ones far more often.
func country(rng *rand.Rand) string {
	u := rng.Float64()
	return benchCountries[int(float64(len(benchCountries))*u*u*u)]
}

// burstRows returns the rows of the five minutes before benchEnd, shuffled (the
// aggregator's flushes follow no ad order): ad k expects 20000/(k+1) clicks a
// minute (Zipf, s=1). Ads with at least one a minute have a row in every
// minute, spread over more countries the more clicks they have; the others,
// the long tail, have one to three rows of a click or two.
func burstRows(rng *rand.Rand) []analytics.Row {
	start := benchEnd.Add(-5 * time.Minute)
	rows := make([]analytics.Row, 0, 2_200_000)
	for k := range burstAds {
		ad := fmt.Sprintf("ad-%09d", k)
		lam := 20000 / float64(k+1)
		if lam >= 1 {
			nc := min(1+int(lam/100), len(benchCountries))
			for m := range 5 {
				for c := range nc {
					clicks := int64(lam/float64(nc)*(0.5+rng.Float64())) + 1
					rows = append(rows, analytics.Row{
						AdID: ad, Country: benchCountries[c], Start: start.Add(time.Duration(m) * time.Minute),
						Clicks: clicks, Bot: clicks / 50, IPRate: clicks / 200, Duplicates: clicks / 100,
					})
				}
			}
			continue
		}
		for range 1 + rng.IntN(3) {
			r := analytics.Row{AdID: ad, Country: country(rng), Start: start.Add(time.Duration(rng.IntN(5)) * time.Minute), Clicks: 1}
			if rng.Float64() < lam {
				r.Clicks++
			}
			if rng.IntN(20) == 0 {
				r.Bot = 1
			}
			rows = append(rows, r)
		}
	}
	rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	return rows
}

// seriesRows returns seriesAd's rows: five countries, every minute of 24 hours.
func seriesRows(rng *rand.Rand) []analytics.Row {
	var rows []analytics.Row
	for m := range 24 * 60 {
		for _, c := range benchCountries[:5] {
			rows = append(rows, analytics.Row{
				AdID: seriesAd, Country: c, Start: benchEnd.Add(time.Duration(m-24*60) * time.Minute),
				Clicks: rng.Int64N(100), Bot: rng.Int64N(5), IPRate: rng.Int64N(2),
			})
		}
	}
	return rows
}

func upsertAll(b *testing.B, s analytics.Store, rows []analytics.Row, batch int) {
	for i := 0; i < len(rows); i += batch {
		if err := s.Upsert(b.Context(), rows[i:min(i+batch, len(rows))]); err != nil {
			b.Fatal(err)
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// loadDataset writes the benchmark data into a new store in dir and reports
// the write rate and the heap it holds.
func loadDataset(b *testing.B, e engine, dir string) (analytics.Store, []analytics.Row) {
	rng := rand.New(rand.NewPCG(1, 1))
	rows := append(seriesRows(rng), burstRows(rng)...)
	before := heapInUse()
	s, err := e.open(dir)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	upsertAll(b, s, rows, 5000)
	d := time.Since(start)
	b.Logf("%s: loaded %d rows in %v (%.0f rows/s); heap held by the store: %.0f MB",
		e.name, len(rows), d, float64(len(rows))/d.Seconds(), float64(heapInUse()-before)/1e6)
	if st, ok := s.(*Store); ok {
		b.Logf("%s: disk space used: %.0f MB", e.name, float64(st.db.Metrics().DiskSpaceUsage())/1e6)
	}
	return s, rows
}

// latency runs op in a b.Loop and reports its p50 and p99 in ms.
func latency(b *testing.B, op func() error) {
	var ds []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	q := func(p float64) float64 {
		return float64(ds[int(math.Ceil(p*float64(len(ds))))-1]) / 1e6
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

// BenchmarkQueries runs the query API's queries on the 1M-ad dataset.
func BenchmarkQueries(b *testing.B) {
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			s, rows := loadDataset(b, e, b.TempDir())
			defer s.Close()
			ctx := b.Context()
			from24h, from5m := benchEnd.Add(-24*time.Hour), benchEnd.Add(-5*time.Minute)
			b.Run("Series24h1m", func(b *testing.B) {
				latency(b, func() error {
					pts, err := s.Series(ctx, seriesAd, "", from24h, benchEnd, analytics.Minute)
					if err == nil && len(pts) != 24*60 {
						err = fmt.Errorf("%d points", len(pts))
					}
					return err
				})
			})
			b.Run("Series24h1mCountry", func(b *testing.B) {
				latency(b, func() error {
					_, err := s.Series(ctx, seriesAd, "DE", from24h, benchEnd, analytics.Minute)
					return err
				})
			})
			b.Run("Series24h1h", func(b *testing.B) {
				latency(b, func() error {
					_, err := s.Series(ctx, seriesAd, "", from24h, benchEnd, analytics.Hour)
					return err
				})
			})
			b.Run("Top5m", func(b *testing.B) {
				latency(b, func() error {
					top, err := s.Top(ctx, "", from5m, benchEnd, 10)
					if err == nil && (len(top) != 10 || top[0].AdID != "ad-000000000") {
						err = fmt.Errorf("top = %v", top)
					}
					return err
				})
			})
			b.Run("Top5mCountry", func(b *testing.B) {
				latency(b, func() error {
					_, err := s.Top(ctx, "DE", from5m, benchEnd, 10)
					return err
				})
			})
			// Top while the aggregator flushes: batches of 5000 rows of the
			// newest minute, with new totals, written back to back.
			b.Run("Top5mWhileUpserting", func(b *testing.B) {
				var last []analytics.Row
				for _, r := range rows {
					if r.Start.Equal(benchEnd.Add(-time.Minute)) {
						r.Clicks++
						last = append(last, r)
					}
				}
				stop := make(chan struct{})
				var wg sync.WaitGroup
				var upserts atomic.Int64
				wg.Go(func() {
					for i := 0; ; i = (i + 5000) % (len(last) - 5000) {
						select {
						case <-stop:
							return
						default:
						}
						if err := s.Upsert(ctx, last[i:i+5000]); err != nil {
							b.Error(err)
							return
						}
						upserts.Add(1)
					}
				})
				latency(b, func() error {
					_, err := s.Top(ctx, "", from5m, benchEnd, 10)
					return err
				})
				close(stop)
				wg.Wait()
				b.ReportMetric(float64(upserts.Load()*5000)/b.Elapsed().Seconds(), "upserted-rows/s")
			})
			b.Run("Quality5m", func(b *testing.B) {
				latency(b, func() error {
					_, err := s.Quality(ctx, "", from5m, benchEnd)
					return err
				})
			})
		})
	}
}

// BenchmarkOpen measures Open on the 1M-ad dataset: reading it back into memory.
func BenchmarkOpen(b *testing.B) {
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			dir := b.TempDir()
			s, _ := loadDataset(b, e, dir)
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			var heap uint64
			for b.Loop() {
				before := heapInUse()
				s, err := e.open(dir)
				if err != nil {
					b.Fatal(err)
				}
				heap = heapInUse() - before
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(heap)/1e6, "heap-MB")
		})
	}
}

// BenchmarkUpsertNew measures durable upserts of new keys: the rows of the
// 1M-ad burst, shuffled, most ads new to the store.
func BenchmarkUpsertNew(b *testing.B) {
	rows := burstRows(rand.New(rand.NewPCG(3, 3)))
	for _, e := range engines {
		b.Run(fmt.Sprintf("%s/batch=5000", e.name), func(b *testing.B) {
			s, err := e.open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			i := 0
			for b.Loop() {
				j := (i * 5000) % (len(rows) - 5000)
				if err := s.Upsert(b.Context(), rows[j:j+5000]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(i*5000)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkUpsert measures durable upserts as the aggregator flushes them:
// batches of rows of the open minutes, mostly re-upserts of keys already
// written with larger totals, the minute moving on every 20 batches.
func BenchmarkUpsert(b *testing.B) {
	for _, e := range engines {
		for _, size := range []int{1000, 5000} {
			b.Run(fmt.Sprintf("%s/batch=%d", e.name, size), func(b *testing.B) {
				s, err := e.open(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				rng := rand.New(rand.NewPCG(2, 2))
				const keys = 50_000 // (ad, country) pairs active in a minute
				batches := make([][]analytics.Row, 200)
				clicks := make([]int64, keys)
				for i := range batches {
					m := benchEnd.Add(time.Duration(i/20) * time.Minute)
					rows := make([]analytics.Row, size)
					for j := range rows {
						k := rng.IntN(keys)
						clicks[k] += 1 + rng.Int64N(10)
						rows[j] = analytics.Row{
							AdID: fmt.Sprintf("ad-%09d", k/3), Country: benchCountries[k%3], Start: m,
							Clicks: clicks[k], Bot: clicks[k] / 50,
						}
					}
					batches[i] = rows
				}
				i := 0
				b.ReportAllocs()
				for b.Loop() {
					if err := s.Upsert(b.Context(), batches[i%len(batches)]); err != nil {
						b.Fatal(err)
					}
					i++
				}
				b.ReportMetric(float64(i*size)/b.Elapsed().Seconds(), "rows/s")
			})
		}
	}
}
