// Package estimate computes a capacity sheet for the click pipeline, in the
// style of the seed's estimation step ("10 billion clicks divided by 86,400
// seconds is about 115,740 clicks per second"): from a few inputs (clicks a day,
// peak factor, event size, retention, ...) and the per-core figures this
// project measured (Figures, written by bench/capacity/run.sh), it derives the
// rates, bandwidth, storage, deduplication memory, Kafka partitions and node
// counts, each as a Line that carries the arithmetic that produced it.
//
// The arithmetic of a line is an expression over the printed values of earlier
// lines, inputs and figures: numbers (with thousands separators), unit words as
// annotations (they do not take part in the computation, so every expression
// keeps its quantities in consistent units), the operators × ÷ + − and
// parentheses, and the functions ceil, min, max and pow2up (the least power of
// two at or above its argument). Evaluated, it gives the line's value to the
// precision printed.
//
// Everything here is a pure function of its arguments and safe for concurrent
// use.
package estimate

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Day is the length of a day in the inputs' durations (30d).
const Day = 24 * time.Hour

// Inputs are the assumptions of a sheet. The names in comments are the ones
// errors use (and pedal estimate's flags).
type Inputs struct {
	ClicksPerDay float64 // clicks-per-day: 10e9 in the seed
	PeakFactor   float64 // peak-factor: peak rate ÷ average rate, ≥ 1; 3 in the seed
	EventBytes   float64 // event-bytes: one click in the log
	Retention    time.Duration
	// DedupHorizon and AllowedLateness give the event time the aggregator's
	// fingerprint set covers: DedupHorizon + AllowedLateness + up to one
	// minute, since it expires whole minutes.
	DedupHorizon    time.Duration // dedup-horizon
	AllowedLateness time.Duration // allowed-lateness; may be 0
	Replication     int           // replication: copies of the log and of the analytics tables

	// Ads × CountriesPerAd bound the (ad, country, minute) windows with clicks
	// in a minute, and so the aggregated rows; so do the clicks of a minute.
	Ads                float64       // ads: ads with clicks
	CountriesPerAd     float64       // countries-per-ad: countries an ad is clicked from in a minute, on average
	AggregateRetention time.Duration // aggregate-retention: how long window rows are kept
	FlushInterval      time.Duration // flush-interval: the aggregator publishes each changed window at most once per interval

	CoresPerNode      int     // cores-per-node
	Zones             int     // zones: availability zones; each role runs a node in every one, at least
	TargetUtilization float64 // target-utilization: the share of cores and disk a plan may use, in (0, 1]
	DiskBytesPerNode  float64 // disk-per-node: of a ClickHouse node
}

// SeedInputs returns the seed's assumptions (10 billion clicks a day, peak 3×)
// and, where the seed states none, pedal's defaults or a stated guess.
func SeedInputs() Inputs {
	return Inputs{
		ClicksPerDay:       10e9,
		PeakFactor:         3,
		EventBytes:         200,
		Retention:          30 * Day,
		DedupHorizon:       10 * time.Minute,
		AllowedLateness:    30 * time.Second,
		Replication:        3,
		Ads:                1e6,
		CountriesPerAd:     5,
		AggregateRetention: 30 * Day,
		FlushInterval:      250 * time.Millisecond,
		CoresPerNode:       16,
		Zones:              3,
		TargetUtilization:  0.6,
		DiskBytesPerNode:   4e12,
	}
}

// Validate reports the first input that is not usable, by name.
func (in Inputs) Validate() error {
	positive := []struct {
		name string
		v    float64
	}{
		{"clicks-per-day", in.ClicksPerDay},
		{"peak-factor", in.PeakFactor},
		{"event-bytes", in.EventBytes},
		{"retention", float64(in.Retention)},
		{"dedup-horizon", float64(in.DedupHorizon)},
		{"replication", float64(in.Replication)},
		{"ads", in.Ads},
		{"countries-per-ad", in.CountriesPerAd},
		{"aggregate-retention", float64(in.AggregateRetention)},
		{"flush-interval", float64(in.FlushInterval)},
		{"cores-per-node", float64(in.CoresPerNode)},
		{"zones", float64(in.Zones)},
		{"target-utilization", in.TargetUtilization},
		{"disk-per-node", in.DiskBytesPerNode},
	}
	for _, p := range positive {
		if !(p.v > 0) || math.IsInf(p.v, 0) {
			return fmt.Errorf("%s: must be a positive number, got %v", p.name, p.v)
		}
	}
	if in.AllowedLateness < 0 {
		return fmt.Errorf("allowed-lateness: must not be negative, got %v", in.AllowedLateness)
	}
	if in.PeakFactor < 1 {
		return fmt.Errorf("peak-factor: the peak is at least the average, so it must be ≥ 1, got %v", in.PeakFactor)
	}
	if in.TargetUtilization > 1 {
		return fmt.Errorf("target-utilization: must be at most 1 (all of a node), got %v", in.TargetUtilization)
	}
	if in.CountriesPerAd > 250 {
		return fmt.Errorf("countries-per-ad: there are 249 ISO 3166-1 countries (and unknown), got %v", in.CountriesPerAd)
	}
	return nil
}

// Line is one figure of a sheet.
type Line struct {
	Section    string  `json:"section"`
	Name       string  `json:"name"`
	Value      float64 `json:"value"`
	Unit       string  `json:"unit"`       // of Value: clicks/s, B, B/s, nodes, ...
	Arithmetic string  `json:"arithmetic"` // evaluates to Value; see the package comment
	Note       string  `json:"note,omitempty"`
}

// Sheet is a computed capacity sheet.
type Sheet struct {
	Inputs  Inputs
	Figures Figures
	Lines   []Line
}

// Line returns the line named name, and whether there is one.
func (s *Sheet) Line(name string) (Line, bool) {
	for _, l := range s.Lines {
		if l.Name == name {
			return l, true
		}
	}
	return Line{}, false
}

// Names of the lines, for callers that look one up.
const (
	AverageRate       = "average rate"
	PeakRate          = "peak rate"
	UpsertRate        = "window upserts at peak"
	IngressBandwidth  = "ingress at peak"
	LogWrites         = "log disk writes at peak"
	RawStorage        = "raw log storage"
	WindowsPerMinute  = "windows per minute"
	AggregatedRows    = "aggregated rows"
	ClickHouseStorage = "ClickHouse storage"
	EmbedStoreMemory  = "embedded store memory"
	DedupKeys         = "dedup keys"
	DedupMemory       = "dedup memory"
	DedupPerNode      = "dedup memory per aggregator"
	KafkaPartitions   = "Kafka partitions"
	IngestCores       = "ingest cores"
	IngestNodes       = "ingest nodes"
	AggregatorCores   = "aggregator cores"
	AggregatorNodes   = "aggregator nodes"
	ClickHouseCores   = "ClickHouse cores (writes)"
	ClickHouseShards  = "ClickHouse shards"
	ClickHouseNodes   = "ClickHouse nodes"
)

// Sections, in the order a sheet lists them.
var sections = []string{"rates", "bandwidth", "storage", "memory", "partitions", "nodes"}

const (
	sectionRates, sectionBandwidth, sectionStorage = "rates", "bandwidth", "storage"
	sectionMemory, sectionPartitions, sectionNodes = "memory", "partitions", "nodes"

	secondsPerDay     = 86400
	minutesPerDay     = 1440
	fingerprintMinute = 60 // the fingerprint set expires whole minutes
)

// Compute derives the sheet from in and fig.
func Compute(in Inputs, fig Figures) (*Sheet, error) {
	if err := in.Validate(); err != nil {
		return nil, err
	}
	if err := fig.Validate(); err != nil {
		return nil, fmt.Errorf("estimate: %w", err)
	}
	s := &Sheet{Inputs: in, Figures: fig}
	add := func(section, name string, v float64, unit, arith, note string) float64 {
		s.Lines = append(s.Lines, Line{Section: section, Name: name, Value: v, Unit: unit, Arithmetic: arith, Note: note})
		return v
	}
	n := Num
	util, cores := in.TargetUtilization, float64(in.CoresPerNode)
	repl := float64(in.Replication)

	// Rates.
	avg := add(sectionRates, AverageRate, in.ClicksPerDay/secondsPerDay, "clicks/s",
		fmt.Sprintf("%s clicks/day ÷ %s s/day", n(in.ClicksPerDay), n(secondsPerDay)), "")
	peak := add(sectionRates, PeakRate, avg*in.PeakFactor, "clicks/s",
		fmt.Sprintf("%s clicks/s × %s", n(avg), n(in.PeakFactor)), "")

	// Bandwidth.
	ingress := add(sectionBandwidth, IngressBandwidth, peak*in.EventBytes, "B/s",
		fmt.Sprintf("%s clicks/s × %s B", n(peak), n(in.EventBytes)), "clicks into the log")
	add(sectionBandwidth, LogWrites, ingress*repl, "B/s",
		fmt.Sprintf("%s B/s × %s", n(ingress), Count(repl, "replica")), "Kafka brokers' disks, all replicas")

	// Storage.
	retDays := in.Retention.Hours() / 24
	add(sectionStorage, RawStorage, in.ClicksPerDay*retDays*in.EventBytes*repl, "B",
		fmt.Sprintf("%s clicks/day × %s × %s B × %s", n(in.ClicksPerDay), Count(retDays, "day"), n(in.EventBytes), Count(repl, "replica")), "")
	windows := add(sectionStorage, WindowsPerMinute, math.Min(in.Ads*in.CountriesPerAd, avg*60), "rows/min",
		fmt.Sprintf("min(%s ads × %s countries, %s clicks/s × 60 s)", n(in.Ads), n(in.CountriesPerAd), n(avg)),
		"(ad, country, minute) windows with clicks, at most one per click")
	aggDays := in.AggregateRetention.Hours() / 24
	rows := add(sectionStorage, AggregatedRows, windows*minutesPerDay*aggDays, "rows",
		fmt.Sprintf("%s rows/min × %s min/day × %s", n(windows), n(minutesPerDay), Count(aggDays, "day")), "")
	chBytes := add(sectionStorage, ClickHouseStorage, rows*fig.ClickHouseBytesPerRow.Value*repl, "B",
		fmt.Sprintf("%s rows × %s B/row × %s", n(rows), n(fig.ClickHouseBytesPerRow.Value), Count(repl, "replica")),
		"merged parts on disk")
	add(sectionStorage, EmbedStoreMemory, rows*fig.EmbedStoreBytesPerRow.Value, "B",
		fmt.Sprintf("%s rows × %s B/row", n(rows), n(fig.EmbedStoreBytesPerRow.Value)),
		"the embedded store instead of ClickHouse: every row in one process's memory")

	// Memory.
	horizon := in.DedupHorizon.Seconds()
	late := in.AllowedLateness.Seconds()
	keys := add(sectionMemory, DedupKeys, peak*(horizon+late+fingerprintMinute), "keys",
		fmt.Sprintf("%s clicks/s × (%s s + %s s + %s s)", n(peak), n(horizon), n(late), n(fingerprintMinute)),
		"dedup horizon + allowed lateness + the minute being expired")
	dedup := add(sectionMemory, DedupMemory, keys*fig.DedupBytesPerKey.Value, "B",
		fmt.Sprintf("%s keys × %s B/key", n(keys), n(fig.DedupBytesPerKey.Value)), "fingerprint sets, all partitions")

	// Window upserts: each flush publishes every window changed since the
	// last, so at most one row per click and one per window and flush.
	peakWindows := math.Min(in.Ads*in.CountriesPerAd, peak*60)
	flush := in.FlushInterval.Seconds()
	upserts := add(sectionRates, UpsertRate, math.Min(peak, peakWindows/flush), "rows/s",
		fmt.Sprintf("min(%s clicks/s, min(%s ads × %s countries, %s clicks/s × 60 s) ÷ %s s)",
			n(peak), n(in.Ads), n(in.CountriesPerAd), n(peak), n(flush)),
		"rows to the analytics store, one per window changed in a flush")

	// Nodes. A node may use util of its cores, and every role has a node in
	// each zone (the seed: redundancy across availability zones).
	nodeCap := fmt.Sprintf("(%d cores × %s)", in.CoresPerNode, n(util))
	zones := float64(in.Zones)
	ingCores := add(sectionNodes, IngestCores, peak/fig.Ingest.Value, "cores",
		fmt.Sprintf("%s clicks/s ÷ %s clicks/s per core", n(peak), n(fig.Ingest.Value)), "HTTP, decoding, durable log append")
	add(sectionNodes, IngestNodes, math.Max(math.Ceil(ingCores/(cores*util)), zones), "nodes",
		fmt.Sprintf("max(ceil(%s cores ÷ %s), %s)", n(ingCores), nodeCap, Count(zones, "zone")), "by CPU, at least one per zone")
	aggCores := add(sectionNodes, AggregatorCores, peak/fig.Aggregate.Value+upserts/fig.ClickHouseClient.Value, "cores",
		fmt.Sprintf("%s clicks/s ÷ %s clicks/s per core + %s rows/s ÷ %s rows/s per core",
			n(peak), n(fig.Aggregate.Value), n(upserts), n(fig.ClickHouseClient.Value)),
		"aggregation, then publishing to ClickHouse")
	aggNodes := add(sectionNodes, AggregatorNodes, math.Max(math.Ceil(aggCores/(cores*util)), zones), "nodes",
		fmt.Sprintf("max(ceil(%s cores ÷ %s), %s)", n(aggCores), nodeCap, Count(zones, "zone")), "by CPU, at least one per zone")
	add(sectionMemory, DedupPerNode, dedup/aggNodes, "B",
		fmt.Sprintf("%s B ÷ %s", n(dedup), Count(aggNodes, "node")), "")

	// Partitions: enough that none carries more than util of what one
	// partition sustains, and at least one per aggregator core, so that every
	// core has a partition to process; rounded up to a power of two.
	part := fig.Partition.Value
	byRate := math.Ceil(peak / (part * util))
	add(sectionPartitions, KafkaPartitions, pow2up(math.Max(byRate, aggNodes*cores)), "partitions",
		fmt.Sprintf("pow2up(max(ceil(%s clicks/s ÷ (%s clicks/s × %s)), %s × %d cores))",
			n(peak), n(part), n(util), Count(aggNodes, "node"), in.CoresPerNode),
		"keyed by ad_id; at least one per aggregator core")

	chCores := add(sectionNodes, ClickHouseCores, upserts/fig.ClickHouse.Value, "cores",
		fmt.Sprintf("%s rows/s ÷ %s rows/s per core", n(upserts), n(fig.ClickHouse.Value)), "inserts and merges; queries come on top")
	perReplica := chBytes / repl
	shards := add(sectionNodes, ClickHouseShards,
		math.Max(math.Ceil(chCores/(cores*util)), math.Ceil(perReplica/(in.DiskBytesPerNode*util))), "shards",
		fmt.Sprintf("max(ceil(%s cores ÷ %s), ceil(%s B ÷ (%s B × %s)))",
			n(chCores), nodeCap, n(perReplica), n(in.DiskBytesPerNode), n(util)),
		"by write CPU, or by one replica's disk")
	add(sectionNodes, ClickHouseNodes, shards*repl, "nodes",
		fmt.Sprintf("%s × %s", Count(shards, "shard"), Count(repl, "replica")), "")

	slices.SortStableFunc(s.Lines, func(a, b Line) int {
		return slices.Index(sections, a.Section) - slices.Index(sections, b.Section)
	})
	return s, nil
}

// pow2up returns the least power of two ≥ x (1 for x ≤ 1).
func pow2up(x float64) float64 {
	p := 1.0
	for p < x {
		p *= 2
	}
	return p
}

// Num formats a number as the arithmetic prints it: integers and numbers of a
// million or more as whole numbers with thousands separators, others from
// 1,000 with one decimal, smaller ones with four significant digits.
func Num(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Sprint(v)
	}
	neg := v < 0
	if neg {
		v = -v
	}
	var s string
	switch {
	case v == math.Trunc(v) && v < 1e18, v >= 1e6:
		s = group(fmt.Sprintf("%.0f", v))
	case v >= 1000:
		s = fmt.Sprintf("%.1f", v)
		s = group(s[:len(s)-2]) + s[len(s)-2:]
	default:
		// Four significant digits, never in exponent form.
		r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 4, 64), 64)
		s = strconv.FormatFloat(r, 'f', -1, 64)
	}
	if neg {
		s = "-" + s
	}
	return s
}

// group puts thousands separators into a string of digits.
func group(digits string) string {
	if len(digits) <= 3 {
		return digits
	}
	var b strings.Builder
	head := len(digits) % 3
	if head > 0 {
		b.WriteString(digits[:head])
	}
	for i := head; i < len(digits); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(digits[i : i+3])
	}
	return b.String()
}

// Count formats a count of things: 1 node, 3 nodes, 1.5 days.
func Count(v float64, thing string) string {
	if v == 1 {
		return "1 " + thing
	}
	return Num(v) + " " + thing + "s"
}
