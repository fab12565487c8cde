package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pedal-project/pedal/internal/clicks/clicktoken"
	"github.com/pedal-project/pedal/internal/clicks/ingest"
)

const signingKeyFile = "click-signing.key"

// loadSigningKey returns the redirect signing key (see signingSecret).
func loadSigningKey(hexKey, dataDir string, create bool) (*clicktoken.Key, error) {
	secret, err := signingSecret(hexKey, dataDir, create)
	if err != nil {
		return nil, err
	}
	return clicktoken.NewKey(secret)
}

// signingSecret returns the redirect signing secret: from hexKey when set, else
// from the data dir's key file, which is generated (mode 0600) when create is set
// and the file does not exist.
func signingSecret(hexKey, dataDir string, create bool) ([]byte, error) {
	source := "--click-signing-key"
	if hexKey == "" {
		path := filepath.Join(dataDir, signingKeyFile)
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) && create {
			secret := clicktoken.GenerateSecret()
			if err := writeFileDurably(path, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
				return nil, fmt.Errorf("write click signing key: %w", err)
			}
			return secret, nil
		}
		if err != nil {
			return nil, fmt.Errorf("click signing key: %w (start pedal serve once with this --data-dir, or pass --click-signing-key)", err)
		}
		hexKey, source = string(b), path
	}
	secret, err := hex.DecodeString(strings.TrimSpace(hexKey))
	if err == nil && len(secret) < 16 {
		err = fmt.Errorf("%d bytes, need at least 16", len(secret))
	}
	if err != nil {
		return nil, fmt.Errorf("click signing key from %s: want hex digits of a %d-byte secret (%v)", source, clicktoken.KeySize, err)
	}
	return secret, nil
}

// writeFileDurably writes data to path atomically: a synced temporary file renamed
// into place, then the directory synced, so a crash leaves the old state or the
// whole new file, never an empty one.
func writeFileDurably(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

func runSignClick(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := newFlags("sign-click", getenv, stderr)
	f.Usage = func() {
		fmt.Fprint(f.Output(), "Usage: pedal sign-click --ad-id ID --dest URL [flags]\n\nPrints a signed redirect click URL for an ad. Opening it records a click and redirects to --dest.\n\nFlags:\n")
		f.PrintDefaults()
	}
	adID := f.String("ad-id", "", "the ad the click is for (required)")
	dest := f.String("dest", "", "absolute http(s) URL to redirect to (required)")
	imp := f.String("impression-id", "", "impression id, which becomes the click id (default: random)")
	ttl := f.Duration("ttl", ingest.DefaultClickTTL, "how long the URL stays valid (at most 720h)")
	dataDir := f.String("data-dir", "./pedal-data", "data dir of the server, holding click-signing.key")
	hexKey := f.String("click-signing-key", "", "hex signing secret, instead of the data dir's key file")
	publicURL := f.String("public-url", "http://127.0.0.1:8080", "base URL of the server")
	if err := f.parse(args); err != nil {
		return err
	}
	if *adID == "" || *dest == "" {
		return errors.New("sign-click: --ad-id and --dest are required")
	}
	key, err := loadSigningKey(*hexKey, *dataDir, false)
	if err != nil {
		return err
	}
	rd, err := ingest.New(ingest.Config{}, nil, nil, nil).Redirects(ingest.RedirectConfig{Key: key, PublicURL: *publicURL})
	if err != nil {
		return err
	}
	secs := int64(*ttl / time.Second)
	resp, field, err := rd.Mint(*adID, ingest.ClickURLRequest{Destination: *dest, ImpressionID: *imp, TTLSeconds: &secs}, time.Now())
	if err != nil {
		flagName := map[string]string{"ad_id": "--ad-id", "destination": "--dest", "impression_id": "--impression-id", "ttl_seconds": "--ttl"}[field]
		return fmt.Errorf("sign-click %s: %w", flagName, err)
	}
	fmt.Fprintln(stdout, resp.URL)
	return nil
}
