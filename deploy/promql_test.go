package deploy

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// selector is a metric named in a PromQL expression, with the label names its
// matchers use.
type selector struct {
	Name   string
	Labels []string
}

// grafanaVars are Grafana's built-in interval variables, which stand where
// PromQL wants a duration; other variables only appear in label values.
var (
	grafanaIntervals = regexp.MustCompile(`\$\{?__(rate_interval|interval|range)\}?`)
	grafanaVars      = regexp.MustCompile(`\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\]`)
)

// PromQL's keywords: never metric names, whether "(" follows or not (an
// aggregation may be followed by its grouping clause first).
var promqlKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"atan2": true, "inf": true, "nan": true, "sum": true, "avg": true, "count": true, "min": true, "max": true,
	"group": true, "stddev": true, "stdvar": true, "topk": true, "bottomk": true, "count_values": true,
	"quantile": true, "limitk": true, "limit_ratio": true}

// Keywords followed by a parenthesized list of label names.
var promqlGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true}

// selectors returns the metrics an expression names, in order of appearance.
// It knows enough PromQL for that: strings, label matchers, ranges, numbers and
// durations, function calls, grouping clauses and keywords. Grafana variables
// are replaced first.
func selectors(expr string) ([]selector, error) {
	expr = grafanaIntervals.ReplaceAllString(expr, "5m")
	expr = grafanaVars.ReplaceAllString(expr, "x")
	var out []selector
	s := expr
	i := 0
	last := -1 // index in out of the metric just read, while its matchers may follow
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
			continue
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
			continue
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(s, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{':
			end, labels, err := matchers(s, i)
			if err != nil {
				return nil, err
			}
			if last < 0 {
				return nil, fmt.Errorf("selector %q has no metric name before it", s[i:end])
			}
			out[last].Labels = append(out[last].Labels, labels...)
			i = end
		case c == '[':
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unclosed [ at offset %d", i)
			}
			i += end + 1
		case isDigit(c) || (c == '.' && i+1 < len(s) && isDigit(s[i+1])):
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(s) && isIdent(s[i]) {
				i++
			}
			word := s[start:i]
			next := i
			for next < len(s) && strings.IndexByte(" \t\r\n", s[next]) >= 0 {
				next++
			}
			lower := strings.ToLower(word)
			switch {
			case promqlGrouping[lower]:
				if next < len(s) && s[next] == '(' {
					end := strings.IndexByte(s[next:], ')')
					if end < 0 {
						return nil, fmt.Errorf("unclosed label list after %s", word)
					}
					i = next + end + 1
				}
			case promqlKeywords[lower]:
			case next < len(s) && s[next] == '(': // a function or an aggregation
			default:
				out = append(out, selector{Name: word})
				last = len(out) - 1
				continue
			}
		default:
			i++
		}
		last = -1
	}
	return out, nil
}

// labelValuesQuery matches Grafana's label_values(selector, label) variable query.
var labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)

// variableSelectors returns the metrics a Grafana variable query names.
func variableSelectors(query string) ([]selector, error) {
	if m := labelValuesQuery.FindStringSubmatch(query); m != nil {
		return selectors(m[1])
	}
	if strings.HasPrefix(strings.TrimSpace(query), "label_values(") { // label_values(label): no metric
		return nil, nil
	}
	return selectors(query)
}

// matchers reads the label matchers block starting at s[i] == '{' and returns
// the index after it and the label names it matches on.
func matchers(s string, i int) (int, []string, error) {
	var labels []string
	i++
	for {
		for i < len(s) && strings.IndexByte(" \t\r\n,", s[i]) >= 0 {
			i++
		}
		if i >= len(s) {
			return 0, nil, fmt.Errorf("unclosed { in %q", s)
		}
		if s[i] == '}' {
			return i + 1, labels, nil
		}
		start := i
		for i < len(s) && isIdent(s[i]) {
			i++
		}
		name := s[start:i]
		for i < len(s) && s[i] == ' ' {
			i++
		}
		op := i
		for i < len(s) && strings.IndexByte("=!~", s[i]) >= 0 {
			i++
		}
		if name == "" || !map[string]bool{"=": true, "!=": true, "=~": true, "!~": true}[s[op:i]] {
			return 0, nil, fmt.Errorf("bad label matcher at %q", s[start:])
		}
		for i < len(s) && s[i] == ' ' {
			i++
		}
		if i >= len(s) || (s[i] != '"' && s[i] != '\'' && s[i] != '`') {
			return 0, nil, fmt.Errorf("label %s: value is not a string in %q", name, s)
		}
		end, err := skipString(s, i)
		if err != nil {
			return 0, nil, err
		}
		i = end
		labels = append(labels, name)
	}
}

// skipString returns the index after the string literal starting at s[i].
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at offset %d of %q", i, s)
}

func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
func isIdent(c byte) bool      { return isIdentStart(c) || isDigit(c) }

func TestSelectors(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []selector
	}{
		{`up{job="pedal"} == 0`, []selector{{"up", []string{"job"}}}},
		{`sum without (code) (c) + count by (x) (d) + max(e) by (y)`, []selector{{Name: "c"}, {Name: "d"}, {Name: "e"}}},
		{`histogram_quantile(0.99, sum by (job, route, le) (rate(http_server_request_duration_seconds_bucket{route=~"a|b", code=~"202"}[5m])))`,
			[]selector{{"http_server_request_duration_seconds_bucket", []string{"route", "code"}}}},
		{`sum(rate(a_total[5m])) by (le) / on (job) group_left (x) b offset 10m > bool 0.5`,
			[]selector{{Name: "a_total"}, {Name: "b"}}},
		{`rate(x[1h] offset 10m) > 0 and on (job) job:y:rate5m == 0 unless z`,
			[]selector{{Name: "x"}, {Name: "job:y:rate5m"}, {Name: "z"}}},
		{"(go_memstats_sys_bytes - go_memstats_heap_released_bytes) / go_gc_gomemlimit_bytes < 1e18",
			[]selector{{Name: "go_memstats_sys_bytes"}, {Name: "go_memstats_heap_released_bytes"}, {Name: "go_gc_gomemlimit_bytes"}}},
		{`sum(increase(m{job=~"$job", instance=~"${instance}"}[$__range])) or vector(0)`,
			[]selector{{"m", []string{"job", "instance"}}}},
		{`time() - w {a = "}", b!~'x\'y'} # comment naming not_a_metric`, []selector{{"w", []string{"a", "b"}}}},
		{`max_over_time(q[10m:1m])`, []selector{{Name: "q"}}},
	} {
		got, err := selectors(tc.expr)
		if err != nil {
			t.Errorf("selectors(%q): %v", tc.expr, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("selectors(%q) (-want +got):\n%s", tc.expr, diff)
		}
	}
	for _, bad := range []string{`{__name__="x"}`, `x{a="b"`, `x{a=b}`, `rate(x[5m)`, `x{a="b}`} {
		if got, err := selectors(bad); err == nil {
			t.Errorf("selectors(%q) = %v, want an error", bad, got)
		}
	}
}

func TestVariableSelectors(t *testing.T) {
	for q, want := range map[string][]selector{
		`label_values(pedal_ingest_clicks_accepted_total, job)`: {{Name: "pedal_ingest_clicks_accepted_total"}},
		`label_values(go_goroutines{job=~"$job"}, instance)`:    {{"go_goroutines", []string{"job"}}},
		`label_values(job)`: nil,
	} {
		got, err := variableSelectors(q)
		if err != nil {
			t.Errorf("variableSelectors(%q): %v", q, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("variableSelectors(%q) (-want +got):\n%s", q, diff)
		}
	}
}
