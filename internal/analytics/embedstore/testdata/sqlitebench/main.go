// Command sqlitebench measures candidate (c) of docs/analytics-engine.md (run
// it with go run . in its directory, a module of its own):
// SQLite through modernc.org/sqlite, on the dataset of the embedstore benchmarks.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	_ "modernc.org/sqlite"
)

var benchEnd = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

var benchCountries = []string{"US", "DE", "GB", "FR", "JP", "BR", "IN", "CA", "ES", "IT", "NL", "PL", "SE", "MX", "AU", "KR", "TR", "ID", "AR", "ZA", ""}

type row struct {
	ad, country                    string
	minute                         int64
	clicks, bot, ipRate, dup, late int64
}

func country(rng *rand.Rand) string {
	u := rng.Float64()
	return benchCountries[int(float64(len(benchCountries))*u*u*u)]
}

// burstRows is embedstore's burstRows (bench_test.go), same seed and draws.
func burstRows(rng *rand.Rand) []row {
	start := benchEnd.Add(-5*time.Minute).Unix() / 60
	var rows []row
	for k := range 1_000_000 {
		ad := fmt.Sprintf("ad-%09d", k)
		lam := 20000 / float64(k+1)
		if lam >= 1 {
			nc := min(1+int(lam/100), len(benchCountries))
			for m := range 5 {
				for c := range nc {
					clicks := int64(lam/float64(nc)*(0.5+rng.Float64())) + 1
					rows = append(rows, row{ad, benchCountries[c], start + int64(m), clicks, clicks / 50, clicks / 200, clicks / 100, 0})
				}
			}
			continue
		}
		for range 1 + rng.IntN(3) {
			r := row{ad: ad, country: country(rng), minute: start + int64(rng.IntN(5)), clicks: 1}
			if rng.Float64() < lam {
				r.clicks++
			}
			if rng.IntN(20) == 0 {
				r.bot = 1
			}
			rows = append(rows, r)
		}
	}
	rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	return rows
}

func seriesRows(rng *rand.Rand) []row {
	var rows []row
	end := benchEnd.Unix() / 60
	for m := range 24 * 60 {
		for _, c := range benchCountries[:5] {
			rows = append(rows, row{"series-ad", c, end - 24*60 + int64(m), rng.Int64N(100), rng.Int64N(5), rng.Int64N(2), 0, 0})
		}
	}
	return rows
}

const schema = `
PRAGMA journal_mode=WAL;
PRAGMA synchronous=FULL;
CREATE TABLE IF NOT EXISTS totals (
	minute INTEGER NOT NULL, ad TEXT NOT NULL, country TEXT NOT NULL,
	clicks INTEGER NOT NULL, bot INTEGER NOT NULL, ip_rate INTEGER NOT NULL, dup INTEGER NOT NULL, late INTEGER NOT NULL,
	PRIMARY KEY (minute, ad, country)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS totals_ad ON totals (ad, minute);
`

func upsert(ctx context.Context, db *sql.DB, rows []row) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT INTO totals VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (minute, ad, country) DO UPDATE SET clicks=excluded.clicks, bot=excluded.bot,
		ip_rate=excluded.ip_rate, dup=excluded.dup, late=excluded.late`)
	if err != nil {
		return err
	}
	for _, r := range rows {
		if _, err := st.ExecContext(ctx, r.minute, r.ad, r.country, r.clicks, r.bot, r.ipRate, r.dup, r.late); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func latency(name string, n int, op func() error) {
	var ds []time.Duration
	for range n {
		t0 := time.Now()
		if err := op(); err != nil {
			panic(err)
		}
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	q := func(p float64) float64 { return float64(ds[int(math.Ceil(p*float64(len(ds))))-1]) / 1e6 }
	fmt.Printf("%-22s n=%-5d p50=%.3f ms p99=%.3f ms\n", name, n, q(0.5), q(0.99))
}

func main() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "sqlitebench")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", filepath.Join(dir, "a.db"))
	if err != nil {
		panic(err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(schema); err != nil {
		panic(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	rows := append(seriesRows(rng), burstRows(rng)...)
	t0 := time.Now()
	for i := 0; i < len(rows); i += 5000 {
		if err := upsert(ctx, db, rows[i:min(i+5000, len(rows))]); err != nil {
			panic(err)
		}
	}
	d := time.Since(t0)
	fmt.Printf("load: %d rows in %v: %.0f rows/s (batches of 5000, new keys)\n", len(rows), d, float64(len(rows))/d.Seconds())
	// Re-upserts of keys already there, as the aggregator's flushes.
	t0 = time.Now()
	for i := 0; i < 200_000; i += 5000 {
		if err := upsert(ctx, db, rows[i:i+5000]); err != nil {
			panic(err)
		}
	}
	d = time.Since(t0)
	fmt.Printf("re-upsert: %.0f rows/s (batches of 5000)\n", 200_000/d.Seconds())

	end := benchEnd.Unix() / 60
	latency("Series24h1m", 50, func() error {
		r, err := db.QueryContext(ctx, `SELECT minute, SUM(clicks), SUM(bot + ip_rate) FROM totals
			WHERE ad = ? AND minute >= ? AND minute < ? GROUP BY minute ORDER BY minute`, "series-ad", end-24*60, end)
		if err != nil {
			return err
		}
		n := 0
		for r.Next() {
			n++
		}
		if n != 24*60 {
			return fmt.Errorf("%d points", n)
		}
		return r.Err()
	})
	top := func(country string) func() error {
		return func() error {
			q := `SELECT ad, SUM(clicks) s FROM totals WHERE minute >= ? AND minute < ? GROUP BY ad HAVING s > 0 ORDER BY s DESC, ad LIMIT 10`
			args := []any{end - 5, end}
			if country != "" {
				q = `SELECT ad, SUM(clicks) s FROM totals WHERE minute >= ? AND minute < ? AND country = ? GROUP BY ad HAVING s > 0 ORDER BY s DESC, ad LIMIT 10`
				args = append(args, country)
			}
			r, err := db.QueryContext(ctx, q, args...)
			if err != nil {
				return err
			}
			n := 0
			for r.Next() {
				n++
			}
			if n != 10 {
				return fmt.Errorf("%d ads", n)
			}
			return r.Err()
		}
	}
	latency("Top5m", 5, top(""))
	latency("Top5mCountry", 5, top("DE"))
	latency("Quality5m", 5, func() error {
		return db.QueryRowContext(ctx, `SELECT SUM(clicks), SUM(bot), SUM(ip_rate), SUM(dup), SUM(late) FROM totals WHERE minute >= ? AND minute < ?`, end-5, end).Scan(new(int64), new(int64), new(int64), new(int64), new(int64))
	})
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	fi, _ := os.Stat(filepath.Join(dir, "a.db"))
	fmt.Printf("go heap %.0f MB; database file %.0f MB\n", float64(ms.HeapAlloc)/1e6, float64(fi.Size())/1e6)
}
