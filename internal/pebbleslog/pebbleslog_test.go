package pebbleslog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

var _ pebble.Logger = Logger{}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	var fatal string
	l := Logger{L: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), Fatal: func(m string) { fatal = m }}
	l.Infof("flushed %d", 1)
	l.Errorf("disk %s", "slow")
	l.Fatalf("wal %s", "failed")
	out := buf.String()
	if !strings.Contains(out, `"level":"DEBUG","msg":"flushed 1","component":"pebble"`) || !strings.Contains(out, `"level":"ERROR","msg":"disk slow"`) {
		t.Errorf("log lines: %s", out)
	}
	if fatal != "pebble: wal failed" {
		t.Errorf("Fatal got %q", fatal)
	}
}

func TestFailStopKeepsTheCallersFunction(t *testing.T) {
	called := ""
	FailStop(func(m string) { called = m }, slog.New(slog.DiscardHandler), "store")("boom")
	if called != "boom" {
		t.Errorf("FailStop replaced the caller's function: got %q", called)
	}
}
