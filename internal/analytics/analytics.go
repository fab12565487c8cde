// Package analytics defines the store of aggregated click totals that the query
// API reads: one row per (ad_id, country, one-minute window) holding absolute
// totals, written by the aggregator with idempotent upserts (a row written twice
// with the same totals leaves the store as if written once; a later write of the
// same key replaces the earlier one, never adds to it).
//
// Implementations: embedstore (embedded, pure Go, the default) and, for scale-out,
// ClickHouse. analyticstest holds the conformance suite every implementation passes.
// Implementations are safe for concurrent use.
package analytics

import (
	"context"
	"errors"
	"time"
)

// Row is the absolute totals of one (ad_id, country, minute) window. Country is
// an ISO 3166-1 alpha-2 code or "" when unknown.
type Row struct {
	AdID    string
	Country string
	Start   time.Time // UTC, a whole minute
	Clicks  int64     // valid, deduplicated
	Bot     int64     // invalid: bot_user_agent
	IPRate  int64     // invalid: ip_rate
	// Duplicates and TooLate count clicks that were left out of every window;
	// they are reported in the row of the window their ad and country were
	// attributed to (see the aggregator) so that quality reports can filter them
	// by ad and time.
	Duplicates int64
	TooLate    int64
}

// Invalid returns the row's invalid clicks, all reasons together.
func (r Row) Invalid() int64 { return r.Bot + r.IPRate }

// Granularity is the width of a series' buckets.
type Granularity time.Duration

const (
	Minute = Granularity(time.Minute)
	Hour   = Granularity(time.Hour)
	Day    = Granularity(24 * time.Hour)
)

// Point is one bucket of a series: the sum of the rows whose Start falls in
// [Start, Start+granularity).
type Point struct {
	Start   time.Time // UTC, truncated to the granularity
	Clicks  int64
	Invalid int64
}

// AdClicks is one line of a top-ads answer.
type AdClicks struct {
	AdID   string
	Clicks int64
}

// Quality sums the traffic-quality columns of the rows of a query.
type Quality struct {
	Valid, Bot, IPRate, Duplicates, TooLate int64
}

// Fenced is implemented by stores that aggregators in several processes
// share (ClickHouse). A partition's owner writes with an epoch, a fencing
// token that rises with every change of owner: a row written with a lower
// epoch never replaces one written with a higher epoch, whatever the order in
// which they arrive, so a process that lost its partitions but still runs (a
// zombie) cannot overwrite its successor's totals.
type Fenced interface {
	// MinEpoch returns an epoch whose writes replace every row the store has
	// seen or written, through Upsert or UpsertEpoch with lower epochs.
	MinEpoch() uint64
	// UpsertEpoch is Upsert for a writer that holds epoch (at least 1).
	UpsertEpoch(ctx context.Context, epoch uint64, rows []Row) error
}

// ErrClosed is returned by a closed store.
var ErrClosed = errors.New("analytics: store is closed")

// Store holds window totals. Time ranges are half-open, [from, to), on the
// rows' Start; an empty country or ad id means all of them.
type Store interface {
	// Upsert writes absolute totals. Rows of one call are applied atomically: a
	// reader sees all of them or none.
	Upsert(ctx context.Context, rows []Row) error
	// Series returns the non-empty buckets of one ad between from and to in
	// ascending order, summed over countries unless country is set. Buckets hold
	// rows whose Start is in [from, to), so a from or to inside a bucket cuts it.
	Series(ctx context.Context, adID, country string, from, to time.Time, g Granularity) ([]Point, error)
	// Top returns the limit ads with the most clicks between from and to, by
	// clicks descending then ad id ascending; ads with no valid click are left out.
	Top(ctx context.Context, country string, from, to time.Time, limit int) ([]AdClicks, error)
	// Quality sums the rows between from and to, of one ad when adID is set.
	Quality(ctx context.Context, adID string, from, to time.Time) (Quality, error)
	Close() error
}
