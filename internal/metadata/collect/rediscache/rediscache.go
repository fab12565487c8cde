// Package rediscache is a [collect.Cache] kept in Redis, so that several
// processes reuse each other's metadata results.
//
// # Concept
//
// An outcome is stored as JSON under KeyPrefix + hex(sha256(key)) with SET
// … PX ttl: Redis expires it, and the key reveals neither the URL nor the
// options. [collect.Outcome.Cached] is not stored; the Collector sets it.
// Sharing one fetch between concurrent identical requests stays within a
// process (the Collector's singleflight); two processes missing at the same
// time each fetch the page, and the later SET wins.
//
// # When Redis is unreachable
//
// Get and Put return an error quickly: the client from package redisconn has
// short dial, read and write timeouts, no command retries and one dial
// attempt, and every call is bounded by [Config.Timeout]. The Collector fails OPEN: a Get error is a
// miss (the page is fetched), a Put error loses the entry, both are counted in
// pedal_metadata_cache_errors_total, and the collection succeeds or fails on
// its own merits. When Redis answers again the cache works again, empty if
// Redis lost its data. An entry that does not decode (written by another
// version) is a miss, not an error.
//
// # Concurrency
//
// A [Cache] is safe for concurrent use by many goroutines and processes.
package rediscache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pedal-project/pedal/internal/metadata/collect"
)

// Defaults for the zero values of Config fields.
const (
	DefaultKeyPrefix = "pedal:mdcache:"
	DefaultTimeout   = 200 * time.Millisecond // one Get or Put
)

// Config configures a Cache. Addr is required; the zero value of every other
// field is a useful default.
type Config struct {
	// Client is the Redis to use (package redisconn makes one); required.
	// Its owner closes it.
	Client *redis.Client
	// Timeout bounds one Get or Put, whatever the caller's context says;
	// zero means DefaultTimeout.
	Timeout time.Duration
	// KeyPrefix is prepended to every key; empty means DefaultKeyPrefix.
	KeyPrefix string
}

// Cache is a Redis-backed [collect.Cache].
type Cache struct {
	rdb     *redis.Client
	prefix  string
	timeout time.Duration
}

var _ collect.Cache = (*Cache)(nil)

// New returns a Cache using cfg.Client. It does not connect: the
// first call does, so a process can start while Redis is down (and miss
// until it is up).
func New(cfg Config) (*Cache, error) {
	if cfg.Client == nil {
		return nil, errors.New("rediscache: no Redis client configured")
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultKeyPrefix
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	rdb := cfg.Client
	return &Cache{rdb: rdb, prefix: cfg.KeyPrefix, timeout: cfg.Timeout}, nil
}

// entry is the stored form of an outcome.
type entry struct {
	FinalURL string         `json:"final_url"`
	Result   collect.Result `json:"result"`
}

func (c *Cache) key(key string) string {
	sum := sha256.Sum256([]byte(key))
	return c.prefix + hex.EncodeToString(sum[:])
}

// Get implements [collect.Cache].
func (c *Cache) Get(ctx context.Context, key string) (collect.Outcome, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	b, err := c.rdb.Get(ctx, c.key(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return collect.Outcome{}, false, nil
	}
	if err != nil {
		return collect.Outcome{}, false, fmt.Errorf("rediscache: get: %w", err)
	}
	var e entry
	if err := json.Unmarshal(b, &e); err != nil {
		return collect.Outcome{}, false, nil
	}
	return collect.Outcome{FinalURL: e.FinalURL, Result: e.Result}, true, nil
}

// Put implements [collect.Cache]. A ttl under a millisecond stores nothing.
func (c *Cache) Put(ctx context.Context, key string, out collect.Outcome, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return nil
	}
	b, err := json.Marshal(entry{FinalURL: out.FinalURL, Result: out.Result})
	if err != nil {
		return fmt.Errorf("rediscache: encode: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := c.rdb.Set(ctx, c.key(key), b, ttl).Err(); err != nil {
		return fmt.Errorf("rediscache: set: %w", err)
	}
	return nil
}
