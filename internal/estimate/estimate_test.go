package estimate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// testFigures are made-up figures of round values, so that the expected
// lines below can be worked out by hand.
func testFigures() Figures {
	fig := func(v float64, unit string) Figure {
		return Figure{Value: v, Unit: unit, Benchmark: "test", Samples: []float64{v}}
	}
	return Figures{
		Machine: Machine{CPU: "Test CPU", Cores: 2, GOMAXPROCS: 2, OS: "linux", Arch: "amd64", Go: "go1.26.8",
			Commit: "abc1234", Date: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Command: "bench/capacity/run.sh"},
		Ingest:                fig(500_000, "clicks/s per core"),
		Aggregate:             fig(125_000, "clicks/s per core"),
		Partition:             fig(150_000, "clicks/s"),
		DedupBytesPerKey:      fig(13.3, "B/key"),
		ClickHouse:            fig(400_000, "rows/s per core"),
		ClickHouseClient:      fig(2_000_000, "rows/s per core"),
		ClickHouseBytesPerRow: fig(10, "B/row"),
		EmbedStoreBytesPerRow: fig(50, "B/row"),
	}
}

func mustCompute(t *testing.T, in Inputs, fig Figures) *Sheet {
	t.Helper()
	s, err := Compute(in, fig)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func value(t *testing.T, s *Sheet, name string) float64 {
	t.Helper()
	l, ok := s.Line(name)
	if !ok {
		t.Fatalf("no line %q", name)
	}
	return l.Value
}

// TestSeedRates: the seed says "10 Billion clicks divided by 86,400 seconds,
// which is about 115,740 clicks per second", and with peaks of 3×, "350,000
// clicks per second".
func TestSeedRates(t *testing.T) {
	s := mustCompute(t, SeedInputs(), testFigures())
	avg, peak := value(t, s, AverageRate), value(t, s, PeakRate)
	if got := math.Floor(avg); got != 115_740 {
		t.Errorf("average rate %v: its whole part is %v, the seed says 115,740", avg, got)
	}
	if got := roundSignificant(peak, 2); got != 350_000 {
		t.Errorf("peak rate %v rounds to %v, the seed says ~350,000", peak, got)
	}
	var text bytes.Buffer
	if err := s.WriteText(&text, "test"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"115,740.7 clicks/s  = 10,000,000,000 clicks/day ÷ 86,400 s/day",
		"347,222.2 clicks/s  = 115,740.7 clicks/s × 3",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the sheet lacks %q:\n%s", want, text.String())
		}
	}
}

func roundSignificant(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits)-math.Ceil(math.Log10(v)))
	return math.Round(v*p) / p
}

// TestSeedSheet pins every line of the seed's sheet with testFigures,
// worked out by hand.
func TestSeedSheet(t *testing.T) {
	s := mustCompute(t, SeedInputs(), testFigures())
	peak := 1e10 / 86400 * 3 // 347,222.2
	keys := peak * 690
	want := map[string]float64{
		AverageRate:       1e10 / 86400,
		PeakRate:          peak,
		UpsertRate:        peak, // 5M windows every 0.25 s would allow 20M/s
		IngressBandwidth:  peak * 200,
		LogWrites:         peak * 200 * 3,
		RawStorage:        1e10 * 30 * 200 * 3, // 180 TB
		WindowsPerMinute:  5e6,                 // 1M ads × 5 countries < 6.9M clicks a minute
		AggregatedRows:    5e6 * 1440 * 30,     // 216 billion
		ClickHouseStorage: 216e9 * 10 * 3,
		EmbedStoreMemory:  216e9 * 50,
		DedupKeys:         keys,
		DedupMemory:       keys * 13.3,
		IngestCores:       peak / 500_000,
		IngestNodes:       3, // 0.69 cores of 9.6 need one node, but one per zone
		AggregatorCores:   peak/125_000 + peak/2_000_000,
		AggregatorNodes:   3, // 2.95 cores, one node per zone
		DedupPerNode:      keys * 13.3 / 3,
		KafkaPartitions:   64,             // pow2up(max(ceil(347,222 ÷ 90,000) = 4, 3 × 16))
		ClickHouseCores:   peak / 400_000, // 0.87
		ClickHouseShards:  1,              // one replica's 2.16 TB fits in 60% of 4 TB
		ClickHouseNodes:   3,
	}
	got := map[string]float64{}
	for _, l := range s.Lines {
		got[l.Name] = l.Value
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b float64) bool {
		return math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
	})); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
}

// TestArithmeticAgreesWithValue evaluates every line's arithmetic and
// compares it with the line's value, for the seed's inputs and others.
func TestArithmeticAgreesWithValue(t *testing.T) {
	big := SeedInputs()
	big.ClicksPerDay, big.PeakFactor, big.Ads, big.CountriesPerAd = 1e12, 5, 2e7, 3.5
	big.DedupHorizon, big.Retention, big.CoresPerNode = time.Hour, 7*Day+12*time.Hour, 48
	small := SeedInputs()
	small.ClicksPerDay, small.Ads, small.CountriesPerAd, small.FlushInterval = 86_400, 10, 1, time.Second
	small.AllowedLateness, small.TargetUtilization = 0, 1
	for name, in := range map[string]Inputs{"seed": SeedInputs(), "big": big, "small": small} {
		t.Run(name, func(t *testing.T) {
			s := mustCompute(t, in, testFigures())
			if len(s.Lines) < 15 {
				t.Fatalf("only %d lines", len(s.Lines))
			}
			for _, l := range s.Lines {
				v, err := eval(l.Arithmetic)
				if err != nil {
					t.Errorf("%s: %q: %v", l.Name, l.Arithmetic, err)
					continue
				}
				if math.Abs(v-l.Value) > 2e-3*math.Abs(l.Value) {
					t.Errorf("%s: %q evaluates to %v, the line says %v", l.Name, l.Arithmetic, v, l.Value)
				}
			}
		})
	}
}

// TestNodesFollowFigures: the node counts scale with the per-core figures.
func TestNodesFollowFigures(t *testing.T) {
	in := SeedInputs()
	in.ClicksPerDay = 1e12 // enough load for several nodes of each kind
	base := mustCompute(t, in, testFigures())

	half := testFigures()
	half.Ingest.Value /= 2
	half.Aggregate.Value /= 2
	half.ClickHouseClient.Value /= 2
	half.ClickHouse.Value /= 2
	halved := mustCompute(t, in, half)

	capacity := float64(in.CoresPerNode) * in.TargetUtilization
	for _, c := range []struct{ cores, nodes string }{
		{IngestCores, IngestNodes},
		{AggregatorCores, AggregatorNodes},
	} {
		cores := value(t, base, c.cores)
		if got, want := value(t, base, c.nodes), math.Ceil(cores/capacity); got != want || got < 3 {
			t.Errorf("%s = %v with %v cores, want %v (and at least 3 for this test to mean anything)", c.nodes, got, cores, want)
		}
		if got, want := value(t, halved, c.cores), 2*cores; math.Abs(got-want) > 1e-9*want {
			t.Errorf("%s with half the per-core figure: %v, want twice %v", c.cores, got, cores)
		}
		if got, want := value(t, halved, c.nodes), math.Ceil(2*cores/capacity); got != want {
			t.Errorf("%s with half the per-core figure: %v, want ceil(2 × %v ÷ %v) = %v", c.nodes, got, cores, capacity, want)
		}
	}
	// ClickHouse: at 1e12 clicks a day the write CPU decides.
	chCores := value(t, base, ClickHouseCores)
	if got, want := value(t, halved, ClickHouseShards), math.Ceil(2*chCores/capacity); got != want {
		t.Errorf("ClickHouse shards with half the per-core figure: %v, want %v", got, want)
	}
	if got, want := value(t, halved, ClickHouseNodes), value(t, halved, ClickHouseShards)*3; got != want {
		t.Errorf("ClickHouse nodes %v, want shards × 3 replicas = %v", got, want)
	}

	// Partitions: a tenth of the per-partition figure needs ten times the
	// partitions, rounded up to a power of two.
	slow := testFigures()
	slow.Partition.Value = 15_000
	peak := value(t, base, PeakRate)
	byRate := math.Ceil(peak / (15_000 * in.TargetUtilization))
	if got, want := value(t, mustCompute(t, in, slow), KafkaPartitions), pow2up(math.Max(byRate, value(t, base, AggregatorNodes)*16)); got != want {
		t.Errorf("partitions %v, want %v", got, want)
	}
	if p := value(t, mustCompute(t, in, slow), KafkaPartitions); p != math.Exp2(math.Round(math.Log2(p))) {
		t.Errorf("partitions %v: not a power of two", p)
	}
}

// TestZones: every role has a node in each zone, however small the load.
func TestZones(t *testing.T) {
	in := SeedInputs()
	in.ClicksPerDay, in.Zones = 86_400, 5
	s := mustCompute(t, in, testFigures())
	for _, name := range []string{IngestNodes, AggregatorNodes} {
		if got := value(t, s, name); got != 5 {
			t.Errorf("%s = %v for one click a second in 5 zones, want 5", name, got)
		}
	}
	in.Zones = 1
	s = mustCompute(t, in, testFigures())
	if got := value(t, s, IngestNodes); got != 1 {
		t.Errorf("ingest nodes = %v in one zone, want 1", got)
	}
}

func TestDedupMemoryFollowsHorizon(t *testing.T) {
	in := SeedInputs()
	short := mustCompute(t, in, testFigures())
	in.DedupHorizon = 20 * time.Minute
	long := mustCompute(t, in, testFigures())
	peak := value(t, short, PeakRate)
	if got, want := value(t, long, DedupMemory)-value(t, short, DedupMemory), peak*600*13.3; math.Abs(got-want) > 1e-9*want {
		t.Errorf("ten more minutes of horizon add %v B, want %v", got, want)
	}
}

func TestInvalidInputs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Inputs)
		want   string
	}{
		{"zero clicks", func(in *Inputs) { in.ClicksPerDay = 0 }, "clicks-per-day"},
		{"negative clicks", func(in *Inputs) { in.ClicksPerDay = -1 }, "clicks-per-day"},
		{"NaN clicks", func(in *Inputs) { in.ClicksPerDay = math.NaN() }, "clicks-per-day"},
		{"peak below average", func(in *Inputs) { in.PeakFactor = 0.5 }, "peak-factor"},
		{"no event size", func(in *Inputs) { in.EventBytes = 0 }, "event-bytes"},
		{"no retention", func(in *Inputs) { in.Retention = 0 }, "retention"},
		{"negative horizon", func(in *Inputs) { in.DedupHorizon = -time.Minute }, "dedup-horizon"},
		{"negative lateness", func(in *Inputs) { in.AllowedLateness = -time.Second }, "allowed-lateness"},
		{"no replicas", func(in *Inputs) { in.Replication = 0 }, "replication"},
		{"no ads", func(in *Inputs) { in.Ads = 0 }, "ads"},
		{"too many countries", func(in *Inputs) { in.CountriesPerAd = 300 }, "countries-per-ad"},
		{"no flush interval", func(in *Inputs) { in.FlushInterval = 0 }, "flush-interval"},
		{"no cores", func(in *Inputs) { in.CoresPerNode = 0 }, "cores-per-node"},
		{"no zones", func(in *Inputs) { in.Zones = 0 }, "zones"},
		{"utilization over 1", func(in *Inputs) { in.TargetUtilization = 1.5 }, "target-utilization"},
		{"utilization 0", func(in *Inputs) { in.TargetUtilization = 0 }, "target-utilization"},
		{"no disk", func(in *Inputs) { in.DiskBytesPerNode = -1 }, "disk-per-node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := SeedInputs()
			tc.change(&in)
			_, err := Compute(in, testFigures())
			if err == nil || !strings.HasPrefix(err.Error(), tc.want+":") {
				t.Errorf("error %v, want one about %s", err, tc.want)
			}
		})
	}
}

func TestInvalidFigures(t *testing.T) {
	fig := testFigures()
	fig.ClickHouse.Value = 0
	if _, err := Compute(SeedInputs(), fig); err == nil || !strings.Contains(err.Error(), "clickhouse_rows_per_core_second") {
		t.Errorf("error %v, want one naming clickhouse_rows_per_core_second", err)
	}
	fig = testFigures()
	fig.Machine.CPU = ""
	if _, err := Compute(SeedInputs(), fig); err == nil || !strings.Contains(err.Error(), "cpu") {
		t.Errorf("error %v, want one about the machine", err)
	}
}

func TestParseFigures(t *testing.T) {
	want := testFigures()
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	for name, bad := range map[string]string{
		"unknown member": strings.Replace(string(b), `"ingest_clicks_per_core_second"`, `"ingest_clicks_per_core"`, 1),
		"not JSON":       "ingest 5",
		"missing figure": strings.Replace(string(b), `"dedup_bytes_per_key":{"value":13.3`, `"dedup_bytes_per_key":{"value":0`, 1),
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("%s: parsed without an error", name)
		}
	}
}

func TestParseValues(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
	}{
		{"10e9", 1e10}, {"10_000_000_000", 1e10}, {"10,000,000,000", 1e10}, {" 3 ", 3}, {"0.6", 0.6},
	} {
		if got, err := ParseNumber(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseNumber(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "30x", "ten", "1e999", "NaN"} {
		if _, err := ParseNumber(bad); err == nil {
			t.Errorf("ParseNumber(%q): no error", bad)
		}
	}
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"30d", 30 * Day}, {"1.5d", 36 * time.Hour}, {"1d12h", 36 * time.Hour}, {"10m", 10 * time.Minute},
		{"250ms", 250 * time.Millisecond}, {"720h", 30 * Day}, {"0s", 0},
	} {
		if got, err := ParseDuration(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "30x", "30", "d", "1d-2h", "-1d2h", "xd"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q): no error", bad)
		}
	}
	for _, tc := range []struct {
		in   string
		want float64
	}{
		{"4TB", 4e12}, {"4e12", 4e12}, {"512GiB", 512 << 30}, {"1.5 TB", 1.5e12}, {"100B", 100},
	} {
		if got, err := ParseBytes(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseBytes(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "4XB", "TB", "four TB"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q): no error", bad)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{115740.74074, "115,740.7"}, {1e10, "10,000,000,000"}, {239583333.33, "239,583,333"}, {86400, "86,400"},
		{13.3, "13.3"}, {0.25, "0.25"}, {0.6, "0.6"}, {999.5, "999.5"}, {0.615585, "0.6156"}, {6e-6, "0.000006"}, {3.79274, "3.793"}, {1000.04, "1,000.0"}, {-1234.5, "-1,234.5"}, {12, "12"},
	} {
		if got := Num(tc.v); got != tc.want {
			t.Errorf("Num(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
	for _, tc := range []struct {
		v          float64
		unit, want string
	}{
		{1.8e14, "B", "180 TB"}, {69444444.4, "B/s", "69.44 MB/s (555.6 Mbit/s)"}, {3, "nodes", "3 nodes"}, {1, "nodes", "1 node"}, {1, "clicks/s", "1 clicks/s"},
	} {
		if got := Value(tc.v, tc.unit); got != tc.want {
			t.Errorf("Value(%v, %q) = %q, want %q", tc.v, tc.unit, got, tc.want)
		}
	}
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{30 * Day, "30d"}, {10 * time.Minute, "10m"}, {30 * time.Second, "30s"}, {250 * time.Millisecond, "250ms"}, {90 * time.Minute, "1h30m"}, {time.Hour, "1h"},
	} {
		if got := Duration(tc.d); got != tc.want {
			t.Errorf("Duration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestWriteJSON(t *testing.T) {
	s := mustCompute(t, SeedInputs(), testFigures())
	var buf bytes.Buffer
	if err := s.WriteJSON(&buf, "test.json"); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Inputs        map[string]any `json:"inputs"`
		FiguresSource string         `json:"figures_source"`
		Figures       Figures        `json:"figures"`
		Lines         []Line         `json:"lines"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s.Lines, got.Lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if got.Inputs["retention"] != "30d" || got.Inputs["clicks_per_day"] != 1e10 || got.FiguresSource != "test.json" {
		t.Errorf("inputs %v, source %q", got.Inputs, got.FiguresSource)
	}
}

// eval evaluates a line's arithmetic: numbers with thousands separators, unit
// words (ignored), × ÷ + −, parentheses, and ceil, min, max, pow2up.
func eval(expr string) (float64, error) {
	p := &evaluator{s: expr}
	v, err := p.sum()
	if err != nil {
		return 0, err
	}
	p.skipUnits()
	if p.i != len(p.s) {
		return 0, fmt.Errorf("unexpected %q at %d", p.s[p.i:], p.i)
	}
	return v, nil
}

type evaluator struct {
	s string
	i int
}

func (p *evaluator) peek() rune {
	r, _ := utf8.DecodeRuneInString(p.s[p.i:])
	return r
}

// skipUnits skips spaces and unit words: runs of letters, '/', '%' and the
// like that start with a letter and are not followed by '('.
func (p *evaluator) skipUnits() {
	for p.i < len(p.s) {
		r := p.peek()
		switch {
		case r == ' ':
			p.i++
		case unicode.IsLetter(r):
			j := p.i
			for j < len(p.s) {
				r, n := utf8.DecodeRuneInString(p.s[j:])
				if r == ' ' || r == '(' || r == ')' || r == ',' || strings.ContainsRune("×÷+−", r) {
					break
				}
				j += n
			}
			if j < len(p.s) && p.s[j] == '(' {
				return // a function
			}
			p.i = j
		default:
			return
		}
	}
}

func (p *evaluator) sum() (float64, error) {
	v, err := p.product()
	for err == nil {
		p.skipUnits()
		op := p.peek()
		if op != '+' && op != '−' {
			break
		}
		p.i += utf8.RuneLen(op)
		var w float64
		if w, err = p.product(); op == '+' {
			v += w
		} else {
			v -= w
		}
	}
	return v, err
}

func (p *evaluator) product() (float64, error) {
	v, err := p.operand()
	for err == nil {
		p.skipUnits()
		op := p.peek()
		if op != '×' && op != '÷' {
			break
		}
		p.i += utf8.RuneLen(op)
		var w float64
		if w, err = p.operand(); op == '×' {
			v *= w
		} else {
			v /= w
		}
	}
	return v, err
}

func (p *evaluator) operand() (float64, error) {
	p.skipUnits()
	switch r := p.peek(); {
	case r == '(':
		p.i++
		v, err := p.sum()
		if err != nil {
			return 0, err
		}
		return v, p.expect(')')
	case unicode.IsDigit(r):
		j := p.i
		for j < len(p.s) && (p.s[j] >= '0' && p.s[j] <= '9' || p.s[j] == '.' ||
			p.s[j] == ',' && j+3 < len(p.s) && strings.Trim(p.s[j+1:j+4], "0123456789") == "") {
			j++
		}
		v, err := strconv.ParseFloat(strings.ReplaceAll(p.s[p.i:j], ",", ""), 64)
		p.i = j
		if r := p.peek(); err == nil && r != utf8.RuneError && r != ' ' && r != ')' && r != ',' {
			return 0, fmt.Errorf("%q right after a number at %d (an exponent?)", r, j)
		}
		return v, err
	case unicode.IsLetter(r):
		j := strings.IndexByte(p.s[p.i:], '(')
		if j < 0 {
			return 0, fmt.Errorf("a word where a number belongs at %d", p.i)
		}
		name := p.s[p.i : p.i+j]
		p.i += j + 1
		var args []float64
		for {
			v, err := p.sum()
			if err != nil {
				return 0, err
			}
			args = append(args, v)
			p.skipUnits()
			if p.peek() != ',' {
				break
			}
			p.i++
		}
		if err := p.expect(')'); err != nil {
			return 0, err
		}
		switch {
		case name == "ceil" && len(args) == 1:
			return math.Ceil(args[0]), nil
		case name == "pow2up" && len(args) == 1:
			return math.Exp2(math.Max(0, math.Ceil(math.Log2(args[0])))), nil
		case name == "min" && len(args) == 2:
			return math.Min(args[0], args[1]), nil
		case name == "max" && len(args) == 2:
			return math.Max(args[0], args[1]), nil
		}
		return 0, fmt.Errorf("unknown function %s/%d", name, len(args))
	}
	return 0, fmt.Errorf("unexpected %q at %d", p.s[p.i:], p.i)
}

func (p *evaluator) expect(r rune) error {
	p.skipUnits()
	if p.peek() != r {
		return fmt.Errorf("want %q at %d of %q", r, p.i, p.s)
	}
	p.i += utf8.RuneLen(r)
	return nil
}
