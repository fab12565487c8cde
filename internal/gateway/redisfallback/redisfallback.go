// Package redisfallback is a [gateway.FallbackStore] kept in Redis, so that
// an answer one gateway instance gave can be served stale by another while
// that one's circuit breaker is open.
//
// # Concept
//
// An entry is stored as JSON under KeyPrefix + hex(sha256(key)) with SET …
// PX TTL: Redis expires it, and the key reveals neither the URL nor the
// caller. Put does not talk to Redis: it queues the write (QueueSize entries)
// for a few writer goroutines, so the request path never waits on Redis; when
// the queue is full the entry is dropped and counted. Entries larger than
// MaxBytes are neither written nor served.
//
// # When Redis is unreachable
//
// The gateway fails SAFE: a failed write (queued SET that errs, or a full
// queue) is forgotten and counted in
// pedal_gateway_fallback_redis_errors_total{op="put"} or
// pedal_gateway_fallback_redis_dropped_total; a failed Get is counted
// (op="get") and means no fallback, so the caller gets the same 503 as when
// nothing was cached, with no detail of the failure. Get gives up after
// Timeout (200 ms by default) on the fail-fast client of package redisconn. When Redis answers again the store
// works again, empty if Redis lost its data.
//
// # Concurrency
//
// A [Store] is safe for concurrent use by many goroutines and processes.
// Close stops the writers, dropping writes still queued, and waits for them.
package redisfallback

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pedal-project/pedal/internal/gateway"
)

// Defaults for the zero values of Config fields.
const (
	DefaultKeyPrefix = "pedal:fallback:"
	DefaultTimeout   = 200 * time.Millisecond // one GET or SET
	DefaultTTL       = 5 * time.Minute        // gateway.Config.FallbackTTL's default
	DefaultMaxBytes  = 256 << 10              // gateway.Config.FallbackMaxBytes's default
	DefaultQueueSize = 1024
	DefaultWriters   = 4
)

// ErrQueueFull is returned by Put when the write queue is full: the entry is
// dropped.
var ErrQueueFull = errors.New("redisfallback: write queue full")

// ErrClosed is returned by Put after Close.
var ErrClosed = errors.New("redisfallback: closed")

// Config configures a Store. Addr is required; the zero value of every other
// field is a useful default.
type Config struct {
	// Client is the Redis to use (package redisconn makes one); required.
	// Its owner closes it.
	Client *redis.Client
	// Timeout bounds one GET or SET; zero means DefaultTimeout.
	Timeout time.Duration
	// TTL is how long Redis keeps an entry; set it to the gateway's
	// FallbackTTL. Zero means DefaultTTL.
	TTL time.Duration
	// MaxBytes is the largest body stored; set it to the gateway's
	// FallbackMaxBytes. Zero means DefaultMaxBytes.
	MaxBytes int
	// QueueSize bounds the writes waiting for Redis; zero means
	// DefaultQueueSize. Writers is how many goroutines send them; zero means
	// DefaultWriters.
	QueueSize, Writers int
	// KeyPrefix is prepended to every key; empty means DefaultKeyPrefix.
	KeyPrefix string
}

// Store is a Redis-backed [gateway.FallbackStore].
type Store struct {
	rdb      *redis.Client
	prefix   string
	timeout  time.Duration
	ttl      time.Duration
	maxBytes int

	queue   chan write
	stop    chan struct{}
	closing sync.Once
	wg      sync.WaitGroup

	errs    *prometheus.CounterVec
	dropped prometheus.Counter
}

type write struct {
	key string // already prefixed and hashed
	val []byte
}

var _ gateway.FallbackStore = (*Store)(nil)

// New returns a Store using cfg.Client, registers its metrics with
// reg (which may be nil) and starts its writers. It does not connect: the
// first call does, so a gateway can start while Redis is down. Close stops the
// writers.
func New(cfg Config, reg prometheus.Registerer) (*Store, error) {
	if cfg.Client == nil {
		return nil, errors.New("redisfallback: no Redis client configured")
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultKeyPrefix
	}
	orDefault := func(d, def time.Duration) time.Duration {
		if d <= 0 {
			return def
		}
		return d
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Writers <= 0 {
		cfg.Writers = DefaultWriters
	}
	s := &Store{
		prefix:   cfg.KeyPrefix,
		timeout:  orDefault(cfg.Timeout, DefaultTimeout),
		ttl:      orDefault(cfg.TTL, DefaultTTL),
		maxBytes: cfg.MaxBytes,
		queue:    make(chan write, cfg.QueueSize),
		stop:     make(chan struct{}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_gateway_fallback_redis_errors_total",
			Help: "Fallback store operations (get, put) that failed because Redis could not be reached or answered an error; a failed get serves no fallback.",
		}, []string{"op"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_gateway_fallback_redis_dropped_total",
			Help: "Fallback answers not written to Redis because the write queue was full.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.errs, s.dropped} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("redisfallback: register metrics: %w", err)
			}
		}
	}
	s.rdb = cfg.Client
	for range cfg.Writers {
		s.wg.Go(s.writer)
	}
	return s, nil
}

// Close stops the writers, dropping the writes still queued, and waits for
// them. Put after Close returns ErrClosed. The client stays open.
func (s *Store) Close() error {
	s.closing.Do(func() { close(s.stop) })
	s.wg.Wait()
	return nil
}

// entry is the stored form of a gateway.FallbackEntry.
type entry struct {
	Code   int         `json:"code"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body"`
	At     time.Time   `json:"at"`
}

func (s *Store) key(key string) string {
	sum := sha256.Sum256([]byte(key))
	return s.prefix + hex.EncodeToString(sum[:])
}

// Put implements [gateway.FallbackStore]: it queues the write and returns at
// once. It returns ErrQueueFull when the entry was dropped.
func (s *Store) Put(_ context.Context, key string, e gateway.FallbackEntry) error {
	if len(e.Body) > s.maxBytes {
		return nil
	}
	val, err := json.Marshal(entry(e))
	if err != nil {
		return fmt.Errorf("redisfallback: encode: %w", err)
	}
	select {
	case <-s.stop:
		return ErrClosed
	default:
	}
	select {
	case s.queue <- write{key: s.key(key), val: val}:
		return nil
	default:
		s.dropped.Inc()
		return ErrQueueFull
	}
}

func (s *Store) writer() {
	for {
		select {
		case <-s.stop:
			return
		case w := <-s.queue:
			ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
			if err := s.rdb.Set(ctx, w.key, w.val, s.ttl).Err(); err != nil {
				s.errs.WithLabelValues("put").Inc()
			}
			cancel()
		}
	}
}

// Get implements [gateway.FallbackStore]. An entry that does not decode or
// is larger than MaxBytes is no entry, not an error.
func (s *Store) Get(ctx context.Context, key string) (gateway.FallbackEntry, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	b, err := s.rdb.Get(ctx, s.key(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return gateway.FallbackEntry{}, false, nil
	}
	if err != nil {
		s.errs.WithLabelValues("get").Inc()
		return gateway.FallbackEntry{}, false, fmt.Errorf("redisfallback: get: %w", err)
	}
	var e entry
	if err := json.Unmarshal(b, &e); err != nil || len(e.Body) > s.maxBytes {
		return gateway.FallbackEntry{}, false, nil
	}
	return gateway.FallbackEntry(e), true, nil
}
