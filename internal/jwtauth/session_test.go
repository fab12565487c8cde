package jwtauth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestCacheHitSkipsVerification(t *testing.T) {
	clk := newClock(t0)
	v := newVerifier(t, Config{HMACKey: hmacKey, Now: clk.now})
	lookups := countKeyLookups(v)
	tok := signHS(t, hmacKey, claims()) // exp t0+1h
	for range 3 {
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if got := lookups.Load(); got != 1 {
		t.Fatalf("after 3 Verify: %d key lookups, want 1 (then cache hits)", got)
	}

	clk.set(t0.Add(time.Hour + 10*time.Second)) // past exp, within leeway
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("Verify within leeway: %v", err)
	}
	if got := lookups.Load(); got != 2 {
		t.Errorf("after exp: %d key lookups, want 2: the cache must not answer past exp", got)
	}
	clk.set(t0.Add(time.Hour + time.Minute))
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, ErrExpired) {
		t.Errorf("Verify past exp and leeway: %v, want ErrExpired", err)
	}
}

func TestCacheDisabled(t *testing.T) {
	v := newVerifier(t, Config{HMACKey: hmacKey, Now: newClock(t0).now, CacheSize: -1})
	lookups := countKeyLookups(v)
	tok := signHS(t, hmacKey, claims())
	for range 3 {
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if got := lookups.Load(); got != 3 {
		t.Errorf("%d key lookups, want 3", got)
	}
}

func TestSessionCacheBounded(t *testing.T) {
	c := newSessionCache(4)
	for i := range 10 {
		c.put([32]byte{byte(i)}, Claims{Subject: "s", ExpiresAt: t0.Add(time.Hour)}, t0)
	}
	if n := c.len(); n != 4 {
		t.Errorf("len = %d, want 4", n)
	}
	if _, ok := c.get([32]byte{9}, t0); !ok {
		t.Error("the latest entry was evicted")
	}
	// Expired entries go first.
	c = newSessionCache(2)
	c.put([32]byte{1}, Claims{ExpiresAt: t0.Add(time.Minute)}, t0)
	c.put([32]byte{2}, Claims{ExpiresAt: t0.Add(time.Hour)}, t0)
	now := t0.Add(2 * time.Minute)
	c.put([32]byte{3}, Claims{ExpiresAt: t0.Add(time.Hour)}, now)
	if _, ok := c.get([32]byte{2}, now); !ok {
		t.Error("an unexpired entry was evicted while an expired one was there")
	}
}

func TestRevoke(t *testing.T) {
	for _, jti := range []any{"id-7", nil} {
		t.Run(fmt.Sprintf("jti=%v", jti), func(t *testing.T) {
			clk := newClock(t0)
			v := newVerifier(t, Config{HMACKey: hmacKey, Now: clk.now})
			tok := signHS(t, hmacKey, with(claims(), map[string]any{"jti": jti}))
			other := signHS(t, hmacKey, with(claims(), map[string]any{"jti": "other", "sub": "bob"}))
			if _, err := v.Verify(t.Context(), tok); err != nil { // now cached
				t.Fatal(err)
			}
			if err := v.Revoke(t.Context(), tok); err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(t.Context(), tok); !errors.Is(err, ErrRevoked) {
				t.Fatalf("Verify after Revoke: %v, want ErrRevoked", err)
			}
			if _, err := v.Verify(t.Context(), tok); !errors.Is(err, ErrRevoked) {
				t.Fatalf("Verify again: %v, want ErrRevoked", err)
			}
			if _, err := v.Verify(t.Context(), other); err != nil {
				t.Errorf("another token: %v", err)
			}
			if err := v.Revoke(t.Context(), tok); err != nil {
				t.Errorf("Revoke again: %v, want success", err)
			}
			clk.set(t0.Add(time.Hour + 20*time.Second)) // past exp, within leeway
			if _, err := v.Verify(t.Context(), tok); !errors.Is(err, ErrRevoked) {
				t.Errorf("Verify within leeway: %v, want ErrRevoked", err)
			}
		})
	}
}

// TestRevokedServedFromCache checks revocation on cache hits: the token is
// revoked behind the Verifier's back, straight in the store.
func TestRevokedServedFromCache(t *testing.T) {
	store := NewMemoryRevocations(10, newClock(t0).now)
	v := newVerifier(t, Config{HMACKey: hmacKey, Now: newClock(t0).now, Revocations: store})
	lookups := countKeyLookups(v)
	tok := signHS(t, hmacKey, claims())
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	if err := store.Revoke(t.Context(), "jti:id-1", t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, ErrRevoked) {
		t.Errorf("Verify: %v, want ErrRevoked", err)
	}
	if got := lookups.Load(); got != 1 {
		t.Errorf("%d key lookups, want 1 (the second Verify is a cache hit)", got)
	}
}

func TestRevokeRejectsInvalid(t *testing.T) {
	v := newVerifier(t, Config{HMACKey: hmacKey, Now: newClock(t0).now})
	expired := signHS(t, hmacKey, with(claims(), map[string]any{"exp": t0.Add(-time.Hour).Unix()}))
	for name, tc := range map[string]struct {
		token string
		want  error
	}{
		"garbage": {"garbage", ErrInvalidToken},
		"expired": {expired, ErrExpired},
		"forged":  {signHS(t, []byte("another key of at least 32 bytes!"), claims()), ErrInvalidToken},
		"empty":   {"", ErrMissingToken},
	} {
		if err := v.Revoke(t.Context(), tc.token); !errors.Is(err, tc.want) {
			t.Errorf("%s: Revoke: %v, want %v", name, err, tc.want)
		}
	}
}

type failingRevocations struct{}

func (failingRevocations) Revoke(context.Context, string, time.Time) error {
	return errors.New("store down")
}
func (failingRevocations) Revoked(context.Context, string) (bool, error) {
	return false, errors.New("store down")
}

func TestRevocationStoreErrorFailsClosed(t *testing.T) {
	v := newVerifier(t, Config{HMACKey: hmacKey, Now: newClock(t0).now, Revocations: failingRevocations{}})
	tok := signHS(t, hmacKey, claims())
	for range 2 { // second time would be a cache hit if the first had cached
		if _, err := v.Verify(t.Context(), tok); err == nil {
			t.Fatal("Verify succeeded with a failing revocation store")
		}
	}
}

func TestMemoryRevocations(t *testing.T) {
	clk := newClock(t0)
	m := NewMemoryRevocations(2, clk.now)
	ctx := t.Context()
	if err := m.Revoke(ctx, "a", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, "b", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, "c", t0.Add(time.Hour)); !errors.Is(err, ErrRevocationsFull) {
		t.Fatalf("Revoke into a full store: %v, want ErrRevocationsFull", err)
	}
	if ok, _ := m.Revoked(ctx, "a"); !ok {
		t.Error("a not revoked")
	}
	clk.add(2 * time.Minute) // a expires
	if err := m.Revoke(ctx, "c", t0.Add(time.Hour)); err != nil {
		t.Fatalf("Revoke after an entry expired: %v", err)
	}
	for id, want := range map[string]bool{"a": false, "b": true, "c": true, "d": false} {
		if got, _ := m.Revoked(ctx, id); got != want {
			t.Errorf("Revoked(%q) = %v, want %v", id, got, want)
		}
	}
	if n := m.Len(); n != 2 {
		t.Errorf("Len = %d, want 2", n)
	}
}

func TestConcurrentVerifyAndRevoke(t *testing.T) {
	srv := newJWKSServer(t, ecSigner(t))
	v := newVerifier(t, Config{HMACKey: hmacKey, JWKSURL: srv.URL, Now: newClock(t0).now, CacheSize: 8})
	var tokens []string
	for i := range 32 {
		c := with(claims(), map[string]any{"jti": fmt.Sprint("id-", i)})
		if i%2 == 0 {
			tokens = append(tokens, signHS(t, hmacKey, c))
		} else {
			tokens = append(tokens, signWith(t, ecSigner(t), c))
		}
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 200 {
				tok := tokens[(g+i)%len(tokens)]
				if _, err := v.Verify(t.Context(), tok); err != nil && !errors.Is(err, ErrRevoked) {
					t.Errorf("Verify: %v", err)
					return
				}
				if i == 100 && g%4 == 0 {
					if err := v.Revoke(t.Context(), tok); err != nil {
						t.Errorf("Revoke: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for g := 0; g < 16; g += 4 {
		if _, err := v.Verify(t.Context(), tokens[(g+100)%len(tokens)]); !errors.Is(err, ErrRevoked) {
			t.Errorf("token revoked by goroutine %d: Verify: %v, want ErrRevoked", g, err)
		}
	}
}
