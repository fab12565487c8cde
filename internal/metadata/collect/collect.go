// Package collect fetches one web page through the SSRF-safe client of package
// safehttp and turns it into link-preview metadata with package extract,
// completing it with the secondary fetches the page asks for: its oEmbed
// endpoint and, when images are wanted, a probe of each image's size.
//
// Invariants:
//   - Every request, page or secondary, goes through one safehttp client: the
//     address policy, redirect checks and the decoded-size cap apply to all.
//   - At most Options.MaxDepthBytes decoded bytes of a page are read; a
//     longer page is extracted from that prefix and marked Truncated.
//   - A failure is an *Error with a stable Code; only timeouts, connection
//     failures, 5xx, 408 and 429 are retried, with full-jitter backoff and at
//     least the server's Retry-After.
//   - Each host has a circuit breaker: more than half of at least
//     Config.BreakerMinCalls calls failing within a rolling 10 s window opens
//     it; while open, requests to the host fail at once with host_unavailable;
//     after Config.BreakerOpenFor a few probes decide whether it closes again.
//   - Successful results are cached for Config.CacheTTL per (URL, options),
//     and concurrent identical requests share one fetch. The cache may be
//     shared between processes (Config.Cache, package rediscache); sharing a
//     fetch is per process. A cache that fails counts as a miss, never as a
//     failed collection (fail open).
//
// A Collector is safe for concurrent use.
package collect

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/pedal-project/pedal/internal/metadata/extract"
	"github.com/pedal-project/pedal/internal/retry"
	"github.com/pedal-project/pedal/internal/safehttp"
)

// Size bounds of the options and of the secondary fetches.
const (
	MinDepthBytes     = 1 << 10
	DefaultDepthBytes = 1 << 20
	MaxDepthBytes     = 10 << 20

	maxOEmbedBytes = 256 << 10
	maxProbeBytes  = 64 << 10
	maxProbes      = 4
)

// Config configures a Collector; zero fields take the defaults given.
type Config struct {
	// Fetch is the outbound policy; see safehttp.Config. Its MaxBodyBytes is
	// raised to MaxDepthBytes when lower.
	Fetch safehttp.Config
	// UserAgent is sent with every request; default "pedal-metadata/1.0
	// (+https://github.com/pedal-project/pedal)".
	UserAgent string
	// MaxDepthBytes is the largest Options.MaxDepthBytes accepted; default
	// MaxDepthBytes (10 MiB).
	MaxDepthBytes int64
	// Timeout bounds one Collect call, retries and secondary fetches
	// included; default 30s.
	Timeout time.Duration
	// Retries is how many times a retryable page failure is retried; default
	// 2. Negative means none.
	Retries int
	// RetryBase and RetryCap shape the wait before retry n:
	// random(0, min(cap, base·2^n)), and never less than Retry-After.
	// Defaults 250ms and 5s.
	RetryBase, RetryCap time.Duration
	// CacheTTL is how long a successful result is reused; default 10m;
	// negative disables the cache. CacheEntries bounds it; default 10,000.
	CacheTTL     time.Duration
	CacheEntries int
	// Cache stores the results; nil means an in-process cache of
	// CacheEntries entries. A shared Cache (package rediscache) lets
	// several processes reuse each other's results. Its errors are counted
	// and taken for misses: the page is fetched.
	Cache Cache
	// BreakerMinCalls, BreakerWindow and BreakerOpenFor shape each host's
	// circuit breaker; defaults 20 calls, 10s and 5s. BreakerProbes is how
	// many calls a half-open breaker lets through; default 3.
	BreakerMinCalls int
	BreakerWindow   time.Duration
	BreakerOpenFor  time.Duration
	BreakerProbes   int
	// MaxHosts bounds the per-host state kept (breakers); idle hosts are
	// forgotten first. Default 10,000.
	MaxHosts int
}

func (c *Config) defaults() {
	if c.UserAgent == "" {
		c.UserAgent = "pedal-metadata/1.0 (+https://github.com/pedal-project/pedal)"
	}
	if c.MaxDepthBytes <= 0 {
		c.MaxDepthBytes = MaxDepthBytes
	}
	if c.Fetch.MaxBodyBytes < c.MaxDepthBytes {
		c.Fetch.MaxBodyBytes = c.MaxDepthBytes
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Retries == 0 {
		c.Retries = 2
	}
	if c.RetryBase <= 0 {
		c.RetryBase = 250 * time.Millisecond
	}
	if c.RetryCap <= 0 {
		c.RetryCap = 5 * time.Second
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = 10 * time.Minute
	}
	if c.CacheEntries <= 0 {
		c.CacheEntries = 10_000
	}
	if c.BreakerMinCalls <= 0 {
		c.BreakerMinCalls = 20
	}
	if c.BreakerWindow <= 0 {
		c.BreakerWindow = 10 * time.Second
	}
	if c.BreakerOpenFor <= 0 {
		c.BreakerOpenFor = 5 * time.Second
	}
	if c.BreakerProbes <= 0 {
		c.BreakerProbes = 3
	}
	if c.MaxHosts <= 0 {
		c.MaxHosts = 10_000
	}
}

// Options are a request's extraction options, as the API names them.
type Options struct {
	IncludeImages bool  `json:"include_images"`
	MaxDepthBytes int64 `json:"max_depth_bytes"`
}

// Image is one preview image; Width and Height are 0 when neither the page
// nor a probe of the image gave them.
type Image struct {
	URL    string `json:"url"`
	Width  int    `json:"width,omitempty"`
	Height int    `json:"height,omitempty"`
	Alt    string `json:"alt,omitempty"`
}

// Result is the metadata of a page. Empty fields were not found.
type Result struct {
	Title        string            `json:"title,omitempty"`
	Description  string            `json:"description,omitempty"`
	SiteName     string            `json:"site_name,omitempty"`
	CanonicalURL string            `json:"canonical_url,omitempty"`
	Type         string            `json:"type,omitempty"`
	Locale       string            `json:"locale,omitempty"`
	Lang         string            `json:"lang,omitempty"`
	Author       string            `json:"author,omitempty"`
	PublishedAt  string            `json:"published_at,omitempty"`
	Images       []Image           `json:"images,omitempty"`
	Favicon      string            `json:"favicon,omitempty"`
	OEmbedURL    string            `json:"oembed_url,omitempty"`
	OEmbed       json.RawMessage   `json:"oembed,omitempty"`
	JSONLD       []json.RawMessage `json:"json_ld,omitempty"`
	HTTPStatus   int               `json:"http_status"`
	ContentType  string            `json:"content_type"`
	BytesRead    int64             `json:"bytes_read"`
	Truncated    bool              `json:"truncated"`
}

// Outcome is a successful collection.
type Outcome struct {
	FinalURL string // after redirects
	Result   Result
	Cached   bool // reused from the cache or from a concurrent identical fetch
}

// Collector fetches pages and extracts their metadata.
type Collector struct {
	cfg     Config
	client  client
	hosts   *hostTable
	cache   Cache // nil when CacheTTL < 0
	flight  singleflight.Group
	metrics *metrics
	log     *slog.Logger
	now     func() time.Time

	cacheWarned atomic.Int64 // unix nanos of the last cache error logged, to log at most one per 10 s

	base     context.Context // shared fetches run under it; Close cancels it
	stop     context.CancelFunc
	inFlight sync.WaitGroup
}

// client is the part of safehttp's client the Collector uses.
type client interface {
	Do(*http.Request) (*http.Response, error)
	CloseIdleConnections()
}

// New returns a Collector. logger may be nil; reg may be nil.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) *Collector {
	cfg.defaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Collector{
		cfg:     cfg,
		client:  safehttp.NewClient(cfg.Fetch),
		metrics: newMetrics(reg),
		log:     logger,
		now:     time.Now,
	}
	c.base, c.stop = context.WithCancel(context.Background())
	c.hosts = newHostTable(cfg, c.metrics)
	switch {
	case cfg.CacheTTL < 0:
	case cfg.Cache != nil:
		c.cache = cfg.Cache
	default:
		c.cache = &memoryCache{c: newCache(cfg.CacheTTL, cfg.CacheEntries), now: func() time.Time { return c.now() }}
	}
	return c
}

// Close cancels the fetches in flight and waits for them to end; use the
// Collector no more afterwards.
func (c *Collector) Close() {
	c.stop()
	c.inFlight.Wait()
	c.client.CloseIdleConnections()
}

// Config returns the configuration in effect, defaults applied.
func (c *Collector) Config() Config { return c.cfg }

// CheckOptions applies the defaults to o and checks its bounds.
func (c *Collector) CheckOptions(o *Options) error {
	if o.MaxDepthBytes == 0 {
		o.MaxDepthBytes = min(DefaultDepthBytes, c.cfg.MaxDepthBytes)
	}
	if o.MaxDepthBytes < MinDepthBytes || o.MaxDepthBytes > c.cfg.MaxDepthBytes {
		return fmt.Errorf("max_depth_bytes %d: want an integer from %d to %d", o.MaxDepthBytes, MinDepthBytes, c.cfg.MaxDepthBytes)
	}
	return nil
}

// Collect fetches rawURL and extracts its metadata. onAttempt, if not nil,
// is called before each retry of the page with the attempt's number (2, 3,
// …). A failure is returned as an *Error, except when ctx ends first, which
// returns ctx.Err().
func (c *Collector) Collect(ctx context.Context, rawURL string, opt Options, onAttempt func(n int)) (Outcome, error) {
	if err := c.CheckOptions(&opt); err != nil {
		return Outcome{}, &Error{Code: CodeInvalidURL, Message: err.Error()}
	}
	u, err := safehttp.Validate(rawURL, c.cfg.Fetch)
	if err != nil {
		return Outcome{}, classify(err)
	}
	key := cacheKey(u, opt)
	if out, ok := c.cacheGet(ctx, key); ok {
		c.metrics.cache.WithLabelValues("hit").Inc()
		out.Cached = true
		return out, nil
	}
	leader := false // set only if this caller's function runs
	ch := c.flight.DoChan(key, func() (any, error) {
		leader = true
		// The fetch serves every caller waiting on it: it is bounded by the
		// Timeout, not by the first caller's context.
		c.inFlight.Add(1)
		defer c.inFlight.Done()
		fctx, cancel := context.WithTimeout(c.base, c.cfg.Timeout)
		defer cancel()
		start := c.now()
		out, err := c.collect(fctx, u, opt, onAttempt)
		c.metrics.observe(err, c.now().Sub(start))
		if err == nil {
			c.cachePut(fctx, key, out)
		}
		return out, err
	})
	select {
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	case r := <-ch:
		if leader {
			c.metrics.cache.WithLabelValues("miss").Inc()
		} else {
			c.metrics.cache.WithLabelValues("shared").Inc()
		}
		if r.Err != nil {
			return Outcome{}, r.Err
		}
		out := r.Val.(Outcome)
		out.Cached = !leader
		return out, nil
	}
}

func cacheKey(u *url.URL, o Options) string {
	return fmt.Sprintf("%s\x00%t\x00%d", u.String(), o.IncludeImages, o.MaxDepthBytes)
}

func (c *Collector) collect(ctx context.Context, u *url.URL, opt Options, onAttempt func(int)) (Outcome, error) {
	var (
		out Outcome
		md  extract.Metadata
		err error
	)
	for attempt := 1; ; attempt++ {
		if attempt > 1 && onAttempt != nil {
			onAttempt(attempt)
		}
		out, md, err = c.fetchPage(ctx, u, opt)
		var e *Error
		if err == nil || !errors.As(err, &e) || !e.Retryable || attempt > c.cfg.Retries {
			break
		}
		wait := max(retry.FullJitter(c.cfg.RetryBase, c.cfg.RetryCap, attempt-1), e.RetryAfter)
		if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
			break // the wait would outlast the task: report this failure
		}
		c.log.DebugContext(ctx, "retrying page", "host", u.Hostname(), "attempt", attempt, "code", e.Code, "wait", wait)
		if retry.Sleep(ctx, wait) != nil {
			break
		}
	}
	if err != nil {
		return Outcome{}, err
	}
	if md.OEmbedURL != "" {
		if raw, err := c.fetchOEmbed(ctx, md.OEmbedURL); err != nil {
			c.log.DebugContext(ctx, "oembed fetch failed", "url", md.OEmbedURL, "err", err)
		} else {
			out.Result.OEmbed = raw
		}
	}
	if opt.IncludeImages {
		c.probeImages(ctx, out.Result.Images)
	}
	return out, nil
}

// fetchPage makes one attempt at the page.
func (c *Collector) fetchPage(ctx context.Context, u *url.URL, opt Options) (Outcome, extract.Metadata, error) {
	resp, done, err := c.get(ctx, u.String(), "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1", nil)
	if err != nil {
		return Outcome{}, extract.Metadata{}, err
	}
	defer resp.Body.Close()
	if err := statusError(resp); err != nil {
		done(err)
		return Outcome{}, extract.Metadata{}, err
	}
	final := resp.Request.URL
	counted := &countingReader{r: io.LimitReader(resp.Body, opt.MaxDepthBytes)}
	br := bufio.NewReaderSize(counted, 4096)
	head, _ := br.Peek(512)
	ctype := resp.Header.Get("Content-Type")
	if !isHTML(ctype, head) {
		err := &Error{Code: CodeUnsupportedContentType, HTTPStatus: resp.StatusCode,
			Message: fmt.Sprintf("content type %q is not HTML", mediaType(ctype, head))}
		done(nil) // the host answered
		return Outcome{}, extract.Metadata{}, err
	}
	md, xerr := extract.Extract(br, ctype, final, extract.Options{IncludeImages: opt.IncludeImages})
	truncated := false
	switch {
	case errors.Is(xerr, safehttp.ErrBodyTooLarge):
		truncated = true
	case xerr != nil && counted.err != nil:
		// The connection failed mid-body: a retryable failure.
		err := classify(counted.err)
		done(err)
		return Outcome{}, extract.Metadata{}, err
	case xerr != nil:
		done(nil)
		return Outcome{}, extract.Metadata{}, &Error{Code: CodeUnsupportedContentType, HTTPStatus: resp.StatusCode,
			Message: xerr.Error()}
	case counted.n >= opt.MaxDepthBytes:
		// The cap was reached: is there more?
		var one [1]byte
		n, err := resp.Body.Read(one[:])
		truncated = n > 0 || errors.Is(err, safehttp.ErrBodyTooLarge)
	}
	done(nil)
	out := Outcome{FinalURL: final.String(), Result: fromMetadata(md)}
	out.Result.HTTPStatus = resp.StatusCode
	out.Result.ContentType = ctype
	out.Result.BytesRead = counted.n
	out.Result.Truncated = truncated
	return out, md, nil
}

func fromMetadata(md extract.Metadata) Result {
	r := Result{
		Title: md.Title, Description: md.Description, SiteName: md.SiteName, CanonicalURL: md.CanonicalURL,
		Type: md.Type, Locale: md.Locale, Lang: md.Lang, Author: md.Author, PublishedAt: md.PublishedAt,
		Favicon: md.Favicon, OEmbedURL: md.OEmbedURL, JSONLD: md.JSONLD,
	}
	for _, im := range md.Images {
		r.Images = append(r.Images, Image{URL: im.URL, Width: im.Width, Height: im.Height, Alt: im.Alt})
	}
	return r
}

// get sends a GET through the host's breaker. On success the caller reports
// the call's outcome for the breaker through done, exactly once, and closes
// the body.
func (c *Collector) get(ctx context.Context, rawURL, accept string, header http.Header) (*http.Response, func(error), error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, nil, &Error{Code: CodeInvalidURL, Message: err.Error()}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	req.Header.Set("Accept", accept)
	done, err := c.hosts.allow(strings.ToLower(req.URL.Hostname()))
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		e := classify(err)
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			done(nil) // cancelled by us: not the host's fault
			return nil, nil, ctx.Err()
		}
		done(e)
		return nil, nil, e
	}
	return resp, done, nil
}

// statusError is the failure a non-2xx response stands for, or nil.
func statusError(resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	e := &Error{Code: CodeHTTPError, HTTPStatus: resp.StatusCode, Message: "the server answered " + resp.Status}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
		e.Retryable = true
		e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
		e.Retryable = true
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // let the connection be reused
	return e
}

// retryAfter parses a Retry-After value: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func mediaType(ctype string, head []byte) string {
	if ctype == "" {
		ctype = http.DetectContentType(head)
	}
	mt, _, err := mime.ParseMediaType(ctype)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(ctype))
	}
	return mt
}

// isHTML reports whether the page is HTML by its Content-Type, or by sniffing
// when the server sent none.
func isHTML(ctype string, head []byte) bool {
	switch mediaType(ctype, head) {
	case "text/html", "application/xhtml+xml":
		return true
	}
	return false
}

type countingReader struct {
	r   io.Reader
	n   int64
	err error // the first error other than io.EOF
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}
