package query

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/httpjson"
)

// Limits and defaults of the query parameters.
const (
	defaultSpan  = time.Hour // from defaults to to minus this
	maxPoints    = 10_000    // (to-from)/granularity may not exceed this
	defaultLimit = 10
	maxLimit     = 1_000
	timeExample  = "2026-11-30T13:00:00Z"
)

// paramError is a bad request parameter: name is the parameter and msg says
// what is wrong with it.
type paramError struct {
	name string
	msg  string
}

func (e *paramError) Error() string { return shown(e.name) + ": " + e.msg }

// badRequest answers 400 for a bad query string: for a parameter error, the
// detail names the parameter, and so does the "parameter" extension member.
func badRequest(w http.ResponseWriter, r *http.Request, err error) {
	p := httpjson.Problem{Status: http.StatusBadRequest, Detail: err.Error()}
	if pe, ok := errors.AsType[*paramError](err); ok {
		p.Extensions = map[string]any{"parameter": pe.name}
	}
	httpjson.WriteProblem(w, r, p)
}

// params is a query string whose parameters an endpoint takes, each at most once.
type params url.Values

// parseParams parses r's query string, refusing parameters not in takes and
// parameters given more than once.
func parseParams(r *http.Request, takes ...string) (params, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("malformed query string: %w", err)
	}
	for _, name := range slices.Sorted(maps.Keys(v)) {
		if !slices.Contains(takes, name) {
			msg := "unknown query parameter; this endpoint takes none"
			if len(takes) > 0 {
				msg = "unknown query parameter; this endpoint takes " + strings.Join(takes, ", ")
			}
			return nil, &paramError{name: name, msg: msg}
		}
		if len(v[name]) > 1 {
			return nil, &paramError{name: name, msg: "given more than once"}
		}
	}
	return params(v), nil
}

func (p params) get(name string) (string, bool) {
	vs, ok := p[name]
	if !ok {
		return "", false
	}
	return vs[0], true
}

// time returns the named parameter as a UTC time; ok is false when it is absent.
func (p params) time(name string) (t time.Time, ok bool, err error) {
	s, ok := p.get(name)
	if !ok {
		return time.Time{}, false, nil
	}
	t, err = time.Parse(time.RFC3339, s)
	if err != nil && strings.Contains(s, " ") {
		// A "+" of an offset sent unencoded reaches us as a space.
		t, err = time.Parse(time.RFC3339, strings.ReplaceAll(s, " ", "+"))
	}
	if err != nil {
		return time.Time{}, true, &paramError{name, fmt.Sprintf("want an RFC 3339 time such as %s, got %s", timeExample, quote(s))}
	}
	return t.UTC(), true, nil
}

// timeRange reads from and to. to defaults to now, from to an hour before to;
// from must be before to.
func (p params) timeRange(now time.Time) (from, to time.Time, err error) {
	to, haveTo, err := p.time("to")
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	from, haveFrom, err := p.time("from")
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	if !haveTo {
		to = now
	}
	if !haveFrom {
		from = to.Add(-defaultSpan)
	}
	if !from.Before(to) {
		msg := fmt.Sprintf("must be before to, %s", formatTime(to))
		if !haveTo {
			msg += " (now, the default)"
		}
		return time.Time{}, time.Time{}, &paramError{"from", msg + "; got " + formatTime(from)}
	}
	return from, to, nil
}

// country returns the country parameter upper-cased, "" when absent.
func (p params) country() (string, error) {
	s, ok := p.get("country")
	if !ok {
		return "", nil
	}
	c, ok := clicks.NormalizeCountry(s)
	if !ok {
		return "", &paramError{"country", "want an ISO 3166-1 alpha-2 country code such as US, got " + quote(s)}
	}
	return c, nil
}

// granularities are the widths a series may have, by their parameter value.
var granularities = map[string]analytics.Granularity{
	"1m": analytics.Minute,
	"1h": analytics.Hour,
	"1d": analytics.Day,
}

// granularity returns the granularity parameter and its name; default 1m.
func (p params) granularity() (analytics.Granularity, string, error) {
	s, ok := p.get("granularity")
	if !ok {
		return analytics.Minute, "1m", nil
	}
	g, ok := granularities[s]
	if !ok {
		return 0, "", &paramError{"granularity", "want 1m, 1h or 1d, got " + quote(s)}
	}
	return g, s, nil
}

// limit returns the limit parameter, default 10, within [1, 1000].
func (p params) limit() (int, error) {
	s, ok := p.get("limit")
	if !ok {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxLimit {
		return 0, &paramError{"limit", fmt.Sprintf("want an integer from 1 to %d, got %s", maxLimit, quote(s))}
	}
	return n, nil
}

// quote returns s quoted for an error detail, cut to a readable length.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}

// shown returns a parameter name as it should appear in a detail: as is when it
// is short and plain, quoted otherwise.
func shown(name string) string {
	plain := name != "" && len(name) <= 32
	for i := 0; plain && i < len(name); i++ {
		c := name[i]
		plain = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.'
	}
	if plain {
		return name
	}
	return quote(name)
}
