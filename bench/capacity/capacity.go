// Package capacity holds the per-core figures that pedal estimate reads by
// default. figures.json is written by run.sh, which runs this directory's
// benchmarks (ingestion, aggregation, ClickHouse, the embedded analytics
// store) and internal/clicks/aggregate/fpset's, then records the machine they
// ran on; it is checked in, and built into the pedal binary through Figures.
//
// Every throughput figure is per core-second: the work done divided by the
// user + system CPU time of the process that did it (getrusage for the
// benchmark process, /proc/PID/stat for a ClickHouse server), so it does not
// depend on how many cores the benchmark had or on what else ran meanwhile.
package capacity

import (
	_ "embed"
	"slices"
)

//go:embed figures.json
var figures []byte

// FiguresPath is where run.sh writes the figures, from the module root.
const FiguresPath = "bench/capacity/figures.json"

// Figures returns the content of the checked-in figures.json.
func Figures() []byte { return slices.Clone(figures) }
