package logship

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestReporterRateLimitsPerKind(t *testing.T) {
	var out lockedBuffer
	now := time.Unix(1_000_000, 0)
	r := newReporter(&out, "p: ", 10*time.Second, func() time.Time { return now })
	at := func(d time.Duration) { now = time.Unix(1_000_000, 0).Add(d) }

	r.printf("export", "down %d", 1) // written at once
	at(time.Second)
	r.printf("export", "down %d", 2) // suppressed
	r.printf("spool", "full\nagain") // another kind: written, on one line
	at(9 * time.Second)
	r.printf("export", "down %d", 3) // suppressed
	at(10 * time.Second)
	r.printf("export", "down %d", 4) // written with the count
	r.printf("spool", "full")        // suppressed (9s after its last line)
	r.flush()                        // the spool line's count
	at(11 * time.Second)
	r.printf("export", "down %d", 5) // suppressed
	r.flush()
	r.flush() // nothing more

	want := []string{
		"p: down 1",
		"p: full again",
		"p: down 4 (2 more like this since the last line, suppressed)",
		"p: 1 more spool problems since the last line, suppressed",
		"p: 1 more export problems since the last line, suppressed",
	}
	if diff := cmp.Diff(want, out.lines()); diff != "" {
		t.Errorf("stderr lines (-want +got):\n%s", diff)
	}
}
