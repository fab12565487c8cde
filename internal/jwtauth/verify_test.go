package jwtauth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestVerifyAttacks presents hostile and valid tokens to verifiers configured
// with an HMAC key only, a JWKS only, or both.
func TestVerifyAttacks(t *testing.T) {
	rs, ec, ed := rsaSigner(t), ecSigner(t), edSigner(t)
	srv := newJWKSServer(t, rs, ec, ed)
	clk := newClock(t0)
	base := Config{Issuer: testIssuer, Audience: testAudience, Now: clk.now, CacheSize: -1}
	hmacCfg, jwksCfg, bothCfg := base, base, base
	hmacCfg.HMACKey = hmacKey
	jwksCfg.JWKSURL = srv.URL
	bothCfg.HMACKey, bothCfg.JWKSURL = hmacKey, srv.URL
	verifiers := map[string]*Verifier{
		"hmac": newVerifier(t, hmacCfg),
		"jwks": newVerifier(t, jwksCfg),
		"both": newVerifier(t, bothCfg),
	}

	testKeys(t)
	stranger := signer{"rsa1", jwt.SigningMethodRS256, rsaKey2} // right kid, wrong key
	unknownKid := signer{"nope", jwt.SigningMethodRS256, rsaKey}
	rsaAsEC := signer{"ec1", jwt.SigningMethodRS256, rsaKey} // kid of the EC key
	noKid := signer{"", jwt.SigningMethodRS256, rsaKey}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	confused := signHS(t, rsaPublicPEM(t), claims()) // HS256 keyed with the RSA public key PEM
	valid := signHS(t, hmacKey, claims())

	tests := []struct {
		name  string
		token string
		on    []string // verifiers to present it to
		want  error    // nil: accepted
	}{
		{"valid HS256", valid, []string{"hmac", "both"}, nil},
		{"valid RS256", signWith(t, rs, claims()), []string{"jwks", "both"}, nil},
		{"valid ES256", signWith(t, ec, claims()), []string{"jwks", "both"}, nil},
		{"valid EdDSA", signWith(t, ed, claims()), []string{"jwks", "both"}, nil},
		{"valid RS256 without kid", signWith(t, noKid, claims()), []string{"jwks"}, nil},
		{"admin role", signHS(t, hmacKey, with(claims(), map[string]any{"role": "admin"})), []string{"hmac"}, nil},
		{"no role means user", signHS(t, hmacKey, with(claims(), map[string]any{"role": nil})), []string{"hmac"}, nil},
		{"HS256 without HMAC key", valid, []string{"jwks"}, ErrInvalidToken},
		{"RS256 without JWKS", signWith(t, rs, claims()), []string{"hmac"}, ErrInvalidToken},
		{"alg none", none, []string{"hmac", "jwks", "both"}, ErrInvalidToken},
		{"HS256 keyed with RSA public key", confused, []string{"hmac", "jwks", "both"}, ErrInvalidToken},
		{"expired beyond leeway", signHS(t, hmacKey, with(claims(), map[string]any{"exp": t0.Add(-31 * time.Second).Unix()})), []string{"hmac"}, ErrExpired},
		{"expired within leeway", signHS(t, hmacKey, with(claims(), map[string]any{"exp": t0.Add(-20 * time.Second).Unix()})), []string{"hmac"}, nil},
		{"no exp", signHS(t, hmacKey, with(claims(), map[string]any{"exp": nil})), []string{"hmac"}, ErrInvalidToken},
		{"not yet valid", signHS(t, hmacKey, with(claims(), map[string]any{"nbf": t0.Add(time.Minute).Unix()})), []string{"hmac"}, ErrInvalidToken},
		{"nbf within leeway", signHS(t, hmacKey, with(claims(), map[string]any{"nbf": t0.Add(20 * time.Second).Unix()})), []string{"hmac"}, nil},
		{"issued in the future", signHS(t, hmacKey, with(claims(), map[string]any{"iat": t0.Add(time.Minute).Unix()})), []string{"hmac"}, ErrInvalidToken},
		{"wrong aud", signHS(t, hmacKey, with(claims(), map[string]any{"aud": "other"})), []string{"hmac"}, ErrInvalidToken},
		{"no aud", signHS(t, hmacKey, with(claims(), map[string]any{"aud": nil})), []string{"hmac"}, ErrInvalidToken},
		{"aud list holding ours", signHS(t, hmacKey, with(claims(), map[string]any{"aud": []string{"x", testAudience}})), []string{"hmac"}, nil},
		{"wrong iss", signHS(t, hmacKey, with(claims(), map[string]any{"iss": "https://evil.test"})), []string{"hmac"}, ErrInvalidToken},
		{"bad HS256 signature", flipSignature(valid), []string{"hmac"}, ErrInvalidToken},
		{"bad ES256 signature", flipSignature(signWith(t, ec, claims())), []string{"jwks"}, ErrInvalidToken},
		{"wrong HMAC key", signHS(t, []byte("another key of at least 32 bytes!"), claims()), []string{"hmac"}, ErrInvalidToken},
		{"signed by a stranger", signWith(t, stranger, claims()), []string{"jwks"}, ErrInvalidToken},
		{"unknown kid", signWith(t, unknownKid, claims()), []string{"jwks"}, ErrInvalidToken},
		{"RS256 under the kid of an EC key", signWith(t, rsaAsEC, claims()), []string{"jwks"}, ErrInvalidToken},
		{"missing sub", signHS(t, hmacKey, with(claims(), map[string]any{"sub": nil})), []string{"hmac"}, ErrInvalidToken},
		{"empty sub", signHS(t, hmacKey, with(claims(), map[string]any{"sub": ""})), []string{"hmac"}, ErrInvalidToken},
		{"unknown role", signHS(t, hmacKey, with(claims(), map[string]any{"role": "root"})), []string{"hmac"}, ErrInvalidToken},
		{"role not a string", signHS(t, hmacKey, with(claims(), map[string]any{"role": 1})), []string{"hmac"}, ErrInvalidToken},
		{"malformed", "not-a-jwt", []string{"hmac", "jwks"}, ErrInvalidToken},
		{"three garbage parts", "a.b.c", []string{"hmac", "jwks"}, ErrInvalidToken},
		{"empty", "", []string{"hmac"}, ErrMissingToken},
		{"too long", valid + strings.Repeat("A", maxTokenLen), []string{"hmac"}, ErrInvalidToken},
	}
	for _, tt := range tests {
		for _, name := range tt.on {
			t.Run(tt.name+"/"+name, func(t *testing.T) {
				got, err := verifiers[name].Verify(t.Context(), tt.token)
				if tt.want == nil {
					if err != nil {
						t.Fatalf("Verify: %v, want success", err)
					}
					if got.Subject != "alice" || !got.Role.valid() || got.ExpiresAt.IsZero() {
						t.Errorf("Verify = %+v, want sub alice, a role and an expiry", got)
					}
					return
				}
				if !errors.Is(err, tt.want) {
					t.Fatalf("Verify: %v, want %v", err, tt.want)
				}
				if sig := signature(tt.token); len(sig) > 8 && strings.Contains(err.Error(), sig) || tt.token != "" && strings.Contains(err.Error(), tt.token) {
					t.Errorf("error %q echoes the token", err)
				}
			})
		}
	}
}

func signature(token string) string {
	return token[strings.LastIndexByte(token, '.')+1:]
}

// flipSignature changes one character in the middle of the signature.
func flipSignature(token string) string {
	i := strings.LastIndexByte(token, '.') + 10
	b := []byte(token)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestVerifyClaims(t *testing.T) {
	v := newVerifier(t, Config{HMACKey: hmacKey, Now: newClock(t0).now})
	tok := signHS(t, hmacKey, with(claims(), map[string]any{"role": "admin", "jti": "j-42"}))
	got, err := v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	want := Claims{Subject: "alice", Role: RoleAdmin, ID: "j-42", ExpiresAt: t0.Add(time.Hour)}
	if !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("ExpiresAt = %v, want %v", got.ExpiresAt, want.ExpiresAt)
	}
	got.ExpiresAt = want.ExpiresAt
	if got != want {
		t.Errorf("Verify = %+v, want %+v", got, want)
	}
}

// TestAllowListAloneRejects sabotages the key lookup so that it hands out
// whatever key the attacker needs: the algorithm allow-list must still stop
// alg confusion and "none".
func TestAllowListAloneRejects(t *testing.T) {
	srv := newJWKSServer(t, rsaSigner(t))
	pem := rsaPublicPEM(t)
	for _, cfg := range []Config{{JWKSURL: srv.URL}, {HMACKey: hmacKey}} {
		v := newVerifier(t, Config{JWKSURL: cfg.JWKSURL, HMACKey: cfg.HMACKey, Now: newClock(t0).now, CacheSize: -1})
		v.keyFunc = func(context.Context) jwt.Keyfunc {
			return func(t *jwt.Token) (any, error) {
				if t.Method == jwt.SigningMethodNone {
					return jwt.UnsafeAllowNoneSignatureType, nil
				}
				return pem, nil
			}
		}
		none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
		hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, claims()).SignedString(pem)
		tokens := map[string]string{"none": none, "HS512": hs512}
		if cfg.HMACKey == nil {
			tokens["HS256 on a JWKS verifier"] = signHS(t, pem, claims())
		}
		for name, tok := range tokens {
			if _, err := v.Verify(t.Context(), tok); !errors.Is(err, ErrInvalidToken) {
				t.Errorf("%s: Verify: %v, want ErrInvalidToken", name, err)
			}
		}
	}
}

// TestKeyLookupAloneRejects checks that the key lookup, on its own, hands out
// only keys of the type the token's algorithm needs.
func TestKeyLookupAloneRejects(t *testing.T) {
	rs, ec := rsaSigner(t), ecSigner(t)
	srv := newJWKSServer(t, rs, ec)
	jwksV := newVerifier(t, Config{JWKSURL: srv.URL, Now: newClock(t0).now})
	hmacV := newVerifier(t, Config{HMACKey: hmacKey, Now: newClock(t0).now})
	testKeys(t)
	tests := []struct {
		name  string
		v     *Verifier
		token string
	}{
		{"HS256 with the kid of an RSA key", jwksV, func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims())
			tok.Header["kid"] = "rsa1"
			s, _ := tok.SignedString(rsaPublicPEM(t))
			return s
		}()},
		{"RS256 with the kid of an EC key", jwksV, signWith(t, signer{"ec1", jwt.SigningMethodRS256, rsaKey}, claims())},
		{"ES256 with the kid of an RSA key", jwksV, signWith(t, signer{"rsa1", jwt.SigningMethodES256, ecKey}, claims())},
		{"RS256 without JWKS", hmacV, signWith(t, rs, claims())},
		{"none", hmacV, func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
			return s
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, _, err := jwt.NewParser().ParseUnverified(tt.token, jwt.MapClaims{})
			if err != nil {
				t.Fatal(err)
			}
			if key, err := tt.v.lookupKey(t.Context())(tok); err == nil {
				t.Errorf("lookupKey returned a %T, want an error", key)
			}
		})
	}
}
