package jwtauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testIssuer   = "https://issuer.test"
	testAudience = "pedal"
)

var (
	t0      = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	hmacKey = []byte("0123456789abcdef0123456789abcdef")
)

// clock is a settable Now hook.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := new(clock)
	c.set(t)
	return c
}
func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

// signer is a private key with the kid and alg under which it is published.
type signer struct {
	kid    string
	method jwt.SigningMethod
	key    crypto.Signer
}

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	rsaKey2  *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
	edKey    ed25519.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if _, edKey, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
	})
}

func rsaSigner(t testing.TB) signer {
	testKeys(t)
	return signer{"rsa1", jwt.SigningMethodRS256, rsaKey}
}
func ecSigner(t testing.TB) signer {
	testKeys(t)
	return signer{"ec1", jwt.SigningMethodES256, ecKey}
}
func edSigner(t testing.TB) signer {
	testKeys(t)
	return signer{"ed1", jwt.SigningMethodEdDSA, edKey}
}

func rsaPublicPEM(t testing.TB) []byte {
	testKeys(t)
	der, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// claims returns valid claims at t0 for the test issuer and audience.
func claims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub":  "alice",
		"role": "user",
		"iss":  testIssuer,
		"aud":  testAudience,
		"iat":  t0.Unix(),
		"nbf":  t0.Unix(),
		"exp":  t0.Add(time.Hour).Unix(),
		"jti":  "id-1",
	}
}

// with returns c with the changes applied; a nil value deletes the claim.
func with(c jwt.MapClaims, changes map[string]any) jwt.MapClaims {
	for k, v := range changes {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func signHS(t testing.TB, key []byte, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func signWith(t testing.TB, s signer, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, c)
	if s.kid != "" {
		tok.Header["kid"] = s.kid
	}
	out, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// jwksServer serves a JWKS that tests can replace, on 127.0.0.1.
type jwksServer struct {
	*httptest.Server
	body     atomic.Pointer[[]byte]
	requests atomic.Int64
}

func newJWKSServer(t testing.TB, signers ...signer) *jwksServer {
	t.Helper()
	s := new(jwksServer)
	s.publish(t, signers...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) publish(t testing.TB, signers ...signer) {
	t.Helper()
	store := jwkset.NewMemoryStorage()
	for _, sg := range signers {
		jwk, err := jwkset.NewJWKFromKey(sg.key.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: sg.kid, ALG: jwkset.ALG(sg.method.Alg()), USE: jwkset.UseSig},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.KeyWrite(t.Context(), jwk); err != nil {
			t.Fatal(err)
		}
	}
	b, err := store.JSONPublic(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	s.body.Store((*[]byte)(&b))
}

// allowTestServer lets the SSRF-safe JWKS client reach httptest servers on
// 127.0.0.1, on any port.
func allowTestServer(cfg Config) Config {
	if cfg.JWKSURL != "" && len(cfg.JWKSHTTP.AllowCIDRs) == 0 {
		u, err := url.Parse(cfg.JWKSURL)
		if err == nil {
			if port, err := strconv.ParseUint(u.Port(), 10, 16); err == nil {
				cfg.JWKSHTTP.AllowedPorts = []uint16{uint16(port)}
			}
		}
		cfg.JWKSHTTP.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	}
	return cfg
}

func newVerifier(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	cfg = allowTestServer(cfg)
	v, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// countKeyLookups makes v count its key lookups, that is its full
// verifications.
func countKeyLookups(v *Verifier) *atomic.Int64 {
	n := new(atomic.Int64)
	inner := v.keyFunc
	v.keyFunc = func(ctx context.Context) jwt.Keyfunc {
		kf := inner(ctx)
		return func(t *jwt.Token) (any, error) {
			n.Add(1)
			return kf(t)
		}
	}
	return n
}

// publishNoAlg publishes public keys without "alg" and "use" parameters.
func (s *jwksServer) publishNoAlg(t testing.TB, keys map[string]any) {
	t.Helper()
	store := jwkset.NewMemoryStorage()
	for kid, key := range keys {
		jwk, err := jwkset.NewJWKFromKey(key, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid}})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.KeyWrite(t.Context(), jwk); err != nil {
			t.Fatal(err)
		}
	}
	b, err := store.JSONPublic(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	s.body.Store((*[]byte)(&b))
}
