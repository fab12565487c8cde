package ingest

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/clicks/clicktoken"
	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/httpjson"
)

// RedirectConfig configures redirect clicks.
type RedirectConfig struct {
	Key *clicktoken.Key // required
	// TrustedProxies are the peers whose X-Forwarded-For is believed; from anyone
	// else the header is ignored and the connection's address is the client's.
	TrustedProxies []netip.Prefix
	// PublicURL is the base of minted click URLs, e.g. https://clk.example.com.
	PublicURL string
}

// Redirects serves GET /v1/r/{token} and POST /v1/ads/{ad_id}/click-urls.
type Redirects struct {
	s   *Service
	cfg RedirectConfig
}

// Redirects returns the redirect-click handlers, which share s's log and metrics.
func (s *Service) Redirects(cfg RedirectConfig) (*Redirects, error) {
	if cfg.Key == nil {
		return nil, errors.New("redirects: a click signing key is required")
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	return &Redirects{s: s, cfg: cfg}, nil
}

// HandleRedirect serves GET /v1/r/{token}: a valid token records a click and
// answers 302 to the token's destination; anything else is a 404 that redirects
// nowhere.
func (rd *Redirects) HandleRedirect() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := rd.s
		now := s.cfg.Now()
		claims, err := rd.cfg.Key.Verify(r.PathValue("token"), now)
		if err != nil {
			outcome := "invalid_token"
			if errors.Is(err, clicktoken.ErrExpired) {
				outcome = "expired_token"
			}
			s.m.redirects.WithLabelValues(outcome).Inc()
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusNotFound, Detail: "unknown or expired click link"})
			return
		}
		ua := r.UserAgent()
		if len(ua) > clicks.MaxUserAgentLen {
			ua = ua[:clicks.MaxUserAgentLen]
		}
		c := clicks.Click{
			ClickID:    claims.ImpressionID,
			AdID:       claims.AdID,
			Time:       now,
			ReceivedAt: now,
			IP:         clientIP(r, rd.cfg.TrustedProxies),
			UserAgent:  ua,
			Source:     clicks.SourceRedirect,
		}
		var buf [512]byte
		rec := [1]eventlog.Record{{
			Partition: eventlog.PartitionForString(c.AdID, s.cfg.Partitions),
			Timestamp: now,
			Value:     c.AppendBinary(buf[:0]),
		}}
		// Once started, the append finishes even if the user goes away.
		err = s.log.Append(context.WithoutCancel(r.Context()), clicks.Topic, rec[:])
		if err != nil {
			// The user still reaches the advertiser: a lost redirect is worse for
			// everyone than an unbilled click. The click is counted as unrecorded.
			s.m.redirects.WithLabelValues("unrecorded").Inc()
			s.logger.ErrorContext(r.Context(), "record redirect click", "err", err, "ad_id", c.AdID)
		} else {
			s.m.recorded.Inc()
		}
		h := w.Header()
		h["Location"] = []string{claims.Destination}
		h["Cache-Control"] = noStore // every click must reach us
		w.WriteHeader(http.StatusFound)
	})
}

var noStore = []string{"no-store"}

// clientIP returns the address of the client: the connection's peer, or, when the
// peer is a trusted proxy, the right-most X-Forwarded-For entry that is not one.
func clientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	ip := peer.Addr().Unmap()
	if len(trusted) == 0 || !isTrusted(ip, trusted) {
		return ip
	}
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		parts := strings.Split(xff[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return ip // a garbled hop: trust nothing before it
			}
			a = a.Unmap()
			if !isTrusted(a, trusted) {
				return a
			}
			ip = a
		}
	}
	return ip
}

func isTrusted(ip netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ClickURLRequest is the body of POST /v1/ads/{ad_id}/click-urls.
type ClickURLRequest struct {
	Destination  string `json:"destination"`
	ImpressionID string `json:"impression_id,omitempty"`
	TTLSeconds   *int64 `json:"ttl_seconds,omitempty"`
}

// ClickURLResponse describes a minted click URL.
type ClickURLResponse struct {
	URL          string    `json:"url"`
	Token        string    `json:"token"`
	AdID         string    `json:"ad_id"`
	ImpressionID string    `json:"impression_id"`
	Destination  string    `json:"destination"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// Limits of minted click URLs.
const (
	DefaultClickTTL = 24 * time.Hour
	MaxClickTTL     = 30 * 24 * time.Hour
)

// HandleMint serves POST /v1/ads/{ad_id}/click-urls.
func (rd *Redirects) HandleMint() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bad := func(field, msg string) {
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusBadRequest, Detail: msg, Extensions: map[string]any{"field": field}})
		}
		var req ClickURLRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		if err := dec.Decode(&req); err != nil {
			bad("", "the body must be a JSON object with destination, and optionally impression_id and ttl_seconds: "+err.Error())
			return
		}
		resp, field, err := rd.Mint(r.PathValue("ad_id"), req, rd.s.cfg.Now())
		if err != nil {
			bad(field, err.Error())
			return
		}
		httpjson.Encode(w, http.StatusCreated, resp)
	})
}

// Mint signs a click URL for adID. On a bad request it names the field at fault.
func (rd *Redirects) Mint(adID string, req ClickURLRequest, now time.Time) (resp ClickURLResponse, field string, err error) {
	if !clicks.ValidID(adID) {
		return resp, "ad_id", fmt.Errorf("ad_id %q must be 1-128 characters of [A-Za-z0-9._:-]", adID)
	}
	if req.Destination == "" {
		return resp, "destination", errors.New("destination is required")
	}
	if err := clicktoken.ValidateDestination(req.Destination); err != nil {
		return resp, "destination", err
	}
	if req.ImpressionID == "" {
		req.ImpressionID = NewImpressionID()
	} else if !clicks.ValidID(req.ImpressionID) {
		return resp, "impression_id", errors.New("impression_id must be 1-128 characters of [A-Za-z0-9._:-]")
	}
	ttl := DefaultClickTTL
	if req.TTLSeconds != nil {
		ttl = time.Duration(*req.TTLSeconds) * time.Second
		if *req.TTLSeconds <= 0 || ttl > MaxClickTTL {
			return resp, "ttl_seconds", fmt.Errorf("ttl_seconds must be between 1 and %d", int64(MaxClickTTL/time.Second))
		}
	}
	exp := now.Add(ttl).Truncate(time.Second)
	tok, err := rd.cfg.Key.Sign(clicktoken.Claims{AdID: adID, ImpressionID: req.ImpressionID, Destination: req.Destination, Expiry: exp})
	if err != nil {
		return resp, "destination", err
	}
	return ClickURLResponse{
		URL:          rd.cfg.PublicURL + "/v1/r/" + tok,
		Token:        tok,
		AdID:         adID,
		ImpressionID: req.ImpressionID,
		Destination:  req.Destination,
		ExpiresAt:    exp.UTC(),
	}, "", nil
}

// NewImpressionID returns a random impression id ("imp_" and 26 base32 characters).
func NewImpressionID() string {
	var b [16]byte
	rand.Read(b[:])
	return "imp_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}
