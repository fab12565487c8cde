package capacity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/analytics/chstore"
	"github.com/pedal-project/pedal/internal/analytics/chtest"
	"github.com/pedal-project/pedal/internal/analytics/embedstore"
	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/clicks/aggregate"
	"github.com/pedal-project/pedal/internal/clicks/aggregate/fpset"
	"github.com/pedal-project/pedal/internal/clicks/ingest"
	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/eventlog/pebblelog"
)

// The benchmarks here measure what bench/capacity/run.sh records in
// figures.json; each reports its figure per core-second of CPU time (see the
// package comment). They take seconds per operation batch, so run them with a
// fixed -benchtime, as run.sh does:
//
//	go test -run '^$' -bench Ingest -benchtime 2000x ./bench/capacity/

// TestMain stops the shared ClickHouse server, if a benchmark started one.
func TestMain(m *testing.M) { os.Exit(chtest.Main(m).Run()) }

// cpuTime returns the user + system CPU time this process has used.
func cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// settle waits until this process has been nearly idle (under a tenth of a
// core) for half a second, so that background work left by the setup (Pebble
// flushes and compactions) is not counted in what follows. It gives up after
// a minute.
func settle(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		c0, t0 := cpuTime(tb), time.Now()
		time.Sleep(500 * time.Millisecond)
		if float64(cpuTime(tb)-c0) < 0.1*float64(time.Since(t0)) {
			return
		}
	}
	tb.Logf("the process did not settle within a minute; measuring anyway")
}

// Env variables of the ingest load generator, run as a child process so that
// its CPU time is not the server's.
const (
	clientAddrEnv     = "CAPACITY_INGEST_ADDR"
	clientRequestsEnv = "CAPACITY_INGEST_REQUESTS"
)

const (
	clicksPerRequest = 500
	clientConns      = 8
)

// BenchmarkIngest measures the ingestion path of pedal serve: an HTTP server
// on loopback serving POST /v1/clicks with the ingestion handler, which
// decodes and validates each batch of 500 JSON clicks (loadgen's shape, 325
// bytes a click) and appends it durably to the embedded event log (16
// partitions, fsync'd, syncs shared by concurrent requests), before the 202.
// b.N is the number of requests; a load generator in a child process sends
// them over 8 keep-alive connections. The figure is clicks per CPU-second of
// the server's process. The gateway's JWT check is left out (about 0.2 µs a
// click at 500 clicks a request, docs/benchmarks.md).
func BenchmarkIngest(b *testing.B) {
	dir := b.TempDir()
	l, err := pebblelog.Open(filepath.Join(dir, "log"), pebblelog.Config{MinFreeBytes: -1}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	if err := l.CreateTopic(b.Context(), clicks.Topic, 16); err != nil {
		b.Fatal(err)
	}
	ing := ingest.New(ingest.Config{}, l, nil, prometheus.NewRegistry())
	mux := http.NewServeMux()
	mux.Handle("POST /v1/clicks", ing.HandleClicks())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			b.Error(err)
		}
	}()

	cmd := exec.Command(os.Args[0], "-test.run=^TestIngestClient$", "-test.count=1")
	cmd.Env = append(os.Environ(), clientAddrEnv+"="+ln.Addr().String(), clientRequestsEnv+"="+strconv.Itoa(b.N))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	settle(b)
	b.ResetTimer()
	c0 := cpuTime(b)
	if err := cmd.Run(); err != nil {
		b.Fatalf("load generator: %v\n%s", err, out.String())
	}
	b.StopTimer()
	cpu := cpuTime(b) - c0
	n := float64(b.N * clicksPerRequest)
	b.ReportMetric(n/b.Elapsed().Seconds(), "clicks/s")
	b.ReportMetric(n/cpu.Seconds(), "clicks/cpu-s")
	b.ReportMetric(cpu.Seconds()/b.Elapsed().Seconds(), "cores")
}

// TestIngestClient is BenchmarkIngest's load generator; it runs only in the
// child process that the benchmark starts.
func TestIngestClient(t *testing.T) {
	addr := os.Getenv(clientAddrEnv)
	if addr == "" {
		t.Skip("the load generator of BenchmarkIngest; it runs in the benchmark's child process")
	}
	requests, err := strconv.Atoi(os.Getenv(clientRequestsEnv))
	if err != nil {
		t.Fatal(err)
	}
	// Distinct bodies, built before sending; every click id is unique.
	now := time.Now()
	bodies := make([][]byte, 64)
	for i := range bodies {
		bodies[i] = batchBody(i, now)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: clientConns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	url := "http://" + addr + "/v1/clicks"
	var next atomic.Int64
	var g errgroup.Group
	for range clientConns {
		g.Go(func() error {
			for {
				i := next.Add(1) - 1
				if i >= int64(requests) {
					return nil
				}
				resp, err := client.Post(url, "application/json", bytes.NewReader(bodies[i%int64(len(bodies))]))
				if err != nil {
					return err
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted || !bytes.Contains(body, []byte(`"accepted":500`)) {
					return fmt.Errorf("request %d: %s %s", i, resp.Status, body)
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// batchBody returns a JSON array of 500 clicks shaped like loadgen's.
func batchBody(batch int, now time.Time) []byte {
	countries := []string{"US", "DE", "GB", "FR", "JP"}
	var b strings.Builder
	b.WriteByte('[')
	for i := range clicksPerRequest {
		if i > 0 {
			b.WriteByte(',')
		}
		n := batch*clicksPerRequest + i
		fmt.Fprintf(&b, `{"click_id":"lg-7f3a9c-%08d","ad_id":"ad-%06d","ts":%d,"ip":"203.0.%d.%d","user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36","country":"%s","campaign_id":"cmp-%d","user_id":"u-%d"}`,
			n, (n*7919)%10000, now.UnixMilli()-int64(i), n%256, (n*7)%256, countries[n%len(countries)], n%97, n*13)
	}
	b.WriteByte(']')
	return []byte(b.String())
}

// BenchmarkAggregatePartition measures the aggregator on one partition: b.N
// clicks, already in the log, processed by one worker (deduplication, the
// invalid-traffic rules, one-minute windows, a synced state commit every
// 250 ms) until committed and published. The clicks are shaped like loadgen's:
// 10,000 ads, 5 countries, unique click ids, 1% duplicates, 2% bots, event
// times advancing at 350,000/s. The analytics store only counts the rows it
// is given (BenchmarkClickHouseUpsert measures publishing). Reported: clicks/s
// of wall time, the most one partition carries, and clicks per CPU-second of
// the whole process (the worker and Pebble's background work on the state
// store).
func BenchmarkAggregatePartition(b *testing.B) {
	ctx := b.Context()
	dir := b.TempDir()
	l, err := pebblelog.Open(filepath.Join(dir, "log"), pebblelog.Config{MinFreeBytes: -1}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	if err := l.CreateTopic(ctx, clicks.Topic, 1); err != nil {
		b.Fatal(err)
	}
	countries := []string{"US", "DE", "GB", "FR", "JP"}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	recs := make([]eventlog.Record, 0, 5000)
	for i := 0; i < b.N; i++ {
		id := i
		if i%100 == 99 {
			id = i - 50 // a duplicate
		}
		c := clicks.Click{
			ClickID:    fmt.Sprintf("lg-bench-%d", id),
			AdID:       fmt.Sprintf("ad-%06d", (id*7919)%10000),
			Time:       t0.Add(time.Duration(id) * time.Second / 350000).Truncate(time.Millisecond),
			ReceivedAt: t0.Add(time.Duration(i) * time.Second / 350000).Truncate(time.Millisecond),
			IP:         netip.AddrFrom4([4]byte{81, byte(id >> 16), byte(id >> 8), byte(id)}),
			Country:    countries[id%len(countries)],
			UserAgent:  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		}
		if id%50 == 7 {
			c.UserAgent = "curl/8.5.0"
		}
		recs = append(recs, eventlog.Record{Partition: 0, Timestamp: c.Time, Value: c.AppendBinary(nil)})
		if len(recs) == cap(recs) || i == b.N-1 {
			if err := l.Append(ctx, clicks.Topic, recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	var store countingStore
	a, err := aggregate.Open(ctx, filepath.Join(dir, "state"), aggregate.Config{Workers: 1}, l, &store, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	settle(b)
	b.ResetTimer()
	c0 := cpuTime(b)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx) }()
	for {
		st, err := a.Status(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if p := st.Partitions[0]; p.CommittedOffset == p.LogEndOffset {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cpu := cpuTime(b) - c0
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if store.rows.Load() == 0 {
		b.Fatal("the aggregator published no rows")
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "clicks/s")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "clicks/cpu-s")
	b.ReportMetric(float64(store.rows.Load())/float64(b.N), "rows/click")
}

// countingStore is an analytics store that counts the rows upserted to it.
type countingStore struct{ rows atomic.Int64 }

func (s *countingStore) Upsert(_ context.Context, rows []analytics.Row) error {
	s.rows.Add(int64(len(rows)))
	return nil
}

func (*countingStore) Series(context.Context, string, string, time.Time, time.Time, analytics.Granularity) ([]analytics.Point, error) {
	return nil, nil
}

func (*countingStore) Top(context.Context, string, time.Time, time.Time, int) ([]analytics.AdClicks, error) {
	return nil, nil
}

func (*countingStore) Quality(context.Context, string, time.Time, time.Time) (analytics.Quality, error) {
	return analytics.Quality{}, nil
}

func (*countingStore) Close() error { return nil }

// windowRows returns n upserts of window totals as the aggregator publishes
// them: keys (ad, country) pairs (a quarter as many ads, 4 countries each),
// every key upserted twice a minute with growing totals (two flushes that
// each changed every window), minute after minute from start. Rows are in
// flushes of keys rows, each key once per flush.
func windowRows(n, keys int, start time.Time) []analytics.Row {
	countries := []string{"US", "DE", "GB", "FR"}
	rng := rand.New(rand.NewPCG(1, 2))
	clicks := make([]int64, keys)
	rows := make([]analytics.Row, n)
	for i := range rows {
		k := i % keys
		flush := i / keys
		if flush%2 == 0 {
			clicks[k] = 0 // a new minute
		}
		clicks[k] += 1 + rng.Int64N(int64(1+2000/(k/4+1))) // popular ads first
		rows[i] = analytics.Row{
			AdID:    fmt.Sprintf("ad-%06d", k/len(countries)),
			Country: countries[k%len(countries)],
			Start:   start.Add(time.Duration(flush/2) * time.Minute),
			Clicks:  clicks[k],
			Bot:     clicks[k] / 50,
			IPRate:  clicks[k] / 200,
		}
	}
	return rows
}

// BenchmarkClickHouseUpsert measures publishing window totals to ClickHouse
// through chstore, as aggregators do: b.N rows (windowRows, 20,000 keys),
// upserted in calls of one flush (20,000 rows) from 16 goroutines (16
// partitions), which chstore gathers into one INSERT a second. Reported: rows
// per CPU-second of the ClickHouse server (a private clickhouse-server that
// chtest starts: the inserts, the background merges they cause, which the
// benchmark waits for, and an OPTIMIZE FINAL that merges every part into one,
// standing for the merges of a longer run), rows per CPU-second of this
// process (chstore's side), and the bytes on disk per row of the merged table
// (each key's upserts merged into one row).
func BenchmarkClickHouseUpsert(b *testing.B) {
	if os.Getenv("TEST_CLICKHOUSE_DSN") != "" {
		b.Skip("the server's CPU time needs a local clickhouse-server that chtest starts; unset TEST_CLICKHOUSE_DSN")
	}
	dsn := chtest.Start(b)
	pid, err := childProcess("clickhouse")
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	s, err := chstore.Open(ctx, chstore.Config{DSN: dsn, SpoolDir: b.TempDir()}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	const keys, callers = 20_000, 16
	rows := windowRows(b.N, keys, time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC))
	settle(b)
	b.ResetTimer()
	s0, c0 := processCPU(b, pid), cpuTime(b)
	var next atomic.Int64
	var g errgroup.Group
	for range callers {
		g.Go(func() error {
			for {
				i := int(next.Add(1)-1) * keys
				if i >= len(rows) {
					return nil
				}
				if err := s.Upsert(ctx, rows[i:min(i+keys, len(rows))]); err != nil {
					return err
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	client := cpuTime(b) - c0
	conn, db := clickhouseConn(b, dsn)
	waitForMerges(b, conn, db)
	// The background merges of a long run rewrite every row a few times; a
	// short run leaves most of them undone. One merge of everything stands
	// for them.
	if err := conn.Exec(ctx, "OPTIMIZE TABLE `"+db+"`.window_totals FINAL"); err != nil {
		b.Fatal(err)
	}
	waitForMerges(b, conn, db)
	b.StopTimer()
	server := processCPU(b, pid) - s0
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/server.Seconds(), "rows/server-cpu-s")
	b.ReportMetric(float64(b.N)/client.Seconds(), "rows/client-cpu-s")

	var stored, onDisk uint64
	if err := conn.QueryRow(ctx, "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts WHERE active AND database = '"+db+"' AND table = 'window_totals'").Scan(&stored, &onDisk); err != nil {
		b.Fatal(err)
	}
	distinct := (b.N + 2*keys - 1) / (2 * keys) * keys // keys a minute, each upserted twice
	if b.N >= 2*keys && int(stored) != distinct {
		b.Fatalf("%d rows stored after OPTIMIZE FINAL, want %d (one per window)", stored, distinct)
	}
	b.ReportMetric(float64(onDisk)/float64(stored), "B/row")
}

// clickhouseConn connects to dsn and returns the connection and its database.
func clickhouseConn(tb testing.TB, dsn string) (clickhouse.Conn, string) {
	tb.Helper()
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn, opts.Auth.Database
}

// waitForMerges waits until no merge runs in db and the parts of its table
// stop changing, up to a minute.
func waitForMerges(tb testing.TB, conn clickhouse.Conn, db string) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	last, quiet := uint64(0), 0
	for time.Now().Before(deadline) && quiet < 4 {
		var merges, parts uint64
		if err := conn.QueryRow(tb.Context(), "SELECT count() FROM system.merges WHERE database = '"+db+"'").Scan(&merges); err != nil {
			tb.Fatal(err)
		}
		if err := conn.QueryRow(tb.Context(), "SELECT count() FROM system.parts WHERE active AND database = '"+db+"'").Scan(&parts); err != nil {
			tb.Fatal(err)
		}
		if merges == 0 && parts == last {
			quiet++
		} else {
			quiet = 0
		}
		last = parts
		time.Sleep(250 * time.Millisecond)
	}
}

// childProcess returns the pid of this process's child whose command name
// starts with prefix.
func childProcess(prefix string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, ppid, _, _, err := procStat(pid)
		if err == nil && ppid == os.Getpid() && strings.HasPrefix(comm, prefix) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no child process named %s* of this process", prefix)
}

// processCPU returns the user + system CPU time of process pid.
func processCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	_, _, utime, stime, err := procStat(pid)
	if err != nil {
		tb.Fatal(err)
	}
	// /proc counts in USER_HZ ticks, 100 a second on Linux.
	return time.Duration(utime+stime) * (time.Second / 100)
}

// procStat reads a process's command name, parent and CPU ticks from
// /proc/PID/stat.
func procStat(pid int) (comm string, ppid int, utime, stime int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, 0, 0, err
	}
	// pid (comm) state ppid ... with utime and stime the 14th and 15th fields;
	// comm may hold spaces and parentheses, so split after its last ')'.
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[end+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return "", 0, 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ppid, err1 := strconv.Atoi(f[1])
	utime, err2 := strconv.ParseInt(f[11], 10, 64)
	stime, err3 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return "", 0, 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return s[open+1 : end], ppid, utime, stime, nil
}

// BenchmarkEmbedStoreRow measures the memory of a window row in the embedded
// analytics store, which holds every row in memory: two stores are written
// with 20,000 keys a minute (windowRows, each key once a minute) for 10 and
// for 60 minutes, closed, and opened again; the heap each holds after Open,
// the figure that matters for a long-running server, gives the bytes per row
// as the slope between the two, so that the fixed cost of a store (Pebble's
// own memory) is left out.
func BenchmarkEmbedStoreRow(b *testing.B) {
	const keys = 20_000
	start := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	var perRow float64
	for b.Loop() {
		var heap [2]float64
		var rows [2]int
		for i, minutes := range []int{10, 60} {
			all := windowRows(2*keys*minutes, keys, start)
			var once []analytics.Row // the second upsert of each key and minute
			for j := keys; j < len(all); j += 2 * keys {
				once = append(once, all[j:j+keys]...)
			}
			dir := b.TempDir()
			s, err := embedstore.Open(dir, embedstore.Config{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			for j := 0; j < len(once); j += 5000 {
				if err := s.Upsert(b.Context(), once[j:min(j+5000, len(once))]); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			all, once = nil, nil
			before := heapAlloc()
			s, err = embedstore.Open(dir, embedstore.Config{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			heap[i], rows[i] = float64(heapAlloc())-float64(before), keys*minutes
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
		}
		perRow = (heap[1] - heap[0]) / float64(rows[1]-rows[0])
	}
	b.ReportMetric(perRow, "B/row")
}

// heapAlloc returns the live heap after a full collection.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkDedupBytesPerKey measures the memory per key of the aggregator's
// fingerprint set (fpset) as it grows from empty to 20M keys (the seed's peak
// spread over 16 partitions is about 15M keys each), as a partition's set
// grows in a server: sampled every 10,000 inserts from 1M keys on, it reports
// the largest value (just after the table grew) and the mean over the samples.
func BenchmarkDedupBytesPerKey(b *testing.B) {
	const n, from, every = 20_000_000, 1_000_000, 10_000
	const minute0 = 29_000_000
	var worst, sum float64
	var samples int
	for b.Loop() {
		worst, sum, samples = 0, 0, 0
		s := fpset.New(0)
		for i := range n {
			s.Insert(splitmix(uint64(i)), minute0+uint32(i*10/n))
			if i+1 >= from && (i+1)%every == 0 {
				v := float64(s.Bytes()) / float64(s.Len())
				worst, sum, samples = max(worst, v), sum+v, samples+1
			}
		}
		if s.Len() != n {
			b.Fatalf("%d keys in the set, want %d", s.Len(), n)
		}
	}
	b.ReportMetric(worst, "B/key")
	b.ReportMetric(sum/float64(samples), "B/key-mean")
}

// splitmix returns the i-th value of splitmix64: well-mixed fingerprints.
func splitmix(i uint64) uint64 {
	z := i*0x9e3779b97f4a7c15 + 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
