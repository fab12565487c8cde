package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/bits"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Config tunes a Local limiter. The zero value is ready to use.
type Config struct {
	// Shards is the number of independently locked parts of the key space,
	// rounded up to a power of two. Zero means 4·GOMAXPROCS, at least 16.
	Shards int
	// MaxEntries caps the number of keys held; it is spread evenly over the
	// shards (rounded up), and a shard that is full evicts one of its entries,
	// chosen as the one nearest to full among a small sample, before adding a
	// key. Eviction forgets what the evicted key had used, so that key gets a
	// full burst again: past the cap the limiter errs on the side of
	// admitting. Zero means 1<<20 (about 100 MB with 40-byte keys).
	MaxEntries int
	// Now returns the current time; nil means time.Now. Tests set it to a
	// fake clock.
	Now func() time.Time
}

const (
	defaultMaxEntries = 1 << 20
	maxShards         = 1 << 16
	// minSweepLen is the shard length below which expired entries are not
	// swept on size alone.
	minSweepLen = 64
	// sweepEvery bounds how long expired entries may stay in a shard that
	// still receives new keys but does not grow.
	sweepEvery = time.Minute
	// evictSample is how many entries eviction looks at.
	evictSample = 8
)

// Local is an in-process Limiter: a sharded map from key to theoretical
// arrival time. Its memory is bounded by Config.MaxEntries; entries whose
// TAT has passed are dropped, as they carry no information. Local is safe for
// concurrent use.
type Local struct {
	now    func() time.Time
	base   time.Time // times are kept as nanoseconds since base
	seed   maphash.Seed
	mask   uint64
	shards []shard
}

type shard struct {
	mu   sync.Mutex
	tats map[string]int64 // key → TAT in ns since Local.base
	// An insert sweeps expired entries once len(tats) ≥ sweepLen or
	// now ≥ sweepAt.
	sweepLen int
	sweepAt  int64
	max      int
	_        [64]byte // keep neighbouring shards' locks off this cache line
}

// NewLocal returns a Local limiter configured by cfg.
func NewLocal(cfg Config) *Local {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	n := cfg.Shards
	if n <= 0 {
		n = max(16, 4*runtime.GOMAXPROCS(0))
	}
	n = min(n, maxShards)
	n = 1 << bits.Len(uint(n-1)) // round up to a power of two
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = defaultMaxEntries
	}
	l := &Local{
		now:    cfg.Now,
		base:   cfg.Now(),
		seed:   maphash.MakeSeed(),
		mask:   uint64(n - 1),
		shards: make([]shard, n),
	}
	perShard := (cfg.MaxEntries + n - 1) / n
	for i := range l.shards {
		s := &l.shards[i]
		s.tats = make(map[string]int64)
		s.max = perShard
		s.sweepLen = minSweepLen
		s.sweepAt = int64(sweepEvery)
	}
	return l
}

// Allow admits or refuses one request for key under lim and records an
// admission. It returns an error wrapping ErrInvalidLimit for an invalid
// lim, and no other; ctx is not used, as Allow never blocks on anything but
// a shard lock held for a map access.
func (l *Local) Allow(_ context.Context, key string, lim Limit) (Result, error) {
	interval, burstOffset, ok := lim.interval()
	if !ok {
		return Result{Limit: lim}, fmt.Errorf("%w: %v", ErrInvalidLimit, lim)
	}
	now := int64(l.now().Sub(l.base))
	s := &l.shards[maphash.String(l.seed, key)&l.mask]
	s.mu.Lock()
	tat, found := s.tats[key]
	if !found {
		tat = now
	}
	res, newTAT := gcra(now, tat, interval, burstOffset, lim)
	if res.Allowed {
		if found {
			s.tats[key] = newTAT
		} else {
			s.insert(key, newTAT, now)
		}
	}
	s.mu.Unlock()
	return res, nil
}

// insert adds key, which is not in s.tats. s.mu must be held.
func (s *shard) insert(key string, tat, now int64) {
	if len(s.tats) >= s.sweepLen || now >= s.sweepAt {
		for k, t := range s.tats {
			if t <= now {
				delete(s.tats, k)
			}
		}
		// Doubling keeps sweeping amortised O(1) per insert.
		s.sweepLen = max(2*len(s.tats), minSweepLen)
		s.sweepAt = now + int64(sweepEvery)
	}
	if len(s.tats) >= s.max {
		s.evict()
	}
	// Clone so the map does not pin a larger buffer the caller built key in.
	s.tats[strings.Clone(key)] = tat
}

// evict deletes the entry with the smallest TAT among a sample of entries
// (map iteration starts at a random position). s.mu must be held.
func (s *shard) evict() {
	var (
		victim string
		minTAT int64
		n      int
	)
	for k, t := range s.tats {
		if n == 0 || t < minTAT {
			victim, minTAT = k, t
		}
		if n++; n == evictSample {
			break
		}
	}
	if n > 0 {
		delete(s.tats, victim)
	}
}

// Len returns the number of keys held.
func (l *Local) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.tats)
		s.mu.Unlock()
	}
	return n
}
