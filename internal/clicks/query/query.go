// Package query serves the click query API: per-ad time series
// (GET /v1/ads/{ad_id}/clicks), the top ads (GET /v1/ads/top), traffic quality
// (GET /v1/traffic/quality) and the state of the aggregation pipeline
// (GET /v1/pipeline/status). It reads window totals from an analytics.Store and
// watermarks and progress from the aggregator through Pipeline.
//
// Times in answers are RFC 3339 in UTC; times in queries may carry any offset.
// Ranges are half-open, [from, to). A parameter the endpoint does not take, or one
// that is malformed, is answered 400 with a problem naming it (in the detail and
// in the "parameter" extension member), before the store is queried.
//
// A series bucket is final once its end is at or before the watermark of the ad's
// partition. The watermark is read before the store, so a bucket is never
// reported final with totals older than the watermark that made it final,
// provided the aggregator makes a window's totals visible in the store before
// it advances the watermark past the window.
//
// An API holds no mutable state; its handlers are safe for concurrent use.
package query

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/httpjson"
)

// Pipeline is what the query API needs from the aggregator.
type Pipeline interface {
	// Watermark returns the event-time watermark of the partition holding adID's
	// clicks: windows ending at or before it are final. ok is false before any click.
	Watermark(adID string) (wm time.Time, ok bool)
	Status(ctx context.Context) (Status, error)
}

// Status is a snapshot of the aggregator's progress.
type Status struct {
	Partitions           []PartitionStatus
	EventsInPerSecond    float64
	EventsOutPerSecond   float64
	OldestUnprocessedAge time.Duration // 0 when caught up
	Freshness            time.Duration // -1 when nothing processed yet
}

// PartitionStatus is the progress of one partition of the clicks topic.
type PartitionStatus struct {
	Partition       int32
	LogEndOffset    int64
	CommittedOffset int64
	Watermark       time.Time // zero: none yet
}

// Config tunes the API. The zero value is ready to use.
type Config struct {
	Now func() time.Time // the wall clock, for default ranges and freshness; nil means time.Now
}

// API holds the query handlers' collaborators.
type API struct {
	now      func() time.Time
	store    analytics.Store
	pipeline Pipeline
	logger   *slog.Logger
}

// New returns the query API. store and p are required; a nil logger discards.
func New(cfg Config, store analytics.Store, p Pipeline, logger *slog.Logger) *API {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &API{now: cfg.Now, store: store, pipeline: p, logger: logger}
}

// clock returns the current time in UTC, rounded up to a whole second so that
// default ranges read well. Rows start on whole minutes, so a range ending at
// the rounded time holds the same rows as one ending at the exact time.
func (a *API) clock() time.Time {
	now := a.now().UTC()
	if t := now.Truncate(time.Second); !t.Equal(now) {
		return t.Add(time.Second)
	}
	return now
}

// failed answers a failed read of the store or the pipeline: 500 with a
// client-safe detail (what failed, never why), the error logged; or nothing at
// all when the request's context is done, since then nobody waits for an answer.
func (a *API) failed(w http.ResponseWriter, r *http.Request, what string, err error) {
	if r.Context().Err() != nil {
		a.logger.DebugContext(r.Context(), "query abandoned", "op", what, "err", err)
		return
	}
	httpjson.Error(w, r, a.logger, http.StatusInternalServerError, what+" failed; retry later", fmt.Errorf("%s: %w", what, err))
}

// formatTime is how answers write times: RFC 3339 in UTC, fractional seconds
// only when there are some.
func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}
