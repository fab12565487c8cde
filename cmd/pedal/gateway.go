package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pedal-project/pedal/internal/gateway"
	"github.com/pedal-project/pedal/internal/gateway/routedb"
	"github.com/pedal-project/pedal/internal/jwtauth"
	"github.com/pedal-project/pedal/internal/principal"
	"github.com/pedal-project/pedal/internal/safehttp"
)

// In-process clusters of pedal serve, besides the gateway's own (admin, auth).
const (
	clusterClicks   = "clicks"
	clusterQuery    = "query"
	clusterMetadata = "metadata"
	clusterOps      = "ops"
)

const jwtKeyFile = "jwt.key"

// defaultRoutes are the routes the first start stores: one per built-in API.
func defaultRoutes() []routedb.Route {
	r := func(id, pattern, cluster, auth string, timeout time.Duration) routedb.Route {
		return routedb.Route{ID: id, PathPattern: pattern, TargetCluster: cluster, MaxConcurrency: 1000, IsActive: true,
			Auth: auth, Timeout: timeout}
	}
	const (
		pub   = routedb.AuthPublic
		authn = routedb.AuthAuthenticated
		admin = routedb.AuthAdmin
	)
	collect := r("metadata-collect", "POST /v1/metadata/collect", clusterMetadata, authn, 10*time.Second)
	collect.RateLimitPerMinute, collect.RateLimitBurst = 600, 60
	return []routedb.Route{
		r("ops-healthz", "GET /healthz", clusterOps, pub, 5*time.Second),
		r("ops-readyz", "GET /readyz", clusterOps, pub, 5*time.Second),
		r("ops-metrics", "GET /metrics", clusterOps, pub, 30*time.Second),
		r("clicks-ingest", "POST /v1/clicks", clusterClicks, authn, 30*time.Second),
		r("clicks-redirect", "GET /v1/r/{token}", clusterClicks, pub, 5*time.Second),
		r("clicks-mint-url", "POST /v1/ads/{ad_id}/click-urls", clusterClicks, authn, 5*time.Second),
		r("query-series", "GET /v1/ads/{ad_id}/clicks", clusterQuery, authn, 30*time.Second),
		r("query-top", "GET /v1/ads/top", clusterQuery, authn, 30*time.Second),
		r("query-quality", "GET /v1/traffic/quality", clusterQuery, authn, 30*time.Second),
		r("pipeline-status", "GET /v1/pipeline/status", clusterQuery, authn, 30*time.Second),
		r("pipeline-recount-start", "POST /v1/pipeline/recounts", clusterQuery, admin, 30*time.Second),
		r("pipeline-recount", "GET /v1/pipeline/recounts/{id}", clusterQuery, admin, 30*time.Second),
		collect,
		r("metadata-task", "GET /v1/metadata/tasks/{task_id}", clusterMetadata, authn, 10*time.Second),
		r("admin", "/v1/admin/", gateway.ClusterAdmin, admin, 10*time.Second),
		r("auth-revoke", "POST /v1/auth/revoke", gateway.ClusterAuth, authn, 5*time.Second),
	}
}

func defaultClusters() []routedb.Cluster {
	var cs []routedb.Cluster
	for _, name := range []string{clusterOps, clusterClicks, clusterQuery, clusterMetadata, gateway.ClusterAdmin, gateway.ClusterAuth} {
		cs = append(cs, routedb.Cluster{Name: name, Kind: routedb.KindInProcess, Balancing: routedb.RoundRobin, MaxConcurrency: 10000})
	}
	return cs
}

// jwtKey returns the HS256 key: --jwt-secret, else the data dir's key file,
// generated at the first start when create is set.
func jwtKey(secretHex, dataDir string, create bool) ([]byte, error) {
	if secretHex != "" {
		k, err := jwtauth.ParseKey(secretHex)
		if err != nil {
			return nil, fmt.Errorf("--jwt-secret: %w", err)
		}
		return k, nil
	}
	path := filepath.Join(dataDir, jwtKeyFile)
	if !create {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("JWT key: %w (start pedal serve once with this --data-dir, or pass --jwt-secret)", err)
		}
	}
	k, err := jwtauth.LoadOrCreateKey(path)
	if err != nil {
		return nil, fmt.Errorf("JWT key: %w", err)
	}
	return k, nil
}

// authenticator adapts a jwtauth.Verifier to the gateway.
type authenticator struct{ v *jwtauth.Verifier }

func (a authenticator) Token(r *http.Request) (string, error) { return jwtauth.BearerToken(r) }

func (a authenticator) Authenticate(ctx context.Context, tok string) (principal.Principal, error) {
	c, err := a.v.Verify(ctx, tok)
	switch {
	case err == nil:
	case errors.Is(err, jwtauth.ErrMissingToken), errors.Is(err, jwtauth.ErrInvalidToken),
		errors.Is(err, jwtauth.ErrExpired), errors.Is(err, jwtauth.ErrRevoked):
		return principal.Principal{}, err
	default: // not the token's fault: e.g. the revocation store is unreachable
		return principal.Principal{}, fmt.Errorf("%w: %v", gateway.ErrAuthUnavailable, err)
	}
	return principal.Principal{Subject: c.Subject, Role: string(c.Role)}, nil
}

func (a authenticator) Revoke(ctx context.Context, tok string) (principal.Principal, error) {
	p, err := a.Authenticate(ctx, tok)
	if err != nil {
		return p, err
	}
	return p, a.v.Revoke(ctx, tok)
}

// newVerifier builds the token verifier of cfg.
func newVerifier(ctx context.Context, cfg serveConfig, revocations jwtauth.Revocations) (*jwtauth.Verifier, error) {
	key, err := jwtKey(cfg.JWTSecret, cfg.DataDir, true)
	if err != nil {
		return nil, err
	}
	jc := jwtauth.Config{HMACKey: key, JWKSURL: cfg.JWKSURL, Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, Revocations: revocations}
	if cfg.JWKSURL != "" {
		// The identity provider is the operator's: reachable wherever it is.
		jc.JWKSHTTP = safehttp.Config{AllowCIDRs: cfg.JWKSAllowCIDRs, AllowedPorts: cfg.JWKSAllowedPorts}
	}
	v, err := jwtauth.New(ctx, jc)
	if err != nil {
		return nil, fmt.Errorf("JWT verifier: %w", err)
	}
	return v, nil
}

// runToken mints a token for the embedded default's HS256 key.
func runToken(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := newFlags("token", getenv, stderr)
	f.Usage = func() {
		fmt.Fprint(f.Output(), "Usage: pedal token --sub SUBJECT [--role user|admin] [flags]\n\n"+
			"Prints a JWT (HS256) that pedal serve with the same --data-dir (or --jwt-secret) accepts.\n\nFlags:\n")
		f.PrintDefaults()
	}
	dataDir := f.String("data-dir", "./pedal-data", "data directory of the pedal serve whose key signs the token")
	secret := f.String("jwt-secret", "", "hex HS256 key (at least 32 bytes), instead of the data dir's")
	sub := f.String("sub", "", "the token's subject (required)")
	role := f.String("role", "user", "user or admin")
	ttl := f.Duration("ttl", 24*time.Hour, "how long the token is valid")
	iss := f.String("jwt-issuer", "pedal", "iss claim (must match pedal serve's --jwt-issuer)")
	aud := f.String("jwt-audience", "pedal", "aud claim (must match pedal serve's --jwt-audience)")
	if err := f.parse(args); err != nil {
		return err
	}
	if strings.TrimSpace(*sub) == "" {
		return errors.New("--sub: required")
	}
	if *role != principal.RoleUser && *role != principal.RoleAdmin {
		return fmt.Errorf("--role %q: want user or admin", *role)
	}
	if *ttl <= 0 {
		return fmt.Errorf("--ttl %v: want a positive duration", *ttl)
	}
	key, err := jwtKey(*secret, *dataDir, false)
	if err != nil {
		return err
	}
	tok, err := jwtauth.Mint(key, jwtauth.MintClaims{Subject: *sub, Role: jwtauth.Role(*role), Issuer: *iss, Audience: *aud, TTL: *ttl})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
