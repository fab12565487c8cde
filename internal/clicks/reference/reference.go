// Package reference is the reference model of click aggregation: the rules that
// decide, for each click of a partition in log order, whether it is too late, a
// duplicate, invalid or valid, and which one-minute window it counts in. It is
// written to be obviously correct, not fast (maps of everything, no expiry), and
// serves as the oracle for the streaming aggregator's tests and for
// pedal loadgen --verify.
//
// The rules, applied to each click in log order within its partition:
//
//  1. Watermark: W = (largest event time among the partition's earlier clicks)
//     − AllowedLateness; no watermark before the first click. A click with
//     ts < W − LateHorizon is too_late: counted as such and left out of
//     everything else, including dedup state.
//  2. Dedup: a click whose (ad_id, click_id) matches an earlier counted click
//     (valid or invalid, not a duplicate, not too late) whose event time is
//     within DedupHorizon of its own is a duplicate: not counted in any window.
//  3. Invalid traffic: a non-empty user agent containing, case-insensitively,
//     one of the bot substrings is invalid (bot_user_agent). Otherwise, with an
//     ip, the clicks of one ip on one ad_id in one event-time minute that are
//     neither duplicates nor bots are numbered in log order; those numbered
//     beyond IPRateLimit are invalid (ip_rate).
//  4. Windows: the click counts in the window (ad_id, country, minute of ts), as
//     valid or as invalid.
//
// Run is not safe for concurrent use of one Model; separate Models are independent.
package reference

import (
	"strings"
	"time"
)

// Rules are the parameters of the model.
type Rules struct {
	DedupHorizon    time.Duration
	AllowedLateness time.Duration
	LateHorizon     time.Duration
	IPRateLimit     int
	BotSubstrings   []string // matched case-insensitively
}

// DefaultRules are the defaults of pedal serve.
func DefaultRules(bots []string) Rules {
	return Rules{
		DedupHorizon:    10 * time.Minute,
		AllowedLateness: 30 * time.Second,
		LateHorizon:     time.Hour,
		IPRateLimit:     5,
		BotSubstrings:   bots,
	}
}

// Click is what the rules look at.
type Click struct {
	ClickID, AdID, Country string
	UserAgent              string
	IP                     string // empty when unknown
	Time                   time.Time
}

// Verdict classifies one click.
type Verdict string

const (
	Valid        Verdict = "valid"
	Duplicate    Verdict = "duplicate"
	TooLate      Verdict = "too_late"
	BotUserAgent Verdict = "bot_user_agent"
	IPRate       Verdict = "ip_rate"
)

// WindowKey names a one-minute window.
type WindowKey struct {
	AdID, Country string
	Start         time.Time // UTC, whole minute
}

// Counts are a window's totals.
type Counts struct {
	Clicks  int64 // valid, deduplicated
	Invalid int64
}

// Result is what a model has counted.
type Result struct {
	Windows  map[WindowKey]Counts
	Verdicts map[Verdict]int64
}

// Model applies the rules to the clicks of one partition.
type Model struct {
	rules  Rules
	bots   []string
	maxTS  time.Time
	seen   map[[2]string][]time.Time // counted clicks' event times by (ad_id, click_id)
	perIP  map[ipKey]int
	result Result
}

type ipKey struct {
	ip, adID string
	minute   int64
}

// New returns an empty model.
func New(r Rules) *Model {
	bots := make([]string, 0, len(r.BotSubstrings))
	for _, b := range r.BotSubstrings {
		if b = strings.ToLower(strings.TrimSpace(b)); b != "" {
			bots = append(bots, b)
		}
	}
	return &Model{
		rules: r,
		bots:  bots,
		seen:  map[[2]string][]time.Time{},
		perIP: map[ipKey]int{},
		result: Result{
			Windows:  map[WindowKey]Counts{},
			Verdicts: map[Verdict]int64{},
		},
	}
}

// Add applies the rules to the next click of the partition and returns its verdict.
func (m *Model) Add(c Click) Verdict {
	v := m.classify(c)
	m.result.Verdicts[v]++
	if c.Time.After(m.maxTS) {
		m.maxTS = c.Time
	}
	switch v {
	case Valid, BotUserAgent, IPRate:
		k := WindowKey{c.AdID, c.Country, c.Time.UTC().Truncate(time.Minute)}
		w := m.result.Windows[k]
		if v == Valid {
			w.Clicks++
		} else {
			w.Invalid++
		}
		m.result.Windows[k] = w
	}
	return v
}

func (m *Model) classify(c Click) Verdict {
	if !m.maxTS.IsZero() {
		w := m.maxTS.Add(-m.rules.AllowedLateness)
		if c.Time.Before(w.Add(-m.rules.LateHorizon)) {
			return TooLate
		}
	}
	key := [2]string{c.AdID, c.ClickID}
	for _, t := range m.seen[key] {
		if d := c.Time.Sub(t); d <= m.rules.DedupHorizon && d >= -m.rules.DedupHorizon {
			return Duplicate
		}
	}
	m.seen[key] = append(m.seen[key], c.Time)
	if c.UserAgent != "" {
		ua := strings.ToLower(c.UserAgent)
		for _, b := range m.bots {
			if strings.Contains(ua, b) {
				return BotUserAgent
			}
		}
	}
	if c.IP != "" {
		k := ipKey{c.IP, c.AdID, c.Time.Truncate(time.Minute).Unix()}
		m.perIP[k]++
		if m.perIP[k] > m.rules.IPRateLimit {
			return IPRate
		}
	}
	return Valid
}

// Result returns the totals so far. The maps are the model's own; do not modify.
func (m *Model) Result() Result { return m.result }

// Merge adds the totals of results from disjoint partitions.
func Merge(rs ...Result) Result {
	out := Result{Windows: map[WindowKey]Counts{}, Verdicts: map[Verdict]int64{}}
	for _, r := range rs {
		for k, c := range r.Windows {
			w := out.Windows[k]
			w.Clicks += c.Clicks
			w.Invalid += c.Invalid
			out.Windows[k] = w
		}
		for v, n := range r.Verdicts {
			out.Verdicts[v] += n
		}
	}
	return out
}
