// Package gateway is pedal's API gateway: every request to pedal's APIs passes
// it. Routes come from the seed's service_routes table (package routedb); a
// route's path_pattern is a net/http pattern, and the most specific pattern
// wins. A request is authenticated (JWT, per-route policy: public,
// authenticated, admin), rate-limited per client and route, admitted by the
// route's bulkhead (max_concurrency) and its cluster's, passed by the
// cluster's circuit breaker, and forwarded: to an in-process service of this
// binary (no network hop) or to an HTTP upstream, with retries for idempotent
// requests within a retry budget.
//
// Invariants:
//   - Routing tables are immutable and swapped atomically: a request is served
//     by one table from start to end, and a change never drops a request. A
//     configuration that does not validate leaves the last good table in place
//     and is reported (log, metric, admin API).
//   - A refusal is decided before the upstream sees the request, and answers a
//     problem+json with its reason: 401/403 (auth), 429 (rate limit), 503 with
//     Retry-After (bulkhead, breaker open, no endpoint).
//   - The caller's identity reaches services only from the gateway: in-process
//     through package principal, upstreams through X-Pedal-Subject and
//     X-Pedal-Role, which are removed from incoming requests.
//   - Breaker failures are 5xx answers, timeouts, connection errors and
//     cluster bulkhead rejections; 4xx answers are successes and client
//     cancellations are not counted.
//
// A Gateway is safe for concurrent use.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/cors"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/pedal-project/pedal/internal/breaker"
	"github.com/pedal-project/pedal/internal/gateway/routedb"
	"github.com/pedal-project/pedal/internal/httpjson"
	"github.com/pedal-project/pedal/internal/principal"
	"github.com/pedal-project/pedal/internal/ratelimit"
)

// The in-process clusters the gateway serves itself.
const (
	ClusterAdmin = "admin" // AdminHandler
	ClusterAuth  = "auth"  // RevokeHandler
)

// ErrAuthUnavailable marks an Authenticator failure that is not the token's
// fault (a revocation store that cannot be reached): the gateway answers 503
// without details instead of 401.
var ErrAuthUnavailable = errors.New("gateway: authentication unavailable")

// Authenticator verifies bearer tokens.
type Authenticator interface {
	// Authenticate returns the caller a token names, or an error saying why
	// the token is refused (never echoing it).
	Authenticate(ctx context.Context, token string) (principal.Principal, error)
	// Revoke makes a valid token refused from now on, and returns whose it was.
	Revoke(ctx context.Context, token string) (principal.Principal, error)
	// Token extracts the bearer token of a request.
	Token(r *http.Request) (string, error)
}

// Config tunes a Gateway; zero fields take the defaults given.
type Config struct {
	// ReloadInterval is how often the store is checked for a new
	// configuration version; default 1s.
	ReloadInterval time.Duration
	// CORS, when AllowedOrigins is not empty, answers preflights and adds
	// CORS headers (github.com/rs/cors); otherwise no CORS header is sent.
	CORS cors.Options
	// Breaker configures each cluster's breaker; its callbacks are the
	// gateway's.
	Breaker breaker.Config
	// MaxRetries (default 2), RetryBase (25ms) and RetryCap (1s) shape retries
	// to HTTP upstreams: wait random(0, min(cap, base·2^n)). RetryBudget
	// (default 0.2) bounds retries to that fraction of requests, plus
	// RetryMinPerSecond (default 10) when traffic is low.
	MaxRetries        int
	RetryBase         time.Duration
	RetryCap          time.Duration
	RetryBudget       float64
	RetryMinPerSecond float64
	// Fallback cache of successful GET answers served while a breaker is
	// open: entries (default 1,024), the largest answer kept (default 256
	// KiB) and how long one is served (default 5m).
	FallbackEntries  int
	FallbackMaxBytes int
	FallbackTTL      time.Duration
	// HealthInterval is the period of active health checks of http
	// clusters; default 5s.
	HealthInterval time.Duration
	// MaxBufferedBody is the largest request body buffered so that an
	// idempotent request can be retried; default 1 MiB.
	MaxBufferedBody int64
	// Remote gives endpoints to in-process clusters this process does not
	// serve (their roles run elsewhere): such a cluster is proxied over HTTP
	// to them instead.
	Remote map[string][]string
}

func (c *Config) defaults() {
	if c.ReloadInterval <= 0 {
		c.ReloadInterval = time.Second
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 2
	}
	if c.RetryBase <= 0 {
		c.RetryBase = 25 * time.Millisecond
	}
	if c.RetryCap <= 0 {
		c.RetryCap = time.Second
	}
	if c.RetryBudget <= 0 {
		c.RetryBudget = 0.2
	}
	if c.RetryMinPerSecond <= 0 {
		c.RetryMinPerSecond = 10
	}
	if c.FallbackEntries <= 0 {
		c.FallbackEntries = 1024
	}
	if c.FallbackMaxBytes <= 0 {
		c.FallbackMaxBytes = 256 << 10
	}
	if c.FallbackTTL <= 0 {
		c.FallbackTTL = 5 * time.Minute
	}
	if c.HealthInterval <= 0 {
		c.HealthInterval = 5 * time.Second
	}
	if c.MaxBufferedBody <= 0 {
		c.MaxBufferedBody = 1 << 20
	}
}

// Store is where routes live (routedb.Store).
type Store interface {
	Version(ctx context.Context) (int64, error)
	Load(ctx context.Context) (routedb.Config, error)
	GetRoute(ctx context.Context, id string) (routedb.Route, error)
	PutRoute(ctx context.Context, r routedb.Route) (routedb.Route, bool, error)
	DeleteRoute(ctx context.Context, id string) error
	PutCluster(ctx context.Context, c routedb.Cluster) error
}

// Gateway routes and guards requests.
type Gateway struct {
	cfg       Config
	store     Store
	inproc    map[string]http.Handler
	auth      Authenticator
	limiter   ratelimit.Limiter
	log       *slog.Logger
	m         *metrics
	tracer    trace.Tracer
	transport *http.Transport
	fallback  *fallbackCache
	budget    *retryBudget
	handler   http.Handler

	table   atomic.Pointer[table]
	lastErr atomic.Pointer[string] // the last configuration refused, "" when the current one loaded
	reload  chan struct{}

	authWarned, limiterWarned atomic.Int64 // unix nanos of the last warning, to log at most one per 10 s
	adminMu                   sync.Mutex   // serialises validate-then-store of admin changes

	mu       sync.Mutex
	clusters map[string]*cluster
	counters map[string]*atomic.Int64 // in flight per route id
}

// New returns a Gateway over store, whose in-process clusters are served by
// inproc (by cluster name), and loads the configuration once: a configuration
// that does not validate at start is an error. logger, reg and tp may be nil.
func New(ctx context.Context, cfg Config, store Store, inproc map[string]http.Handler, auth Authenticator,
	limiter ratelimit.Limiter, logger *slog.Logger, reg prometheus.Registerer, tp trace.TracerProvider) (*Gateway, error) {
	cfg.defaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	g := &Gateway{
		cfg: cfg, store: store, inproc: inproc, auth: auth, limiter: limiter, log: logger,
		m:      newMetrics(reg),
		tracer: tp.Tracer("github.com/pedal-project/pedal/internal/gateway"),
		// Upstreams are the operator's configuration, not user input: an
		// ordinary transport, without proxies from the environment.
		transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		fallback: newFallbackCache(cfg.FallbackEntries, cfg.FallbackMaxBytes, cfg.FallbackTTL),
		budget:   newRetryBudget(cfg.RetryBudget, cfg.RetryMinPerSecond),
		reload:   make(chan struct{}, 1),
		clusters: map[string]*cluster{},
		counters: map[string]*atomic.Int64{},
	}
	// The gateway's own services: the admin API and token revocation.
	g.inproc = make(map[string]http.Handler, len(inproc)+2)
	for k, v := range inproc {
		g.inproc[k] = v
	}
	if g.inproc[ClusterAdmin] == nil {
		g.inproc[ClusterAdmin] = g.AdminHandler()
	}
	if g.inproc[ClusterAuth] == nil {
		g.inproc[ClusterAuth] = g.RevokeHandler()
	}
	empty := ""
	g.lastErr.Store(&empty)
	if err := g.load(ctx); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	var h http.Handler = http.HandlerFunc(g.serve)
	if len(cfg.CORS.AllowedOrigins) > 0 || cfg.CORS.AllowOriginFunc != nil {
		h = cors.New(cfg.CORS).Handler(h)
	}
	g.handler = h
	return g, nil
}

// ServeHTTP serves a request through the current routing table.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.handler.ServeHTTP(w, r) }

// Run reloads the configuration when it changes and checks the health of
// http clusters, until ctx is done.
func (g *Gateway) Run(ctx context.Context) error {
	reload := time.NewTicker(g.cfg.ReloadInterval)
	defer reload.Stop()
	defer g.transport.CloseIdleConnections()
	// Health checks on their own: a hanging upstream must not delay reloads.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		health := time.NewTicker(g.cfg.HealthInterval)
		defer health.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-health.C:
				g.checkHealth(ctx)
			}
		}
	})
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reload.C:
		case <-g.reload:
		}
		v, err := g.store.Version(ctx)
		if err != nil {
			if ctx.Err() == nil {
				g.log.WarnContext(ctx, "route configuration version", "err", err)
			}
			continue
		}
		if v == g.table.Load().version {
			continue
		}
		if err := g.load(ctx); err != nil && ctx.Err() == nil {
			g.log.ErrorContext(ctx, "route configuration refused; keeping the last good one", "err", err,
				"serving_version", g.table.Load().version)
		}
	}
}

// Reload asks Run to check for a new configuration now.
func (g *Gateway) Reload() {
	select {
	case g.reload <- struct{}{}:
	default:
	}
}

// load builds a table from the store's configuration and swaps it in.
func (g *Gateway) load(ctx context.Context) error {
	cfg, err := g.store.Load(ctx)
	if err != nil {
		return err
	}
	g.localize(&cfg)
	// Validate the whole configuration before touching live cluster state, so
	// that a refused one changes nothing.
	_, err = buildTable(cfg, g.inproc, func(c routedb.Cluster) (*cluster, error) { return &cluster{name: c.Name}, nil },
		func(string) *atomic.Int64 { return new(atomic.Int64) })
	var t *table
	if err == nil {
		t, err = buildTable(cfg, g.inproc, g.clusterFor, g.routeCounter)
	}
	if err != nil {
		msg := fmt.Sprintf("version %d: %v", cfg.Version, err)
		g.lastErr.Store(&msg)
		g.m.reloads.WithLabelValues("refused").Inc()
		return errors.New(msg)
	}
	g.table.Store(t)
	g.forgetClusters(t)
	empty := ""
	g.lastErr.Store(&empty)
	g.m.reloads.WithLabelValues("loaded").Inc()
	g.m.version.Set(float64(cfg.Version))
	g.log.InfoContext(ctx, "route configuration loaded", "version", cfg.Version, "routes", len(t.routes))
	return nil
}

// localize turns the in-process clusters this process does not serve, but
// has Remote endpoints for, into http clusters.
func (g *Gateway) localize(cfg *routedb.Config) {
	for i, c := range cfg.Clusters {
		if eps := g.cfg.Remote[c.Name]; c.Kind == routedb.KindInProcess && g.inproc[c.Name] == nil && len(eps) > 0 {
			cfg.Clusters[i].Kind, cfg.Clusters[i].Endpoints = routedb.KindHTTP, eps
		}
	}
}

// clusterFor returns the live state of a cluster, created on first use and
// updated to cfg.
func (g *Gateway) clusterFor(cfg routedb.Cluster) (*cluster, error) {
	g.mu.Lock()
	c, ok := g.clusters[cfg.Name]
	if !ok {
		name := cfg.Name
		bc := g.cfg.Breaker
		bc.OnStateChange = func(from, to breaker.State) {
			g.m.breakerState.WithLabelValues(name).Set(float64(to))
			g.m.breakerTransitions.WithLabelValues(name, to.String()).Inc()
			g.log.Warn("circuit breaker", "cluster", name, "from", from.String(), "to", to.String())
		}
		bc.OnShortCircuit = func() { g.m.shortCircuits.WithLabelValues(name).Inc() }
		c = &cluster{name: name, breaker: breaker.New(bc)}
		g.clusters[name] = c
		g.m.breakerState.WithLabelValues(name).Set(0)
	}
	g.mu.Unlock()
	if err := c.update(cfg, g.inproc); err != nil {
		return nil, err
	}
	return c, nil
}

// warnEvery logs msg at most once per 10 s per kind: a dependency that is down
// must not flood the log with one line per request.
func (g *Gateway) warnEvery(last *atomic.Int64, msg string, err error) {
	now := time.Now().UnixNano()
	prev := last.Load()
	if now-prev < int64(10*time.Second) || !last.CompareAndSwap(prev, now) {
		return
	}
	g.log.Warn(msg, "err", err)
}

// forgetClusters drops the state of clusters the table t no longer has, and
// their endpoints' metrics; a cluster that returns starts afresh.
func (g *Gateway) forgetClusters(t *table) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, c := range g.clusters {
		if _, ok := t.clusters[name]; ok {
			continue
		}
		_, _, eps := c.snapshot()
		for _, e := range eps {
			g.m.endpointUp.DeleteLabelValues(name, e.raw)
		}
		g.m.breakerState.DeleteLabelValues(name)
		delete(g.clusters, name)
	}
}

// routeCounter returns the in-flight counter of a route, the same across tables.
func (g *Gateway) routeCounter(id string) *atomic.Int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.counters[id]
	if !ok {
		c = new(atomic.Int64)
		g.counters[id] = c
	}
	return c
}

func (g *Gateway) checkHealth(ctx context.Context) {
	g.mu.Lock()
	cs := make([]*cluster, 0, len(g.clusters))
	for _, c := range g.clusters {
		cs = append(cs, c)
	}
	g.mu.Unlock()
	for _, c := range cs {
		c.checkHealth(ctx, g.transport, 2*time.Second)
		_, _, eps := c.snapshot()
		for _, e := range eps {
			up := 1.0
			if e.down.Load() {
				up = 0
			}
			g.m.endpointUp.WithLabelValues(c.name, e.raw).Set(up)
		}
	}
}

// Status is the admin view of the loaded configuration.
type Status struct {
	Version   int64  `json:"version"`
	LastError string `json:"last_error,omitempty"`
}

// Status returns the version served and the last refused configuration.
func (g *Gateway) Status() Status {
	return Status{Version: g.table.Load().version, LastError: *g.lastErr.Load()}
}

// Rejection reasons, as metrics and access logs name them.
const (
	reasonUnauthorized = "unauthorized"
	reasonForbidden    = "forbidden"
	reasonRateLimited  = "rate_limited"
	reasonConcurrency  = "concurrency"
	reasonBreakerOpen  = "breaker_open"
	reasonNoEndpoint   = "no_endpoint"
)

// serve routes one request.
func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) {
	t := g.table.Load()
	h, _ := t.mux.Handler(r)
	rh, ok := h.(routeHandler)
	if !ok {
		// No route: let the mux say 404 or 405 (with Allow), as a problem.
		sw := &headerOnly{h: http.Header{}}
		h.ServeHTTP(sw, r)
		if loc := sw.h.Get("Location"); sw.code >= 300 && sw.code < 400 && loc != "" {
			http.Redirect(w, r, loc, sw.code) // a path to clean, or a missing trailing slash
			return
		}
		if allow := sw.h.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		httpjson.WriteProblem(w, r, httpjson.Problem{Status: sw.code, Detail: fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)})
		g.m.requests.WithLabelValues("", strconv.Itoa(sw.code)).Observe(0)
		return
	}
	rt := rh.rt
	start := time.Now()
	ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	name := rt.PathPattern
	if !strings.Contains(strings.SplitN(name, "/", 2)[0], " ") { // a pattern without a method
		name = r.Method + " " + name
	}
	ctx, span := g.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("http.route", rt.PathPattern),
			attribute.String("pedal.route_id", rt.ID)))
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	inflight := g.m.inflight.WithLabelValues(rt.ID)
	inflight.Inc()
	var (
		reason string
		subj   string
	)
	defer func() {
		inflight.Dec()
		d := time.Since(start)
		g.m.requests.WithLabelValues(rt.ID, strconv.Itoa(sw.code)).Observe(d.Seconds())
		span.SetAttributes(attribute.Int("http.response.status_code", sw.code))
		if sw.code >= 500 {
			span.SetStatus(codes.Error, http.StatusText(sw.code))
		}
		span.End()
		attrs := []any{"method", r.Method, "path", r.URL.Path, "route", rt.ID, "status", sw.code,
			"duration_ms", float64(d.Microseconds()) / 1000, "bytes", sw.bytes, "remote", r.RemoteAddr}
		if subj != "" {
			attrs = append(attrs, "subject", subj)
		}
		if reason != "" {
			attrs = append(attrs, "rejected", reason)
		}
		g.log.InfoContext(ctx, "access", attrs...)
	}()
	r = r.WithContext(ctx)
	stripIdentity(r.Header)

	reject := func(status int, why, detail string, retryAfter time.Duration) {
		reason = why
		g.m.rejections.WithLabelValues(rt.ID, why).Inc()
		if retryAfter > 0 {
			sw.Header().Set("Retry-After", strconv.FormatInt(int64((retryAfter+time.Second-1)/time.Second), 10))
		}
		if status == http.StatusUnauthorized {
			sw.Header().Set("WWW-Authenticate", `Bearer realm="pedal", error="invalid_token"`)
		}
		httpjson.WriteProblem(sw, r, httpjson.Problem{Status: status, Detail: detail, Extensions: map[string]any{"reason": why}})
	}

	// 1. Who is calling.
	p, authed := principal.Principal{}, false
	if rt.Auth != routedb.AuthPublic {
		tok, err := g.auth.Token(r)
		if err == nil {
			p, err = g.auth.Authenticate(ctx, tok)
		}
		switch {
		case errors.Is(err, ErrAuthUnavailable):
			g.warnEvery(&g.authWarned, "authentication unavailable; answering 503", err)
			reject(http.StatusServiceUnavailable, "auth_unavailable", "authentication is unavailable; retry later", time.Second)
			return
		case err != nil:
			reject(http.StatusUnauthorized, reasonUnauthorized, "authentication required: "+err.Error(), 0)
			return
		}
		if rt.Auth == routedb.AuthAdmin && !p.IsAdmin() {
			subj = p.Subject
			reject(http.StatusForbidden, reasonForbidden, "this route needs the admin role", 0)
			return
		}
		authed, subj = true, p.Subject
	}

	// 2. Rate limit per client and route.
	if rt.RateLimitPerMinute > 0 && g.limiter != nil {
		burst := rt.RateLimitBurst
		if burst == 0 {
			burst = rt.RateLimitPerMinute
		}
		lim := ratelimit.Limit{Rate: rt.RateLimitPerMinute, Period: time.Minute, Burst: burst}
		res, err := g.limiter.Allow(ctx, ratelimit.Key(rt.ID, subj, clientAddr(r)), lim)
		switch {
		case err != nil:
			g.warnEvery(&g.limiterWarned, "rate limiter unavailable; letting requests through", err)
		case !res.Allowed:
			ratelimit.SetHeaders(sw.Header(), rt.ID, res)
			sw.Header().Del("Retry-After") // reject sets it
			reject(http.StatusTooManyRequests, reasonRateLimited, fmt.Sprintf("rate limit of %s exceeded", lim), res.RetryAfter)
			return
		default:
			ratelimit.SetHeaders(sw.Header(), rt.ID, res)
		}
	}

	// 3. The route's bulkhead.
	if n := rt.inflight.Add(1); n > int64(rt.MaxConcurrency) {
		rt.inflight.Add(-1)
		reject(http.StatusServiceUnavailable, reasonConcurrency, fmt.Sprintf("route %s is at its limit of %d requests in flight", rt.ID, rt.MaxConcurrency), time.Second)
		return
	}
	defer rt.inflight.Add(-1)

	if authed {
		r = r.WithContext(principal.With(r.Context(), p))
	}
	g.forward(sw, r, rt, p, authed, reject)
}

// stripIdentity removes the identity headers the gateway sets, and their
// look-alikes with underscores (which CGI-style upstreams read as the same).
func stripIdentity(h http.Header) {
	for k := range h {
		if n := strings.ToLower(strings.ReplaceAll(k, "_", "-")); strings.HasPrefix(n, "x-pedal-") {
			delete(h, k)
		}
	}
}

// clientAddr is the address a request came from (the peer: proxies in front
// of the gateway are not trusted here).
func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// statusWriter records the status and size of an answer.
type statusWriter struct {
	http.ResponseWriter
	code        int
	bytes       int64
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.wroteHeader = true
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// headerOnly records what a handler would answer, without a body.
type headerOnly struct {
	h    http.Header
	code int
}

func (w *headerOnly) Header() http.Header { return w.h }
func (w *headerOnly) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *headerOnly) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return len(p), nil
}
