package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pedal-project/pedal/internal/estimate"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/pedal-project/pedal/bench/capacity
cpu: Test CPU @ 3.0GHz
BenchmarkIngest-2   	    3000	   1362553 ns/op	    500000 clicks/cpu-s	    366958 clicks/s	         0.6584 cores
BenchmarkIngest-2   	    3000	   1238180 ns/op	    700000 clicks/cpu-s	    403819 clicks/s	         0.6749 cores
BenchmarkIngest-2   	    3000	   1182871 ns/op	    600000 clicks/cpu-s	    422700 clicks/s	         0.7494 cores
PASS
ok  	github.com/pedal-project/pedal/bench/capacity	16.064s
BenchmarkAggregatePartition-2   	 1000000	     20223 ns/op	    100000 clicks/cpu-s	     50000 clicks/s	         0.4904 rows/click
BenchmarkAggregatePartition-2   	 1000000	     18774 ns/op	    120000 clicks/cpu-s	     40000 clicks/s	         0.4382 rows/click
BenchmarkClickHouseUpsert-2   	 2000000	     12549 ns/op	         6 B/row	    800000 rows/client-cpu-s	    900000 rows/server-cpu-s
BenchmarkEmbedStoreRow-2      	       1	5348064849 ns/op	        46.5 B/row
BenchmarkDedupBytesPerKey-2   	       1	12920475706 ns/op	        13.33 B/key	        11.62 B/key-mean
`

func TestFigures(t *testing.T) {
	out := filepath.Join(t.TempDir(), "figures.json")
	if err := run([]string{"-out", out, "-commit", "abc1234"}, nil, strings.NewReader(sample)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	f, err := estimate.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"ingest (median of 3)", f.Ingest.Value, 600000},
		{"aggregate (median of 2)", f.Aggregate.Value, 110000},
		{"partition", f.Partition.Value, 45000},
		{"dedup", f.DedupBytesPerKey.Value, 13.33},
		{"clickhouse", f.ClickHouse.Value, 900000},
		{"clickhouse client", f.ClickHouseClient.Value, 800000},
		{"clickhouse bytes", f.ClickHouseBytesPerRow.Value, 6},
		{"embedstore bytes", f.EmbedStoreBytesPerRow.Value, 46.5},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	if m := f.Machine; m.CPU != "Test CPU @ 3.0GHz" || m.GOMAXPROCS != 2 || m.Commit != "abc1234" || m.OS != "linux" || m.Date.IsZero() {
		t.Errorf("machine %+v", m)
	}
	if len(f.Ingest.Samples) != 3 {
		t.Errorf("ingest samples %v, want the 3 runs", f.Ingest.Samples)
	}
}

func TestFiguresMissing(t *testing.T) {
	noCH := strings.ReplaceAll(sample, "BenchmarkClickHouseUpsert", "BenchmarkOther")
	var out bytes.Buffer
	err := run([]string{"-commit", "abc1234"}, &out, strings.NewReader(noCH))
	if err == nil || !strings.Contains(err.Error(), "BenchmarkClickHouseUpsert") {
		t.Errorf("error %v, want one naming the missing benchmark", err)
	}
	if out.Len() > 0 {
		t.Errorf("wrote figures anyway:\n%s", out.String())
	}
	if err := run(nil, &out, strings.NewReader(sample)); err == nil || !strings.Contains(err.Error(), "-commit") {
		t.Errorf("error %v, want one about -commit", err)
	}
	mixed := sample + "BenchmarkIngest-4   	    3000	   1362553 ns/op	    500000 clicks/cpu-s\n"
	if err := run([]string{"-commit", "x"}, &out, strings.NewReader(mixed)); err == nil || !strings.Contains(err.Error(), "GOMAXPROCS") {
		t.Errorf("error %v, want one about GOMAXPROCS", err)
	}
}
