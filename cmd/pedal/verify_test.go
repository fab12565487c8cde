package main

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/clicks/reference"
	"github.com/pedal-project/pedal/internal/loadgen"
	"github.com/pedal-project/pedal/internal/loadgen/loadgentest"
)

// TestLoadgenVerify runs pedal loadgen --verify against a fake pedal that
// aggregates with the reference model: zero mismatches when it serves what it
// counted, a non-nil error (exit status 1) when it serves one click too many.
func TestLoadgenVerify(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		window func(string, time.Time, reference.Counts) reference.Counts
		want   error
	}{
		{"right", nil, nil},
		{"one click too many", func(_ string, _ time.Time, c reference.Counts) reference.Counts {
			c.Clicks++
			return c
		}, loadgen.ErrMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := loadgentest.New(loadgen.Rules(), 4)
			fake.Window = tt.window
			srv := httptest.NewServer(fake)
			t.Cleanup(srv.Close)
			report := filepath.Join(t.TempDir(), "report.txt")
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), []string{"loadgen", "--target", srv.URL, "--token", testToken, "--rate", "4000", "--batch", "40",
				"--duration", "700ms", "--concurrency", "4", "--ads", "100", "--dup-share", "0.1", "--bot-share", "0.05",
				"--burst-share", "0.1", "--late-share", "0.05", "--too-late-share", "0.02",
				"--verify", "--verify-report", report}, func(string) string { return "" }, &stdout, &stderr)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("loadgen --verify: error %v, want %v\n%s%s", err, tt.want, stdout.String(), stderr.String())
			}
			out := stdout.String()
			wantLine := "verify: OK, no mismatch"
			if tt.want != nil {
				wantLine = "verify: ledger kept in "
			}
			if !strings.Contains(out, wantLine) || !strings.Contains(out, "verify: caught up") {
				t.Errorf("output lacks %q:\n%s", wantLine, out)
			}
			if b, err := os.ReadFile(report); err != nil || !strings.Contains(string(b), "verify: compared") {
				t.Errorf("report %q, %v", b, err)
			}
			if tt.want != nil {
				_, path, _ := strings.Cut(out, "verify: ledger kept in ")
				path = strings.TrimSpace(path)
				if _, err := os.Stat(path); err != nil {
					t.Errorf("kept ledger: %v", err)
				}
				os.Remove(path)
			}
		})
	}
}

func TestLoadgenVerifyRefusesRedirect(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"loadgen", "--target", "http://127.0.0.1:1", "--mode", "redirect", "--verify"},
		func(string) string { return "" }, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--verify needs --mode clicks") {
		t.Errorf("error %v, want --verify refused in redirect mode", err)
	}
	if stdout.Len() != 0 {
		t.Errorf("something was sent:\n%s", stdout.String())
	}
}
