package metadata

import "testing"

func TestHostOfNormalises(t *testing.T) {
	for _, u := range []string{"https://h.example/", "https://h.example:443/a", "https://H.Example./", "http://h.example:8080/x?y"} {
		if got := hostOf(u); got != "h.example" {
			t.Errorf("hostOf(%q) = %q", u, got)
		}
	}
}

func TestTrackerPositions(t *testing.T) {
	tr := &tracker{next: 10, committed: 10}
	for _, off := range []int64{10, 11, 12, 13} {
		tr.add(off)
	}
	tr.finish(11)
	tr.finish(10)
	if off, ok := tr.committable(); !ok || off != 12 {
		t.Fatalf("committable %d %v, want 12: the first unfinished", off, ok)
	}
	// Retention removed 14..19: forward, nothing unfinished forgotten.
	tr.skipTo(20)
	if off, _ := tr.committable(); off != 12 {
		t.Errorf("after skipping ahead: %d, want 12 (12 and 13 still run)", off)
	}
	// The log was truncated to 13: 13 is read again; 12 is still awaited.
	tr.skipTo(13)
	tr.add(13)
	tr.finish(12)
	tr.finish(13)
	if off, ok := tr.committable(); !ok || off != 14 {
		t.Errorf("after a truncation: %d %v, want 14", off, ok)
	}
}

func TestWithoutNUL(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":"x\u0000y"}`:         `{"a":"x\ufffdy"}`,
		`{"a":"x\\u0000y"}`:        `{"a":"x\\u0000y"}`, // an escaped backslash, then text
		`{"a":"\\\u0000"}`:         `{"a":"\\\ufffd"}`,
		`{"a":"plain"}`:            `{"a":"plain"}`,
		`{"a":"\u00001","b":"\""}`: `{"a":"\ufffd1","b":"\""}`,
	} {
		if got := string(withoutNUL([]byte(in))); got != want {
			t.Errorf("withoutNUL(%s) = %s, want %s", in, got, want)
		}
	}
}
