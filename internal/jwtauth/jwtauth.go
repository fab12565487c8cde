package jwtauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/pedal-project/pedal/internal/safehttp"
)

// Verification outcomes. Every error from [Verifier.Verify] and
// [BearerToken] wraps exactly one of them; at the HTTP edge all of them mean
// 401 Unauthorized. Other errors (a failing [Revocations] store) are internal.
var (
	ErrMissingToken = errors.New("jwtauth: missing bearer token")
	ErrInvalidToken = errors.New("jwtauth: invalid token")
	ErrExpired      = errors.New("jwtauth: token expired")
	ErrRevoked      = errors.New("jwtauth: token revoked")
)

// Role is the caller's role, from the token's "role" claim.
type Role string

// Roles. A token without a role claim has RoleUser.
const (
	RoleUser  Role = "user"
	RoleAdmin Role = "admin"
)

func (r Role) valid() bool { return r == RoleUser || r == RoleAdmin }

// Claims are the verified contents of a token.
type Claims struct {
	Subject   string    // sub, never empty
	Role      Role      // role, RoleUser or RoleAdmin
	ID        string    // jti, may be empty
	ExpiresAt time.Time // exp
}

// Defaults for the zero values of Config fields.
const (
	DefaultLeeway        = 30 * time.Second
	DefaultCacheSize     = 100_000
	DefaultJWKSRefresh   = time.Hour
	DefaultJWKSRefetch   = time.Minute
	DefaultJWKSTimeout   = 10 * time.Second
	maxTokenLen          = 8 << 10 // bytes; larger tokens are rejected unparsed
	maxJWKSBody          = 1 << 20 // bytes
	jwksRateLimitWaitMax = 5 * time.Second
)

// Config configures a [Verifier]. At least one of HMACKey and JWKSURL must be
// set.
type Config struct {
	// HMACKey enables HS256 with this key, at least MinKeyLen bytes.
	HMACKey []byte
	// JWKSURL enables RS256, ES256 and EdDSA with the keys of the JWKS
	// document at this http(s) URL. It is operator configuration.
	JWKSURL string
	// JWKSRefresh is how often the JWKS is refetched in the background;
	// zero means DefaultJWKSRefresh.
	JWKSRefresh time.Duration
	// JWKSRefetch is the minimum time between refetches caused by a token
	// naming an unknown kid; zero means DefaultJWKSRefetch.
	JWKSRefetch time.Duration
	// JWKSTimeout bounds each JWKS request; zero means DefaultJWKSTimeout.
	JWKSTimeout time.Duration
	// JWKSHTTP configures the SSRF-safe client that fetches the JWKS (its
	// Timeout and MaxBodyBytes are set by this package). An identity provider
	// on a private network or port needs AllowCIDRs and AllowedPorts.
	JWKSHTTP safehttp.Config
	// OnJWKSError, if set, is called when a JWKS refresh fails (the previous
	// keys stay in use). It must be safe for concurrent use.
	OnJWKSError func(ctx context.Context, err error)

	// Issuer and Audience, if set, must match the iss and aud claims.
	Issuer, Audience string
	// Leeway is the clock skew allowed on exp, nbf and iat; zero means
	// DefaultLeeway, a negative value none.
	Leeway time.Duration
	// CacheSize bounds the session cache; zero means DefaultCacheSize, a
	// negative value disables the cache.
	CacheSize int
	// Revocations stores revoked tokens; nil means a new MemoryRevocations.
	Revocations Revocations
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier verifies tokens. It is safe for concurrent use.
type Verifier struct {
	hmacKey     []byte
	jwks        keyfunc.Keyfunc // nil without JWKSURL
	parser      *jwt.Parser
	methods     []string // allowed algorithms
	leeway      time.Duration
	cache       *sessionCache // nil if disabled
	revocations Revocations
	now         func() time.Time
	// keyFunc finds the key for a token; a field so that tests can count
	// and sabotage key lookups.
	keyFunc func(ctx context.Context) jwt.Keyfunc

	stop      context.CancelFunc // ends the JWKS refresh
	closeIdle func()             // closes the JWKS client's idle connections
	closeOnce sync.Once
}

// New returns a Verifier for cfg. With a JWKS URL it fetches the JWKS before
// returning, failing if that is impossible; ctx bounds that fetch, and the
// background refresh runs until [Verifier.Close].
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	if cfg.HMACKey == nil && cfg.JWKSURL == "" {
		return nil, errors.New("jwtauth: no HMAC key and no JWKS URL configured; set at least one")
	}
	if cfg.HMACKey != nil && len(cfg.HMACKey) < MinKeyLen {
		return nil, fmt.Errorf("jwtauth: HMAC key is %d bytes, want at least %d", len(cfg.HMACKey), MinKeyLen)
	}
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	case cfg.Leeway < 0:
		cfg.Leeway = 0
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Revocations == nil {
		cfg.Revocations = NewMemoryRevocations(0, cfg.Now)
	}
	v := &Verifier{
		leeway:      cfg.Leeway,
		revocations: cfg.Revocations,
		now:         cfg.Now,
		stop:        func() {},
		closeIdle:   func() {},
	}
	v.keyFunc = v.lookupKey
	if cfg.CacheSize > 0 {
		v.cache = newSessionCache(cfg.CacheSize)
	}
	var methods []string
	if cfg.HMACKey != nil {
		v.hmacKey = append([]byte(nil), cfg.HMACKey...)
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if cfg.JWKSURL != "" {
		if err := v.startJWKS(ctx, cfg); err != nil {
			return nil, err
		}
		methods = append(methods, jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg(), jwt.SigningMethodEdDSA.Alg())
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser, v.methods = jwt.NewParser(opts...), methods
	return v, nil
}

func (v *Verifier) startJWKS(ctx context.Context, cfg Config) error {
	u, err := url.Parse(cfg.JWKSURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("jwtauth: JWKS URL %q is not an absolute http(s) URL", cfg.JWKSURL)
	}
	refresh, refetch, timeout := cfg.JWKSRefresh, cfg.JWKSRefetch, cfg.JWKSTimeout
	if refresh <= 0 {
		refresh = DefaultJWKSRefresh
	}
	if refetch <= 0 {
		refetch = DefaultJWKSRefetch
	}
	if timeout <= 0 {
		timeout = DefaultJWKSTimeout
	}
	onErr := cfg.OnJWKSError
	if onErr == nil {
		onErr = func(context.Context, error) {}
	}
	hc := cfg.JWKSHTTP
	hc.Timeout, hc.MaxBodyBytes = timeout, maxJWKSBody
	client := safehttp.NewClient(hc)
	v.closeIdle = client.CloseIdleConnections

	// The refresh goroutine lives until Close, not until ctx ends; ctx only
	// bounds the first fetch.
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	stopAfter := context.AfterFunc(ctx, stop)
	defer stopAfter()
	noErrorFirst := false
	jwks, err := keyfunc.NewDefaultOverrideCtx(bg, []string{cfg.JWKSURL}, keyfunc.Override{
		Client:                    client,
		HTTPTimeout:               timeout,
		NoErrorReturnFirstHTTPReq: &noErrorFirst,
		RateLimitWaitMax:          jwksRateLimitWaitMax,
		RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
			return onErr
		},
		RefreshInterval:   refresh,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(refetch), 1),
	})
	if err != nil {
		stop()
		client.CloseIdleConnections()
		return fmt.Errorf("jwtauth: fetch JWKS from %s: %w", cfg.JWKSURL, err)
	}
	if !stopAfter() { // ctx ended during the fetch, which happened to succeed
		stop()
		client.CloseIdleConnections()
		return fmt.Errorf("jwtauth: fetch JWKS from %s: %w", cfg.JWKSURL, context.Cause(ctx))
	}
	v.jwks, v.stop = jwks, stop
	return nil
}

// Close stops the background JWKS refresh. Verify keeps working with the keys
// already fetched, but no longer refetches.
func (v *Verifier) Close() {
	v.closeOnce.Do(func() {
		v.stop()
		v.closeIdle()
	})
}

// Verify checks token and returns its claims. A token verified before and
// still before its exp is answered from the session cache without checking
// its signature again; revocation is checked either way.
func (v *Verifier) Verify(ctx context.Context, token string) (Claims, error) {
	if token == "" {
		return Claims{}, fmt.Errorf("%w: empty token", ErrMissingToken)
	}
	if len(token) > maxTokenLen {
		return Claims{}, fmt.Errorf("%w: token longer than %d bytes", ErrInvalidToken, maxTokenLen)
	}
	h := sha256.Sum256([]byte(token))
	if v.cache != nil {
		if cl, ok := v.cache.get(h, v.now()); ok {
			return cl, v.checkRevoked(ctx, cl, h)
		}
	}
	cl, err := v.verify(ctx, token)
	if err != nil {
		return Claims{}, err
	}
	if err := v.checkRevoked(ctx, cl, h); err != nil {
		return Claims{}, err
	}
	if v.cache != nil {
		v.cache.put(h, cl, v.now())
	}
	return cl, nil
}

// Revoke revokes token, which must be valid, until its expiry (plus the
// leeway): from then on Verify reports ErrRevoked for it. Revoking a revoked
// token succeeds. The token is revoked by its jti if it has one, else by its
// hash.
func (v *Verifier) Revoke(ctx context.Context, token string) error {
	cl, err := v.Verify(ctx, token)
	switch {
	case errors.Is(err, ErrRevoked):
		return nil
	case err != nil:
		return fmt.Errorf("jwtauth: revoke: %w", err)
	}
	h := sha256.Sum256([]byte(token))
	if err := v.revocations.Revoke(ctx, revocationID(cl, h), cl.ExpiresAt.Add(v.leeway)); err != nil {
		return fmt.Errorf("jwtauth: revoke: %w", err)
	}
	if v.cache != nil {
		v.cache.remove(h)
	}
	return nil
}

func revocationID(cl Claims, h [32]byte) string {
	if cl.ID != "" {
		return "jti:" + cl.ID
	}
	return "sha256:" + hex.EncodeToString(h[:])
}

func (v *Verifier) checkRevoked(ctx context.Context, cl Claims, h [32]byte) error {
	revoked, err := v.revocations.Revoked(ctx, revocationID(cl, h))
	if err != nil {
		return fmt.Errorf("jwtauth: check revocation: %w", err)
	}
	if revoked {
		return ErrRevoked
	}
	return nil
}

// tokenClaims is the JSON form of a token's claims.
type tokenClaims struct {
	jwt.RegisteredClaims
	Role string `json:"role,omitempty"`
}

// verify does the full verification: signature, algorithm, time and
// registered claims, then pedal's own claims.
func (v *Verifier) verify(ctx context.Context, token string) (Claims, error) {
	var tc tokenClaims
	if t, err := v.parser.ParseWithClaims(token, &tc, v.keyFunc(ctx)); err != nil {
		switch {
		case errors.Is(err, jwt.ErrTokenExpired):
			return Claims{}, ErrExpired
		case errors.Is(err, jwt.ErrTokenSignatureInvalid) && !slices.Contains(v.methods, t.Method.Alg()):
			// jwt's message would quote the alg header.
			return Claims{}, fmt.Errorf("%w: signing algorithm is not allowed", ErrInvalidToken)
		}
		// Otherwise jwt's messages are fixed phrases (plus, for malformed
		// JSON, encoding/json's) that never quote the token.
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if tc.Subject == "" {
		return Claims{}, fmt.Errorf("%w: sub claim is missing or empty", ErrInvalidToken)
	}
	role := Role(tc.Role)
	if role == "" {
		role = RoleUser
	}
	if !role.valid() {
		return Claims{}, fmt.Errorf("%w: role claim is neither %q nor %q", ErrInvalidToken, RoleUser, RoleAdmin)
	}
	return Claims{
		Subject:   tc.Subject,
		Role:      role,
		ID:        tc.ID,
		ExpiresAt: tc.ExpiresAt.Time, // WithExpirationRequired: never nil here
	}, nil
}

// lookupKey returns the key for a token, of the Go type that the token's
// algorithm needs: a []byte only for HS256 and only from the configured
// secret, public keys only from the JWKS.
func (v *Verifier) lookupKey(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		switch alg {
		case jwt.SigningMethodHS256.Alg():
			if v.hmacKey == nil {
				return nil, errors.New("HS256 is not enabled")
			}
			return v.hmacKey, nil
		case jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg(), jwt.SigningMethodEdDSA.Alg():
		default:
			return nil, errors.New("algorithm is not allowed")
		}
		if v.jwks == nil {
			return nil, errors.New("no JWKS configured for asymmetric algorithms")
		}
		k, err := v.jwks.KeyfuncCtx(ctx)(t)
		if err != nil {
			// keyfunc's messages quote the kid; say it without them.
			return nil, errors.New("no JWKS key matches the token's kid and alg")
		}
		if set, ok := k.(jwt.VerificationKeySet); ok { // token without kid: try every key that fits
			var fit jwt.VerificationKeySet
			for _, key := range set.Keys {
				if keyFits(alg, key) {
					fit.Keys = append(fit.Keys, key)
				}
			}
			if len(fit.Keys) == 0 {
				return nil, errors.New("no JWKS key fits the token's alg")
			}
			return fit, nil
		}
		if !keyFits(alg, k) {
			return nil, errors.New("the JWKS key named by kid does not fit the token's alg")
		}
		return k, nil
	}
}

// keyFits reports whether key is a public key of the type alg needs.
func keyFits(alg string, key any) bool {
	switch alg {
	case jwt.SigningMethodRS256.Alg():
		k, ok := key.(*rsa.PublicKey)
		return ok && k.N.BitLen() >= 2048
	case jwt.SigningMethodES256.Alg():
		k, ok := key.(*ecdsa.PublicKey)
		return ok && k.Curve == elliptic.P256()
	case jwt.SigningMethodEdDSA.Alg():
		_, ok := key.(ed25519.PublicKey)
		return ok
	}
	return false
}
