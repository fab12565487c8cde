// Package loadgentest is a fake pedal server for tests of pedal loadgen: it takes
// clicks with POST /v1/clicks, aggregates them as they arrive with the reference
// model (one model per partition, partitioned by ad like pedal's log), and serves
// the totals with the query API that loadgen.Verify reads:
//
//	GET /v1/ads/{ad_id}/clicks?from=&to=&granularity=1m[&country=]
//	GET /v1/traffic/quality?from=&to=[&ad_id=]
//	GET /v1/pipeline/status
//
// Pedal counts duplicates and too_late clicks in some row of the click's ad; the
// fake counts a duplicate in its own window's row and a too_late click in the row
// of its partition's watermark, so a quality query must span more than the
// clicks' own minutes to see them. Series answers cover at most MaxPoints
// minutes (400 otherwise). It accepts every click (answering 202) and applies it
// before answering. A Server is safe for concurrent use; set its hooks before
// serving.
package loadgentest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pedal-project/pedal/internal/clicks/reference"
	"github.com/pedal-project/pedal/internal/eventlog"
)

// MaxPoints is the most points a series answer may hold, as in pedal.
const MaxPoints = 10_000

// Server is the fake. Its zero value is not usable; see New.
type Server struct {
	// Lag, if set, gives the lag reported for partition 0 at each status poll.
	Lag func() int64
	// Window, if set, alters the totals served for a window (summed over
	// countries) of an ad series.
	Window func(adID string, start time.Time, c reference.Counts) reference.Counts

	mux        *http.ServeMux
	partitions int32

	mu      sync.Mutex
	models  []*reference.Model
	maxTS   []time.Time // per partition
	offsets []int64     // clicks per partition
	quality map[qualityKey]*quality
}

type qualityKey struct {
	adID  string
	start time.Time
}

type quality struct{ valid, bot, ipRate, duplicates, tooLate int64 }

// New returns a server that aggregates by rules over the given number of
// partitions (at least 1).
func New(rules reference.Rules, partitions int) *Server {
	partitions = max(partitions, 1)
	s := &Server{
		mux:        http.NewServeMux(),
		partitions: int32(partitions),
		models:     make([]*reference.Model, partitions),
		maxTS:      make([]time.Time, partitions),
		offsets:    make([]int64, partitions),
		quality:    make(map[qualityKey]*quality),
	}
	for i := range s.models {
		s.models[i] = reference.New(rules)
	}
	s.mux.HandleFunc("POST /v1/clicks", s.postClicks)
	s.mux.HandleFunc("GET /v1/ads/{ad_id}/clicks", s.series)
	s.mux.HandleFunc("GET /v1/traffic/quality", s.trafficQuality)
	s.mux.HandleFunc("GET /v1/pipeline/status", s.status)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Result returns the totals of every partition.
func (s *Server) Result() reference.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.merged()
}

func (s *Server) merged() reference.Result {
	rs := make([]reference.Result, len(s.models))
	for i, m := range s.models {
		rs[i] = m.Result()
	}
	return reference.Merge(rs...)
}

// wireClick is the part of a click object the rules look at.
type wireClick struct {
	ClickID   string `json:"click_id"`
	AdID      string `json:"ad_id"`
	TS        int64  `json:"ts"`
	IP        string `json:"ip"`
	UserAgent string `json:"user_agent"`
	Country   string `json:"country"`
}

func (s *Server) postClicks(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	var cs []wireClick
	switch mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt {
	case "application/json":
		if bytes.HasPrefix(bytes.TrimSpace(body), []byte("[")) {
			err = json.Unmarshal(body, &cs)
		} else {
			cs = make([]wireClick, 1)
			err = json.Unmarshal(body, &cs[0])
		}
	case "application/x-ndjson":
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			var c wireClick
			if err = json.Unmarshal(sc.Bytes(), &c); err != nil {
				break
			}
			cs = append(cs, c)
		}
	default:
		http.Error(w, "unsupported content type "+mt, http.StatusUnsupportedMediaType)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	for _, c := range cs {
		s.add(c)
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, `{"accepted":%d,"rejected":[]}`, len(cs))
}

// add applies one click; s.mu is held.
func (s *Server) add(wc wireClick) {
	p := eventlog.PartitionForString(wc.AdID, s.partitions)
	c := reference.Click{ClickID: wc.ClickID, AdID: wc.AdID, Country: wc.Country, UserAgent: wc.UserAgent, Time: time.UnixMilli(wc.TS).UTC()}
	if ip, err := netip.ParseAddr(wc.IP); err == nil {
		c.IP = ip.String()
	}
	watermark := s.maxTS[p].Add(-30 * time.Second)
	v := s.models[p].Add(c)
	if c.Time.After(s.maxTS[p]) {
		s.maxTS[p] = c.Time
	}
	s.offsets[p]++
	at := c.Time.Truncate(time.Minute)
	if v == reference.TooLate {
		at = watermark.Truncate(time.Minute)
	}
	k := qualityKey{c.AdID, at}
	q := s.quality[k]
	if q == nil {
		q = &quality{}
		s.quality[k] = q
	}
	switch v {
	case reference.Valid:
		q.valid++
	case reference.BotUserAgent:
		q.bot++
	case reference.IPRate:
		q.ipRate++
	case reference.Duplicate:
		q.duplicates++
	case reference.TooLate:
		q.tooLate++
	}
}

// timeRange parses from and to, RFC 3339 instants with from before to.
func timeRange(r *http.Request) (from, to time.Time, err error) {
	from, err = time.Parse(time.RFC3339, r.FormValue("from"))
	if err != nil {
		return from, to, fmt.Errorf("from: %v", err)
	}
	to, err = time.Parse(time.RFC3339, r.FormValue("to"))
	if err != nil {
		return from, to, fmt.Errorf("to: %v", err)
	}
	if !from.Before(to) {
		return from, to, fmt.Errorf("from %v is not before to %v", from, to)
	}
	return from.UTC(), to.UTC(), nil
}

func (s *Server) series(w http.ResponseWriter, r *http.Request) {
	from, to, err := timeRange(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if g := r.FormValue("granularity"); g != "1m" {
		http.Error(w, "granularity: only 1m is served", http.StatusBadRequest)
		return
	}
	if to.Sub(from) > MaxPoints*time.Minute {
		http.Error(w, fmt.Sprintf("more than %d points", MaxPoints), http.StatusBadRequest)
		return
	}
	ad, country := r.PathValue("ad_id"), r.FormValue("country")
	sums := make(map[time.Time]reference.Counts)
	s.mu.Lock()
	for k, c := range s.merged().Windows {
		if k.AdID != ad || (country != "" && k.Country != country) || k.Start.Before(from) || !k.Start.Before(to) {
			continue
		}
		sum := sums[k.Start]
		sum.Clicks += c.Clicks
		sum.Invalid += c.Invalid
		sums[k.Start] = sum
	}
	s.mu.Unlock()
	type point struct {
		WindowStart   string `json:"window_start"`
		Clicks        int64  `json:"clicks"`
		InvalidClicks int64  `json:"invalid_clicks"`
		Final         bool   `json:"final"`
	}
	points := []point{}
	for _, t := range slices.SortedFunc(maps.Keys(sums), time.Time.Compare) {
		c := sums[t]
		if s.Window != nil {
			c = s.Window(ad, t, c)
		}
		points = append(points, point{t.Format(time.RFC3339), c.Clicks, c.Invalid, true})
	}
	writeJSON(w, map[string]any{
		"ad_id": ad, "granularity": "1m", "from": from.Format(time.RFC3339), "to": to.Format(time.RFC3339), "points": points,
	})
}

func (s *Server) trafficQuality(w http.ResponseWriter, r *http.Request) {
	from, to, err := timeRange(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ad := r.FormValue("ad_id")
	var sum quality
	s.mu.Lock()
	for k, q := range s.quality {
		if (ad != "" && k.adID != ad) || k.start.Before(from) || !k.start.Before(to) {
			continue
		}
		sum.valid += q.valid
		sum.bot += q.bot
		sum.ipRate += q.ipRate
		sum.duplicates += q.duplicates
		sum.tooLate += q.tooLate
	}
	s.mu.Unlock()
	writeJSON(w, map[string]any{
		"from": from.Format(time.RFC3339), "to": to.Format(time.RFC3339),
		"valid":      sum.valid,
		"invalid":    map[string]int64{"bot_user_agent": sum.bot, "ip_rate": sum.ipRate},
		"duplicates": sum.duplicates, "too_late": sum.tooLate,
	})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	type partition struct {
		Partition       int32  `json:"partition"`
		LogEndOffset    int64  `json:"log_end_offset"`
		CommittedOffset int64  `json:"committed_offset"`
		Lag             int64  `json:"lag"`
		Watermark       string `json:"watermark"`
	}
	var lag int64
	if s.Lag != nil {
		lag = s.Lag()
	}
	ps := make([]partition, s.partitions)
	s.mu.Lock()
	for i := range ps {
		ps[i] = partition{Partition: int32(i), LogEndOffset: s.offsets[i], CommittedOffset: s.offsets[i]}
		if !s.maxTS[i].IsZero() {
			ps[i].Watermark = s.maxTS[i].Add(-30 * time.Second).Format(time.RFC3339Nano)
		}
	}
	s.mu.Unlock()
	ps[0].Lag = lag
	ps[0].CommittedOffset -= lag
	writeJSON(w, map[string]any{"partitions": ps})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
