// Package pebbleslog hands Pebble's log lines to log/slog: informational lines
// at debug level, errors at error level, each with component=pebble, and fatal
// errors (after which Pebble must not be used) to a function of the caller's,
// which must not return. Logger is safe for concurrent use.
package pebbleslog

import (
	"fmt"
	"log/slog"
	"os"
)

// FailStop returns fatal, or, when it is nil, a function that logs msg as the
// failure of what and exits with status 70: going on could acknowledge writes
// that are not durable, so the process stops, a supervisor restarts it and the
// store recovers what is durable.
func FailStop(fatal func(msg string), logger *slog.Logger, what string) func(msg string) {
	if fatal != nil {
		return fatal
	}
	return func(msg string) {
		logger.Error(what+" failed; stopping the process", "err", msg)
		os.Exit(70)
	}
}

// Logger implements pebble.Logger.
type Logger struct {
	L     *slog.Logger
	Fatal func(msg string) // must not return
}

// Infof logs at debug level: Pebble reports every flush and compaction.
func (l Logger) Infof(format string, args ...any) {
	l.L.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

// Errorf logs at error level.
func (l Logger) Errorf(format string, args ...any) {
	l.L.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf is called by Pebble on errors it cannot recover from.
func (l Logger) Fatalf(format string, args ...any) {
	l.Fatal("pebble: " + fmt.Sprintf(format, args...))
}
