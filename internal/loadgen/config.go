package loadgen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pedal-project/pedal/internal/clicks/clicktoken"
)

// Mode selects what loadgen sends.
type Mode string

const (
	// ModeClicks sends batches of clicks with POST /v1/clicks.
	ModeClicks Mode = "clicks"
	// ModeRedirect sends one GET /v1/r/{token} per click.
	ModeRedirect Mode = "redirect"
)

// Format is the body encoding of ModeClicks requests.
type Format string

const (
	// FormatJSON sends a JSON array of click objects (application/json).
	FormatJSON Format = "json"
	// FormatNDJSON sends one click object per line (application/x-ndjson).
	FormatNDJSON Format = "ndjson"
)

// Defaults applied to the zero fields of a Config.
const (
	DefaultTarget      = "http://127.0.0.1:8080"
	DefaultRate        = 350_000 // clicks per second
	DefaultDuration    = 30 * time.Second
	DefaultBatch       = 500
	DefaultConcurrency = 64
	DefaultAds         = 10_000
	DefaultZipfS       = 1.1
	DefaultTimeout     = 10 * time.Second
	DefaultDestination = "https://example.com/landing"
	DefaultTokenTTL    = time.Hour
)

// Limits checked by validation.
const (
	maxRate        = 100_000_000
	maxBatch       = 100_000
	maxConcurrency = 100_000
	maxAds         = 100_000_000
	maxRunIDLen    = 48
)

// Config tunes a run. The zero value is a valid configuration for ModeClicks:
// every zero field takes the default named beside it.
type Config struct {
	// Target is the base URL of the pedal server (default DefaultTarget).
	Target string
	// Token, if set, is sent as a bearer token (pedal's gateway requires one
	// for POST /v1/clicks; redirects are public).
	Token string
	// Mode is ModeClicks (default) or ModeRedirect.
	Mode Mode
	// Rate is the intended number of clicks per second (default DefaultRate). In
	// ModeClicks the request rate is Rate/Batch; in ModeRedirect it is Rate.
	Rate float64
	// Duration is how long the schedule runs (default DefaultDuration).
	Duration time.Duration
	// Batch is the number of clicks per request in ModeClicks (default
	// DefaultBatch). ModeRedirect always sends one click per request.
	Batch int
	// Concurrency bounds the requests in flight (default DefaultConcurrency).
	Concurrency int
	// Format is the ModeClicks body encoding (default FormatJSON).
	Format Format

	// Ads is the number of distinct ad ids, ad-000000 to ad-<Ads-1> (default
	// DefaultAds); they are drawn from a Zipf distribution of exponent ZipfS
	// (default DefaultZipfS, must be > 1), ad-000000 being the most popular.
	Ads   int
	ZipfS float64
	// RunScopedAds names the ads ad-<RunID>-000000 onwards, so that they hold
	// only this run's clicks: what Verify compares.
	RunScopedAds bool

	// Shares of the clicks, each a fraction in [0, 1], together at most 1; the rest
	// are unique, valid clicks. Every kind is drawn so that the aggregates do not
	// depend on the order concurrent requests reach the log (see the package
	// comment).
	//   - DupShare resends an earlier unique click unchanged (same click_id, ad_id,
	//     ts, ip, user agent and country): a duplicate.
	//   - BotShare uses a bot's user agent (Googlebot, bingbot, curl, ...).
	//   - BurstShare sends groups of 12 to 40 clicks from one hot IP on one ad within
	//     one minute (event time), well past 5 per IP, ad and minute. The click id
	//     of a burst click names its group: lg-<run>-<seq>.b<group>.
	//   - LateShare sets ts 2 to 45 minutes in the past, TooLateShare 80 to 90
	//     minutes, beyond the aggregator's late horizon of an hour. Both need
	//     ModeClicks (a redirect is stamped by the server), and an ad with an
	//     acknowledged click of the last 10 minutes; until one is acknowledged
	//     (at the start of a run) these clicks are sent as unique ones.
	DupShare     float64
	BotShare     float64
	BurstShare   float64
	LateShare    float64
	TooLateShare float64

	// Seed seeds everything drawn; zero picks a random seed, reported in the
	// Summary and printed, so a run can be reproduced.
	Seed uint64
	// RunID makes click ids unique across runs: lg-<RunID>-<seq>. Empty picks a
	// random one (it does not come from Seed, so that a reproduced run does not
	// resend the same click ids).
	RunID string

	// Ledger, if set, is a file created (truncated) to hold one line per
	// acknowledged click, in the order of their acknowledgements; see ReadLedger,
	// Expect and Verify.
	Ledger string

	// SigningKey is the click signing secret (at least 16 bytes, pedal uses 32),
	// required in ModeRedirect. A redirect request carries its click's user agent
	// as User-Agent and its IP as X-Forwarded-For (whether the server trusts that
	// header decides whether bursts look like bursts); the ledger leaves the
	// country empty (the server derives it) and its ts is the client's.
	SigningKey []byte
	// Destination is the redirect target put in tokens (default
	// DefaultDestination); it is never fetched.
	Destination string
	// TokenTTL is how long minted tokens stay valid (default DefaultTokenTTL).
	TokenTTL time.Duration

	// Timeout bounds each request (default DefaultTimeout).
	Timeout time.Duration
	// DrainTimeout bounds the wait for requests still in flight once the schedule
	// has ended or ctx is done (default Timeout); then they are aborted.
	DrainTimeout time.Duration
}

// withDefaults returns cfg with defaults applied, or an error naming the first bad
// setting.
func (cfg Config) withDefaults() (Config, error) {
	bad := func(field string, format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("loadgen config: %s: %s", field, fmt.Sprintf(format, args...))
	}

	if cfg.Target == "" {
		cfg.Target = DefaultTarget
	}
	u, err := url.Parse(cfg.Target)
	if err != nil {
		return bad("Target", "%q is not a URL: %v", cfg.Target, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("Target", "%q: want an http or https URL with a host, like %s", cfg.Target, DefaultTarget)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return bad("Target", "%q: want a base URL without user info, query or fragment", cfg.Target)
	}
	cfg.Target = strings.TrimRight(cfg.Target, "/")

	switch cfg.Mode {
	case "":
		cfg.Mode = ModeClicks
	case ModeClicks, ModeRedirect:
	default:
		return bad("Mode", "%q: want %q or %q", cfg.Mode, ModeClicks, ModeRedirect)
	}

	switch {
	case cfg.Rate == 0:
		cfg.Rate = DefaultRate
	case math.IsNaN(cfg.Rate) || cfg.Rate < 0 || cfg.Rate > maxRate:
		return bad("Rate", "%v clicks/s: want a positive rate up to %d", cfg.Rate, maxRate)
	}

	switch {
	case cfg.Duration == 0:
		cfg.Duration = DefaultDuration
	case cfg.Duration < 0:
		return bad("Duration", "%v: must be positive", cfg.Duration)
	}

	switch {
	case cfg.Mode == ModeRedirect:
		cfg.Batch = 1
	case cfg.Batch == 0:
		cfg.Batch = DefaultBatch
	case cfg.Batch < 0 || cfg.Batch > maxBatch:
		return bad("Batch", "%d: want 1 to %d clicks per request", cfg.Batch, maxBatch)
	}
	if reqRate := cfg.Rate / float64(cfg.Batch); float64(cfg.Duration)*reqRate/float64(time.Second) < 1 {
		return bad("Rate", "%v clicks/s in batches of %d for %v schedules no request at all", cfg.Rate, cfg.Batch, cfg.Duration)
	}

	switch {
	case cfg.Concurrency == 0:
		cfg.Concurrency = DefaultConcurrency
	case cfg.Concurrency < 0 || cfg.Concurrency > maxConcurrency:
		return bad("Concurrency", "%d: want 1 to %d requests in flight", cfg.Concurrency, maxConcurrency)
	}

	switch cfg.Format {
	case "":
		cfg.Format = FormatJSON
	case FormatJSON, FormatNDJSON:
	default:
		return bad("Format", "%q: want %q or %q", cfg.Format, FormatJSON, FormatNDJSON)
	}

	switch {
	case cfg.Ads == 0:
		cfg.Ads = DefaultAds
	case cfg.Ads < 0 || cfg.Ads > maxAds:
		return bad("Ads", "%d: want 1 to %d ads", cfg.Ads, maxAds)
	}
	switch {
	case cfg.ZipfS == 0:
		cfg.ZipfS = DefaultZipfS
	case !(cfg.ZipfS > 1) || math.IsInf(cfg.ZipfS, 0):
		return bad("ZipfS", "%v: the Zipf exponent must be greater than 1", cfg.ZipfS)
	}

	sum := 0.0
	for _, s := range []struct {
		name string
		v    float64
	}{{"DupShare", cfg.DupShare}, {"BotShare", cfg.BotShare}, {"BurstShare", cfg.BurstShare}, {"LateShare", cfg.LateShare}, {"TooLateShare", cfg.TooLateShare}} {
		if !(s.v >= 0 && s.v <= 1) {
			return bad(s.name, "%v: want a fraction between 0 and 1", s.v)
		}
		sum += s.v
	}
	if sum > 1+1e-9 {
		return bad("DupShare+BotShare+BurstShare+LateShare+TooLateShare", "%v: the shares add up to more than 1", sum)
	}
	if cfg.Mode == ModeRedirect && cfg.LateShare > 0 {
		return bad("LateShare", "%v: late clicks need ModeClicks (the server stamps a redirect's time)", cfg.LateShare)
	}
	if cfg.Mode == ModeRedirect && cfg.TooLateShare > 0 {
		return bad("TooLateShare", "%v: late clicks need ModeClicks (the server stamps a redirect's time)", cfg.TooLateShare)
	}

	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64() | 1
	}
	if cfg.RunID == "" {
		cfg.RunID = strconv.FormatUint(rand.Uint64()>>32|1<<31, 36)
	}
	if len(cfg.RunID) > maxRunIDLen {
		return bad("RunID", "%q: longer than %d bytes", cfg.RunID, maxRunIDLen)
	}
	for i := 0; i < len(cfg.RunID); i++ {
		if !idByte(cfg.RunID[i]) {
			return bad("RunID", "%q: may hold only A-Z a-z 0-9 . _ : -", cfg.RunID)
		}
	}

	if cfg.Destination == "" {
		cfg.Destination = DefaultDestination
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = DefaultTokenTTL
	} else if cfg.TokenTTL < 0 {
		return bad("TokenTTL", "%v: must be positive", cfg.TokenTTL)
	}
	if cfg.Mode == ModeRedirect {
		if len(cfg.SigningKey) == 0 {
			return bad("SigningKey", "required in redirect mode (the server's click signing key)")
		}
		if _, err := clicktoken.NewKey(cfg.SigningKey); err != nil {
			return bad("SigningKey", "%v", err)
		}
		if err := clicktoken.ValidateDestination(cfg.Destination); err != nil {
			return bad("Destination", "%v", err)
		}
	}

	switch {
	case cfg.Timeout == 0:
		cfg.Timeout = DefaultTimeout
	case cfg.Timeout < 0:
		return bad("Timeout", "%v: must be positive", cfg.Timeout)
	}
	switch {
	case cfg.DrainTimeout == 0:
		cfg.DrainTimeout = cfg.Timeout
	case cfg.DrainTimeout < 0:
		return bad("DrainTimeout", "%v: must be positive", cfg.DrainTimeout)
	}
	return cfg, nil
}

// idByte reports whether c may appear in a click or ad id.
func idByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
}
