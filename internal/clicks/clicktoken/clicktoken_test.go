package clicktoken

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	k, err := NewKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	c := Claims{AdID: "ad-1", ImpressionID: "imp-1", Destination: "https://shop.example/a?b=c#d", Expiry: now.Add(time.Hour)}
	tok, err := k.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.Verify(tok, now)
	if err != nil || got != c {
		t.Fatalf("Verify = %+v, %v; want %+v", got, err, c)
	}
	if _, err := k.Verify(tok, now.Add(time.Hour)); !errors.Is(err, ErrExpired) {
		t.Errorf("at expiry: got %v, want ErrExpired", err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	for i := range raw { // every single-bit flip is caught
		b := append([]byte(nil), raw...)
		b[i] ^= 0x10
		if _, err := k.Verify(base64.RawURLEncoding.EncodeToString(b), now); !errors.Is(err, ErrInvalid) {
			t.Fatalf("flip in byte %d: got %v, want ErrInvalid", i, err)
		}
	}
	other, _ := NewKey([]byte("fedcba9876543210fedcba9876543210"))
	if _, err := other.Verify(tok, now); !errors.Is(err, ErrInvalid) {
		t.Errorf("another key: got %v, want ErrInvalid", err)
	}
	for _, bad := range []string{"", "!!!", "AAAA", tok + "A", tok[:len(tok)-2]} {
		if _, err := k.Verify(bad, now); !errors.Is(err, ErrInvalid) {
			t.Errorf("Verify(%q): got %v, want ErrInvalid", bad, err)
		}
	}
}

func TestSignRejects(t *testing.T) {
	k, _ := NewKey(GenerateSecret())
	exp := time.Now().Add(time.Hour)
	for _, c := range []Claims{
		{AdID: "a", ImpressionID: "i", Destination: "javascript:alert(1)", Expiry: exp},
		{AdID: "a", ImpressionID: "i", Destination: "//evil.example/", Expiry: exp},
		{AdID: "a", ImpressionID: "i", Destination: "https://user:pw@x.example/", Expiry: exp},
		{AdID: "", ImpressionID: "i", Destination: "https://x.example/", Expiry: exp},
	} {
		if _, err := k.Sign(c); err == nil {
			t.Errorf("Sign(%+v) succeeded", c)
		}
	}
	if _, err := NewKey([]byte("short")); err == nil {
		t.Error("NewKey accepted a 5-byte secret")
	}
}
