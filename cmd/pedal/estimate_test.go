package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pedal-project/pedal/bench/capacity"
)

// seedArgs are the seed's inputs, as the issue writes them.
var seedArgs = []string{"estimate", "--clicks-per-day", "10e9", "--peak-factor", "3", "--event-bytes", "200",
	"--retention", "30d", "--dedup-horizon", "10m", "--replication", "3"}

func runEstimateCmd(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(t.Context(), args, func(k string) string { return env[k] }, &out, io.Discard)
	return out.String(), err
}

// builtInFigures reads the checked-in figures file on its own terms.
func builtInFigures(t *testing.T) map[string]any {
	t.Helper()
	var f map[string]any
	if err := json.Unmarshal(capacity.Figures(), &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func figureValue(t *testing.T, f map[string]any, name string) float64 {
	t.Helper()
	fig, ok := f[name].(map[string]any)
	if !ok {
		t.Fatalf("figures file: no %s", name)
	}
	v, ok := fig["value"].(float64)
	if !ok || v <= 0 {
		t.Fatalf("figures file: %s = %v", name, fig["value"])
	}
	return v
}

// sheetValue returns the number printed for line name (the first number
// after the name).
func sheetValue(t *testing.T, sheet, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(name) + ` +([0-9,.]+)`).FindStringSubmatch(sheet)
	if m == nil {
		t.Fatalf("no line %q in the sheet:\n%s", name, sheet)
	}
	v, err := strconv.ParseFloat(strings.ReplaceAll(m[1], ",", ""), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestEstimateSeed: with the seed's inputs the sheet prints the seed's rates
// (115,740/s on average, ~350,000/s at peak) and node counts that follow from
// the built-in figures and the defaults (16 cores a node, used to 60%).
func TestEstimateSeed(t *testing.T) {
	sheet, err := runEstimateCmd(t, nil, seedArgs...)
	if err != nil {
		t.Fatal(err)
	}
	spaces := regexp.MustCompile(` +`)
	for _, want := range []string{
		"average rate 115,740.7 clicks/s = 10,000,000,000 clicks/day ÷ 86,400 s/day\n",
		"peak rate 347,222.2 clicks/s = 115,740.7 clicks/s × 3\n",
		"ingress at peak 69.44 MB/s (555.6 Mbit/s) = 347,222.2 clicks/s × 200 B ",
		"raw log storage 180 TB = 10,000,000,000 clicks/day × 30 days × 200 B × 3 replicas\n",
		"figures: built-in bench/capacity/figures.json",
	} {
		if !strings.Contains(spaces.ReplaceAllString(sheet, " "), want) {
			t.Errorf("the sheet lacks %q:\n%s", want, sheet)
		}
	}
	if avg := sheetValue(t, sheet, "average rate"); math.Floor(avg) != 115_740 {
		t.Errorf("average rate %v, the seed says 115,740", avg)
	}
	peak := sheetValue(t, sheet, "peak rate")
	if math.Round(peak/10_000)*10_000 != 350_000 {
		t.Errorf("peak rate %v, the seed says ~350,000", peak)
	}

	figs := builtInFigures(t)
	machine := figs["machine"].(map[string]any)
	for _, key := range []string{"cpu", "commit", "go"} {
		if s, _ := machine[key].(string); s == "" || !strings.Contains(sheet, s) {
			t.Errorf("the sheet does not name the figures' %s %q:\n%s", key, s, sheet)
		}
	}
	const capacity, zones = 16 * 0.6, 3
	ingest := figureValue(t, figs, "ingest_clicks_per_core_second")
	if got, want := sheetValue(t, sheet, "ingest cores"), peak/ingest; math.Abs(got-want) > 1e-3*want {
		t.Errorf("ingest cores %v, want %v ÷ %v = %v", got, peak, ingest, want)
	}
	if got, want := sheetValue(t, sheet, "ingest nodes"), max(math.Ceil(peak/ingest/capacity), zones); got != want {
		t.Errorf("ingest nodes %v, want max(ceil(%v ÷ %v ÷ %v), 3 zones) = %v", got, peak, ingest, capacity, want)
	}
	aggCores := peak/figureValue(t, figs, "aggregate_clicks_per_core_second") +
		sheetValue(t, sheet, "window upserts at peak")/figureValue(t, figs, "clickhouse_client_rows_per_core_second")
	if got := sheetValue(t, sheet, "aggregator cores"); math.Abs(got-aggCores) > 1e-3*aggCores {
		t.Errorf("aggregator cores %v, want %v", got, aggCores)
	}
	if got, want := sheetValue(t, sheet, "aggregator nodes"), max(math.Ceil(aggCores/capacity), zones); got != want {
		t.Errorf("aggregator nodes %v, want %v", got, want)
	}
}

// TestEstimateFiguresFile: --figures replaces the built-in figures; a file
// whose ingest figure is a hundredth needs a hundred times the ingest cores.
func TestEstimateFiguresFile(t *testing.T) {
	figs := builtInFigures(t)
	ingest := figs["ingest_clicks_per_core_second"].(map[string]any)
	ingest["value"] = ingest["value"].(float64) / 100
	figs["machine"].(map[string]any)["cpu"] = "Slow CPU 9000"
	b, err := json.Marshal(figs)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "slow.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	base, err := runEstimateCmd(t, nil, "estimate")
	if err != nil {
		t.Fatal(err)
	}
	slow, err := runEstimateCmd(t, nil, "estimate", "--figures", path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(slow, "figures: "+path) || !strings.Contains(slow, "Slow CPU 9000") {
		t.Errorf("the sheet does not name the figures file and its machine:\n%s", slow)
	}
	b0, b1 := sheetValue(t, base, "ingest cores"), sheetValue(t, slow, "ingest cores")
	if math.Abs(b1-100*b0) > 0.01*b1 {
		t.Errorf("ingest cores %v with a hundredth of the figure, want a hundred times %v", b1, b0)
	}
	if got, want := sheetValue(t, slow, "ingest nodes"), math.Ceil(b1/(16*0.6)); got != want || got <= 3 {
		t.Errorf("ingest nodes %v, want ceil(%v cores ÷ 9.6) = %v, more than the 3 zones", got, b1, want)
	}
	// The environment sets flags too; PEDAL_ESTIMATE_FIGURES is --figures.
	env, err := runEstimateCmd(t, map[string]string{"PEDAL_ESTIMATE_FIGURES": path}, "estimate")
	if err != nil || !strings.Contains(env, "Slow CPU 9000") {
		t.Errorf("PEDAL_ESTIMATE_FIGURES ignored (%v):\n%s", err, env)
	}
}

func TestEstimateJSON(t *testing.T) {
	out, err := runEstimateCmd(t, map[string]string{"PEDAL_ESTIMATE_CORES_PER_NODE": "32"}, append(seedArgs, "--format", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Inputs map[string]any `json:"inputs"`
		Lines  []struct {
			Name       string  `json:"name"`
			Value      float64 `json:"value"`
			Arithmetic string  `json:"arithmetic"`
		} `json:"lines"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if got.Inputs["cores_per_node"] != 32.0 || got.Inputs["retention"] != "30d" {
		t.Errorf("inputs %v", got.Inputs)
	}
	found := false
	for _, l := range got.Lines {
		if l.Name == "average rate" {
			found = math.Floor(l.Value) == 115_740 && l.Arithmetic == "10,000,000,000 clicks/day ÷ 86,400 s/day"
		}
	}
	if !found {
		t.Errorf("no average rate of 115,740.7 in %s", out)
	}
}

func TestEstimateBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string // in the error
	}{
		{[]string{"--retention", "30x"}, nil, "-retention"},
		{[]string{"--clicks-per-day", "-5"}, nil, "-clicks-per-day"},
		{[]string{"--clicks-per-day", "ten billion"}, nil, "-clicks-per-day"},
		{[]string{"--peak-factor", "0"}, nil, "-peak-factor"},
		{[]string{"--peak-factor", "0.5"}, nil, "--peak-factor"},
		{[]string{"--replication", "2.5"}, nil, "-replication"},
		{[]string{"--target-utilization", "1.2"}, nil, "--target-utilization"},
		{[]string{"--disk-per-node", "4XB"}, nil, "-disk-per-node"},
		{[]string{"--dedup-horizon", "0s"}, nil, "-dedup-horizon"},
		{[]string{"--format", "yaml"}, nil, "--format"},
		{[]string{"--figures", "/nonexistent/figures.json"}, nil, "--figures"},
		{[]string{"extra"}, nil, "unexpected argument"},
		{nil, map[string]string{"PEDAL_ESTIMATE_REPLICATION": "zero"}, "PEDAL_ESTIMATE_REPLICATION"},
	} {
		t.Run(fmt.Sprint(tc.args, tc.env), func(t *testing.T) {
			_, err := runEstimateCmd(t, tc.env, append([]string{"estimate"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
	// A figures file that is not one.
	path := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(path, []byte(`{"ingest_clicks_per_core_second": {"value": 5}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runEstimateCmd(t, nil, "estimate", "--figures", path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("error %v, want one naming %s", err, path)
	}
}
