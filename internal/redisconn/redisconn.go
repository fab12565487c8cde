// Package redisconn makes the one Redis client a pedal process shares among
// its Redis-backed parts (rate limits, revocations, the metadata result
// cache, the gateway's fallback answers). The client fails fast: a dial is
// tried once, a command is never retried, and sockets time out after 200 ms
// by default, so that a Redis that is down costs each caller a bounded
// delay; each caller decides whether that fails open or closed.
//
// A *redis.Client is safe for concurrent use.
package redisconn

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of Config.
const (
	DefaultDialTimeout = 200 * time.Millisecond
	DefaultIOTimeout   = 200 * time.Millisecond // read and write
)

// Config says which Redis to reach and how patiently.
type Config struct {
	// Addr is the server's "host:port"; required.
	Addr string
	// Username, Password and DB select the Redis user and database.
	Username, Password string
	DB                 int
	// PoolSize is the most connections; zero means go-redis's default (10 per
	// GOMAXPROCS).
	PoolSize int
	// DialTimeout bounds establishing a connection; zero means
	// DefaultDialTimeout. ReadTimeout and WriteTimeout bound each socket read
	// and write; zero means DefaultIOTimeout.
	DialTimeout, ReadTimeout, WriteTimeout time.Duration
}

// New returns a client for cfg. It does not connect; the first command does.
func New(cfg Config) (*redis.Client, error) {
	if cfg.Addr == "" {
		return nil, errors.New("redisconn: no Redis address configured")
	}
	orDefault := func(d, def time.Duration) time.Duration {
		if d <= 0 {
			return def
		}
		return d
	}
	return redis.NewClient(&redis.Options{
		Addr:                  cfg.Addr,
		Username:              cfg.Username,
		Password:              cfg.Password,
		DB:                    cfg.DB,
		PoolSize:              cfg.PoolSize,
		DialTimeout:           orDefault(cfg.DialTimeout, DefaultDialTimeout),
		ReadTimeout:           orDefault(cfg.ReadTimeout, DefaultIOTimeout),
		WriteTimeout:          orDefault(cfg.WriteTimeout, DefaultIOTimeout),
		DialerRetries:         1,  // go-redis defaults to 5 dials 100 ms apart
		MaxRetries:            -1, // fail fast; the caller sees the error
		ContextTimeoutEnabled: true,
		DisableIdentity:       true, // no CLIENT SETINFO round trip on each new connection
	}), nil
}

// ParseURL reads redis://[user:password@]host[:port][/db]; the port defaults
// to 6379 and the database to 0.
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "redis" || u.Host == "" {
		return Config{}, fmt.Errorf("want redis://[user:password@]host:port[/db]")
	}
	cfg := Config{Addr: u.Host}
	if u.Port() == "" {
		cfg.Addr = u.Host + ":6379"
	}
	if u.User != nil {
		cfg.Username = u.User.Username()
		cfg.Password, _ = u.User.Password()
	}
	if db := strings.Trim(u.Path, "/"); db != "" {
		if cfg.DB, err = strconv.Atoi(db); err != nil || cfg.DB < 0 {
			return cfg, fmt.Errorf("database %q: want a number", db)
		}
	}
	return cfg, nil
}
