package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/errgroup"

	"github.com/pedal-project/pedal/internal/analytics/embedstore"
	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/clicks/aggregate"
	"github.com/pedal-project/pedal/internal/clicks/ingest"
	"github.com/pedal-project/pedal/internal/clicks/query"
	"github.com/pedal-project/pedal/internal/eventlog/kafkalog"
	"github.com/pedal-project/pedal/internal/eventlog/pebblelog"
	"github.com/pedal-project/pedal/internal/gateway"
	"github.com/pedal-project/pedal/internal/jwtauth"
	"github.com/pedal-project/pedal/internal/metadata"
	"github.com/pedal-project/pedal/internal/metadata/collect"
	"github.com/pedal-project/pedal/internal/metadata/taskstore"
	"github.com/pedal-project/pedal/internal/observe"
	"github.com/pedal-project/pedal/internal/observe/logship"
	"github.com/pedal-project/pedal/internal/outbox"
	"github.com/pedal-project/pedal/internal/safehttp"
	"github.com/pedal-project/pedal/internal/web"
)

type serveConfig struct {
	DataDir         string
	HTTPAddr        string
	DebugAddr       string
	PublicURL       string
	LogLevel        slog.Level
	ShutdownDelay   time.Duration
	ShutdownTimeout time.Duration

	Partitions     int32
	Ingest         ingest.Config
	Log            pebblelog.Config
	SigningKeyHex  string
	TrustedProxies []netip.Prefix
	Aggregate      aggregate.Config
	// AggregateSessionTimeout: the consumer group's session timeout, with Kafka.
	AggregateSessionTimeout time.Duration
	// AnalyticsRetention: window totals older than this are deleted (0 keeps them).
	AnalyticsRetention time.Duration
	// Fetch is the policy of outbound fetches to user-supplied URLs (the
	// metadata service's pages and secondary fetches); FetchDNSServer, when
	// set, replaces the system resolver for them.
	Fetch          safehttp.Config
	FetchDNSServer string
	// Metadata service: the collector (its Fetch is filled from Fetch), the
	// worker, and the outbox relay's tunables.
	Collect        collect.Config
	MetadataWorker metadata.WorkerConfig
	Outbox         outbox.Relay
	// Gateway: tokens (an HS256 key, and optionally a JWKS), CORS.
	JWTSecret        string
	JWTIssuer        string
	JWTAudience      string
	JWKSURL          string
	JWKSAllowCIDRs   []netip.Prefix
	JWKSAllowedPorts []uint16
	Gateway          gateway.Config
	// Backends: empty fields mean the embedded default.
	Backends backends
	// Components are the roles this process runs.
	Components map[string]bool
}

func parseServeConfig(args []string, getenv func(string) string, stderr io.Writer) (serveConfig, error) {
	var cfg serveConfig
	f := newFlags("serve", getenv, stderr)
	f.Usage = func() {
		fmt.Fprint(f.Output(), "Usage: pedal serve [flags]\n\nRuns every component of pedal in one process on embedded storage under --data-dir.\n"+
			"Tracing export follows the standard OTEL_* variables (OTEL_TRACES_EXPORTER=otlp|console, OTEL_EXPORTER_OTLP_ENDPOINT, ...); off when unset.\n\nFlags:\n")
		f.PrintDefaults()
	}
	dataDir := f.String("data-dir", "./pedal-data", "directory for all embedded state (event log, keys)")
	httpAddr := f.String("http-addr", "127.0.0.1:8080", "address of the HTTP API (host:port; port 0 picks a free one)")
	debugAddr := f.String("debug-addr", "", "address for Go's pprof handlers under /debug/pprof/ (off when empty; keep it private)")
	publicURL := f.String("public-url", "", "base URL clients use to reach this server, for minted click URLs (default http://<http-addr>)")
	logLevel := f.String("log-level", "info", "log level: debug, info, warn or error")
	shutdownDelay := f.Duration("shutdown-delay", 0, "on SIGTERM, report not ready on /readyz for this long before closing the listener, so load balancers drain")
	shutdownTimeout := f.Duration("shutdown-timeout", 30*time.Second, "how long to wait for in-flight requests on shutdown")
	partitions := f.Int("partitions", 16, "partitions of the clicks topic (fixed when the topic is first created)")
	maxBody := f.Bytes("max-body-bytes", 8<<20, "largest POST /v1/clicks body; larger ones get 413")
	maxInflight := f.Bytes("max-inflight-bytes", 256<<20, "request bodies held in memory at once; beyond this, requests wait up to --queue-timeout, then get 503")
	queueTimeout := f.Duration("queue-timeout", time.Second, "how long a request may wait for room under --max-inflight-bytes")
	maxEventAge := f.Duration("max-event-age", 168*time.Hour, "clicks whose ts is older than this are rejected (ts_too_old)")
	retention := f.Duration("log-retention", 168*time.Hour, "keep log records at least this long, and until every consumer group has passed them (0: forever)")
	minSync := f.Duration("log-min-sync-interval", 0, "space fsyncs of the log at least this far apart; appends meanwhile share the next one (fewer syncs, up to this much more latency)")
	minFree := f.Bytes("log-min-free-bytes", 256<<20, "refuse appends (503) while the data dir's disk has less free space")
	signingKey := f.String("click-signing-key", "", "hex secret (32 bytes) signing redirect click URLs (default: generated once into <data-dir>/click-signing.key)")
	trusted := f.String("trusted-proxies", "", "comma-separated CIDRs whose X-Forwarded-For is believed for redirect clicks")
	dedupHorizon := f.Duration("dedup-horizon", 10*time.Minute, "a click whose (ad_id, click_id) was counted within this much event time is a duplicate")
	lateness := f.Duration("allowed-lateness", 30*time.Second, "watermark = largest event time seen in a partition minus this; windows before it are final")
	lateHorizon := f.Duration("late-horizon", time.Hour, "clicks later than this behind the watermark are counted as too_late and left out of the totals")
	ipRate := f.Int("ip-rate-limit", 5, "clicks of one ip on one ad in one event-time minute beyond this many are invalid (ip_rate)")
	botFile := f.String("bot-ua-file", "", "file of user-agent substrings marking bots, one per line (default: the list built into pedal)")
	flushInterval := f.Duration("aggregate-flush-interval", 250*time.Millisecond, "how often each partition commits its state and publishes its window totals (bounds freshness)")
	analyticsRetention := f.Duration("analytics-retention", 31*24*time.Hour, "delete window totals older than this from the analytics store, hourly (0: keep forever; the embedded store holds them all in memory, ~50 bytes a row)")
	fetchDNS := f.String("fetch-dns-server", "", "DNS server (host:port) for outbound fetches to user-supplied URLs, instead of the system resolver")
	fetchAllow := f.String("fetch-allow-cidr", "", "comma-separated CIDRs outbound fetches may reach although the built-in deny list refuses them (an internal service you trust)")
	fetchDeny := f.String("fetch-deny-cidr", "", "comma-separated CIDRs added to the built-in deny list of outbound fetches")
	fetchPorts := f.String("fetch-allowed-ports", "80,443", "comma-separated ports outbound fetches may connect to")
	mdWorkers := f.Int("metadata-workers", 8, "metadata tasks processed at once")
	mdPerHost := f.Int("metadata-per-host", 2, "metadata tasks for one target host processed at once (politeness; the rest wait without holding a worker)")
	mdMaxBytes := f.Bytes("metadata-max-bytes", collect.MaxDepthBytes, "largest extraction_options.max_depth_bytes a request may ask for (decoded bytes of a page read)")
	mdCacheTTL := f.Duration("metadata-cache-ttl", 10*time.Minute, "reuse a page's result for the same URL and options this long (0: no cache)")
	mdTimeout := f.Duration("metadata-timeout", 30*time.Second, "time limit of one metadata task: the page, its retries and secondary fetches")
	mdRetries := f.Int("metadata-retries", 2, "retries of a page after a timeout, connection failure, 5xx or 429 (full-jitter backoff, at least Retry-After)")
	mdUA := f.String("metadata-user-agent", "", "User-Agent of metadata fetches (default pedal-metadata/1.0 (+https://github.com/pedal-project/pedal))")
	outboxPoll := f.Duration("outbox-poll-interval", 100*time.Millisecond, "how often the outbox relay looks for new events when idle")
	outboxAttempts := f.Int("outbox-max-attempts", 10, "failed publishes after which an outbox event is marked FAILED (and counted in pedal_outbox_failed_total)")
	outboxRetention := f.Duration("outbox-retention", 24*time.Hour, "delete published outbox events older than this (0: keep)")
	jwtSecret := f.String("jwt-secret", "", "hex HS256 key (at least 32 bytes) that signs and verifies tokens (default: generated once into <data-dir>/jwt.key)")
	jwtIssuer := f.String("jwt-issuer", "pedal", "required iss claim of tokens (empty: not checked)")
	jwtAudience := f.String("jwt-audience", "pedal", "required aud claim of tokens (empty: not checked)")
	jwksURL := f.String("jwks-url", "", "JWKS URL of an identity provider whose RS256/ES256/EdDSA tokens are accepted too (refreshed hourly and on an unknown kid)")
	jwksAllow := f.String("jwks-allow-cidr", "", "comma-separated CIDRs the JWKS URL may resolve to although they are private (an internal identity provider)")
	corsOrigins := f.String("cors-allowed-origins", "", "comma-separated origins allowed to call the API from browsers (e.g. https://dash.example.com; * for any); empty: no CORS")
	corsCredentials := f.Bool("cors-allow-credentials", false, "let browsers send credentials (cookies, Authorization) cross-origin")
	corsMaxAge := f.Duration("cors-max-age", 10*time.Minute, "how long browsers may cache a preflight answer")
	components := f.String("components", "all", "roles this process runs, comma-separated: gateway, ingest, aggregate, query, metadata, relay (all: every one); split roles need shared backends (--log, --sql, --analytics)")
	remote := f.String("remote", "", "where roles this process does not run are served, for its gateway: comma-separated cluster=URL pairs (clicks, query, metadata), e.g. query=http://10.0.0.3:8080")
	logURL := f.String("log", "", "event log: empty for the embedded one under --data-dir, or kafka://broker1:9092,broker2:9092/?client_id=pedal&replication=3")
	sqlReplica := f.String("sql-replica", "", "a PostgreSQL read replica for reads that tolerate lag (tasks, queue depth); a task it lacks is read from --sql")
	sqlURL := f.String("sql", "", "metadata tasks and their outbox: empty for SQLite under --data-dir, or postgres://user@host:5432/db")
	analyticsURL := f.String("analytics", "", "window totals: empty for the embedded store under --data-dir, or clickhouse://host:9000/db")
	cacheURL := f.String("cache", "", "state shared by gateways (rate limits, token revocations): empty for in-process, or redis://host:6379/0")
	aggParts := f.String("aggregate-partitions", "", "partitions of the clicks topic this process aggregates, e.g. 0-7,12; aggregators in several processes split them, each with its own --data-dir (default: all on the embedded log; with --log kafka://, those the consumer group assigns)")
	sessionTimeout := f.Duration("aggregate-session-timeout", 10*time.Second, "with --log kafka://: an aggregator silent this long loses its partitions to the others of the consumer group (Kafka bounds it, by default to 6s-30m)")
	workers := f.Int("aggregate-workers", 0, "partitions aggregated at once (default half the CPUs, at least 1; the rest is left to ingestion)")
	idleTimeout := f.Duration("partition-idle-timeout", 10*time.Second, "a caught-up partition idle this long finalises windows by the wall clock")
	if err := f.parse(args); err != nil {
		return cfg, err
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	if _, _, err := net.SplitHostPort(*httpAddr); err != nil {
		return cfg, fmt.Errorf("--http-addr %q: want host:port", *httpAddr)
	}
	if *partitions < 1 || *partitions > 1024 {
		return cfg, fmt.Errorf("--partitions %d: want 1 to 1024", *partitions)
	}
	if *maxBody < 1024 {
		return cfg, fmt.Errorf("--max-body-bytes %d: want at least 1KiB", *maxBody)
	}
	if *maxEventAge <= 0 {
		return cfg, fmt.Errorf("--max-event-age %v: want a positive duration", *maxEventAge)
	}
	var err error
	if cfg.TrustedProxies, err = parseCIDRs("--trusted-proxies", *trusted); err != nil {
		return cfg, err
	}
	cfg.DataDir, cfg.HTTPAddr, cfg.PublicURL, cfg.DebugAddr = *dataDir, *httpAddr, *publicURL, *debugAddr
	cfg.ShutdownDelay, cfg.ShutdownTimeout = *shutdownDelay, *shutdownTimeout
	cfg.Partitions = int32(*partitions)
	cfg.SigningKeyHex = *signingKey
	cfg.Ingest = ingest.Config{
		Partitions:       cfg.Partitions,
		MaxBodyBytes:     *maxBody,
		MaxEventAge:      *maxEventAge,
		MaxInFlightBytes: *maxInflight,
		QueueTimeout:     *queueTimeout,
	}
	for name, d := range map[string]time.Duration{"--dedup-horizon": *dedupHorizon, "--allowed-lateness": *lateness,
		"--late-horizon": *lateHorizon, "--aggregate-flush-interval": *flushInterval, "--partition-idle-timeout": *idleTimeout} {
		if d <= 0 {
			return cfg, fmt.Errorf("%s %v: want a positive duration", name, d)
		}
	}
	if *analyticsRetention < 0 {
		return cfg, fmt.Errorf("--analytics-retention %v: want 0 (keep) or a positive duration", *analyticsRetention)
	}
	cfg.AnalyticsRetention = *analyticsRetention
	if *fetchDNS != "" {
		if _, _, err := net.SplitHostPort(*fetchDNS); err != nil {
			return cfg, fmt.Errorf("--fetch-dns-server %q: want host:port", *fetchDNS)
		}
		cfg.FetchDNSServer = *fetchDNS
	}
	if cfg.Fetch.AllowCIDRs, err = parseCIDRs("--fetch-allow-cidr", *fetchAllow); err != nil {
		return cfg, err
	}
	if cfg.Fetch.DenyCIDRs, err = parseCIDRs("--fetch-deny-cidr", *fetchDeny); err != nil {
		return cfg, err
	}
	for _, s := range strings.Split(*fetchPorts, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return cfg, fmt.Errorf("--fetch-allowed-ports: %q is not a port (1-65535)", s)
		}
		cfg.Fetch.AllowedPorts = append(cfg.Fetch.AllowedPorts, uint16(n))
	}
	if len(cfg.Fetch.AllowedPorts) == 0 {
		return cfg, fmt.Errorf("--fetch-allowed-ports: want at least one port")
	}
	if *workers < 0 {
		return cfg, fmt.Errorf("--aggregate-workers %d: want 0 (default) or more", *workers)
	}
	if *ipRate < 1 {
		return cfg, fmt.Errorf("--ip-rate-limit %d: want at least 1", *ipRate)
	}
	cfg.Aggregate = aggregate.Config{
		DedupHorizon:    *dedupHorizon,
		AllowedLateness: *lateness,
		LateHorizon:     *lateHorizon,
		IPRateLimit:     *ipRate,
		FlushInterval:   *flushInterval,
		IdleTimeout:     *idleTimeout,
		Workers:         *workers,
	}
	if *sessionTimeout <= 0 {
		return cfg, fmt.Errorf("--aggregate-session-timeout %v: want a positive duration", *sessionTimeout)
	}
	cfg.AggregateSessionTimeout = *sessionTimeout
	if cfg.Aggregate.Partitions, err = parsePartitions(*aggParts, cfg.Partitions); err != nil {
		return cfg, err
	}
	if *botFile != "" {
		fh, err := os.Open(*botFile)
		if err != nil {
			return cfg, fmt.Errorf("--bot-ua-file: %w", err)
		}
		cfg.Aggregate.BotSubstrings, err = clicks.ParseBotList(fh)
		fh.Close()
		if err != nil {
			return cfg, fmt.Errorf("--bot-ua-file %s: %w", *botFile, err)
		}
	}
	for name, n := range map[string]int{"--metadata-workers": *mdWorkers, "--metadata-per-host": *mdPerHost, "--outbox-max-attempts": *outboxAttempts} {
		if n < 1 {
			return cfg, fmt.Errorf("%s %d: want at least 1", name, n)
		}
	}
	if *mdRetries < 0 {
		return cfg, fmt.Errorf("--metadata-retries %d: want 0 or more", *mdRetries)
	}
	if *mdMaxBytes < collect.MinDepthBytes {
		return cfg, fmt.Errorf("--metadata-max-bytes %d: want at least %d", *mdMaxBytes, collect.MinDepthBytes)
	}
	for name, d := range map[string]time.Duration{"--metadata-timeout": *mdTimeout, "--outbox-poll-interval": *outboxPoll} {
		if d <= 0 {
			return cfg, fmt.Errorf("%s %v: want a positive duration", name, d)
		}
	}
	for name, d := range map[string]time.Duration{"--metadata-cache-ttl": *mdCacheTTL, "--outbox-retention": *outboxRetention} {
		if d < 0 {
			return cfg, fmt.Errorf("%s %v: want 0 (off) or a positive duration", name, d)
		}
	}
	cfg.Collect = collect.Config{UserAgent: *mdUA, MaxDepthBytes: *mdMaxBytes, Timeout: *mdTimeout, Retries: *mdRetries, CacheTTL: *mdCacheTTL}
	if *mdRetries == 0 {
		cfg.Collect.Retries = -1
	}
	if *mdCacheTTL == 0 {
		cfg.Collect.CacheTTL = -1
	}
	cfg.MetadataWorker = metadata.WorkerConfig{Workers: *mdWorkers, PerHost: *mdPerHost}
	cfg.Outbox = outbox.Relay{PollInterval: *outboxPoll, MaxAttempts: *outboxAttempts, Retention: *outboxRetention}
	if cfg.Components, err = parseComponents(*components); err != nil {
		return cfg, err
	}
	if cfg.Gateway.Remote, err = parseRemote(*remote); err != nil {
		return cfg, err
	}
	cfg.Backends = backends{Log: *logURL, SQL: *sqlURL, SQLReplica: *sqlReplica, Analytics: *analyticsURL, Cache: *cacheURL}
	if err := cfg.Backends.check(); err != nil {
		return cfg, err
	}
	cfg.JWTSecret, cfg.JWTIssuer, cfg.JWTAudience, cfg.JWKSURL = *jwtSecret, *jwtIssuer, *jwtAudience, *jwksURL
	if *jwtSecret != "" {
		if _, err := jwtauth.ParseKey(*jwtSecret); err != nil {
			return cfg, fmt.Errorf("--jwt-secret: %w", err)
		}
	}
	if *jwksURL != "" {
		u, err := url.Parse(*jwksURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return cfg, fmt.Errorf("--jwks-url %q: want an http(s) URL", *jwksURL)
		}
		if cfg.JWKSAllowCIDRs, err = parseCIDRs("--jwks-allow-cidr", *jwksAllow); err != nil {
			return cfg, err
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return cfg, fmt.Errorf("--jwks-url %q: bad port", *jwksURL)
		}
		cfg.JWKSAllowedPorts = []uint16{uint16(n)}
	}
	if *corsOrigins != "" {
		for _, o := range strings.Split(*corsOrigins, ",") {
			if o = strings.TrimSpace(o); o != "" {
				cfg.Gateway.CORS.AllowedOrigins = append(cfg.Gateway.CORS.AllowedOrigins, o)
			}
		}
		cfg.Gateway.CORS.AllowedMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE"}
		cfg.Gateway.CORS.AllowedHeaders = []string{"Authorization", "Content-Type", "Idempotency-Key", "traceparent", "tracestate"}
		cfg.Gateway.CORS.ExposedHeaders = []string{"Location", "Retry-After", "RateLimit", "RateLimit-Policy", "Idempotent-Replayed", gateway.FallbackHeader}
		cfg.Gateway.CORS.AllowCredentials = *corsCredentials
		cfg.Gateway.CORS.MaxAge = int(corsMaxAge.Seconds())
	}
	cfg.Log = pebblelog.Config{RetentionAge: *retention, MinFreeBytes: *minFree, MinSyncInterval: *minSync}
	if *minFree == 0 {
		cfg.Log.MinFreeBytes = -1
	}
	return cfg, nil
}

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseServeConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	logger := observe.NewLogger(stdout, cfg.LogLevel)
	reg := observe.NewRegistry()
	// With OTEL_LOGS_EXPORTER=otlp, logs also go over OTLP through a spool
	// under the data dir; flushed last, after every other deferred step logged.
	shipLogs, closeLogShipping, err := logship.FromEnv(getenv, cfg.DataDir, cfg.LogLevel, reg, stderr)
	if err != nil {
		return err
	}
	if shipLogs != nil {
		logger = slog.New(slog.NewMultiHandler(logger.Handler(), shipLogs))
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := closeLogShipping(sctx); err != nil {
				fmt.Fprintln(stderr, "pedal:", err)
			}
		}()
	}
	tp, shutdownTracing, err := observe.NewTracerProvider(ctx, "pedal", getenv)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(sctx); err != nil {
			logger.Warn("flush traces", "err", err)
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	key, err := loadSigningKey(cfg.SigningKeyHex, cfg.DataDir, true)
	if err != nil {
		return err
	}
	log, runLog, err := openLog(ctx, cfg, logger.With("component", "eventlog"), reg)
	if err != nil {
		return err
	}
	defer func() {
		if err := log.Close(); err != nil {
			logger.Error("close event log", "err", err)
		}
	}()
	if err := log.CreateTopic(ctx, clicks.Topic, cfg.Partitions); err != nil {
		return fmt.Errorf("%w (the data dir was created with another --partitions; partition counts cannot change)", err)
	}

	store, embedded, err := openAnalytics(ctx, cfg, logger.With("component", "analytics"), reg)
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			logger.Error("close analytics store", "err", err)
		}
	}()
	var (
		agg  *aggregate.Aggregator
		pipe query.Pipeline = logPipeline{log: log, group: "aggregator"}
	)
	if cfg.Components[roleAggregate] {
		if kl, ok := log.(*kafkalog.Log); ok && cfg.Aggregate.Partitions == nil {
			// Aggregators share the partitions through a consumer group.
			if cfg.Aggregate.Membership, err = newMembership(kl, cfg.AggregateSessionTimeout); err != nil {
				return err
			}
		}
		agg, err = aggregate.Open(ctx, filepath.Join(cfg.DataDir, "aggregate"), cfg.Aggregate, log, store, logger.With("component", "aggregate"), reg)
		if err != nil {
			return err
		}
		defer func() {
			if err := agg.Close(); err != nil {
				logger.Error("close aggregator state", "err", err)
			}
		}()
		pipe = pipeline{agg}
	}
	q := query.New(query.Config{}, store, pipe, logger.With("component", "query"))

	shared, err := openShared(cfg, reg)
	if err != nil {
		return err
	}
	defer shared.close()
	md, err := openMetadata(ctx, cfg, log, shared.results, logger, reg)
	if err != nil {
		return err
	}
	defer func() {
		if err := md.store.Close(); err != nil {
			logger.Error("close metadata task store", "err", err)
		}
	}()
	defer md.col.Close() // before the store: fetches in flight record their attempts

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http-addr %s: %w", cfg.HTTPAddr, err)
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://" + ln.Addr().String()
	}
	ing := ingest.New(cfg.Ingest, log, logger.With("component", "ingest"), reg) // cheap; served only with the ingest role
	rd, err := ing.Redirects(ingest.RedirectConfig{Key: key, TrustedProxies: cfg.TrustedProxies, PublicURL: cfg.PublicURL})
	if err != nil {
		ln.Close()
		return err
	}
	var ready atomic.Bool
	routes, err := openRoutes(ctx, cfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer routes.Close()
	if seeded, err := routes.Seed(ctx, defaultRoutes(), defaultClusters()); err != nil {
		ln.Close()
		return err
	} else if seeded {
		logger.Info("stored the default routes", "routes", len(defaultRoutes()))
	}
	verifier, err := newVerifier(ctx, cfg, shared.revocations)
	if err != nil {
		ln.Close()
		return err
	}
	defer verifier.Close()
	services := serviceHandlers(reg, &ready, dependencies(cfg, log, store, md, shared), ing, rd, q, newRecounts(ctx, agg, logger.With("component", "recount")), md.api)
	for role, cluster := range map[string]string{roleIngest: clusterClicks, roleQuery: clusterQuery, roleMetadata: clusterMetadata} {
		if !cfg.Components[role] {
			delete(services, cluster)
		}
	}
	var (
		gw      *gateway.Gateway
		handler http.Handler
	)
	if cfg.Components[roleGateway] {
		gw, err = gateway.New(ctx, cfg.Gateway, routes, services, authenticator{verifier},
			shared.limiter, logger.With("component", "gateway"), reg, tp)
		if err != nil {
			ln.Close()
			return err
		}
		if shared.fallback != nil {
			gw.SetFallbackStore(shared.fallback)
		}
		handler = web.Mount(gw) // the dashboard at / and /ui/; every other path to the gateway
	} else {
		// Behind another process's gateway: the local services, unguarded.
		handler = internalMux(services)
		logger.Warn("no gateway role: serving the local services without authentication; keep this address on an internal network")
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}

	g, gctx := errgroup.WithContext(ctx)
	if runLog != nil {
		g.Go(func() error { return runLog(gctx) })
	}
	if agg != nil {
		g.Go(func() error { return agg.Run(gctx) })
	}
	if gw != nil {
		g.Go(func() error { return gw.Run(gctx) })
		if cfg.Backends.SQL != "" {
			// Every gateway reloads at once when any process changes a route.
			g.Go(func() error { return routes.Watch(gctx, gw.Reload) })
		}
	}
	if cfg.Components[roleRelay] {
		g.Go(func() error { return md.relay.Run(gctx) })
		g.Go(func() error {
			requeueLostTasks(gctx, md.store, max(10*time.Minute, 4*cfg.Collect.Timeout), logger.With("component", "metadata"))
			return nil
		})
	}
	if cfg.Components[roleMetadata] {
		g.Go(func() error { return md.worker.Run(gctx) })
	}
	if cfg.AnalyticsRetention > 0 && embedded != nil {
		g.Go(func() error {
			applyAnalyticsRetention(gctx, embedded, cfg.AnalyticsRetention, logger)
			return nil
		})
	}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		ready.Store(false)
		logger.Info("draining", "shutdown_delay", cfg.ShutdownDelay.String())
		if cfg.ShutdownDelay > 0 && ctx.Err() != nil {
			time.Sleep(cfg.ShutdownDelay)
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), cfg.ShutdownTimeout)
		defer cancel()
		// Stop accepting, then wait for in-flight requests, whose appends finish.
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		return nil
	})
	if cfg.DebugAddr != "" {
		dbg := &http.Server{Addr: cfg.DebugAddr, Handler: debugMux(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := dbg.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("--debug-addr: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			return dbg.Close()
		})
	}
	ready.Store(true)
	logger.Info("pedal serving", "components", componentList(cfg.Components), "http_addr", ln.Addr().String(), "data_dir", cfg.DataDir, "partitions", cfg.Partitions, "public_url", cfg.PublicURL)
	err = g.Wait()
	logger.Info("stopped")
	return err
}

// debugMux serves pprof on its own mux. (Importing net/http/pprof also registers
// its handlers on http.DefaultServeMux, which pedal never serves.)
func debugMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// serviceHandlers are the in-process clusters of the gateway: each built-in
// service's routes, uninstrumented (the gateway traces and measures every
// request by route).
func serviceHandlers(reg *prometheus.Registry, ready *atomic.Bool, deps []dependency, ing *ingest.Service, rd *ingest.Redirects, q *query.API, rc *recounts, md *metadata.API) map[string]http.Handler {
	ops := http.NewServeMux()
	ops.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	ops.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not ready\n")
			return
		}
		if down := checkDependencies(r.Context(), deps); len(down) > 0 {
			// Names only: the errors, with addresses, are for the logs.
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not ready: "+strings.Join(down, ", ")+" unavailable\n")
			return
		}
		io.WriteString(w, "ready\n")
	})
	ops.Handle("GET /metrics", observe.MetricsHandler(reg))

	clicks := http.NewServeMux()
	clicks.Handle("POST /v1/clicks", ing.HandleClicks())
	clicks.Handle("GET /v1/r/{token}", rd.HandleRedirect())
	clicks.Handle("POST /v1/ads/{ad_id}/click-urls", rd.HandleMint())

	qm := http.NewServeMux()
	qm.Handle("GET /v1/ads/{ad_id}/clicks", q.HandleSeries())
	qm.Handle("GET /v1/ads/top", q.HandleTop())
	qm.Handle("GET /v1/traffic/quality", q.HandleQuality())
	qm.Handle("GET /v1/pipeline/status", q.HandleStatus())
	qm.Handle("POST /v1/pipeline/recounts", rc.handleStart())
	qm.Handle("GET /v1/pipeline/recounts/{id}", rc.handleGet())

	mm := http.NewServeMux()
	mm.Handle("POST /v1/metadata/collect", md.HandleCollect())
	mm.Handle("GET /v1/metadata/tasks/{task_id}", md.HandleTask())
	return map[string]http.Handler{clusterOps: ops, clusterClicks: clicks, clusterQuery: qm, clusterMetadata: mm}
}

// pipeline shows the aggregator to the query API.
type pipeline struct{ a *aggregate.Aggregator }

func (p pipeline) Watermark(adID string) (time.Time, bool) { return p.a.Watermark(adID) }

func (p pipeline) Status(ctx context.Context) (query.Status, error) {
	st, err := p.a.Status(ctx)
	if err != nil {
		return query.Status{}, err
	}
	out := query.Status{
		EventsInPerSecond:    st.EventsInPerSecond,
		EventsOutPerSecond:   st.EventsOutPerSecond,
		OldestUnprocessedAge: st.OldestUnprocessedAge,
		Freshness:            st.Freshness,
	}
	for _, ps := range st.Partitions {
		out.Partitions = append(out.Partitions, query.PartitionStatus(ps))
	}
	return out, nil
}

// applyAnalyticsRetention deletes window totals older than retention, at once
// and then hourly, until ctx is done.
func applyAnalyticsRetention(ctx context.Context, store *embedstore.Store, retention time.Duration, logger *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		cutoff := time.Now().Add(-retention).Truncate(time.Minute)
		if n, err := store.DeleteBefore(ctx, cutoff); err != nil && ctx.Err() == nil {
			logger.Warn("analytics retention", "err", err)
		} else if n > 0 {
			logger.Info("analytics retention", "deleted_rows", n, "before", cutoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// parseCIDRs reads a comma-separated list of CIDRs or single addresses.
func parseCIDRs(flagName, list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%s: %q is not a CIDR or address", flagName, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// fetchConfig completes the outbound fetch policy of cfg for a service: the
// DNS server, and refusals counted by reason and logged once each, with the
// reason and never a response body.
func fetchConfig(cfg serveConfig, logger *slog.Logger, reg prometheus.Registerer) safehttp.Config {
	fc := cfg.Fetch
	if cfg.FetchDNSServer != "" {
		server := cfg.FetchDNSServer
		fc.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		}}
	}
	blocked := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "pedal_fetch_blocked_total",
		Help: "Outbound fetches to user-supplied URLs refused by the SSRF policy, by reason.",
	}, []string{"reason"})
	fc.OnBlocked = func(reason, host string) {
		blocked.WithLabelValues(reason).Inc()
		logger.Warn("outbound fetch blocked", "reason", reason, "host", host)
	}
	return fc
}

// requeueLostTasks publishes again, every minute, the requests of tasks left
// unfinished for longer than olderThan without a pending event (see
// taskstore.Store.Requeue), so that no accepted task is ever lost.
func requeueLostTasks(ctx context.Context, store *taskstore.Store, olderThan time.Duration, logger *slog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := store.Requeue(ctx, olderThan)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Warn("requeue unfinished tasks", "err", err)
		case n > 0:
			logger.Warn("requeued unfinished tasks whose request was lost", "tasks", n, "older_than", olderThan)
		}
	}
}

// metadataService is the URL-metadata service's parts.
type metadataService struct {
	store  *taskstore.Store
	col    *collect.Collector
	api    *metadata.API
	worker *metadata.Worker
	relay  *outbox.Relay
}

// metadataTopicPartitions is the partition count of the metadata topics:
// task order matters only per task, so a few partitions suffice.
const metadataTopicPartitions = 4

// openMetadata opens the task store under the data dir, creates the
// metadata topics and builds the API, the worker and the outbox relay.
func openMetadata(ctx context.Context, cfg serveConfig, log eventLog, results collect.Cache, logger *slog.Logger, reg prometheus.Registerer) (*metadataService, error) {
	for _, topic := range []string{taskstore.TopicTasks, taskstore.TopicResults} {
		if err := log.CreateTopic(ctx, topic, metadataTopicPartitions); err != nil {
			return nil, err
		}
	}
	store, err := openTasks(ctx, cfg)
	if err != nil {
		return nil, err
	}
	ccfg := cfg.Collect
	ccfg.Cache = results
	ccfg.Fetch = fetchConfig(cfg, logger.With("component", "fetch"), reg)
	logger.Info("outbound fetch policy", "allowed_ports", ccfg.Fetch.AllowedPorts, "allow_cidrs", ccfg.Fetch.AllowCIDRs,
		"deny_cidrs", ccfg.Fetch.DenyCIDRs, "dns_server", cfg.FetchDNSServer)
	col := collect.New(ccfg, logger.With("component", "collect"), reg)
	est := metadata.NewEstimator(cfg.MetadataWorker.Workers, cfg.Outbox.PollInterval)
	om, err := outbox.NewMetrics(reg, "transactional_outbox")
	if err != nil {
		store.Close()
		return nil, err
	}
	relay := cfg.Outbox
	relay.DB, relay.Metrics, relay.Logger = store.DB(), om, logger.With("component", "outbox")
	if cfg.Backends.SQL != "" {
		relay.Dialect = outbox.Postgres
	}
	relay.Publisher = outbox.LogPublisher{Log: log, Topic: taskstore.Topic}
	return &metadataService{
		store:  store,
		col:    col,
		api:    metadata.NewAPI(store, col, est, logger.With("component", "metadata")),
		worker: metadata.NewWorker(cfg.MetadataWorker, log, store, col, est, logger.With("component", "metadata"), reg),
		relay:  &relay,
	}, nil
}
