package jwtauth

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Revocations stores the IDs of revoked tokens. A [Verifier] asks it on every
// verification, so Revoked should be fast; an error from it makes
// verification fail (fail closed). Implementations must be safe for
// concurrent use. [MemoryRevocations] serves one process; a shared store
// (Redis) serves many gateway instances.
type Revocations interface {
	// Revoke records id as revoked until the given time, after which the
	// store may forget it.
	Revoke(ctx context.Context, id string, until time.Time) error
	// Revoked reports whether id is revoked now.
	Revoked(ctx context.Context, id string) (bool, error)
}

// ErrRevocationsFull is returned by [MemoryRevocations.Revoke] when the store
// holds its maximum number of unexpired entries.
var ErrRevocationsFull = errors.New("jwtauth: revocation store is full")

// DefaultMaxRevocations is the capacity of a MemoryRevocations created with a
// non-positive maximum.
const DefaultMaxRevocations = 100_000

// MemoryRevocations is an in-process [Revocations] holding at most a fixed
// number of entries. Expired entries are pruned when the store fills up and
// when they are looked up. It refuses a new revocation rather than drop an
// unexpired one.
type MemoryRevocations struct {
	max int
	now func() time.Time

	mu    sync.Mutex
	until map[string]time.Time
}

// NewMemoryRevocations returns an empty store holding at most maxEntries
// (DefaultMaxRevocations if maxEntries <= 0). now is its clock; nil means
// time.Now.
func NewMemoryRevocations(maxEntries int, now func() time.Time) *MemoryRevocations {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxRevocations
	}
	if now == nil {
		now = time.Now
	}
	return &MemoryRevocations{max: maxEntries, now: now, until: make(map[string]time.Time)}
}

// Revoke implements [Revocations]. Revoking an ID again keeps the later
// expiry.
func (m *MemoryRevocations) Revoke(_ context.Context, id string, until time.Time) error {
	now := m.now()
	if !now.Before(until) {
		return nil // already over
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.until[id]; ok {
		if until.After(old) {
			m.until[id] = until
		}
		return nil
	}
	if len(m.until) >= m.max {
		for k, u := range m.until {
			if !now.Before(u) {
				delete(m.until, k)
			}
		}
		if len(m.until) >= m.max {
			return ErrRevocationsFull
		}
	}
	m.until[id] = until
	return nil
}

// Revoked implements [Revocations].
func (m *MemoryRevocations) Revoked(_ context.Context, id string) (bool, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.until[id]
	if !ok {
		return false, nil
	}
	if !now.Before(u) {
		delete(m.until, id)
		return false, nil
	}
	return true, nil
}

// Len returns the number of entries held, expired or not.
func (m *MemoryRevocations) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.until)
}
