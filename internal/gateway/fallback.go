package gateway

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// FallbackEntry is a successful GET answer kept for serving while its
// cluster's breaker is open.
type FallbackEntry struct {
	Code   int
	Header http.Header // only the headers that describe the body (Content-Type, ETag, …)
	Body   []byte
	At     time.Time // when the answer was given
}

// FallbackStore keeps fallback entries by key (URL, caller and Accept). The
// in-process default is bounded in entries; package redisfallback shares
// entries between gateway instances.
//
// Put is called on the request path, after the answer was sent: it must not
// wait on I/O (a remote store queues the write). Get is called only while a
// breaker is open. An error from either means no entry: a failed Put is
// forgotten, a failed Get is answered as if nothing were stored (503, no
// details). Implementations must be safe for concurrent use.
type FallbackStore interface {
	Put(ctx context.Context, key string, e FallbackEntry) error
	Get(ctx context.Context, key string) (FallbackEntry, bool, error)
}

// SetFallbackStore makes the gateway keep its fallback answers in s; nil
// restores the in-process store of Config.FallbackEntries entries. It may be
// called at any time; answers kept in the previous store are not moved.
func (g *Gateway) SetFallbackStore(s FallbackStore) {
	if s == nil {
		s = g.fallback.local
	}
	g.fallback.store.Store(&s)
}

// fallbackHeaders are the headers of an answer kept with it.
var fallbackHeaders = []string{"Content-Type", "Content-Encoding", "Content-Language", "Cache-Control", "Etag", "Last-Modified", "Vary"}

// fallbackCache is the gateway's side of the fallback store: it bounds the
// body size, keeps only the headers that describe the body, enforces the TTL
// and turns store errors into "no entry".
type fallbackCache struct {
	maxBytes int
	ttl      time.Duration
	local    *memoryFallback
	store    atomic.Pointer[FallbackStore]
}

func newFallbackCache(max, maxBytes int, ttl time.Duration) *fallbackCache {
	c := &fallbackCache{maxBytes: maxBytes, ttl: ttl, local: newMemoryFallback(max)}
	var s FallbackStore = c.local
	c.store.Store(&s)
	return c
}

func (c *fallbackCache) put(ctx context.Context, key string, code int, h http.Header, body []byte) {
	if len(body) > c.maxBytes {
		return
	}
	e := FallbackEntry{Code: code, Header: http.Header{}, Body: bytes.Clone(body), At: time.Now()}
	for _, k := range fallbackHeaders {
		if v := h.Values(k); len(v) > 0 {
			e.Header[k] = v
		}
	}
	_ = (*c.store.Load()).Put(ctx, key, e) // a lost entry only means no fallback; the store counts its errors
}

func (c *fallbackCache) get(ctx context.Context, key string) (FallbackEntry, bool) {
	e, ok, err := (*c.store.Load()).Get(ctx, key)
	if err != nil || !ok || time.Since(e.At) > c.ttl || len(e.Body) > c.maxBytes {
		return FallbackEntry{}, false
	}
	return e, true
}

// memoryFallback is the in-process FallbackStore: the latest max entries by
// first insertion.
type memoryFallback struct {
	max int

	mu    sync.Mutex
	m     map[string]FallbackEntry
	order []string
}

func newMemoryFallback(max int) *memoryFallback {
	return &memoryFallback{max: max, m: map[string]FallbackEntry{}}
}

func (c *memoryFallback) Put(_ context.Context, key string, e FallbackEntry) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok {
		c.order = append(c.order, key)
	}
	c.m[key] = e
	for len(c.m) > c.max && len(c.order) > 0 {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	return nil
}

func (c *memoryFallback) Get(_ context.Context, key string) (FallbackEntry, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	return e, ok, nil
}
