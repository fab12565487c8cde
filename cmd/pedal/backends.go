package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/analytics/chstore"
	"github.com/pedal-project/pedal/internal/analytics/embedstore"
	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/clicks/aggregate"
	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/eventlog/kafkalog"
	"github.com/pedal-project/pedal/internal/eventlog/pebblelog"
	"github.com/pedal-project/pedal/internal/gateway"
	"github.com/pedal-project/pedal/internal/gateway/redisfallback"
	"github.com/pedal-project/pedal/internal/gateway/routedb"
	"github.com/pedal-project/pedal/internal/jwtauth"
	"github.com/pedal-project/pedal/internal/jwtauth/redisrevoke"
	"github.com/pedal-project/pedal/internal/metadata/collect"
	"github.com/pedal-project/pedal/internal/metadata/collect/rediscache"
	"github.com/pedal-project/pedal/internal/metadata/taskstore"
	"github.com/pedal-project/pedal/internal/ratelimit"
	"github.com/pedal-project/pedal/internal/ratelimit/redislimit"
	"github.com/pedal-project/pedal/internal/redisconn"
)

// Backends are chosen by URL; empty means the embedded default under the data dir.
type backends struct {
	Log string // kafka://broker1:9092,broker2:9092/?client_id=pedal&replication=3
	SQL string // postgres://user@host:5432/db
	// SQLReplica is a read replica of SQL.
	SQLReplica string
	Analytics  string // clickhouse://host:9000/db
	Cache      string // redis://[user:password@]host:6379/0
}

func (b backends) check() error {
	for _, c := range []struct{ flag, value, scheme string }{
		{"--log", b.Log, "kafka"}, {"--sql", b.SQL, "postgres"}, {"--analytics", b.Analytics, "clickhouse"}, {"--cache", b.Cache, "redis"},
	} {
		if c.value == "" {
			continue
		}
		scheme, _, ok := strings.Cut(c.value, "://")
		if !ok || (scheme != c.scheme && !(c.scheme == "postgres" && scheme == "postgresql")) {
			return fmt.Errorf("%s %q: want %s://… (or nothing, for the embedded default)", c.flag, redactURL(c.value), c.scheme)
		}
	}
	if b.SQLReplica != "" {
		if b.SQL == "" {
			return errors.New("--sql-replica: needs --sql (a replica of what?)")
		}
		if scheme, _, _ := strings.Cut(b.SQLReplica, "://"); scheme != "postgres" && scheme != "postgresql" {
			return fmt.Errorf("--sql-replica %q: want postgres://…", redactURL(b.SQLReplica))
		}
	}
	if b.Log != "" {
		if _, err := kafkaConfig(b.Log); err != nil {
			return err
		}
	}
	if b.Cache != "" {
		if _, err := redisconn.ParseURL(b.Cache); err != nil {
			return fmt.Errorf("--cache %q: %w", redactURL(b.Cache), err)
		}
	}
	return nil
}

// redactURL hides a password in a URL for messages.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	return s
}

// eventLog is what pedal needs of an event log: pebblelog.Log or kafkalog.Log.
type eventLog interface {
	CreateTopic(ctx context.Context, topic string, partitions int32) error
	Partitions(ctx context.Context, topic string) (int32, error)
	Append(ctx context.Context, topic string, recs []eventlog.Record) error
	Fetch(ctx context.Context, topic string, partition int32, offset int64, max int) ([]eventlog.Record, error)
	Offsets(ctx context.Context, topic string, partition int32) (start, end int64, err error)
	CommitOffset(ctx context.Context, group, topic string, partition int32, offset int64) error
	CommittedOffset(ctx context.Context, group, topic string, partition int32) (int64, error)
	Close() error
}

// kafkaConfig reads kafka://b1:9092,b2:9092/?client_id=…&replication=….
func kafkaConfig(raw string) (kafkalog.Config, error) {
	rest := strings.TrimPrefix(raw, "kafka://")
	hosts, query, _ := strings.Cut(rest, "?")
	hosts = strings.TrimSuffix(hosts, "/")
	var cfg kafkalog.Config
	for _, h := range strings.Split(hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			cfg.Brokers = append(cfg.Brokers, h)
		}
	}
	if len(cfg.Brokers) == 0 {
		return cfg, fmt.Errorf("--log %q: no broker", raw)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return cfg, fmt.Errorf("--log %q: %v", raw, err)
	}
	for k := range q {
		switch k {
		case "client_id":
			cfg.ClientID = q.Get(k)
		case "replication":
			n, err := strconv.ParseInt(q.Get(k), 10, 16)
			if err != nil || n == 0 || n < -1 {
				return cfg, fmt.Errorf("--log: replication=%q: want a replication factor, or -1 for the brokers' default", q.Get(k))
			}
			cfg.ReplicationFactor = int16(n)
		default:
			return cfg, fmt.Errorf("--log: unknown option %q (client_id, replication)", k)
		}
	}
	return cfg, nil
}

// openLog opens the event log of cfg. run, when not nil, must run for as
// long as the log is used (the embedded log's retention and disk checks).
func openLog(ctx context.Context, cfg serveConfig, logger *slog.Logger, reg prometheus.Registerer) (eventLog, func(context.Context) error, error) {
	if cfg.Backends.Log == "" {
		l, err := pebblelog.Open(filepath.Join(cfg.DataDir, "log"), cfg.Log, logger, reg)
		if err != nil {
			return nil, nil, err
		}
		return l, l.Run, nil
	}
	kc, err := kafkaConfig(cfg.Backends.Log)
	if err != nil {
		return nil, nil, err
	}
	l, err := kafkalog.Open(ctx, kc, logger, reg)
	if err != nil {
		return nil, nil, fmt.Errorf("--log: %w", err)
	}
	return l, nil, nil
}

// kafkaMembership is the aggregators' consumer group on Kafka.
type kafkaMembership struct {
	*kafkalog.Member
	log *kafkalog.Log
}

func newMembership(l *kafkalog.Log, sessionTimeout time.Duration) (kafkaMembership, error) {
	m, err := l.NewMember(kafkalog.MemberConfig{Group: "aggregator", Topic: clicks.Topic, SessionTimeout: sessionTimeout})
	return kafkaMembership{Member: m, log: l}, err
}

func (k kafkaMembership) Join(ctx context.Context, r aggregate.Rebalancer) error {
	return k.Member.Join(ctx, r)
}

func (k kafkaMembership) OffsetForTime(ctx context.Context, part int32, t time.Time) (int64, error) {
	return k.log.OffsetForTime(ctx, clicks.Topic, part, t)
}

// openAnalytics opens the analytics store of cfg; deleteBefore is nil when
// the store applies retention itself or not at all.
func openAnalytics(ctx context.Context, cfg serveConfig, logger *slog.Logger, reg prometheus.Registerer) (analytics.Store, *embedstore.Store, error) {
	if cfg.Backends.Analytics == "" {
		s, err := embedstore.Open(filepath.Join(cfg.DataDir, "analytics"), embedstore.Config{}, logger)
		return s, s, err
	}
	s, err := chstore.Open(ctx, chstore.Config{DSN: cfg.Backends.Analytics, SpoolDir: filepath.Join(cfg.DataDir, "analytics-spool")}, logger, reg)
	if err != nil {
		return nil, nil, fmt.Errorf("--analytics: %w", err)
	}
	return s, nil, nil
}

// openTasks opens the metadata task store of cfg.
func openTasks(ctx context.Context, cfg serveConfig) (*taskstore.Store, error) {
	if cfg.Backends.SQL == "" {
		return taskstore.Open(ctx, filepath.Join(cfg.DataDir, "metadata.db"))
	}
	s, err := taskstore.OpenPostgres(ctx, cfg.Backends.SQL)
	if err != nil {
		return nil, fmt.Errorf("--sql: %w", err)
	}
	if cfg.Backends.SQLReplica != "" {
		if err := s.UseReplica(cfg.Backends.SQLReplica); err != nil {
			s.Close()
			return nil, fmt.Errorf("--sql-replica: %w", err)
		}
	}
	return s, nil
}

// openRoutes opens the gateway's routes: in SQLite under the data dir, or in
// PostgreSQL with --sql, shared by every gateway.
func openRoutes(ctx context.Context, cfg serveConfig) (*routedb.Store, error) {
	if cfg.Backends.SQL == "" {
		return routedb.Open(ctx, filepath.Join(cfg.DataDir, "routes.db"))
	}
	s, err := routedb.OpenPostgres(ctx, cfg.Backends.SQL)
	if err != nil {
		return nil, fmt.Errorf("--sql: routes: %w", err)
	}
	return s, nil
}

// sharedState is what several gateways share through --cache: rate limits
// (failing open when Redis is unreachable) and token revocations (failing
// closed). closers close what was opened.
type sharedState struct {
	limiter     ratelimit.Limiter
	revocations jwtauth.Revocations
	results     collect.Cache         // nil: in-process
	fallback    gateway.FallbackStore // nil: in-process
	closers     []func() error
}

func openShared(cfg serveConfig, reg prometheus.Registerer) (*sharedState, error) {
	if cfg.Backends.Cache == "" {
		return &sharedState{limiter: ratelimit.NewLocal(ratelimit.Config{})}, nil
	}
	rc, err := redisconn.ParseURL(cfg.Backends.Cache)
	if err != nil {
		return nil, fmt.Errorf("--cache: %w", err)
	}
	// One client, one pool, for everything kept in Redis.
	rdb, err := redisconn.New(rc)
	if err != nil {
		return nil, fmt.Errorf("--cache: %w", err)
	}
	st := &sharedState{closers: []func() error{rdb.Close}}
	fail := func(err error) (*sharedState, error) {
		st.close()
		return nil, fmt.Errorf("--cache: %w", err)
	}
	if st.limiter, err = redislimit.New(redislimit.Config{Client: rdb}, reg); err != nil {
		return fail(err)
	}
	if st.revocations, err = redisrevoke.New(redisrevoke.Config{Client: rdb}, reg); err != nil {
		return fail(err)
	}
	// The metadata result cache fails open (a miss), the breaker's fallback
	// answers fail safe (no fallback): neither stops a request.
	if st.results, err = rediscache.New(rediscache.Config{Client: rdb}); err != nil {
		return fail(err)
	}
	fb, err := redisfallback.New(redisfallback.Config{Client: rdb}, reg)
	if err != nil {
		return fail(err)
	}
	st.fallback = fb
	st.closers = append([]func() error{fb.Close}, st.closers...) // the writers stop before the client closes
	return st, nil
}

func (s *sharedState) close() error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}
