package logship

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// reporter writes problems as single lines to w (stderr), never through slog:
// for each kind of problem, at most one line per interval, the first at once;
// lines in between are counted, and the count is given with the next line of
// that kind (or by flush). Kinds are a few fixed strings. It is safe for
// concurrent use.
type reporter struct {
	w        io.Writer
	prefix   string
	interval time.Duration
	now      func() time.Time

	mu    sync.Mutex
	kinds map[string]*reportState
}

type reportState struct {
	last       time.Time
	suppressed int
}

func newReporter(w io.Writer, prefix string, interval time.Duration, now func() time.Time) *reporter {
	if w == nil {
		w = io.Discard
	}
	return &reporter{w: w, prefix: prefix, interval: interval, now: now, kinds: map[string]*reportState{}}
}

func (r *reporter) printf(kind, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	st := r.kinds[kind]
	if st != nil && now.Sub(st.last) < r.interval {
		st.suppressed++
		return
	}
	if st == nil {
		st = &reportState{}
		r.kinds[kind] = st
	}
	line := r.prefix + fmt.Sprintf(format, args...)
	if st.suppressed > 0 {
		line += fmt.Sprintf(" (%d more like this since the last line, suppressed)", st.suppressed)
	}
	st.last, st.suppressed = now, 0
	r.writeLine(line)
}

// flush writes, for each kind, the count of lines suppressed since the last
// one, if any.
func (r *reporter) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	kinds := make([]string, 0, len(r.kinds))
	for k := range r.kinds {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		if st := r.kinds[k]; st.suppressed > 0 {
			r.writeLine(fmt.Sprintf("%s%d more %s problems since the last line, suppressed", r.prefix, st.suppressed, k))
			st.suppressed = 0
		}
	}
}

// writeLine writes line in one Write, with any newline inside it replaced, so
// that one problem is one line. A failing stderr is ignored: there is nowhere
// left to report it.
func (r *reporter) writeLine(line string) {
	line = strings.NewReplacer("\r", " ", "\n", " ").Replace(line)
	io.WriteString(r.w, line+"\n")
}

// otelErrors is an otel.ErrorHandler writing to a reporter.
type otelErrors struct{ r *reporter }

func (h otelErrors) Handle(err error) { h.r.printf("otel", "%v", err) }
