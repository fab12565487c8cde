package estimate

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText writes the sheet for people: the inputs, where the figures come
// from (source names the file), then each line as name, value and the
// arithmetic behind it.
func (s *Sheet) WriteText(w io.Writer, source string) error {
	in, m := s.Inputs, s.Figures.Machine
	var b strings.Builder
	fmt.Fprintf(&b, "pedal capacity estimate\n\n")
	fmt.Fprintf(&b, "inputs:  %s clicks/day, peak %s× the average, %s B a click, log kept %s, replication %d,\n",
		Num(in.ClicksPerDay), Num(in.PeakFactor), Num(in.EventBytes), Duration(in.Retention), in.Replication)
	fmt.Fprintf(&b, "         dedup horizon %s + %s allowed lateness, %s ads × %s countries, windows kept %s, flushed every %s,\n",
		Duration(in.DedupHorizon), Duration(in.AllowedLateness), Num(in.Ads), Num(in.CountriesPerAd),
		Duration(in.AggregateRetention), Duration(in.FlushInterval))
	fmt.Fprintf(&b, "         nodes of %d cores and %s of disk, used to %s%%, in %s\n",
		in.CoresPerNode, Bytes(in.DiskBytesPerNode), Num(in.TargetUtilization*100), Count(float64(in.Zones), "zone"))
	fmt.Fprintf(&b, "figures: %s, measured %s on %s (%d cores, GOMAXPROCS %d), %s/%s, %s, commit %s\n",
		source, m.Date.UTC().Format("2006-01-02 15:04 MST"), m.CPU, m.Cores, m.GOMAXPROCS, m.OS, m.Arch, m.Go, m.Commit)
	if m.LoadAverage != "" || m.Command != "" {
		fmt.Fprintf(&b, "         load average %s when written; measure again with %s\n", m.LoadAverage, m.Command)
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, n := range s.Figures.named() {
		fmt.Fprintf(tw, "         %s\t%s %s\t%s\n", n.name, Num(n.fig.Value), n.fig.Unit, n.fig.Benchmark)
	}
	tw.Flush()

	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	section := ""
	for _, l := range s.Lines {
		if l.Section != section {
			section = l.Section
			fmt.Fprintf(tw, "\n%s\n", section)
		}
		note := ""
		if l.Note != "" {
			note = "   (" + l.Note + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t= %s%s\n", l.Name, Value(l.Value, l.Unit), l.Arithmetic, note)
	}
	tw.Flush()
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the sheet as one JSON object: inputs (durations as
// strings like 30d), the figures file's content, its source and the lines.
func (s *Sheet) WriteJSON(w io.Writer, source string) error {
	in := s.Inputs
	out := struct {
		Inputs        map[string]any `json:"inputs"`
		FiguresSource string         `json:"figures_source"`
		Figures       Figures        `json:"figures"`
		Lines         []Line         `json:"lines"`
	}{
		Inputs: map[string]any{
			"clicks_per_day":      in.ClicksPerDay,
			"peak_factor":         in.PeakFactor,
			"event_bytes":         in.EventBytes,
			"retention":           Duration(in.Retention),
			"dedup_horizon":       Duration(in.DedupHorizon),
			"allowed_lateness":    Duration(in.AllowedLateness),
			"replication":         in.Replication,
			"ads":                 in.Ads,
			"countries_per_ad":    in.CountriesPerAd,
			"aggregate_retention": Duration(in.AggregateRetention),
			"flush_interval":      Duration(in.FlushInterval),
			"cores_per_node":      in.CoresPerNode,
			"zones":               in.Zones,
			"target_utilization":  in.TargetUtilization,
			"disk_bytes_per_node": in.DiskBytesPerNode,
		},
		FiguresSource: source,
		Figures:       s.Figures,
		Lines:         s.Lines,
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// Value formats a line's value with its unit: bytes and bytes per second in
// SI units (with bits per second beside the latter), others with Num.
func Value(v float64, unit string) string {
	switch unit {
	case "B":
		return Bytes(v)
	case "B/s":
		return Bytes(v) + "/s (" + siPrefix(v*8, "bit") + "/s)"
	}
	if thing, ok := strings.CutSuffix(unit, "s"); ok && countable[unit] {
		return Count(v, thing)
	}
	return Num(v) + " " + unit
}

// countable are the units Value writes in the singular for one.
var countable = map[string]bool{"nodes": true, "shards": true, "partitions": true, "cores": true, "keys": true, "rows": true}

// Bytes formats a size in SI units to four significant digits: 69.44 MB.
func Bytes(v float64) string { return siPrefix(v, "B") }

func siPrefix(v float64, unit string) string {
	prefixes := []string{"", "k", "M", "G", "T", "P", "E"}
	i := 0
	for math.Abs(v) >= 1000 && i < len(prefixes)-1 {
		v /= 1000
		i++
	}
	return fmt.Sprintf("%.4g %s%s", v, prefixes[i], unit)
}

// Duration formats a duration as the flags take it: whole days as 30d,
// others as time.Duration does without zero units (10m, 1h30m, 250ms).
func Duration(d time.Duration) string {
	if d != 0 && d%Day == 0 {
		return fmt.Sprintf("%dd", d/Day)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
