package jwtauth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MinKeyLen is the minimum length in bytes of an HS256 key.
const MinKeyLen = 32

// ParseKey decodes an HS256 key written as hex, such as one given on the
// command line. The key must be at least [MinKeyLen] bytes long. Error
// messages never repeat the input.
func ParseKey(s string) ([]byte, error) {
	key, err := decodeKey(s)
	if err != nil {
		return nil, fmt.Errorf("jwtauth: HMAC key: %w", err)
	}
	return key, nil
}

func decodeKey(s string) ([]byte, error) {
	key, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		// hex's error quotes the offending character: keep the secret out of it.
		return nil, errors.New("not valid hex")
	}
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("%d bytes, want at least %d (%d hex digits)", len(key), MinKeyLen, 2*MinKeyLen)
	}
	return key, nil
}

// LoadOrCreateKey returns the HS256 key stored as hex in the file at path. If
// the file does not exist, it creates it, with mode 0600, holding 32 random
// bytes. Creation is atomic: the key is written to a temporary file that is
// then linked into place, so a reader never sees a partial key and, if two
// processes race, both end up with the key that won.
func LoadOrCreateKey(path string) ([]byte, error) {
	key, err := readKeyFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("jwtauth: create key directory: %w", err)
	}
	key = make([]byte, MinKeyLen)
	rand.Read(key)                              // never returns an error; crashes the program on failure
	tmp, err := os.CreateTemp(dir, ".jwtkey-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("jwtauth: create key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("jwtauth: write key file %s: %w", tmp.Name(), err)
	}
	// Link, unlike Rename, fails if path exists: a key created meanwhile by
	// another process is kept, not replaced.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readKeyFile(path)
		}
		return nil, fmt.Errorf("jwtauth: create key file: %w", err)
	}
	if d, err := os.Open(dir); err == nil { // persist the new directory entry
		d.Sync()
		d.Close()
	}
	return key, nil
}

func readKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("jwtauth: read key file: %w", err)
	}
	key, err := decodeKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("jwtauth: key file %s: %w (fix it, or remove it to generate a new key)", path, err)
	}
	return key, nil
}

// MintClaims describes a token for [Mint].
type MintClaims struct {
	Subject  string // required
	Role     Role   // "" means RoleUser
	Issuer   string // optional; set it if verifiers check iss
	Audience string // optional; set it if verifiers check aud
	// TTL is how long the token is valid; zero means one hour.
	TTL time.Duration
	// Now is the issue time; zero means time.Now().
	Now time.Time
}

// DefaultTTL is the lifetime of a minted token when MintClaims.TTL is zero.
const DefaultTTL = time.Hour

// Mint returns an HS256 token signed with key holding sub, role, iss, aud,
// iat, nbf, exp and a random jti.
func Mint(key []byte, c MintClaims) (string, error) {
	if len(key) < MinKeyLen {
		return "", fmt.Errorf("jwtauth: mint: HMAC key is %d bytes, want at least %d", len(key), MinKeyLen)
	}
	if c.Subject == "" {
		return "", errors.New("jwtauth: mint: subject is empty")
	}
	if c.Role == "" {
		c.Role = RoleUser
	}
	if !c.Role.valid() {
		return "", fmt.Errorf("jwtauth: mint: role %q is neither %q nor %q", c.Role, RoleUser, RoleAdmin)
	}
	switch {
	case c.TTL == 0:
		c.TTL = DefaultTTL
	case c.TTL < 0:
		return "", fmt.Errorf("jwtauth: mint: negative TTL %v", c.TTL)
	}
	now := c.Now
	if now.IsZero() {
		now = time.Now()
	}
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Subject,
			Issuer:    c.Issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(c.TTL)),
			ID:        rand.Text(),
		},
		Role: string(c.Role),
	}
	if c.Audience != "" {
		claims.Audience = jwt.ClaimStrings{c.Audience}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("jwtauth: mint: %w", err)
	}
	return s, nil
}
