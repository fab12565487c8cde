package chstore

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/analytics"
)

func TestSpool(t *testing.T) {
	dir := t.TempDir()
	sp, _, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 3, 2, 0, 1, 0, 0, time.UTC)
	batches := [][]vrow{
		{{Row: analytics.Row{AdID: "ad-1", Country: "US", Start: start, Clicks: 5, Bot: 1, IPRate: 2, Duplicates: 3, TooLate: 4}, version: 7}},
		{
			{Row: analytics.Row{AdID: "ad-\x00'\\", Country: "", Start: start.Add(time.Minute), Clicks: 1 << 40}, version: 8},
			{Row: analytics.Row{AdID: "ad-2", Country: "DE", Start: start}, version: 1<<63 + 9},
		},
		{{Row: analytics.Row{AdID: "ad-3", Start: start}, version: 10}},
	}
	for _, b := range batches {
		if err := sp.write(b); err != nil {
			t.Fatal(err)
		}
	}
	// A crash mid-write leaves a temporary file; a corrupt file is set aside.
	os.WriteFile(filepath.Join(dir, "00000000000000000099.spool.tmp"), []byte("half"), 0o644)
	third := filepath.Join(dir, sp.files[2].name)
	b, _ := os.ReadFile(third)
	b[len(b)-6] ^= 1
	os.WriteFile(third, b, 0o644)

	sp, maxVersion, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if maxVersion != 1<<63+9 {
		t.Errorf("max version = %d, want %d", maxVersion, uint64(1<<63+9))
	}
	if got, want := sp.rows.Load(), int64(3); got != want {
		t.Errorf("rows = %d, want %d", got, want)
	}
	files := sp.take(100)
	if len(files) != 2 {
		t.Fatalf("take = %v, want 2 files", files)
	}
	for i, f := range files {
		got, err := sp.read(f)
		if err != nil {
			t.Fatal(err)
		}
		if diff := gocmp.Diff(batches[i], got, gocmp.AllowUnexported(vrow{})); diff != "" {
			t.Errorf("file %d (-want +got):\n%s", i, diff)
		}
	}
	if got := sp.take(2); len(got) != 1 {
		t.Errorf("take(2) = %v, want the first file only", got)
	}
	if err := sp.remove(files); err != nil {
		t.Fatal(err)
	}
	if sp.rows.Load() != 0 || sp.bytes.Load() != 0 || len(sp.files) != 0 {
		t.Errorf("after remove: rows %d, bytes %d, files %v", sp.rows.Load(), sp.bytes.Load(), sp.files)
	}
	if _, err := os.Stat(third + ".corrupt"); err != nil {
		t.Errorf("corrupt file not set aside: %v", err)
	}
	// Full: a write beyond the bound fails and leaves nothing.
	small, _, err := openSpool(t.TempDir(), 40)
	if err != nil {
		t.Fatal(err)
	}
	if err := small.write(batches[1]); !errors.Is(err, ErrSpoolFull) {
		t.Errorf("write beyond MaxSpoolBytes: %v, want ErrSpoolFull", err)
	}
}
