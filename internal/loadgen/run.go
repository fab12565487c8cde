package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxResponseBody bounds how much of a response is read.
const maxResponseBody = 1 << 20

// Run sends the load cfg describes, printing progress to out once a second and a
// summary at the end, and returns the final figures. It runs for cfg.Duration or
// until ctx is done, then waits at most cfg.DrainTimeout for the requests in
// flight. Failed requests are counted, not returned: the error is for a bad
// Config or a ledger that cannot be written.
func Run(ctx context.Context, cfg Config, out io.Writer) (Summary, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Summary{}, err
	}
	gen, err := newGenerator(cfg)
	if err != nil {
		return Summary{}, err
	}
	r := &runner{cfg: cfg, gen: gen, refs: gen.refs, out: out, tty: isTerminal(out)}
	r.client = newClient(cfg)
	defer r.client.CloseIdleConnections()
	if cfg.Mode == ModeClicks {
		r.url = cfg.Target + "/v1/clicks"
		r.contentType = "application/json"
		if cfg.Format == FormatNDJSON {
			r.contentType = "application/x-ndjson"
		}
	} else {
		r.url = cfg.Target + "/v1/r/"
	}
	if cfg.Ledger != "" {
		if r.ledger, err = createLedger(cfg.Ledger, gen, cfg.Mode); err != nil {
			return Summary{}, err
		}
	}
	r.st.errors, r.st.samples, r.st.codes = make(map[string]int64), make(map[string]string), make(map[string]int64)

	fmt.Fprintf(out, "loadgen: %s mode, %s, %s clicks/s (%s requests/s), %d in flight at most, for %v\n",
		cfg.Mode, r.url, formatRate(cfg.Rate), formatRate(cfg.Rate/float64(cfg.Batch)), cfg.Concurrency, cfg.Duration)
	fmt.Fprintf(out, "loadgen: seed %d (reproduce the data with --seed %d), click ids lg-%s-<n>\n", cfg.Seed, cfg.Seed, cfg.RunID)

	s := r.run(ctx)
	if r.ledger != nil {
		if lerr := r.ledger.close(); lerr != nil {
			err = lerr
		}
	}
	if r.tty {
		fmt.Fprintln(out)
	}
	s.print(out)
	return s, err
}

type runner struct {
	cfg         Config
	gen         *generator // owned by the dispatching goroutine
	refs        *adRefs    // the generator's, noted by the workers
	client      *http.Client
	url         string
	contentType string
	ledger      *ledgerWriter // nil without a ledger
	pool        sync.Pool     // of *batch
	out         io.Writer
	tty         bool
	st          stats
}

// stats are the running totals, updated by the workers.
type stats struct {
	requests    atomic.Int64
	clicksSent  atomic.Int64
	clicksAcked atomic.Int64
	rejected    atomic.Int64
	failed      atomic.Int64
	late        atomic.Int64 // requests that found every worker busy
	maxLag      atomic.Int64
	total       histogram // latency of acknowledged requests, whole run
	window      histogram // the same since the last progress line

	mu      sync.Mutex
	errors  map[string]int64  // failed requests by kind
	samples map[string]string // one error message per kind
	codes   map[string]int64  // rejected records by code
}

func (st *stats) fail(kind string, err error) {
	st.failed.Add(1)
	st.mu.Lock()
	st.errors[kind]++
	if _, ok := st.samples[kind]; !ok && err != nil {
		st.samples[kind] = err.Error()
	}
	st.mu.Unlock()
}

// batch is one request's clicks and body. It goes back to the pool once both the
// worker and the HTTP transport (which may close the body after Do returns) are
// done with it.
type batch struct {
	clicks   []click
	body     []byte
	intended time.Time
	refs     atomic.Int32
	pool     *sync.Pool
}

func (b *batch) release() {
	if b.refs.Add(-1) == 0 && cap(b.body) <= 8<<20 {
		b.pool.Put(b)
	}
}

// bodyReader is a request body over a batch; closing it releases the batch once.
type bodyReader struct {
	bytes.Reader
	b      *batch
	closed atomic.Bool
}

func (br *bodyReader) Close() error {
	if br.closed.CompareAndSwap(false, true) {
		br.b.release()
	}
	return nil
}

func newClient(cfg Config) *http.Client {
	dialer := &net.Dialer{Timeout: min(cfg.Timeout, 5*time.Second), KeepAlive: 30 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // never through a proxy: the target is dialled directly
			DialContext:         dialer.DialContext,
			MaxIdleConns:        cfg.Concurrency,
			MaxIdleConnsPerHost: cfg.Concurrency,
			MaxConnsPerHost:     cfg.Concurrency,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
			WriteBufferSize:     64 << 10,
			ReadBufferSize:      16 << 10,
		},
		Timeout: cfg.Timeout,
		// A redirect is the answer of /v1/r/{token}, never to be followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// run dispatches the schedule to cfg.Concurrency workers and returns the figures
// once they have stopped.
func (r *runner) run(ctx context.Context) Summary {
	cfg := r.cfg
	// Requests outlive ctx by up to DrainTimeout, then are aborted.
	reqCtx, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()

	jobs := make(chan *batch)
	var workers sync.WaitGroup
	for range cfg.Concurrency {
		workers.Go(func() {
			for b := range jobs {
				r.do(reqCtx, b)
			}
		})
	}
	stopReport := make(chan struct{})
	var reporter sync.WaitGroup
	t0 := time.Now()
	reporter.Go(func() { r.report(t0, stopReport) })

	scheduled, sent := r.dispatch(ctx, t0, jobs)
	close(jobs)
	drain := time.AfterFunc(cfg.DrainTimeout, abort)
	workers.Wait()
	drain.Stop()
	elapsed := time.Since(t0)
	if ctx.Err() == nil {
		// The last request may have ended before the schedule's end.
		elapsed = max(elapsed, cfg.Duration)
	}
	close(stopReport)
	reporter.Wait()

	st := &r.st
	s := Summary{
		Mode:        cfg.Mode,
		Format:      cfg.Format,
		Target:      cfg.Target,
		Seed:        cfg.Seed,
		RunID:       cfg.RunID,
		TargetRate:  cfg.Rate,
		Batch:       cfg.Batch,
		Elapsed:     elapsed,
		Scheduled:   scheduled,
		Requests:    st.requests.Load(),
		Unsent:      scheduled - sent,
		LateStarts:  st.late.Load(),
		MaxStartLag: time.Duration(st.maxLag.Load()),
		ClicksSent:  st.clicksSent.Load(),
		ClicksAcked: st.clicksAcked.Load(),
		Rejected:    st.rejected.Load(),
		Failed:      st.failed.Load(),
		Latency: Latency{
			Count: int64(st.total.count()),
			P50:   st.total.quantile(0.50),
			P90:   st.total.quantile(0.90),
			P99:   st.total.quantile(0.99),
			P999:  st.total.quantile(0.999),
			Max:   st.total.maxValue(),
		},
	}
	if elapsed > 0 {
		s.AckedPerSec = float64(s.ClicksAcked) / elapsed.Seconds()
	}
	st.mu.Lock()
	s.Errors, s.ErrorSamples, s.RejectedByCode = st.errors, st.samples, st.codes
	st.mu.Unlock()
	return s
}

// dispatch hands request i to a worker at t0 + i/requestRate until cfg.Duration
// has passed or ctx is done. Bodies are built ahead, in the wait before their
// time. It returns how many requests were due by the time it stopped and how many
// of those were handed over; the others found every worker busy to the end.
func (r *runner) dispatch(ctx context.Context, t0 time.Time, jobs chan<- *batch) (scheduled, sent int64) {
	cfg := r.cfg
	interval := float64(time.Second) * float64(cfg.Batch) / cfg.Rate
	due := func(i int64) time.Duration { return time.Duration(float64(i) * interval) }
	total := int64(float64(cfg.Duration)/interval) + 1 // due(i) < Duration for i < total
	for total > 0 && due(total-1) >= cfg.Duration {
		total--
	}
	end := time.NewTimer(cfg.Duration)
	defer end.Stop()
	wait := time.NewTimer(time.Hour)
	defer wait.Stop()

	// dueBy is the number of requests due by time now.
	dueBy := func(now time.Time) int64 {
		n := int64(float64(now.Sub(t0))/interval) + 1
		return min(max(n, 0), total)
	}
	var b *batch
	for i := int64(0); i < total; i++ {
		if ctx.Err() != nil {
			if b != nil {
				b.release()
			}
			return dueBy(time.Now()), i
		}
		if b == nil {
			b = r.build()
		}
		intended := t0.Add(due(i))
		if d := time.Until(intended); d > 0 {
			wait.Reset(d)
			select {
			case <-wait.C:
			case <-ctx.Done():
				b.release()
				return dueBy(time.Now()), i
			}
		}
		b.intended = intended
		select {
		case jobs <- b: // a worker was free
			b = nil
			continue
		default:
		}
		select { // every worker is busy: this request will start late
		case jobs <- b:
			b = nil
			r.st.late.Add(1)
		case <-ctx.Done():
			b.release()
			return dueBy(time.Now()), i
		case <-end.C:
			b.release()
			return total, i
		}
	}
	return total, total
}

// build generates the next request's clicks and body.
func (r *runner) build() *batch {
	b, _ := r.pool.Get().(*batch)
	if b == nil {
		b = &batch{clicks: make([]click, 0, r.cfg.Batch), pool: &r.pool}
	}
	b.refs.Store(1)
	nowMs := time.Now().UnixMilli()
	b.clicks = b.clicks[:0]
	for range r.cfg.Batch {
		b.clicks = append(b.clicks, r.gen.next(nowMs))
	}
	if r.cfg.Mode == ModeClicks {
		b.body = r.gen.appendBatch(b.body[:0], b.clicks, r.cfg.Format == FormatNDJSON)
	}
	return b
}

// do sends one request and accounts for its outcome.
func (r *runner) do(ctx context.Context, b *batch) {
	defer b.release()
	st := &r.st
	lag := time.Since(b.intended)
	for {
		m := st.maxLag.Load()
		if int64(lag) <= m || st.maxLag.CompareAndSwap(m, int64(lag)) {
			break
		}
	}
	st.requests.Add(1)
	st.clicksSent.Add(int64(len(b.clicks)))

	var req *http.Request
	var err error
	if r.cfg.Mode == ModeClicks {
		body := &bodyReader{b: b}
		body.Reset(b.body)
		b.refs.Add(1) // the transport's, until it closes the body
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, r.url, body)
		if err != nil {
			body.Close()
		} else {
			req.ContentLength = int64(len(b.body))
			req.Header.Set("Content-Type", r.contentType)
			req.Header.Set("User-Agent", "pedal-loadgen")
			if r.cfg.Token != "" {
				req.Header.Set("Authorization", "Bearer "+r.cfg.Token)
			}
		}
	} else {
		c := &b.clicks[0]
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, r.url+c.token, nil)
		if err == nil {
			req.Header.Set("User-Agent", userAgent(c.ua))
			var ip [64]byte
			req.Header.Set("X-Forwarded-For", string(appendIP(ip[:0], c)))
		}
	}
	if err != nil {
		st.fail("bad_request", err)
		return
	}
	resp, err := r.client.Do(req)
	if err != nil {
		st.fail(classify(err), err)
		return
	}
	if r.cfg.Mode == ModeClicks {
		r.clicksResponse(b, resp)
	} else {
		r.redirectResponse(b, resp)
	}
}

// ackBody is the 202 answer of POST /v1/clicks.
type ackBody struct {
	Accepted *int64 `json:"accepted"`
	Rejected []struct {
		Index int    `json:"index"`
		Code  string `json:"code"`
	} `json:"rejected"`
}

func (r *runner) clicksResponse(b *batch, resp *http.Response) {
	st := &r.st
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	resp.Body.Close()
	if err != nil {
		st.fail(classify(err), err)
		return
	}
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		st.fail(statusKind(resp.StatusCode), fmt.Errorf("%s: %.200s", resp.Status, bytes.TrimSpace(body)))
		return
	}
	var ack ackBody
	if err := json.Unmarshal(body, &ack); err != nil || ack.Accepted == nil {
		st.fail("bad_response", fmt.Errorf("%s: unreadable acknowledgement %.200q", resp.Status, body))
		return
	}
	rejected := make([]int, 0, len(ack.Rejected))
	for _, rj := range ack.Rejected {
		if rj.Index >= 0 && rj.Index < len(b.clicks) {
			rejected = append(rejected, rj.Index)
		}
	}
	slices.Sort(rejected)
	rejected = slices.Compact(rejected)
	acked := int64(len(b.clicks) - len(rejected))
	lat := time.Since(b.intended)
	st.total.record(lat)
	st.window.record(lat)
	st.clicksAcked.Add(acked)
	st.rejected.Add(int64(len(rejected)))
	if len(ack.Rejected) > 0 {
		st.mu.Lock()
		for _, rj := range ack.Rejected {
			st.codes[rj.Code]++
		}
		st.mu.Unlock()
	}
	if *ack.Accepted != acked {
		// The answer contradicts itself; the records it names as rejected are
		// trusted, and the mismatch is counted.
		st.mu.Lock()
		st.errors["accepted_mismatch"]++
		st.mu.Unlock()
	}
	if r.ledger != nil {
		r.ledger.write(b.clicks, rejected)
	}
	// Only now, with the clicks in the log and in the ledger, may later clicks
	// count on them (see generator.makeLate).
	for i := range b.clicks {
		if len(rejected) > 0 && rejected[0] == i {
			rejected = rejected[1:]
			continue
		}
		r.refs.note(b.clicks[i].ad, b.clicks[i].ts)
	}
}

func (r *runner) redirectResponse(b *batch, resp *http.Response) {
	st := &r.st
	_, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		st.fail(statusKind(resp.StatusCode), errors.New(resp.Status))
		return
	}
	if err != nil {
		st.fail(classify(err), err)
		return
	}
	if loc := resp.Header.Get("Location"); loc != r.cfg.Destination {
		st.fail("bad_location", fmt.Errorf("redirected to %.200q, want %q", loc, r.cfg.Destination))
		return
	}
	lat := time.Since(b.intended)
	st.total.record(lat)
	st.window.record(lat)
	st.clicksAcked.Add(1)
	if r.ledger != nil {
		r.ledger.write(b.clicks, nil)
	}
}

func statusKind(code int) string {
	return "status_" + strconv.Itoa(code)
}

// classify names the kind of a failed request.
func classify(err error) string {
	var nerr net.Error
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, context.Canceled):
		return "aborted"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "conn_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "conn_reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "conn_closed"
	case errors.As(err, &dnsErr):
		return "dns"
	default:
		return "other"
	}
}

// report prints a progress line every second until stop is closed.
func (r *runner) report(t0 time.Time, stop <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	st := &r.st
	var win histogram
	var last struct {
		at                  time.Time
		sent, acked, failed int64
	}
	last.at = t0
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			sent, acked, failed := st.clicksSent.Load(), st.clicksAcked.Load(), st.failed.Load()
			win = histogram{}
			st.window.moveTo(&win)
			secs := now.Sub(last.at).Seconds()
			p := progress{
				elapsed:   now.Sub(t0),
				target:    r.cfg.Rate,
				sent:      float64(sent-last.sent) / secs,
				acked:     float64(acked-last.acked) / secs,
				p50:       win.quantile(0.5),
				p99:       win.quantile(0.99),
				errors:    failed - last.failed,
				errorsAll: failed,
			}
			last.at, last.sent, last.acked, last.failed = now, sent, acked, failed
			p.write(r.out, r.tty)
		}
	}
}

type progress struct {
	elapsed             time.Duration
	target, sent, acked float64
	p50, p99            time.Duration
	errors, errorsAll   int64
}

func (p progress) write(w io.Writer, tty bool) {
	line := fmt.Sprintf("%6.0fs  target %s/s  sent %s/s  acked %s/s  p50 %s  p99 %s  errors %d (total %d)",
		p.elapsed.Round(time.Second).Seconds(), formatRate(p.target), formatRate(p.sent), formatRate(p.acked),
		formatDuration(p.p50), formatDuration(p.p99), p.errors, p.errorsAll)
	if tty {
		fmt.Fprintf(w, "\r%s\x1b[K", line)
		return
	}
	fmt.Fprintln(w, line)
}

// isTerminal reports whether w is a terminal, where progress rewrites one line.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && f.Name() != os.DevNull
}
