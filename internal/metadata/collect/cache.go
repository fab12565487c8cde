package collect

import (
	"context"
	"sync"
	"time"
)

// Cache stores successful outcomes by key, the request's URL and options.
// Implementations must be safe for concurrent use. The Collector treats an
// error from either method as a miss (Get) or a lost entry (Put): it counts
// it in pedal_metadata_cache_errors_total and goes on, so a Cache should give
// up quickly rather than hold a collection up.
type Cache interface {
	// Get returns the outcome stored under key, if any and not expired.
	Get(ctx context.Context, key string) (Outcome, bool, error)
	// Put stores out under key for ttl.
	Put(ctx context.Context, key string, out Outcome, ttl time.Duration) error
}

// cacheGet asks the cache, if any; an error is a miss.
func (c *Collector) cacheGet(ctx context.Context, key string) (Outcome, bool) {
	if c.cache == nil {
		return Outcome{}, false
	}
	out, ok, err := c.cache.Get(ctx, key)
	if err != nil {
		c.metrics.cacheErrors.WithLabelValues("get").Inc()
		c.warnCache(ctx, "result cache read failed; fetching the page", err)
		return Outcome{}, false
	}
	return out, ok
}

// cachePut stores a successful outcome, if there is a cache; an error only
// loses the entry.
func (c *Collector) cachePut(ctx context.Context, key string, out Outcome) {
	if c.cache == nil {
		return
	}
	out.Cached = false
	if err := c.cache.Put(ctx, key, out, c.cfg.CacheTTL); err != nil {
		c.metrics.cacheErrors.WithLabelValues("put").Inc()
		c.warnCache(ctx, "result cache write failed", err)
	}
}

// warnCache logs a cache error, at most once every 10 s: while a shared
// cache is down every collection would fail the same way.
func (c *Collector) warnCache(ctx context.Context, msg string, err error) {
	now := c.now().UnixNano()
	last := c.cacheWarned.Load()
	if now-last < int64(10*time.Second) || !c.cacheWarned.CompareAndSwap(last, now) {
		c.log.DebugContext(ctx, msg, "err", err)
		return
	}
	c.log.WarnContext(ctx, msg, "err", err)
}

// memoryCache is the default Cache: a bounded in-process cache. Every entry
// lives Config.CacheTTL, whatever ttl Put is given.
type memoryCache struct {
	c   *cache
	now func() time.Time
}

func (m *memoryCache) Get(_ context.Context, key string) (Outcome, bool, error) {
	out, ok := m.c.get(key, m.now())
	return out, ok, nil
}

func (m *memoryCache) Put(_ context.Context, key string, out Outcome, _ time.Duration) error {
	m.c.put(key, out, m.now())
	return nil
}

// cache holds successful outcomes for a fixed TTL; since every entry lives as
// long, insertion order is expiry order, and the oldest entries go first.
type cache struct {
	ttl time.Duration
	max int

	mu      sync.Mutex
	seq     uint64
	entries map[string]cacheEntry
	order   []cacheSlot // by insertion; a slot whose seq is not its entry's is stale
}

type cacheEntry struct {
	out     Outcome
	expires time.Time
	seq     uint64
}

type cacheSlot struct {
	key string
	seq uint64
}

func newCache(ttl time.Duration, max int) *cache {
	return &cache{ttl: ttl, max: max, entries: map[string]cacheEntry{}}
}

func (c *cache) get(key string, now time.Time) (Outcome, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || now.After(e.expires) {
		return Outcome{}, false
	}
	return e.out, true
}

func (c *cache) put(key string, out Outcome, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	c.entries[key] = cacheEntry{out: out, expires: now.Add(c.ttl), seq: c.seq}
	c.order = append(c.order, cacheSlot{key, c.seq})
	for len(c.order) > 0 {
		s := c.order[0]
		e, ok := c.entries[s.key]
		live := ok && e.seq == s.seq
		if live && !now.After(e.expires) && len(c.entries) <= c.max {
			return
		}
		if live {
			delete(c.entries, s.key)
		}
		c.order = c.order[1:]
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
