package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/pedal-project/pedal/internal/breaker"
	"github.com/pedal-project/pedal/internal/gateway/routedb"
	"github.com/pedal-project/pedal/internal/principal"
	"github.com/pedal-project/pedal/internal/retry"
)

// FallbackHeader marks an answer served from the fallback cache while the
// cluster's breaker is open: "stale; age=<seconds>".
const FallbackHeader = "X-Pedal-Fallback"

type rejectFunc func(status int, why, detail string, retryAfter time.Duration)

// forward sends r to rt's cluster through its breaker and bulkhead.
func (g *Gateway) forward(w *statusWriter, r *http.Request, rt *route, p principal.Principal, authed bool, reject rejectFunc) {
	c := rt.cluster
	cfg, handler, _ := c.snapshot()
	ctx, cancel := context.WithTimeout(r.Context(), rt.Timeout)
	defer cancel()
	r = r.WithContext(ctx)
	cacheKey := ""
	if r.Method == http.MethodGet {
		cacheKey = fallbackKey(r, p)
	}

	if cfg.Kind == routedb.KindInProcess {
		done, err := c.breaker.Allow()
		if err != nil {
			g.serveFallback(w, r, cacheKey, reject)
			return
		}
		if !c.admit(cfg.MaxConcurrency) {
			done(breaker.Failure)
			reject(http.StatusServiceUnavailable, reasonConcurrency, fmt.Sprintf("cluster %s is at its limit of %d requests in flight", c.name, cfg.MaxConcurrency), time.Second)
			return
		}
		defer c.inflight.Add(-1)
		cw := &captureWriter{statusWriter: w, capture: cacheKey != "", limit: g.cfg.FallbackMaxBytes}
		func() {
			defer func() {
				if v := recover(); v != nil {
					done(breaker.Failure) // a panicking handler must not hold a probe slot
					panic(v)
				}
			}()
			handler.ServeHTTP(cw, r)
		}()
		done(g.outcome(ctx, r, cw.code, nil))
		if cw.capture && cw.code >= 200 && cw.code < 300 && cacheable(cw.Header()) {
			g.fallback.put(ctx, cacheKey, cw.code, cw.Header(), cw.buf.Bytes())
		}
		return
	}
	g.forwardHTTP(w, r, rt, c, cfg, p, authed, cacheKey, reject)
}

// admit takes a place in the cluster's bulkhead.
func (c *cluster) admit(limit int) bool {
	if c.inflight.Add(1) > int64(limit) {
		c.inflight.Add(-1)
		return false
	}
	return true
}

// outcome is a call's result for the breaker: failures are 5xx and timeouts
// and connection errors; the client going away is not counted.
func (g *Gateway) outcome(ctx context.Context, r *http.Request, code int, err error) breaker.Outcome {
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return breaker.Ignore
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return breaker.Failure
	case err != nil, code >= 500:
		return breaker.Failure
	}
	return breaker.Success
}

func (g *Gateway) serveFallback(w *statusWriter, r *http.Request, key string, reject rejectFunc) {
	if key != "" {
		if e, ok := g.fallback.get(r.Context(), key); ok {
			for k, v := range e.Header {
				w.Header()[k] = v
			}
			age := max(int(time.Since(e.At).Seconds()), 0)
			w.Header().Set(FallbackHeader, fmt.Sprintf("stale; age=%d", age))
			w.Header().Set("Age", strconv.Itoa(age))
			w.WriteHeader(e.Code)
			w.Write(e.Body)
			g.m.fallbacks.Inc()
			return
		}
	}
	reject(http.StatusServiceUnavailable, reasonBreakerOpen, "the service is failing; its circuit breaker is open", g.cfg.Breaker.OpenFor)
}

// hopHeaders are removed when forwarding (RFC 9110 §7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

// forwardHTTP proxies r to an endpoint of c, retrying idempotent requests
// after connection errors, timeouts and 502/503/504 within the retry budget.
func (g *Gateway) forwardHTTP(w *statusWriter, r *http.Request, rt *route, c *cluster, cfg routedb.Cluster,
	p principal.Principal, authed bool, cacheKey string, reject rejectFunc) {
	ctx := r.Context()
	// A body is buffered, up to a limit, so that it can be sent again.
	var body []byte
	replayable := idempotent(r.Method)
	if r.Body != nil && r.Body != http.NoBody {
		if replayable && r.ContentLength >= 0 && r.ContentLength <= g.cfg.MaxBufferedBody {
			b, err := io.ReadAll(io.LimitReader(r.Body, g.cfg.MaxBufferedBody+1))
			if err != nil {
				reject(http.StatusBadRequest, "body", "could not read the request body", 0)
				return
			}
			if int64(len(b)) > g.cfg.MaxBufferedBody {
				r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), r.Body))
				replayable = false
			} else {
				body = b
			}
		} else {
			replayable = false
		}
	}
	g.budget.request()
	for attempt := 0; ; attempt++ {
		done, err := c.breaker.Allow()
		if err != nil {
			if attempt == 0 {
				g.serveFallback(w, r, cacheKey, reject)
			} else {
				reject(http.StatusServiceUnavailable, reasonBreakerOpen, "the service is failing; its circuit breaker is open", g.cfg.Breaker.OpenFor)
			}
			return
		}
		if !c.admit(cfg.MaxConcurrency) {
			done(breaker.Failure)
			reject(http.StatusServiceUnavailable, reasonConcurrency, fmt.Sprintf("cluster %s is at its limit of %d requests in flight", c.name, cfg.MaxConcurrency), time.Second)
			return
		}
		ep := c.pick()
		if ep == nil {
			c.inflight.Add(-1)
			done(breaker.Failure)
			reject(http.StatusServiceUnavailable, reasonNoEndpoint, "the cluster has no endpoint", time.Second)
			return
		}
		resp, err := g.attempt(ctx, r, rt, ep, body, attempt, p, authed)
		c.inflight.Add(-1)
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		done(g.outcome(ctx, r, code, err))
		retryable := err != nil || code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
		if retryable && ctx.Err() == nil && (replayable || (err != nil && r.Body == nil)) && attempt < g.cfg.MaxRetries &&
			c.breaker.State() == breaker.Closed && g.budget.retry() {
			if resp != nil {
				io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
			}
			g.m.retries.WithLabelValues(c.name).Inc()
			if retry.Sleep(ctx, retry.FullJitter(g.cfg.RetryBase, g.cfg.RetryCap, attempt)) != nil {
				reject(http.StatusGatewayTimeout, "timeout", "the upstream did not answer in time", 0)
				return
			}
			continue
		}
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				reject(http.StatusGatewayTimeout, "timeout", "the upstream did not answer in time", 0)
			} else {
				reject(http.StatusBadGateway, "upstream", "the upstream could not be reached", 0)
			}
			return
		}
		g.copyResponse(w, resp, cacheKey)
		return
	}
}

// attempt sends one try to ep, under a client span.
func (g *Gateway) attempt(ctx context.Context, r *http.Request, rt *route, ep *endpoint, body []byte, attempt int,
	p principal.Principal, authed bool) (*http.Response, error) {
	ctx, span := g.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("server.address", ep.base.Host)))
	if attempt > 0 {
		span.SetAttributes(attribute.Int("http.request.resend_count", attempt))
	}
	defer span.End()
	u := *ep.base
	// Forward the path as the client escaped it: decoding %2F here would let a
	// request the gateway routed as one segment reach the upstream as several.
	u.Path = ep.base.Path + r.URL.Path
	u.RawPath = ep.base.EscapedPath() + r.URL.EscapedPath()
	u.RawQuery = r.URL.RawQuery
	out, err := http.NewRequestWithContext(ctx, r.Method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	out.Header = r.Header.Clone()
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	if c := r.Header.Get("Connection"); c != "" {
		for _, f := range strings.Split(c, ",") {
			out.Header.Del(strings.TrimSpace(f))
		}
	}
	if body != nil {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.ContentLength = int64(len(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	} else if attempt == 0 && r.Body != nil && r.Body != http.NoBody {
		out.Body, out.ContentLength = r.Body, r.ContentLength
	}
	if ip, _, ok := strings.Cut(r.RemoteAddr, ":"); ok && ip != "" {
		if prior := out.Header.Get("X-Forwarded-For"); prior != "" {
			ip = prior + ", " + clientAddr(r).String()
		} else {
			ip = clientAddr(r).String()
		}
		out.Header.Set("X-Forwarded-For", ip)
	}
	out.Header.Set("X-Forwarded-Host", r.Host)
	if authed {
		out.Header.Set("X-Pedal-Subject", p.Subject)
		out.Header.Set("X-Pedal-Role", p.Role)
	}
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(out.Header))
	ep.inflight.Add(1)
	defer ep.inflight.Add(-1)
	resp, err := g.transport.RoundTrip(out)
	if err != nil {
		span.RecordError(err)
		return nil, err
	}
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	return resp, nil
}

func (g *Gateway) copyResponse(w *statusWriter, resp *http.Response, cacheKey string) {
	defer resp.Body.Close()
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	for _, f := range resp.Header.Values("Connection") {
		for _, k := range strings.Split(f, ",") {
			h.Del(strings.TrimSpace(k))
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	w.WriteHeader(resp.StatusCode)
	cw := &captureWriter{statusWriter: w, capture: cacheKey != "" && resp.StatusCode >= 200 && resp.StatusCode < 300 && cacheable(resp.Header),
		limit: g.cfg.FallbackMaxBytes, code: resp.StatusCode}
	if _, err := io.Copy(cw, resp.Body); err != nil {
		return // the client or the upstream went away mid-body; nothing to cache
	}
	if cw.capture {
		g.fallback.put(resp.Request.Context(), cacheKey, resp.StatusCode, resp.Header, cw.buf.Bytes())
	}
}

// captureWriter keeps a copy of a small answer for the fallback cache.
type captureWriter struct {
	*statusWriter
	capture bool
	limit   int
	buf     bytes.Buffer
	code    int
}

func (w *captureWriter) WriteHeader(code int) {
	w.code = code
	w.statusWriter.WriteHeader(code)
}

func (w *captureWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	if w.capture {
		if w.buf.Len()+len(p) > w.limit {
			w.capture = false
			w.buf = bytes.Buffer{}
		} else {
			w.buf.Write(p)
		}
	}
	return w.statusWriter.Write(p)
}

func (w *captureWriter) Unwrap() http.ResponseWriter { return w.statusWriter }

// fallbackKey names a GET answer: by URL and caller, so that one caller's
// answer is never served to another.
func fallbackKey(r *http.Request, p principal.Principal) string {
	return r.Host + "\x00" + r.URL.RequestURI() + "\x00" + p.Subject + "\x00" + p.Role + "\x00" +
		r.Header.Get("Accept") + "\x00" + r.Header.Get("Accept-Encoding")
}

// cacheable reports whether an answer may be kept as a fallback: not one an
// upstream marked private, personal or unrepeatable.
func cacheable(h http.Header) bool {
	if h.Get("Set-Cookie") != "" || h.Get("Vary") == "*" {
		return false
	}
	cc := strings.ToLower(h.Get("Cache-Control"))
	return !strings.Contains(cc, "no-store") && !strings.Contains(cc, "private")
}

// retryBudget allows retries up to a fraction of requests, as Finagle's
// RetryBudget does: each request deposits ratio tokens, each retry takes one,
// and minPerSecond tokens a second keep retries possible at low traffic. The
// balance is capped at ten seconds' worth of the minimum plus the deposits.
type retryBudget struct {
	ratio, minPerSecond float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newRetryBudget(ratio, minPerSecond float64) *retryBudget {
	return &retryBudget{ratio: ratio, minPerSecond: minPerSecond, tokens: minPerSecond, last: time.Now()}
}

func (b *retryBudget) refill() {
	now := time.Now()
	b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*b.minPerSecond, 10*b.minPerSecond+1000*b.ratio)
	b.last = now
}

func (b *retryBudget) request() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	b.tokens = min(b.tokens+b.ratio, 10*b.minPerSecond+1000*b.ratio)
}

func (b *retryBudget) retry() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
