package query

import (
	"fmt"
	"net/http"
	"time"

	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/httpjson"
)

type seriesResponse struct {
	AdID        string  `json:"ad_id"`
	Granularity string  `json:"granularity"`
	Country     string  `json:"country,omitempty"`
	From        string  `json:"from"`
	To          string  `json:"to"`
	Points      []point `json:"points"`
}

type point struct {
	WindowStart   string `json:"window_start"`
	Clicks        int64  `json:"clicks"`
	InvalidClicks int64  `json:"invalid_clicks"`
	Final         bool   `json:"final"`
}

// HandleSeries serves GET /v1/ads/{ad_id}/clicks: the ad's clicks per bucket of
// granularity (1m, 1h or 1d; default 1m) between from and to (default: the last
// hour), in one country or all, with only the buckets that hold clicks.
func (a *API) HandleSeries() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		adID := r.PathValue("ad_id")
		if !clicks.ValidID(adID) {
			badRequest(w, r, &paramError{"ad_id", fmt.Sprintf("want 1 to %d characters from [A-Za-z0-9._:-], got %s", clicks.MaxIDLen, quote(adID))})
			return
		}
		q, err := parseParams(r, "from", "to", "granularity", "country")
		if err != nil {
			badRequest(w, r, err)
			return
		}
		g, gName, err := q.granularity()
		if err != nil {
			badRequest(w, r, err)
			return
		}
		country, err := q.country()
		if err != nil {
			badRequest(w, r, err)
			return
		}
		from, to, err := q.timeRange(a.clock())
		if err != nil {
			badRequest(w, r, err)
			return
		}
		width := time.Duration(g)
		if to.Sub(from) > maxPoints*width {
			badRequest(w, r, &paramError{"granularity", fmt.Sprintf(
				"from %s to %s spans more than %d buckets of %s; use a coarser granularity or a shorter range",
				formatTime(from), formatTime(to), maxPoints, gName)})
			return
		}

		// The watermark first: see the package comment.
		wm, haveWM := a.pipeline.Watermark(adID)
		pts, err := a.store.Series(r.Context(), adID, country, from, to, g)
		if err != nil {
			a.failed(w, r, "reading the click series", err)
			return
		}
		resp := seriesResponse{
			AdID:        adID,
			Granularity: gName,
			Country:     country,
			From:        formatTime(from),
			To:          formatTime(to),
			Points:      make([]point, len(pts)),
		}
		for i, p := range pts {
			resp.Points[i] = point{
				WindowStart:   formatTime(p.Start),
				Clicks:        p.Clicks,
				InvalidClicks: p.Invalid,
				Final:         haveWM && !p.Start.Add(width).After(wm),
			}
		}
		httpjson.Encode(w, http.StatusOK, resp)
	})
}
