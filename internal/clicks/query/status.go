package query

import (
	"cmp"
	"math"
	"net/http"
	"slices"

	"github.com/pedal-project/pedal/internal/httpjson"
)

type statusResponse struct {
	Partitions                  []partitionLine `json:"partitions"`
	EventsInPerSecond           float64         `json:"events_in_per_second"`
	EventsOutPerSecond          float64         `json:"events_out_per_second"`
	OldestUnprocessedAgeSeconds float64         `json:"oldest_unprocessed_event_age_seconds"`
	FreshnessSeconds            *float64        `json:"freshness_seconds"` // null: nothing processed yet
}

type partitionLine struct {
	Partition       int32   `json:"partition"`
	LogEndOffset    int64   `json:"log_end_offset"`
	CommittedOffset int64   `json:"committed_offset"`
	Lag             int64   `json:"lag"`
	Watermark       *string `json:"watermark"` // null: no click yet
}

// HandleStatus serves GET /v1/pipeline/status: per partition, how far the
// aggregator has read and its watermark; overall, throughput, the age of the
// oldest click not yet processed (0 when caught up) and freshness, how far
// behind the wall clock the newest queryable click is (null before the first).
func (a *API) HandleStatus() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := parseParams(r); err != nil {
			badRequest(w, r, err)
			return
		}
		st, err := a.pipeline.Status(r.Context())
		if err != nil {
			a.failed(w, r, "reading the pipeline status", err)
			return
		}
		resp := statusResponse{
			Partitions:                  make([]partitionLine, len(st.Partitions)),
			EventsInPerSecond:           rate(st.EventsInPerSecond),
			EventsOutPerSecond:          rate(st.EventsOutPerSecond),
			OldestUnprocessedAgeSeconds: max(st.OldestUnprocessedAge.Seconds(), 0),
		}
		if st.Freshness != -1 {
			// Clicks may be stamped a little ahead of the server's clock, which
			// makes freshness negative: report that as fully fresh.
			f := max(st.Freshness.Seconds(), 0)
			resp.FreshnessSeconds = &f
		}
		for i, p := range st.Partitions {
			line := partitionLine{
				Partition:       p.Partition,
				LogEndOffset:    p.LogEndOffset,
				CommittedOffset: p.CommittedOffset,
				// The two offsets may be read at slightly different moments;
				// never report a negative lag.
				Lag: max(p.LogEndOffset-p.CommittedOffset, 0),
			}
			if !p.Watermark.IsZero() {
				wm := formatTime(p.Watermark)
				line.Watermark = &wm
			}
			resp.Partitions[i] = line
		}
		slices.SortFunc(resp.Partitions, func(x, y partitionLine) int { return cmp.Compare(x.Partition, y.Partition) })
		httpjson.Encode(w, http.StatusOK, resp)
	})
}

// rate returns x as a rate to report: 0 for NaN and infinities, which JSON
// cannot carry, and for negative values, which no rate has.
func rate(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) || x < 0 {
		return 0
	}
	return x
}
