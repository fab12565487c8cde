package jwtauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func TestKeyRotation(t *testing.T) {
	testKeys(t)
	oldKey := signer{"k-old", jwt.SigningMethodRS256, rsaKey}
	newKey := signer{"k-new", jwt.SigningMethodRS256, rsaKey2}
	srv := newJWKSServer(t, oldKey)
	v := newVerifier(t, Config{JWKSURL: srv.URL, Now: newClock(t0).now, CacheSize: -1})
	oldTok := signWith(t, oldKey, claims())
	if _, err := v.Verify(t.Context(), oldTok); err != nil {
		t.Fatal(err)
	}

	srv.publish(t, newKey) // the identity provider rotates
	before := srv.requests.Load()
	if _, err := v.Verify(t.Context(), signWith(t, newKey, claims())); err != nil {
		t.Fatalf("token with the new kid: %v", err)
	}
	if got := srv.requests.Load() - before; got != 1 {
		t.Errorf("%d JWKS fetches for the new kid, want 1", got)
	}
	if _, err := v.Verify(t.Context(), oldTok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("token with the retired kid: %v, want ErrInvalidToken", err)
	}
}

func TestUnknownKidRefetchIsRateLimited(t *testing.T) {
	srv := newJWKSServer(t, rsaSigner(t))
	v := newVerifier(t, Config{JWKSURL: srv.URL, Now: newClock(t0).now})
	if got := srv.requests.Load(); got != 1 {
		t.Fatalf("%d JWKS fetches at start, want 1", got)
	}
	testKeys(t)
	for _, kid := range []string{"u1", "u2", "u3"} {
		tok := signWith(t, signer{kid, jwt.SigningMethodRS256, rsaKey}, claims())
		if _, err := v.Verify(t.Context(), tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("kid %s: Verify: %v, want ErrInvalidToken", kid, err)
		}
	}
	if got := srv.requests.Load(); got != 2 {
		t.Errorf("%d JWKS fetches, want 2: one at start, one refetch for unknown kids", got)
	}
}

func TestNewErrors(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	notFound := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notFound.Close)
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	srv := newJWKSServer(t, rsaSigner(t))
	tests := []struct {
		name string
		ctx  context.Context
		cfg  Config
	}{
		{"nothing configured", t.Context(), Config{}},
		{"short HMAC key", t.Context(), Config{HMACKey: []byte("short")}},
		{"JWKS unreachable", t.Context(), Config{JWKSURL: down.URL}},
		{"JWKS 404", t.Context(), Config{JWKSURL: notFound.URL}},
		{"JWKS URL not http", t.Context(), Config{JWKSURL: "file:///etc/passwd"}},
		{"JWKS URL relative", t.Context(), Config{JWKSURL: "/jwks.json"}},
		{"ctx canceled", canceled, Config{JWKSURL: srv.URL}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := New(tt.ctx, allowTestServer(tt.cfg))
			if err == nil {
				v.Close()
				t.Fatal("New succeeded")
			}
			t.Log(err)
		})
	}
}

// TestKeyLookupWithoutJWKAlg serves keys without an "alg" parameter, so that
// only the Verifier's own check ties key type to the token's algorithm.
func TestKeyLookupWithoutJWKAlg(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t)
	srv.publishNoAlg(t, map[string]any{"rsa1": &rsaKey.PublicKey, "ec1": &ecKey.PublicKey})
	v := newVerifier(t, Config{JWKSURL: srv.URL, Now: newClock(t0).now})
	for name, tok := range map[string]string{
		"ES256 with the kid of an RSA key": signWith(t, signer{"rsa1", jwt.SigningMethodES256, ecKey}, claims()),
		"RS256 with the kid of an EC key":  signWith(t, signer{"ec1", jwt.SigningMethodRS256, rsaKey}, claims()),
	} {
		parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
		if err != nil {
			t.Fatal(err)
		}
		if key, err := v.lookupKey(t.Context())(parsed); err == nil {
			t.Errorf("%s: lookupKey returned a %T, want an error", name, key)
		}
	}
	if _, err := v.Verify(t.Context(), signWith(t, signer{"rsa1", jwt.SigningMethodRS256, rsaKey}, claims())); err != nil {
		t.Errorf("matching key and alg: %v", err)
	}
}

func TestKeyFits(t *testing.T) {
	testKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		alg  string
		key  any
		want bool
	}{
		{"RS256", &rsaKey.PublicKey, true},
		{"RS256", &small.PublicKey, false},
		{"RS256", &ecKey.PublicKey, false},
		{"RS256", hmacKey, false},
		{"ES256", &ecKey.PublicKey, true},
		{"ES256", &p384.PublicKey, false},
		{"ES256", edKey.Public(), false},
		{"EdDSA", edKey.Public(), true},
		{"EdDSA", &rsaKey.PublicKey, false},
		{"HS256", hmacKey, false},
	}
	for _, tt := range tests {
		if got := keyFits(tt.alg, tt.key); got != tt.want {
			t.Errorf("keyFits(%s, %T) = %v, want %v", tt.alg, tt.key, got, tt.want)
		}
	}
}

func TestJWKSOnLoopbackBlockedByDefault(t *testing.T) {
	srv := newJWKSServer(t, rsaSigner(t))
	if v, err := New(t.Context(), Config{JWKSURL: srv.URL}); err == nil {
		v.Close()
		t.Fatal("New fetched a loopback JWKS without an explicit allowance")
	}
}
