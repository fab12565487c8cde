package query

import (
	"net/http"
	"time"

	"github.com/pedal-project/pedal/internal/httpjson"
)

type topResponse struct {
	From    string   `json:"from"`
	To      string   `json:"to"`
	Country string   `json:"country,omitempty"`
	Ads     []adLine `json:"ads"`
}

type adLine struct {
	AdID   string `json:"ad_id"`
	Clicks int64  `json:"clicks"`
}

// HandleTop serves GET /v1/ads/top: the limit ads (default 10, at most 1000)
// with the most valid clicks, in one country or all, between from and to or in
// the window (a Go duration) ending now; by default in the last hour.
func (a *API) HandleTop() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := parseParams(r, "from", "to", "window", "limit", "country")
		if err != nil {
			badRequest(w, r, err)
			return
		}
		limit, err := q.limit()
		if err != nil {
			badRequest(w, r, err)
			return
		}
		country, err := q.country()
		if err != nil {
			badRequest(w, r, err)
			return
		}
		from, to, err := q.topRange(a.clock())
		if err != nil {
			badRequest(w, r, err)
			return
		}
		ads, err := a.store.Top(r.Context(), country, from, to, limit)
		if err != nil {
			a.failed(w, r, "reading the top ads", err)
			return
		}
		resp := topResponse{From: formatTime(from), To: formatTime(to), Country: country, Ads: make([]adLine, len(ads))}
		for i, ad := range ads {
			resp.Ads[i] = adLine{AdID: ad.AdID, Clicks: ad.Clicks}
		}
		httpjson.Encode(w, http.StatusOK, resp)
	})
}

// topRange reads window, or else from and to.
func (p params) topRange(now time.Time) (from, to time.Time, err error) {
	s, ok := p.get("window")
	if !ok {
		return p.timeRange(now)
	}
	for _, other := range []string{"from", "to"} {
		if _, ok := p.get(other); ok {
			return time.Time{}, time.Time{}, &paramError{"window", "give either window or from and to, not both; got window and " + other}
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, time.Time{}, &paramError{"window", "want a positive Go duration such as 5m or 1h30m, got " + quote(s)}
	}
	return now.Add(-d), now, nil
}
