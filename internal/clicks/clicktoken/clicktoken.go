// Package clicktoken mints and verifies the signed tokens of redirect click URLs
// (GET /v1/r/{token}). A token carries the ad, the destination, the impression and
// an expiry, and is authenticated with HMAC-SHA256, so a redirect can neither be
// forged nor pointed somewhere else (no open redirect).
//
// Wire form: base64url (no padding) of
//
//	version u8 (1) | expiry uvarint (Unix seconds) | len+ad_id | len+impression_id | len+destination | mac[16]
//
// where mac is HMAC-SHA256 over everything before it, truncated to 128 bits.
// Functions are safe for concurrent use; a Key is immutable.
package clicktoken

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net/url"
	"sync"
	"time"
)

const (
	version = 1
	macLen  = 16
	// KeySize is the length of a signing key in bytes.
	KeySize = 32
	// MaxTokenLen bounds what Verify will look at.
	MaxTokenLen = 4096
)

// Claims is what a token asserts.
type Claims struct {
	AdID         string
	ImpressionID string
	Destination  string // absolute http or https URL
	Expiry       time.Time
}

// Errors from Verify and Sign.
var (
	ErrInvalid = errors.New("clicktoken: invalid token")
	ErrExpired = errors.New("clicktoken: token expired")
)

// Key signs and verifies tokens.
type Key struct {
	pool sync.Pool // of hash.Hash (HMAC-SHA256 keyed)
}

// NewKey returns a Key for secret, which must be at least 16 bytes.
func NewKey(secret []byte) (*Key, error) {
	if len(secret) < 16 {
		return nil, fmt.Errorf("click signing key: %d bytes, need at least 16", len(secret))
	}
	s := append([]byte(nil), secret...)
	k := &Key{}
	k.pool.New = func() any { return hmac.New(sha256.New, s) }
	return k, nil
}

// GenerateSecret returns a new random secret of KeySize bytes.
func GenerateSecret() []byte {
	b := make([]byte, KeySize)
	rand.Read(b)
	return b
}

func (k *Key) mac(dst, msg []byte) []byte {
	h := k.pool.Get().(hash.Hash)
	h.Reset()
	h.Write(msg)
	dst = h.Sum(dst)
	k.pool.Put(h)
	return dst
}

// ValidateDestination reports whether dest may be a redirect target: an absolute
// http or https URL with a host and no user info.
func ValidateDestination(dest string) error {
	if len(dest) > 2048 {
		return errors.New("destination longer than 2048 bytes")
	}
	u, err := url.Parse(dest)
	if err != nil {
		return fmt.Errorf("destination is not a URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("destination must be an http or https URL")
	}
	if u.Host == "" {
		return errors.New("destination has no host")
	}
	if u.User != nil {
		return errors.New("destination must not carry user info")
	}
	return nil
}

// Sign returns the token for c.
func (k *Key) Sign(c Claims) (string, error) {
	if c.AdID == "" || c.ImpressionID == "" {
		return "", errors.New("sign click token: ad id and impression id are required")
	}
	if err := ValidateDestination(c.Destination); err != nil {
		return "", fmt.Errorf("sign click token: %w", err)
	}
	b := make([]byte, 0, 1+10+3*2+len(c.AdID)+len(c.ImpressionID)+len(c.Destination)+32)
	b = append(b, version)
	b = binary.AppendUvarint(b, uint64(c.Expiry.Unix()))
	for _, s := range []string{c.AdID, c.ImpressionID, c.Destination} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = k.mac(b, b)[:len(b)+macLen]
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Verify checks token's signature and expiry at now and returns its claims.
// Every malformed or forged token fails with ErrInvalid; a genuine one past its
// expiry with ErrExpired.
func (k *Key) Verify(token string, now time.Time) (Claims, error) {
	if len(token) == 0 || len(token) > MaxTokenLen {
		return Claims{}, ErrInvalid
	}
	var arr [1024]byte
	buf := arr[:]
	if n := base64.RawURLEncoding.DecodedLen(len(token)); n > len(buf) {
		buf = make([]byte, n)
	}
	n, err := base64.RawURLEncoding.Decode(buf, []byte(token))
	if err != nil || n < 1+1+3+macLen {
		return Claims{}, ErrInvalid
	}
	msg, sig := buf[:n-macLen], buf[n-macLen:n]
	var macBuf [sha256.Size]byte
	if !hmac.Equal(k.mac(macBuf[:0], msg)[:macLen], sig) {
		return Claims{}, ErrInvalid
	}
	if msg[0] != version {
		return Claims{}, ErrInvalid
	}
	p := msg[1:]
	exp, m := binary.Uvarint(p)
	if m <= 0 {
		return Claims{}, ErrInvalid
	}
	p = p[m:]
	var fields [3]string
	for i := range fields {
		l, m := binary.Uvarint(p)
		if m <= 0 || uint64(len(p)-m) < l {
			return Claims{}, ErrInvalid
		}
		fields[i] = string(p[m : m+int(l)])
		p = p[m+int(l):]
	}
	if len(p) != 0 {
		return Claims{}, ErrInvalid
	}
	c := Claims{AdID: fields[0], ImpressionID: fields[1], Destination: fields[2], Expiry: time.Unix(int64(exp), 0)}
	if !now.Before(c.Expiry) {
		return c, ErrExpired
	}
	return c, nil
}
