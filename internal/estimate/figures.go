package estimate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Figures are the per-core figures measured by bench/capacity/run.sh, with
// the machine they came from. They are written as JSON (see Parse).
//
// A per-core figure is work divided by the CPU time that the process doing
// the work consumed (its user + system time), not by the cores the benchmark
// had: it reads the same on a quiet machine and on a busy one, and the same
// whatever GOMAXPROCS was, as long as the work scales with cores.
type Figures struct {
	Machine Machine `json:"machine"`

	// Ingest is clicks per core-second of the ingestion path as pedal serve
	// runs it: the HTTP server, decoding and validating batches of 500 JSON
	// clicks, and the durable append to the embedded event log (group-committed
	// fsyncs), with the load generator in another process.
	Ingest Figure `json:"ingest_clicks_per_core_second"`
	// Aggregate is clicks per core-second of the aggregator: reading the log,
	// deduplication, the invalid-traffic rules, windows and synced state
	// commits, without the analytics store (ClickHouseClient is its share).
	Aggregate Figure `json:"aggregate_clicks_per_core_second"`
	// Partition is clicks per second (wall clock) that one partition, which
	// one goroutine processes in log order, sustains: the most a partition of
	// the clicks topic can carry.
	Partition Figure `json:"partition_clicks_per_second"`
	// DedupBytesPerKey is the memory of the aggregator's fingerprint set per
	// deduplication key (fpset): the largest measured as a set grows, just
	// after its table grew.
	DedupBytesPerKey Figure `json:"dedup_bytes_per_key"`
	// ClickHouse is window rows upserted per core-second of the ClickHouse
	// server (its user + system time, background merges included).
	ClickHouse Figure `json:"clickhouse_rows_per_core_second"`
	// ClickHouseClient is window rows upserted per core-second of pedal's
	// side (chstore): the aggregator's cost of publishing to ClickHouse.
	ClickHouseClient Figure `json:"clickhouse_client_rows_per_core_second"`
	// ClickHouseBytesPerRow is the disk space of one window row in ClickHouse
	// once merged (bytes on disk ÷ rows of the active parts).
	ClickHouseBytesPerRow Figure `json:"clickhouse_bytes_per_row"`
	// EmbedStoreBytesPerRow is the heap of one window row in the embedded
	// analytics store, which holds every row in memory.
	EmbedStoreBytesPerRow Figure `json:"embedstore_bytes_per_row"`
}

// Machine says where and when figures were measured.
type Machine struct {
	CPU         string    `json:"cpu"`   // as go test prints it
	Cores       int       `json:"cores"` // logical CPUs of the machine
	GOMAXPROCS  int       `json:"gomaxprocs"`
	MemoryBytes int64     `json:"memory_bytes,omitempty"`
	OS          string    `json:"os"`
	Arch        string    `json:"arch"`
	Go          string    `json:"go"`
	Commit      string    `json:"commit"`
	Date        time.Time `json:"date"`
	// LoadAverage is the machine's 1, 5 and 15-minute load averages when the
	// figures were written: how busy it was with other work meanwhile.
	LoadAverage string `json:"load_average,omitempty"`
	Command     string `json:"command"` // how to measure again
}

// Figure is one measured figure: a value chosen from samples (the runs of
// -count, or the sizes of a sweep) as Benchmark says.
type Figure struct {
	Value     float64   `json:"value"`
	Unit      string    `json:"unit"`
	Benchmark string    `json:"benchmark"` // the benchmark and metric, and how Value was chosen
	Samples   []float64 `json:"samples"`
}

// named returns the figures with their JSON names, in a fixed order.
func (f *Figures) named() []struct {
	name string
	fig  *Figure
} {
	return []struct {
		name string
		fig  *Figure
	}{
		{"ingest_clicks_per_core_second", &f.Ingest},
		{"aggregate_clicks_per_core_second", &f.Aggregate},
		{"partition_clicks_per_second", &f.Partition},
		{"dedup_bytes_per_key", &f.DedupBytesPerKey},
		{"clickhouse_rows_per_core_second", &f.ClickHouse},
		{"clickhouse_client_rows_per_core_second", &f.ClickHouseClient},
		{"clickhouse_bytes_per_row", &f.ClickHouseBytesPerRow},
		{"embedstore_bytes_per_row", &f.EmbedStoreBytesPerRow},
	}
}

// Validate reports the first figure missing or not a positive finite number.
func (f *Figures) Validate() error {
	for _, n := range f.named() {
		if v := n.fig.Value; !(v > 0) || math.IsInf(v, 0) {
			return fmt.Errorf("figure %s: %v is not a positive number (measure again with bench/capacity/run.sh)", n.name, v)
		}
	}
	if f.Machine.CPU == "" || f.Machine.Date.IsZero() {
		return errors.New("figures: the machine's cpu and the date are missing")
	}
	return nil
}

// Parse reads figures written by bench/capacity/run.sh and validates them.
// Unknown members are refused, so that a misspelt figure is not silently
// ignored.
func Parse(data []byte) (Figures, error) {
	var f Figures
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Figures{}, fmt.Errorf("figures: %w", err)
	}
	if err := f.Validate(); err != nil {
		return Figures{}, err
	}
	return f, nil
}
