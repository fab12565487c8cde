package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/clicks/aggregate"
	"github.com/pedal-project/pedal/internal/httpjson"
	"github.com/pedal-project/pedal/internal/safehttp"
)

// recounts runs recounts (pedal reconcile) and replays (pedal replay) as
// jobs of the aggregator in this process: POST /v1/pipeline/recounts starts
// one, GET /v1/pipeline/recounts/{id} reports its progress and result.
type recounts struct {
	ctx    context.Context // the server's: jobs stop with it
	agg    *aggregate.Aggregator
	logger *slog.Logger

	mu      sync.Mutex
	jobs    map[string]*recountJob
	order   []string // job ids, oldest first; the last 100 are kept
	running bool
}

type recountJob struct {
	ID       string                    `json:"id"`
	Apply    bool                      `json:"apply"`
	Status   string                    `json:"status"` // running, done, failed
	Progress aggregate.RecountProgress `json:"progress"`
	Result   *recountResult            `json:"result,omitempty"`
	Error    string                    `json:"error,omitempty"`
}

type recountResult struct {
	From       time.Time     `json:"from"`
	To         time.Time     `json:"to"`
	Partitions int           `json:"partitions"`
	Records    int64         `json:"records"`
	Windows    int           `json:"windows"`
	Ads        int           `json:"ads"`
	Replaced   int           `json:"replaced"`
	Diffs      []recountDiff `json:"diffs"`
}

type recountDiff struct {
	AdID      string         `json:"ad_id"`
	Start     *time.Time     `json:"window_start,omitempty"` // absent: the ad's quality figures over the range
	Stored    recountFigures `json:"stored"`
	Recounted recountFigures `json:"recounted"`
}

// recountFigures are a minute's clicks and invalid_clicks (as in the series
// API), or an ad's quality figures (as in the traffic quality API).
type recountFigures struct {
	Clicks        *int64 `json:"clicks,omitempty"`
	InvalidClicks *int64 `json:"invalid_clicks,omitempty"`
	Valid         *int64 `json:"valid,omitempty"`
	BotUserAgent  *int64 `json:"bot_user_agent,omitempty"`
	IPRate        *int64 `json:"ip_rate,omitempty"`
	Duplicates    *int64 `json:"duplicates,omitempty"`
	TooLate       *int64 `json:"too_late,omitempty"`
}

func minuteFigures(q analytics.Quality) recountFigures {
	return recountFigures{Clicks: &q.Valid, InvalidClicks: &q.Bot}
}

func qualityFigures(q analytics.Quality) recountFigures {
	return recountFigures{Valid: &q.Valid, BotUserAgent: &q.Bot, IPRate: &q.IPRate, Duplicates: &q.Duplicates, TooLate: &q.TooLate}
}

func (f recountFigures) String() string {
	v := func(p *int64) int64 {
		if p == nil {
			return 0
		}
		return *p
	}
	if f.Clicks != nil {
		return fmt.Sprintf("clicks %d, invalid_clicks %d", v(f.Clicks), v(f.InvalidClicks))
	}
	return fmt.Sprintf("valid %d, bot_user_agent %d, ip_rate %d, duplicates %d, too_late %d",
		v(f.Valid), v(f.BotUserAgent), v(f.IPRate), v(f.Duplicates), v(f.TooLate))
}

func newRecounts(ctx context.Context, agg *aggregate.Aggregator, logger *slog.Logger) *recounts {
	return &recounts{ctx: ctx, agg: agg, logger: logger, jobs: map[string]*recountJob{}}
}

func (rc *recounts) handleStart() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rc == nil || rc.agg == nil {
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusNotImplemented,
				Detail: "this process runs no aggregator; send the recount to a process with the aggregate role"})
			return
		}
		var req struct {
			From  time.Time `json:"from"`
			To    time.Time `json:"to"`
			Apply bool      `json:"apply"`
		}
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusBadRequest, Detail: "body: " + err.Error()})
			return
		}
		if req.From.IsZero() || req.To.IsZero() || !req.To.After(req.From) {
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusBadRequest,
				Detail: "from and to must be RFC 3339 times with from before to"})
			return
		}
		rc.mu.Lock()
		if rc.running {
			rc.mu.Unlock()
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusConflict, Detail: "a recount is already running"})
			return
		}
		var id [8]byte
		rand.Read(id[:])
		job := &recountJob{ID: hex.EncodeToString(id[:]), Apply: req.Apply, Status: "running"}
		rc.jobs[job.ID] = job
		rc.order = append(rc.order, job.ID)
		if len(rc.order) > 100 {
			delete(rc.jobs, rc.order[0])
			rc.order = rc.order[1:]
		}
		rc.running = true
		rc.mu.Unlock()
		go rc.run(job, req.From, req.To)
		w.Header().Set("Location", "/v1/pipeline/recounts/"+job.ID)
		httpjson.Encode(w, http.StatusAccepted, rc.snapshot(job))
	})
}

func (rc *recounts) run(job *recountJob, from, to time.Time) {
	ctx, cancel := context.WithTimeout(rc.ctx, time.Hour)
	defer cancel()
	res, err := rc.agg.Recount(ctx, from, to, job.Apply, func(p aggregate.RecountProgress) {
		rc.mu.Lock()
		job.Progress = p
		rc.mu.Unlock()
	})
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.running = false
	if err != nil {
		job.Status, job.Error = "failed", err.Error()
		rc.logger.Error("recount failed", "id", job.ID, "err", err)
		return
	}
	out := &recountResult{From: res.From, To: res.To, Partitions: res.Partitions, Records: res.Records, Windows: res.Windows,
		Ads: res.Ads, Replaced: res.Replaced, Diffs: []recountDiff{}}
	for _, d := range res.Diffs {
		rd := recountDiff{AdID: d.AdID, Stored: qualityFigures(d.Stored), Recounted: qualityFigures(d.Count)}
		if !d.Start.IsZero() {
			rd.Start = &d.Start
			rd.Stored, rd.Recounted = minuteFigures(d.Stored), minuteFigures(d.Count)
		}
		out.Diffs = append(out.Diffs, rd)
	}
	job.Status, job.Result = "done", out
	rc.logger.Info("recount done", "id", job.ID, "apply", job.Apply, "windows", res.Windows, "differing", len(res.Diffs), "replaced", res.Replaced)
}

func (rc *recounts) snapshot(job *recountJob) recountJob {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return *job
}

func (rc *recounts) handleGet() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var job *recountJob
		if rc != nil {
			rc.mu.Lock()
			job = rc.jobs[r.PathValue("id")]
			rc.mu.Unlock()
		}
		if job == nil {
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusNotFound, Detail: "no such recount"})
			return
		}
		httpjson.Encode(w, http.StatusOK, rc.snapshot(job))
	})
}

// errDiffer is returned by pedal reconcile when stored totals differ.
var errDiffer = errors.New("stored totals differ from the log")

const recountUsage = `Usage: pedal %[1]s --from TIME [--to TIME] [flags]

%[2]s

TIME is an RFC 3339 time (2026-11-30T12:00:00Z) or a duration before now (90m,
36h). Only windows already final (older than the allowed lateness and the late
horizon before the newest click) are %[3]s; the answer says the range it covered.
The server recounts the partitions its aggregator owns: with several aggregator
processes, run this against each. A progress bar shows on a terminal, plain
progress lines otherwise.

Flags:
`

// runRecount is pedal reconcile (apply false) and pedal replay (apply true).
func runRecount(ctx context.Context, name string, apply bool, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(flagName string) string {
		return "PEDAL_" + strings.ToUpper(name) + "_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
	}
	usage := func(flagName, help string) string { return help + " [$" + env(flagName) + "]" }
	target := fs.String("target", "http://127.0.0.1:8080", usage("target", "base `URL` of a pedal server running the aggregator"))
	token := fs.String("token", "", usage("token", "bearer token with the admin role (pedal token --sub me --role admin)"))
	fromS := fs.String("from", "", usage("from", "start of the range of window start times"))
	toS := fs.String("to", "0s", usage("to", "end of the range, exclusive (default now)"))
	poll := fs.Duration("poll", 500*time.Millisecond, usage("poll", "how often to ask for progress"))
	what, done := "Recounts the windows of a time range from the retained event log, through the aggregator's own code,\nand reports every ad minute and every ad's quality figures whose stored totals differ.\nExit status 1 when any differ.", "compared"
	if apply {
		what, done = "Recomputes the windows of a time range from the retained event log, through the aggregator's own code,\nwithout disturbing live processing, and writes the totals to the analytics store, replacing what it held.", "recomputed"
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, recountUsage, name, what, done)
		fs.PrintDefaults()
	}
	for _, n := range []string{"target", "token", "from", "to", "poll"} {
		if v := getenv(env(n)); v != "" {
			if err := fs.Set(n, v); err != nil {
				return fmt.Errorf("$%s: %w", env(n), err)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	now := time.Now()
	from, err := parseWhen(*fromS, now)
	if err != nil || *fromS == "" {
		return fmt.Errorf("--from %q: want an RFC 3339 time or a duration before now (%v)", *fromS, err)
	}
	to, err := parseWhen(*toS, now)
	if err != nil {
		return fmt.Errorf("--to %q: want an RFC 3339 time or a duration before now (%v)", *toS, err)
	}
	if !to.After(from) {
		return fmt.Errorf("--from %v is not before --to %v", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	if *poll <= 0 {
		return fmt.Errorf("--poll %v: want a positive duration", *poll)
	}
	base := strings.TrimSuffix(*target, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--target %q: want the base URL of a pedal server, like http://127.0.0.1:8080", *target)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil || pn == 0 {
		return fmt.Errorf("--target %q: bad port", *target)
	}
	// The server is the operator's own, so any address is allowed, on its port.
	client := safehttp.NewClient(safehttp.Config{
		AllowCIDRs:   []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
		AllowedPorts: []uint16{uint16(pn)},
		Timeout:      time.Minute,
		MaxBodyBytes: 64 << 20,
	})
	call := func(method, path string, body []byte, out any) error {
		req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
		if err != nil {
			return err
		}
		if *token != "" {
			req.Header.Set("Authorization", "Bearer "+*token)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if resp.StatusCode/100 != 2 {
			var p struct{ Detail, Title string }
			json.Unmarshal(b, &p)
			return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, cmpOr(p.Detail, p.Title, strings.TrimSpace(string(b))))
		}
		return json.Unmarshal(b, out)
	}
	body, _ := json.Marshal(map[string]any{"from": from.UTC(), "to": to.UTC(), "apply": apply})
	var job recountJob
	if err := call("POST", "/v1/pipeline/recounts", body, &job); err != nil {
		return err
	}
	bar := newProgress(stdout, name)
	for job.Status == "running" {
		bar.update(job.Progress)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(*poll):
		}
		if err := call("GET", "/v1/pipeline/recounts/"+job.ID, nil, &job); err != nil {
			return err
		}
	}
	bar.update(job.Progress)
	bar.finish()
	if job.Status != "done" || job.Result == nil {
		return fmt.Errorf("%s failed on the server: %s", name, job.Error)
	}
	res := job.Result
	fmt.Fprintf(stdout, "%s: %d windows of %d ads from %d records of %d partitions, windows starting in [%s, %s)\n",
		name, res.Windows, res.Ads, res.Records, res.Partitions, res.From.Format(time.RFC3339), res.To.Format(time.RFC3339))
	if res.To.Before(to) {
		fmt.Fprintf(stdout, "%s: windows from %s on are %s only in the partitions where they are final; the others are still open\n", name, res.To.Format(time.RFC3339), done)
	}
	for _, d := range res.Diffs {
		if d.Start != nil {
			fmt.Fprintf(stdout, "  window %s %s: stored %v; recounted %v\n", d.AdID, d.Start.Format(time.RFC3339), d.Stored, d.Recounted)
			continue
		}
		fmt.Fprintf(stdout, "  quality %s: stored %v; recounted %v\n", d.AdID, d.Stored, d.Recounted)
	}
	if apply {
		fmt.Fprintf(stdout, "%s: wrote %d windows (%d differed before)\n", name, res.Replaced, len(res.Diffs))
		return nil
	}
	if len(res.Diffs) > 0 {
		fmt.Fprintf(stdout, "%s: %d differences\n", name, len(res.Diffs))
		return errDiffer
	}
	fmt.Fprintf(stdout, "%s: no difference\n", name)
	return nil
}

// parseWhen reads an RFC 3339 time or a duration before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, errors.New("a negative duration")
		}
		return now.Add(-d), nil
	}
	return time.Parse(time.RFC3339, s)
}

func cmpOr(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// progress shows a recount's progress: a bar on a terminal, a line a second
// otherwise.
type progress struct {
	name string
	out  io.Writer
	bar  *progressbar.ProgressBar
	last time.Time
}

func newProgress(out io.Writer, name string) *progress {
	p := &progress{name: name, out: out}
	if f, ok := out.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		p.bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(out), progressbar.OptionSetDescription(name+": records"),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("records"),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
	}
	return p
}

func (p *progress) update(pr aggregate.RecountProgress) {
	if p.bar != nil {
		if pr.Total > 0 {
			p.bar.ChangeMax64(pr.Total)
		}
		p.bar.Set64(pr.Done)
		return
	}
	if pr.Total == 0 || time.Since(p.last) < time.Second {
		return
	}
	p.last = time.Now()
	pct := 0.0
	if pr.Total > 0 {
		pct = 100 * float64(pr.Done) / float64(pr.Total)
	}
	fmt.Fprintf(p.out, "%s: %d of %d records (%.0f%%)\n", p.name, pr.Done, pr.Total, pct)
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
	}
}
