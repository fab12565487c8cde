package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pb33f/go-yaml"

	"github.com/pedal-project/pedal/internal/analytics/chtest"
)

const (
	rulesFile     = "prometheus/pedal-alerts.yml"
	rulesTestFile = "prometheus/pedal-alerts.test.yml"
	configFile    = "prometheus/prometheus.yml"
	dashboardFile = "grafana/pedal.json"
)

func TestMain(m *testing.M) {
	code := chtest.Main(m).Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// ruleFile is the part of Prometheus's rule file format the tests read;
// unknown keys are refused, so a misspelt key (annotation:, label:) fails.
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         *string           `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func (r rule) name() string {
	if r.Alert != "" {
		return "alert " + r.Alert
	}
	return "record " + r.Record
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f ruleFile
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	if len(f.Groups) == 0 {
		t.Fatalf("%s: no rule groups", rulesFile)
	}
	return f
}

// dashboard is the part of Grafana's dashboard model the tests read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string      `json:"name"`
			Expr       string      `json:"expr"`
			Datasource *datasource `json:"datasource"`
		} `json:"list"`
	} `json:"annotations"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows, collapsed or not.
func (d dashboard) allPanels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// reference is a metric named by a rule or a panel.
type reference struct {
	selector
	where string
}

// references returns every metric the rule file and the dashboard name, and
// the names the rule file records.
func references(t *testing.T) (refs []reference, recorded map[string]bool) {
	t.Helper()
	recorded = map[string]bool{}
	add := func(where, expr string, parse func(string) ([]selector, error)) {
		sels, err := parse(expr)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			return
		}
		if len(sels) == 0 && strings.TrimSpace(expr) != "" && !strings.HasPrefix(strings.TrimSpace(expr), "label_values(") {
			t.Errorf("%s: expression names no metric: %s", where, expr)
		}
		for _, s := range sels {
			refs = append(refs, reference{s, where})
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
			add(rulesFile+": "+r.name(), r.Expr, selectors)
		}
	}
	d := readDashboard(t)
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			add(fmt.Sprintf("%s: panel %q", dashboardFile, p.Title), tg.Expr, selectors)
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			add(fmt.Sprintf("%s: annotation %q", dashboardFile, a.Name), a.Expr, selectors)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			add(fmt.Sprintf("%s: variable %q", dashboardFile, v.Name), v.Definition, variableSelectors)
		}
	}
	return refs, recorded
}

var severities = map[string]bool{"critical": true, "warning": true, "info": true}

// recordName is Prometheus's naming convention for recording rules,
// level:metric:operations.
var recordName = regexp.MustCompile(`^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$`)

func TestRuleFile(t *testing.T) {
	f := readRules(t)
	seen := map[string]bool{}
	alerts := 0
	for _, g := range f.Groups {
		if g.Name == "" || seen["group "+g.Name] {
			t.Errorf("group %q: empty or repeated name", g.Name)
		}
		seen["group "+g.Name] = true
		if len(g.Rules) == 0 {
			t.Errorf("group %s has no rules", g.Name)
		}
		for _, r := range g.Rules {
			if (r.Alert == "") == (r.Record == "") {
				t.Errorf("group %s: a rule must have exactly one of alert and record: %+v", g.Name, r)
				continue
			}
			if seen[r.name()] {
				t.Errorf("%s defined twice", r.name())
			}
			seen[r.name()] = true
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: no expr", r.name())
			}
			if r.Record != "" {
				if !recordName.MatchString(r.Record) {
					t.Errorf("%s: name is not level:metric:operations", r.name())
				}
				continue
			}
			alerts++
			if r.For == nil {
				t.Errorf("%s: no for: (write for: 0m to fire at once)", r.name())
			}
			if !severities[r.Labels["severity"]] {
				t.Errorf("%s: severity label %q, want critical, warning or info", r.name(), r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", r.name(), a)
				}
			}
			if !strings.Contains(r.Annotations["summary"]+r.Annotations["description"], "$value") {
				t.Errorf("%s: neither summary nor description gives $value", r.name())
			}
		}
	}
	// The list: each of these must be watched.
	for _, want := range []string{"PedalIngestStopped", "PedalIngestAppendFailing", "PedalClickAckLatencyHigh",
		"PedalFreshnessSLOBreached", "PedalAggregatorLagGrowing", "PedalInvalidClickShareHigh", "PedalGatewayBreakerOpen",
		"PedalMetadataHostBreakersOpen", "PedalClickHouseBreakerOpen", "PedalOutboxBacklogGrowing", "PedalOutboxEventsFailed",
		"PedalNearMemoryLimit", "PedalGoroutinesHigh"} {
		if !seen["alert "+want] {
			t.Errorf("no alert %s", want)
		}
	}
	t.Logf("%d alerts", alerts)
}

func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both are needed for a stable import", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: panels use the datasource-by-uid model of schema 36 and later", d.SchemaVersion)
	}
	dsVar := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && string(v.Query) == `"prometheus"` {
			dsVar = true
		}
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s does not query ${datasource}", v.Name)
		}
	}
	if !dsVar {
		t.Errorf("no datasource variable named datasource of type prometheus")
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	used := map[cell]string{}
	graphs := 0
	for _, p := range d.allPanels() {
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("panel %q: id %d missing or repeated", p.Title, p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W < 1 || g.H < 1 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := used[cell{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at column %d, row %d", other, p.Title, x, y)
				}
				used[cell{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		graphs++
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource is not ${datasource}", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refIDs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refIDs[tg.RefID] {
				t.Errorf("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
			}
			refIDs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q, query %s: no expr", p.Title, tg.RefID)
			}
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q, query %s: datasource is not ${datasource}", p.Title, tg.RefID)
			}
		}
	}
	// What the issue asks the dashboard to show.
	var titles []string
	for _, p := range d.allPanels() {
		titles = append(titles, strings.ToLower(p.Title))
	}
	for _, want := range []string{"clicks /s", "ingest requests /s", "click acknowledgement latency", "freshness",
		"lag per partition", "clicks by verdict /s", "dedup memory", "circuit breakers", "rejections by route and reason /s",
		"p99 latency by route", "outbox backlog", "outbox events /s", "tasks finished /s", "memory", "garbage collection",
		"goroutines and threads"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no panel titled %q", want)
		}
	}
	t.Logf("%d panels", graphs)
}

// TestRecordedNamesDefined: the dashboard and the alerts use recording rules
// only where the rule file defines them.
func TestRecordedNamesDefined(t *testing.T) {
	refs, recorded := references(t)
	if len(recorded) == 0 {
		t.Fatal("the rule file records nothing")
	}
	for _, r := range refs {
		if strings.Contains(r.Name, ":") && !recorded[r.Name] {
			t.Errorf("%s uses %s, which no recording rule defines", r.where, r.Name)
		}
	}
}

// promtool returns the path of promtool, or skips the test (fails under CI).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		msg := "promtool not found on PATH; install it with: apt-get install -y prometheus"
		if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

func TestPromtool(t *testing.T) {
	bin := promtool(t)
	queries := dashboardQueriesAsRules(t)
	for _, args := range [][]string{
		{"check", "rules", filepath.Base(rulesFile)},
		{"check", "config", filepath.Base(configFile)},
		{"test", "rules", filepath.Base(rulesTestFile)},
		{"check", "rules", queries}, // the dashboard's queries parse
	} {
		cmd := exec.CommandContext(t.Context(), bin, args...)
		cmd.Dir = filepath.Dir(rulesFile)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// dashboardQueriesAsRules writes every query of the dashboard, with Grafana's
// variables replaced, as a recording rule in a rule file for promtool to
// parse, and returns its path.
func dashboardQueriesAsRules(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	add := func(expr string) {
		expr = grafanaIntervals.ReplaceAllString(expr, "5m")
		expr = grafanaVars.ReplaceAllString(expr, ".+")
		q, err := json.Marshal(expr) // a JSON string is a YAML double-quoted scalar
		if err != nil {
			t.Fatal(err)
		}
		n++
		fmt.Fprintf(&b, "      - record: dashboard:query:%d\n        expr: %s\n", n, q)
	}
	d := readDashboard(t)
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			add(tg.Expr)
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			add(a.Expr)
		}
	}
	path := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRuleUnitTestsCoverTheKeyAlerts: the promtool unit tests exercise at
// least these alerts, firing and not.
func TestRuleUnitTestsCoverTheKeyAlerts(t *testing.T) {
	b, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", rulesTestFile, err)
	}
	if !slices.Equal(f.RuleFiles, []string{filepath.Base(rulesFile)}) {
		t.Errorf("rule_files = %v, want [%s]", f.RuleFiles, filepath.Base(rulesFile))
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range f.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	for _, want := range []string{"PedalFreshnessSLOBreached", "PedalGatewayBreakerOpen", "PedalClickHouseBreakerOpen",
		"PedalMetadataHostBreakersOpen", "PedalOutboxEventsFailed"} {
		if !fires[want] || !silent[want] {
			t.Errorf("%s: the unit tests should see it both firing (%v) and not (%v)", want, fires[want], silent[want])
		}
	}
}
