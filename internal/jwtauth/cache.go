package jwtauth

import (
	"sync"
	"time"
)

// sessionCache remembers the claims of tokens that passed full verification,
// keyed by the SHA-256 of the token, until the token's exp. When full it
// evicts expired entries it meets and otherwise an arbitrary one (random
// eviction: no per-hit bookkeeping, so hits only take a read lock).
type sessionCache struct {
	max int

	mu      sync.RWMutex
	entries map[[32]byte]Claims
}

func newSessionCache(max int) *sessionCache {
	return &sessionCache{max: max, entries: make(map[[32]byte]Claims)}
}

// get returns the claims cached for the token hash h if the token is still
// before its exp at now.
func (c *sessionCache) get(h [32]byte, now time.Time) (Claims, bool) {
	c.mu.RLock()
	cl, ok := c.entries[h]
	c.mu.RUnlock()
	if !ok || !now.Before(cl.ExpiresAt) {
		return Claims{}, false
	}
	return cl, true
}

func (c *sessionCache) put(h [32]byte, cl Claims, now time.Time) {
	if !now.Before(cl.ExpiresAt) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[h]; !ok && len(c.entries) >= c.max {
		c.evictLocked(now)
	}
	c.entries[h] = cl
}

// evictLocked makes room for one entry: it drops the expired entries among
// the first few it meets (map order is randomised) and, if none was, the
// first one.
func (c *sessionCache) evictLocked(now time.Time) {
	const scan = 32
	var victim [32]byte
	n, evicted := 0, false
	for h, cl := range c.entries {
		if n == 0 {
			victim = h
		}
		if !now.Before(cl.ExpiresAt) {
			delete(c.entries, h)
			evicted = true
		}
		if n++; n == scan {
			break
		}
	}
	if !evicted && n > 0 {
		delete(c.entries, victim)
	}
}

func (c *sessionCache) remove(h [32]byte) {
	c.mu.Lock()
	delete(c.entries, h)
	c.mu.Unlock()
}

func (c *sessionCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
