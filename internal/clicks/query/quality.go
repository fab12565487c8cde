package query

import (
	"fmt"
	"net/http"

	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/httpjson"
)

type qualityResponse struct {
	From       string         `json:"from"`
	To         string         `json:"to"`
	AdID       string         `json:"ad_id,omitempty"`
	Valid      int64          `json:"valid"`
	Invalid    invalidReasons `json:"invalid"`
	Duplicates int64          `json:"duplicates"`
	TooLate    int64          `json:"too_late"`
}

type invalidReasons struct {
	BotUserAgent int64 `json:"bot_user_agent"`
	IPRate       int64 `json:"ip_rate"`
}

// HandleQuality serves GET /v1/traffic/quality: valid, invalid (by reason),
// duplicate and too-late clicks between from and to (default: the last hour), of
// one ad or all.
func (a *API) HandleQuality() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := parseParams(r, "from", "to", "ad_id")
		if err != nil {
			badRequest(w, r, err)
			return
		}
		adID, ok := q.get("ad_id")
		if ok && !clicks.ValidID(adID) {
			badRequest(w, r, &paramError{"ad_id", fmt.Sprintf("want 1 to %d characters from [A-Za-z0-9._:-], got %s", clicks.MaxIDLen, quote(adID))})
			return
		}
		from, to, err := q.timeRange(a.clock())
		if err != nil {
			badRequest(w, r, err)
			return
		}
		got, err := a.store.Quality(r.Context(), adID, from, to)
		if err != nil {
			a.failed(w, r, "reading the traffic quality", err)
			return
		}
		httpjson.Encode(w, http.StatusOK, qualityResponse{
			From:       formatTime(from),
			To:         formatTime(to),
			AdID:       adID,
			Valid:      got.Valid,
			Invalid:    invalidReasons{BotUserAgent: got.Bot, IPRate: got.IPRate},
			Duplicates: got.Duplicates,
			TooLate:    got.TooLate,
		})
	})
}
