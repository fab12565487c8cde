// Command writefigures turns the output of the capacity benchmarks (go test
// -bench, in the standard benchmark format, several runs concatenated) into the figures file that pedal estimate reads, recording the
// machine: the CPU go test printed, this machine's cores and memory, the Go
// version, the commit and the date. bench/capacity/run.sh runs it:
//
//	go run ./bench/capacity/writefigures -in bench.txt -out figures.json -commit abc1234
//
// A figure missing from the input (a benchmark that was skipped, such as the
// ClickHouse one without clickhouse-server) is an error naming it: the file
// is written only when complete.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pedal-project/pedal/internal/estimate"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "writefigures:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer, stdin io.Reader) error {
	fs := flag.NewFlagSet("writefigures", flag.ContinueOnError)
	in := fs.String("in", "", "benchmark output `file` (default: standard input)")
	out := fs.String("out", "", "figures `file` to write (default: standard output)")
	commit := fs.String("commit", "", "commit the benchmarks ran at")
	command := fs.String("command", "bench/capacity/run.sh", "how the figures were measured")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *commit == "" {
		return errors.New("-commit: missing")
	}
	r := stdin
	if *in != "" {
		f, err := os.Open(*in)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	res, err := parse(r)
	if err != nil {
		return err
	}
	figs, err := figures(res)
	if err != nil {
		return err
	}
	figs.Machine = estimate.Machine{
		CPU: res.cpu, Cores: runtime.NumCPU(), GOMAXPROCS: res.procs, MemoryBytes: memTotal(),
		OS: res.goos, Arch: res.goarch, Go: runtime.Version(), Commit: *commit,
		Date: time.Now().UTC().Truncate(time.Second), LoadAverage: loadAverage(), Command: *command,
	}
	if err := figs.Validate(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(figs, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if *out == "" {
		_, err = stdout.Write(b)
		return err
	}
	return os.WriteFile(*out, b, 0o644)
}

// result is one benchmark line: package, name without the -GOMAXPROCS
// suffix, and its metrics by unit.
type result struct {
	pkg, name string
	metrics   map[string]float64
}

type results struct {
	cpu, goos, goarch string
	procs             int
	lines             []result
}

// parse reads the standard benchmark format: "key: value" configuration
// lines, and "BenchmarkName-P  N  value unit  value unit ..." result lines.
func parse(r io.Reader) (*results, error) {
	res := &results{}
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.Contains(k, " ") {
			switch k {
			case "pkg":
				pkg = v
			case "cpu":
				res.cpu = strings.TrimSpace(v)
			case "goos":
				res.goos = v
			case "goarch":
				res.goarch = v
			}
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || len(f)%2 != 0 {
			return nil, fmt.Errorf("line %d: not a benchmark result: %q", n, line)
		}
		name, procs := f[0], 1
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if p, err := strconv.Atoi(name[i+1:]); err == nil {
				name, procs = name[:i], p
			}
		}
		if res.procs != 0 && procs != res.procs {
			return nil, fmt.Errorf("line %d: GOMAXPROCS %d, earlier lines %d: run every benchmark alike", n, procs, res.procs)
		}
		res.procs = procs
		m := map[string]float64{}
		for i := 2; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %q is not a number", n, f[i])
			}
			m[f[i+1]] = v
		}
		res.lines = append(res.lines, result{pkg: pkg, name: name, metrics: m})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if res.cpu == "" {
		return nil, errors.New("no cpu: line in the benchmark output")
	}
	return res, nil
}

// samples returns the values of unit of the benchmarks of package pkg (by
// suffix) whose name is name or starts with name + "/".
func (r *results) samples(pkg, name, unit string) []float64 {
	var vs []float64
	for _, l := range r.lines {
		if !strings.HasSuffix(l.pkg, pkg) || l.name != name && !strings.HasPrefix(l.name, name+"/") {
			continue
		}
		if v, ok := l.metrics[unit]; ok {
			vs = append(vs, v)
		}
	}
	return vs
}

// figures picks each figure from the results: the median of the runs, but
// the largest for the memory of the fingerprint set.
func figures(r *results) (estimate.Figures, error) {
	const capacity = "bench/capacity"
	var f estimate.Figures
	var missing []string
	pick := func(dst *estimate.Figure, pkg, name, unit, figUnit, how string, choose func([]float64) float64) {
		vs := r.samples(pkg, name, unit)
		if len(vs) == 0 {
			missing = append(missing, fmt.Sprintf("%s %s (%s)", name, unit, pkg))
			return
		}
		*dst = estimate.Figure{Value: choose(vs), Unit: figUnit, Samples: vs,
			Benchmark: fmt.Sprintf("%s of %s, %s", unit, name, how)}
	}
	const med = "median"
	pick(&f.Ingest, capacity, "BenchmarkIngest", "clicks/cpu-s", "clicks/s per core", med, median)
	pick(&f.Aggregate, capacity, "BenchmarkAggregatePartition", "clicks/cpu-s", "clicks/s per core", med, median)
	pick(&f.Partition, capacity, "BenchmarkAggregatePartition", "clicks/s", "clicks/s", med, median)
	pick(&f.DedupBytesPerKey, capacity, "BenchmarkDedupBytesPerKey", "B/key", "B/key", "largest of the runs", slices.Max[[]float64])
	pick(&f.ClickHouse, capacity, "BenchmarkClickHouseUpsert", "rows/server-cpu-s", "rows/s per core", med, median)
	pick(&f.ClickHouseClient, capacity, "BenchmarkClickHouseUpsert", "rows/client-cpu-s", "rows/s per core", med, median)
	pick(&f.ClickHouseBytesPerRow, capacity, "BenchmarkClickHouseUpsert", "B/row", "B/row", med, median)
	pick(&f.EmbedStoreBytesPerRow, capacity, "BenchmarkEmbedStoreRow", "B/row", "B/row", med, median)
	if len(missing) > 0 {
		return f, fmt.Errorf("missing from the benchmark output (skipped or failed?): %s", strings.Join(missing, "; "))
	}
	return f, nil
}

func median(vs []float64) float64 {
	s := slices.Sorted(slices.Values(vs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// memTotal returns the machine's memory from /proc/meminfo, or 0.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// loadAverage returns the 1, 5 and 15-minute load averages, or "".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}
