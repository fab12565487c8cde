package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pedal-project/pedal/internal/clicks/reference"
)

// Defaults applied to the zero fields of a VerifyConfig.
const (
	DefaultVerifyTimeout     = 2 * time.Minute
	DefaultVerifyConcurrency = 8
	DefaultShowMismatches    = 20
	DefaultPollInterval      = 500 * time.Millisecond
)

const (
	// maxPoints is the most points the query API returns for one request.
	maxPoints = 10_000
	// maxQueryBody bounds a query answer: 10,000 points of about 90 bytes.
	maxQueryBody = 16 << 20
	// getAttempts is how many times a failed query is tried.
	getAttempts = 3
)

// Errors of Verify.
var (
	ErrMismatch    = errors.New("loadgen: the aggregates differ from the ledger")
	ErrNotCaughtUp = errors.New("loadgen: the pipeline did not catch up")
)

// VerifyConfig tunes Verify. The zero value is valid: every zero field takes the
// default named beside it.
type VerifyConfig struct {
	// Target is the base URL of the pedal server (default DefaultTarget).
	Target string
	// Token, if set, is sent as a bearer token with every query.
	Token string
	// Timeout bounds the wait for the pipeline to catch up (default
	// DefaultVerifyTimeout).
	Timeout time.Duration
	// PollInterval is the time between two polls of the pipeline status
	// (default DefaultPollInterval).
	PollInterval time.Duration
	// RequestTimeout bounds each request (default DefaultTimeout).
	RequestTimeout time.Duration
	// Concurrency bounds the ads queried at once (default
	// DefaultVerifyConcurrency).
	Concurrency int
	// ShowMismatches is how many mismatches are printed (default
	// DefaultShowMismatches; negative for none).
	ShowMismatches int
	// Report, if set, is a file created (truncated) to hold the summary and every
	// mismatch.
	Report string
	// Rules are the server's aggregation rules (default Rules()).
	Rules *reference.Rules
}

func (cfg VerifyConfig) withDefaults() (VerifyConfig, error) {
	if cfg.Target == "" {
		cfg.Target = DefaultTarget
	}
	if u, err := url.Parse(cfg.Target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return VerifyConfig{}, fmt.Errorf("verify config: Target: %q: want an http or https URL with a host, like %s", cfg.Target, DefaultTarget)
	}
	cfg.Target = strings.TrimRight(cfg.Target, "/")
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"Timeout", &cfg.Timeout, DefaultVerifyTimeout},
		{"PollInterval", &cfg.PollInterval, DefaultPollInterval},
		{"RequestTimeout", &cfg.RequestTimeout, DefaultTimeout},
	} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 0:
			return VerifyConfig{}, fmt.Errorf("verify config: %s: %v: must be positive", d.name, *d.v)
		}
	}
	switch {
	case cfg.Concurrency == 0:
		cfg.Concurrency = DefaultVerifyConcurrency
	case cfg.Concurrency < 0:
		return VerifyConfig{}, fmt.Errorf("verify config: Concurrency: %d: must be positive", cfg.Concurrency)
	}
	if cfg.ShowMismatches == 0 {
		cfg.ShowMismatches = DefaultShowMismatches
	}
	if cfg.Rules == nil {
		r := Rules()
		cfg.Rules = &r
	}
	return cfg, nil
}

// VerifyReport is the outcome of Verify.
type VerifyReport struct {
	Clicks  int64 // lines of the ledger
	Ads     int   // distinct ads of the ledger, each queried
	Windows int   // (ad, minute) windows compared: those expected or served
	// CaughtUpAfter is how long the pipeline took to catch up.
	CaughtUpAfter time.Duration
	// Expected and Actual sum the windows and the ads' quality figures.
	Expected, Actual VerifyTotals
	// Mismatches lists the windows whose totals differ, by ad and time;
	// QualityMismatches the ads whose quality figures differ, by ad.
	Mismatches        []WindowMismatch
	QualityMismatches []QualityMismatch
}

// OK reports whether nothing differs.
func (r *VerifyReport) OK() bool { return len(r.Mismatches) == 0 && len(r.QualityMismatches) == 0 }

// VerifyTotals are sums over the run's ads.
type VerifyTotals struct {
	Clicks, Invalid int64 // of the one-minute windows
	Quality         Quality
}

// WindowMismatch is a window, summed over countries, whose totals differ.
type WindowMismatch struct {
	AdID      string
	Start     time.Time
	Want, Got reference.Counts
}

// QualityMismatch is an ad whose quality figures, over the run's time range,
// differ.
type QualityMismatch struct {
	AdID      string
	Want, Got Quality
}

// Verify checks what a pedal server has aggregated from the clicks of a ledger
// (written by Run in ModeClicks, preferably with RunScopedAds): it computes the
// expected totals with Expect, waits until the pipeline has caught up (every
// partition's lag 0 in GET /v1/pipeline/status, twice in a row with the same log
// end offsets), then queries each ad of the ledger, at most cfg.Concurrency at
// a time:
//
//   - GET /v1/ads/{ad_id}/clicks?granularity=1m over the minutes of the ledger's
//     event times, and compares each minute's clicks and invalid_clicks (summed
//     over countries) with the expected ones;
//   - GET /v1/traffic/quality?ad_id= from 2h before the first event time to 1h
//     after the last, and compares valid, bot_user_agent, ip_rate, duplicates
//     and too_late (which the aggregator counts outside the click's own window).
//
// It prints a summary and the first cfg.ShowMismatches mismatches to out, and
// everything to cfg.Report if set. The error wraps ErrMismatch if anything
// differs, with the report holding every difference, and ErrNotCaughtUp if the
// pipeline did not catch up within cfg.Timeout, when nothing is compared.
//
// A redirect-mode ledger is refused: the server sets a redirect click's time and
// country (and its ip, unless it trusts X-Forwarded-For), so the ledger cannot
// say which window it counts in. Clicks of failed requests that the server logged
// nevertheless (a timeout after the append) are not in the ledger: expect
// mismatches after a run with failed requests.
func Verify(ctx context.Context, cfg VerifyConfig, ledgerPath string, out io.Writer) (VerifyReport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return VerifyReport{}, err
	}
	f, err := os.Open(ledgerPath)
	if err != nil {
		return VerifyReport{}, fmt.Errorf("verify: %w", err)
	}
	exp, err := Expect(f, *cfg.Rules)
	f.Close()
	if err != nil {
		return VerifyReport{}, fmt.Errorf("verify %s: %w", ledgerPath, err)
	}
	if exp.Mode != ModeClicks {
		return VerifyReport{}, fmt.Errorf("verify %s: a %s-mode ledger cannot be verified: the server sets a redirect click's time and country, so the ledger cannot say which window it counts in", ledgerPath, exp.Mode)
	}
	if exp.Clicks == 0 {
		return VerifyReport{}, fmt.Errorf("verify %s: no acknowledged click, nothing to verify", ledgerPath)
	}
	v := &verifier{cfg: cfg, out: out, client: &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // the target is dialled directly
			DialContext:         (&net.Dialer{Timeout: min(cfg.RequestTimeout, 5*time.Second)}).DialContext,
			MaxIdleConnsPerHost: cfg.Concurrency,
			IdleConnTimeout:     30 * time.Second,
		},
		Timeout: cfg.RequestTimeout,
	}}
	defer v.client.CloseIdleConnections()

	kinds := make([]string, 0, numKinds)
	for k := range numKinds {
		if n := exp.ByKind[k]; n > 0 {
			kinds = append(kinds, fmt.Sprintf("%v %d", k, n))
		}
	}
	fmt.Fprintf(out, "verify: ledger %s: %d clicks of %d ads (%s), event times %s to %s\n", ledgerPath,
		exp.Clicks, len(exp.Quality), strings.Join(kinds, ", "), exp.First.Format(time.RFC3339), exp.Last.Format(time.RFC3339))

	rep := VerifyReport{Clicks: exp.Clicks, Ads: len(exp.Quality)}
	rep.CaughtUpAfter, err = v.waitCaughtUp(ctx)
	if err != nil {
		return rep, err
	}

	ads := slices.Sorted(maps.Keys(exp.Quality))
	served, err := v.query(ctx, ads, exp.First, exp.Last)
	if err != nil {
		return rep, err
	}
	compare(&rep, &exp, ads, served)

	if cfg.Report != "" {
		var b strings.Builder
		rep.print(&b, -1)
		if err := os.WriteFile(cfg.Report, []byte(b.String()), 0o644); err != nil {
			return rep, fmt.Errorf("verify: write report: %w", err)
		}
	}
	rep.print(out, cfg.ShowMismatches)
	if cfg.Report != "" && !rep.OK() {
		fmt.Fprintf(out, "verify: every mismatch is in %s\n", cfg.Report)
	}
	if !rep.OK() {
		return rep, fmt.Errorf("%w: %d of %d windows, %d of %d ads' quality figures", ErrMismatch,
			len(rep.Mismatches), rep.Windows, len(rep.QualityMismatches), rep.Ads)
	}
	return rep, nil
}

type verifier struct {
	cfg    VerifyConfig
	out    io.Writer
	client *http.Client
}

// pipelineStatus is the answer of GET /v1/pipeline/status.
type pipelineStatus struct {
	Partitions []partitionStatus `json:"partitions"`
}

type partitionStatus struct {
	Partition       int32 `json:"partition"`
	LogEndOffset    int64 `json:"log_end_offset"`
	CommittedOffset int64 `json:"committed_offset"`
	Lag             int64 `json:"lag"`
}

// caughtUp reports whether every partition's lag is 0, and the total lag.
func (s *pipelineStatus) caughtUp() (bool, int64) {
	var lag int64
	for _, p := range s.Partitions {
		lag += p.Lag
	}
	return len(s.Partitions) > 0 && lag == 0, lag
}

// sameEnds reports whether s and o have the same partitions and log end offsets.
func (s *pipelineStatus) sameEnds(o *pipelineStatus) bool {
	return slices.EqualFunc(s.Partitions, o.Partitions, func(a, b partitionStatus) bool {
		return a.Partition == b.Partition && a.LogEndOffset == b.LogEndOffset
	})
}

// waitCaughtUp polls the pipeline status until every partition's lag is 0 in two
// polls in a row with the same log end offsets, for at most cfg.Timeout.
func (v *verifier) waitCaughtUp(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout)
	defer cancel()
	fmt.Fprintf(v.out, "verify: waiting for the pipeline of %s to catch up (at most %v)\n", v.cfg.Target, v.cfg.Timeout)
	var (
		prev       *pipelineStatus
		last       = "no answer yet" // the last state, for the error
		lastReport = start
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-wctx.Done():
			if err := ctx.Err(); err != nil {
				return time.Since(start), err
			}
			return time.Since(start), fmt.Errorf("%w within %v: %s", ErrNotCaughtUp, v.cfg.Timeout, last)
		case <-timer.C:
		}
		var st pipelineStatus
		err := v.get(wctx, "/v1/pipeline/status", nil, &st)
		switch ok, lag := st.caughtUp(); {
		case err != nil && wctx.Err() != nil:
			// Cut by the deadline: the last state says more.
		case err != nil:
			prev, last = nil, err.Error()
		case !ok:
			prev, last = nil, fmt.Sprintf("lag %d over %d partitions", lag, len(st.Partitions))
		case prev != nil && prev.sameEnds(&st):
			d := time.Since(start)
			fmt.Fprintf(v.out, "verify: caught up after %v (%d partitions, lag 0)\n", d.Round(time.Millisecond), len(st.Partitions))
			return d, nil
		default:
			prev, last = &st, "lag 0, waiting for a second poll to confirm"
		}
		if time.Since(lastReport) >= 10*time.Second {
			lastReport = time.Now()
			fmt.Fprintf(v.out, "verify: still waiting after %v: %s\n", time.Since(start).Round(time.Second), last)
		}
		timer.Reset(v.cfg.PollInterval)
	}
}

// servedAd is what the server answered for one ad.
type servedAd struct {
	windows map[int64]reference.Counts // by window start, Unix seconds
	quality Quality
}

// query fetches the windows and quality figures of every ad, cfg.Concurrency at
// a time.
func (v *verifier) query(ctx context.Context, ads []string, first, last time.Time) ([]servedAd, error) {
	served := make([]servedAd, len(ads))
	from, to := first.Truncate(time.Minute), last.Truncate(time.Minute).Add(time.Minute)
	qFrom, qTo := first.Add(-2*time.Hour).Truncate(time.Minute), last.Add(time.Hour).Truncate(time.Minute).Add(time.Minute)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(v.cfg.Concurrency)
	for i, ad := range ads {
		g.Go(func() error {
			s := &served[i]
			s.windows = make(map[int64]reference.Counts)
			path := "/v1/ads/" + url.PathEscape(ad) + "/clicks"
			for start := from; start.Before(to); start = start.Add(maxPoints * time.Minute) {
				end := start.Add(maxPoints * time.Minute)
				if end.After(to) {
					end = to
				}
				var body struct {
					Points []struct {
						WindowStart   time.Time `json:"window_start"`
						Clicks        int64     `json:"clicks"`
						InvalidClicks int64     `json:"invalid_clicks"`
					} `json:"points"`
				}
				q := url.Values{"from": {start.Format(time.RFC3339)}, "to": {end.Format(time.RFC3339)}, "granularity": {"1m"}}
				if err := v.get(gctx, path, q, &body); err != nil {
					return err
				}
				for _, p := range body.Points {
					k := p.WindowStart.Unix()
					c := s.windows[k]
					c.Clicks += p.Clicks
					c.Invalid += p.InvalidClicks
					s.windows[k] = c
				}
			}
			var body struct {
				Valid   int64 `json:"valid"`
				Invalid struct {
					Bot    int64 `json:"bot_user_agent"`
					IPRate int64 `json:"ip_rate"`
				} `json:"invalid"`
				Duplicates int64 `json:"duplicates"`
				TooLate    int64 `json:"too_late"`
			}
			q := url.Values{"from": {qFrom.Format(time.RFC3339)}, "to": {qTo.Format(time.RFC3339)}, "ad_id": {ad}}
			if err := v.get(gctx, "/v1/traffic/quality", q, &body); err != nil {
				return err
			}
			s.quality = Quality{Valid: body.Valid, Bot: body.Invalid.Bot, IPRate: body.Invalid.IPRate, Duplicates: body.Duplicates, TooLate: body.TooLate}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	return served, nil
}

// get decodes the JSON answer of GET path?q into dst. A request that fails with
// a network error, a 429 or a 5xx is tried again, getAttempts times in all.
func (v *verifier) get(ctx context.Context, path string, q url.Values, dst any) error {
	u := v.cfg.Target + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var err error
	for attempt := range getAttempts {
		if attempt > 0 {
			// Full jitter over 100ms, 200ms, ...
			t := time.NewTimer(rand.N(100 * time.Millisecond << (attempt - 1)))
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
		}
		var retry bool
		if retry, err = v.getOnce(ctx, u, dst); err == nil || !retry || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func (v *verifier) getOnce(ctx context.Context, u string, dst any) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, fmt.Errorf("GET %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "pedal-loadgen")
	if v.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+v.cfg.Token)
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return true, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxQueryBody+1))
	if err != nil {
		return true, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		retry := resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
		return retry, fmt.Errorf("GET %s: %s: %.200s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	if len(body) > maxQueryBody {
		return false, fmt.Errorf("GET %s: answer longer than %d bytes", u, maxQueryBody)
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return false, fmt.Errorf("GET %s: unreadable answer: %w", u, err)
	}
	return false, nil
}

// compare fills rep with the comparison of exp with what the server answered for
// ads (sorted).
func compare(rep *VerifyReport, exp *Expected, ads []string, served []servedAd) {
	want := make(map[string]map[int64]reference.Counts, len(ads))
	for k, c := range exp.Result.Windows {
		w := want[k.AdID]
		if w == nil {
			w = make(map[int64]reference.Counts)
			want[k.AdID] = w
		}
		sum := w[k.Start.Unix()]
		sum.Clicks += c.Clicks
		sum.Invalid += c.Invalid
		w[k.Start.Unix()] = sum
	}
	for i, ad := range ads {
		w, s := want[ad], served[i]
		starts := slices.Collect(maps.Keys(w))
		for k := range s.windows {
			if _, ok := w[k]; !ok {
				starts = append(starts, k)
			}
		}
		slices.Sort(starts)
		for _, k := range starts {
			rep.Windows++
			wc, sc := w[k], s.windows[k]
			rep.Expected.Clicks += wc.Clicks
			rep.Expected.Invalid += wc.Invalid
			rep.Actual.Clicks += sc.Clicks
			rep.Actual.Invalid += sc.Invalid
			if wc != sc {
				rep.Mismatches = append(rep.Mismatches, WindowMismatch{AdID: ad, Start: time.Unix(k, 0).UTC(), Want: wc, Got: sc})
			}
		}
		wq := exp.Quality[ad]
		rep.Expected.Quality.plus(wq)
		rep.Actual.Quality.plus(s.quality)
		if wq != s.quality {
			rep.QualityMismatches = append(rep.QualityMismatches, QualityMismatch{AdID: ad, Want: wq, Got: s.quality})
		}
	}
}

// print writes the summary and the first show mismatches, windows first, to w;
// all of them if show is negative.
func (r *VerifyReport) print(w io.Writer, show int) {
	var b strings.Builder
	fmt.Fprintf(&b, "verify: compared %d windows (ad × minute, summed over countries) and the quality figures of %d ads\n", r.Windows, r.Ads)
	fmt.Fprintf(&b, "  %-16s %14s %14s\n", "", "expected", "actual")
	for _, row := range []struct {
		name      string
		want, got int64
	}{
		{"clicks", r.Expected.Clicks, r.Actual.Clicks},
		{"invalid_clicks", r.Expected.Invalid, r.Actual.Invalid},
		{"valid", r.Expected.Quality.Valid, r.Actual.Quality.Valid},
		{"bot_user_agent", r.Expected.Quality.Bot, r.Actual.Quality.Bot},
		{"ip_rate", r.Expected.Quality.IPRate, r.Actual.Quality.IPRate},
		{"duplicates", r.Expected.Quality.Duplicates, r.Actual.Quality.Duplicates},
		{"too_late", r.Expected.Quality.TooLate, r.Actual.Quality.TooLate},
	} {
		mark := ""
		if row.want != row.got {
			mark = "  ≠"
		}
		fmt.Fprintf(&b, "  %-16s %14d %14d%s\n", row.name, row.want, row.got, mark)
	}
	if r.OK() {
		b.WriteString("verify: OK, no mismatch\n")
		io.WriteString(w, b.String())
		return
	}
	fmt.Fprintf(&b, "verify: FAILED: %d of %d windows and the quality figures of %d of %d ads differ\n",
		len(r.Mismatches), r.Windows, len(r.QualityMismatches), r.Ads)
	n := len(r.Mismatches) + len(r.QualityMismatches)
	if show >= 0 && show < n {
		fmt.Fprintf(&b, "verify: the first %d:\n", show)
		n = show
	}
	for _, m := range r.Mismatches[:min(n, len(r.Mismatches))] {
		fmt.Fprintf(&b, "  window %s %s: clicks %d, want %d; invalid_clicks %d, want %d\n",
			m.AdID, m.Start.Format(time.RFC3339), m.Got.Clicks, m.Want.Clicks, m.Got.Invalid, m.Want.Invalid)
	}
	n -= min(n, len(r.Mismatches))
	for _, m := range r.QualityMismatches[:min(n, len(r.QualityMismatches))] {
		fmt.Fprintf(&b, "  quality %s: %s\n", m.AdID, qualityDiff(m.Want, m.Got))
	}
	io.WriteString(w, b.String())
}

// qualityDiff names the figures of got that differ from want.
func qualityDiff(want, got Quality) string {
	var parts []string
	for _, f := range []struct {
		name      string
		want, got int64
	}{
		{"valid", want.Valid, got.Valid},
		{"bot_user_agent", want.Bot, got.Bot},
		{"ip_rate", want.IPRate, got.IPRate},
		{"duplicates", want.Duplicates, got.Duplicates},
		{"too_late", want.TooLate, got.TooLate},
	} {
		if f.want != f.got {
			parts = append(parts, fmt.Sprintf("%s %d, want %d", f.name, f.got, f.want))
		}
	}
	return strings.Join(parts, "; ")
}
