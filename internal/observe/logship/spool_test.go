package logship

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func openTestSpool(t *testing.T, dir string, max int64) (*spool, *metrics) {
	t.Helper()
	m := newMetrics()
	s, err := openSpool(dir, max, m, newReporter(io.Discard, "", time.Second, time.Now))
	if err != nil {
		t.Fatal(err)
	}
	return s, m
}

// fileSize is the size of a spool file holding a payload of n bytes and a
// record count below 128.
func fileSize(n int) int64 { return int64(len(spoolMagic) + 1 + n + 4) }

// TestSpoolCapDropsOldest: the spool never holds more than its cap, on disk
// or in its gauge; room is made by deleting the oldest files, whose records
// are counted as dropped, and a batch larger than the cap is dropped itself.
func TestSpoolCapDropsOldest(t *testing.T) {
	dir := t.TempDir()
	const payload = 100
	capBytes := 3*fileSize(payload) + 10 // room for three files
	s, m := openTestSpool(t, dir, capBytes)
	for i := range 5 {
		if err := s.append(10+i, bytes.Repeat([]byte{byte(i)}, payload)); (err != nil) != (i >= 3) {
			t.Errorf("append %d: %v; want an error saying what was dropped only past the cap", i, err)
		}
		if on := spoolBytesOnDisk(dir); on > capBytes {
			t.Fatalf("after append %d: %d bytes on disk, cap %d", i, on, capBytes)
		}
	}
	if got, want := counter64(m.dropped.WithLabelValues(reasonSpoolFull)), 10+11; got != want {
		t.Errorf("dropped %d records, want the two oldest files' %d", got, want)
	}
	if records, b := s.size(); records != 12+13+14 || b != 3*fileSize(payload) {
		t.Errorf("spool holds %d records, %d bytes; want the newest three files", records, b)
	}
	f, ok := s.take()
	if !ok || f.records != 12 {
		t.Fatalf("take: %+v %v, want the oldest remaining file (12 records)", f, ok)
	}
	got, err := s.read(f)
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{2}, payload)) {
		t.Fatalf("read: %v, payload %x...", err, got[:min(len(got), 4)])
	}
	if err := s.append(1, make([]byte, capBytes)); err == nil {
		t.Error("a batch larger than the cap was accepted")
	}
	if got := counter64(m.dropped.WithLabelValues(reasonSpoolFull)); got != 21+1 {
		t.Errorf("dropped %d records after an oversized batch, want 22", got)
	}
}

// TestSpoolDropWhileSending: the file being sent may be dropped to make
// room; its records are then counted once, by the outcome of the send.
func TestSpoolDropWhileSending(t *testing.T) {
	s, m := openTestSpool(t, t.TempDir(), 2*fileSize(50))
	s.append(5, make([]byte, 50))
	s.append(6, make([]byte, 50))
	a, _ := s.take()
	s.append(7, make([]byte, 50)) // drops a, in flight
	if got := counter64(m.dropped.WithLabelValues(reasonSpoolFull)); got != 0 {
		t.Errorf("%d records counted dropped while their send is in flight", got)
	}
	s.delivered(a, 0)
	if e, d := counter64(m.exported), counter64(m.dropped.WithLabelValues(reasonSpoolFull)); e != 5 || d != 0 {
		t.Errorf("after delivering the dropped file: exported %d, dropped %d; want 5, 0", e, d)
	}
	b, _ := s.take()
	s.append(8, make([]byte, 50)) // drops b, in flight
	s.release(b)                  // the send failed
	if got := counter64(m.dropped.WithLabelValues(reasonSpoolFull)); got != 6 {
		t.Errorf("dropped %d after a failed send of a dropped file, want 6", got)
	}
	if records, _ := s.size(); records != 7+8 {
		t.Errorf("spool holds %d records, want 15", records)
	}
	c, _ := s.take()
	if c.records != 7 {
		t.Errorf("next file has %d records, want 7", c.records)
	}
	s.release(c) // still on disk: nothing counted
	s.discard(c, reasonRejected)
	if got := counter64(m.dropped.WithLabelValues(reasonRejected)); got != 7 {
		t.Errorf("rejected %d, want 7", got)
	}
}

// TestSpoolReopen: a new spool on the same directory finds the files in
// order; corrupt ones are removed and counted, and a lowered cap is applied.
func TestSpoolReopen(t *testing.T) {
	dir := t.TempDir()
	s, _ := openTestSpool(t, dir, 1<<20)
	for i := range 4 {
		s.append(i+1, bytes.Repeat([]byte{byte(i)}, 40))
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"+spoolSuffix))
	if len(files) != 4 {
		t.Fatalf("%d files, want 4", len(files))
	}
	b, _ := os.ReadFile(files[1])
	b[len(b)-5] ^= 1 // a flipped bit in the payload
	os.WriteFile(files[1], b, 0o644)
	os.WriteFile(filepath.Join(dir, "00000000000000000077"+spoolSuffix), []byte("junk"), 0o644)

	s2, m := openTestSpool(t, dir, 2*fileSize(40))
	if got := counter64(m.dropped.WithLabelValues(reasonCorrupt)); got != 2 {
		t.Errorf("%d records counted corrupt, want the damaged file's 2", got)
	}
	if got := counter64(m.dropped.WithLabelValues(reasonSpoolFull)); got != 1 {
		t.Errorf("%d records dropped for the lowered cap, want the oldest file's 1", got)
	}
	f, _ := s2.take()
	if f.records != 3 {
		t.Errorf("oldest file after reopening has %d records, want 3", f.records)
	}
	s2.delivered(f, 0)
	if err := s2.append(9, make([]byte, 40)); err != nil {
		t.Errorf("append after reopening: %v", err)
	}
	f, _ = s2.take()
	g, _ := s2.take()
	if f.records != 4 || f != g {
		t.Errorf("files out of order after reopening: %+v %+v", f, g)
	}
}
