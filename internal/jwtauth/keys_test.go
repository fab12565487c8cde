package jwtauth

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "jwt.key")
	key, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 32 {
		t.Errorf("key is %d bytes, want 32", len(key))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if got := strings.TrimSpace(string(b)); got != hex.EncodeToString(key) {
		t.Errorf("file holds %q, want the key in hex", got)
	}
	again, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, key) {
		t.Error("second call returned another key")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the key file", len(entries))
	}
}

func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jwt.key")
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := LoadOrCreateKey(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) {
			t.Fatal("concurrent callers got different keys")
		}
	}
}

func TestLoadOrCreateKeyRejectsBadFiles(t *testing.T) {
	for name, content := range map[string]string{
		"garbage": "this is not a key, it is a secret sentence\n",
		"short":   "00112233\n",
		"empty":   "",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "jwt.key")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreateKey(path)
			if err == nil {
				t.Fatal("LoadOrCreateKey accepted a bad file")
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			if content != "" && strings.Contains(err.Error(), strings.TrimSpace(content)) {
				t.Errorf("error %q echoes the file", err)
			}
			if b, _ := os.ReadFile(path); string(b) != content {
				t.Error("the bad file was modified")
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	good := strings.Repeat("ab", 32)
	if k, err := ParseKey(" " + good + "\n"); err != nil || len(k) != 32 {
		t.Errorf("ParseKey(64 hex digits) = %d bytes, %v", len(k), err)
	}
	for _, bad := range []string{"", strings.Repeat("ab", 31), strings.Repeat("zq", 32)} {
		_, err := ParseKey(bad)
		if err == nil {
			t.Errorf("ParseKey(%q) succeeded", bad)
			continue
		}
		if bad != "" && strings.Contains(err.Error(), bad[:4]) {
			t.Errorf("error %q echoes the key", err)
		}
	}
}

func TestMint(t *testing.T) {
	v := newVerifier(t, Config{HMACKey: hmacKey, Issuer: testIssuer, Audience: testAudience, Now: newClock(t0).now})
	mc := MintClaims{Subject: "bob", Role: RoleAdmin, Issuer: testIssuer, Audience: testAudience, TTL: 10 * time.Minute, Now: t0}
	tok, err := Mint(hmacKey, mc)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != "bob" || got.Role != RoleAdmin || got.ID == "" || !got.ExpiresAt.Equal(t0.Add(10*time.Minute)) {
		t.Errorf("Verify(Mint) = %+v", got)
	}
	tok2, _ := Mint(hmacKey, mc)
	if got2, _ := v.Verify(t.Context(), tok2); got2.ID == got.ID {
		t.Error("two minted tokens share a jti")
	}
	mc.Role = ""
	tok3, _ := Mint(hmacKey, mc)
	if got3, err := v.Verify(t.Context(), tok3); err != nil || got3.Role != RoleUser {
		t.Errorf("role defaults to %q, %v; want user", got3.Role, err)
	}

	for name, bad := range map[string]MintClaims{
		"no subject": {Role: RoleUser},
		"bad role":   {Subject: "bob", Role: "root"},
		"negative":   {Subject: "bob", TTL: -time.Second},
	} {
		if _, err := Mint(hmacKey, bad); err == nil {
			t.Errorf("%s: Mint succeeded", name)
		}
	}
	if _, err := Mint([]byte("short"), MintClaims{Subject: "bob"}); err == nil {
		t.Error("Mint with a short key succeeded")
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		want    string
		wantErr error
	}{
		{"ok", []string{"Bearer abc.def.ghi"}, "abc.def.ghi", nil},
		{"scheme case", []string{"bearer abc.def.ghi"}, "abc.def.ghi", nil},
		{"extra spaces", []string{"Bearer   abc.def.ghi  "}, "abc.def.ghi", nil},
		{"missing", nil, "", ErrMissingToken},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, "", ErrMissingToken},
		{"scheme only", []string{"Bearer"}, "", ErrMissingToken},
		{"empty token", []string{"Bearer   "}, "", ErrMissingToken},
		{"two headers", []string{"Bearer a", "Bearer b"}, "", ErrInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			for _, h := range tt.headers {
				r.Header.Add("Authorization", h)
			}
			got, err := BearerToken(r)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Errorf("BearerToken = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
