package loadgen

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Summary holds the final figures of a run.
type Summary struct {
	Mode       Mode
	Format     Format // of ModeClicks bodies
	Target     string
	Seed       uint64 // reproduces the data with Config.Seed
	RunID      string
	TargetRate float64 // clicks per second
	Batch      int     // clicks per request

	// Elapsed runs from the start of the schedule until the last request ended,
	// and is at least Duration unless ctx ended the run.
	Elapsed time.Duration
	// Scheduled counts the requests due before the run stopped; Requests those
	// sent and Unsent those that found every worker busy until the end
	// (Scheduled = Requests + Unsent).
	Scheduled int64
	Requests  int64
	Unsent    int64
	// LateStarts counts the requests that found all Concurrency workers busy at
	// their intended time and so started late. MaxStartLag is the worst delay of a
	// start after its intended time, whatever the cause (busy workers, a generator
	// or timer falling behind).
	LateStarts  int64
	MaxStartLag time.Duration

	ClicksSent  int64 // clicks in the requests sent
	ClicksAcked int64 // clicks acknowledged: accepted by a 202, or redirected by a 302
	// Rejected counts the records a 202 answer rejected, by code in RejectedByCode.
	Rejected       int64
	RejectedByCode map[string]int64
	// Failed counts the requests that got no acknowledgement; Errors counts them by
	// kind (status_503, timeout, conn_refused, conn_reset, conn_closed, aborted,
	// bad_response, bad_location, dns, other), with one message per kind in
	// ErrorSamples. Errors also counts, apart from Failed, acknowledgements whose
	// accepted figure contradicts their rejected list (accepted_mismatch).
	Failed       int64
	Errors       map[string]int64
	ErrorSamples map[string]string

	// AckedPerSec is ClicksAcked over Elapsed.
	AckedPerSec float64
	// Latency is of the acknowledged requests, from the intended send time to the
	// end of the answer.
	Latency Latency
}

// Latency summarizes a latency distribution, to about 1% precision.
type Latency struct {
	Count                    int64
	P50, P90, P99, P999, Max time.Duration
}

func (s *Summary) print(w io.Writer) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nloadgen summary: %s mode", s.Mode)
	if s.Mode == ModeClicks {
		fmt.Fprintf(&b, " (%s, %d clicks per request)", s.Format, s.Batch)
	}
	fmt.Fprintf(&b, ", target %s, seed %d, run %s\n", s.Target, s.Seed, s.RunID)
	fmt.Fprintf(&b, "  elapsed      %v\n", s.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "  requests     %d sent of %d scheduled, %d unsent, %d started late (max lag %s)\n",
		s.Requests, s.Scheduled, s.Unsent, s.LateStarts, formatDuration(s.MaxStartLag))
	fmt.Fprintf(&b, "  clicks       %d sent, %d acknowledged, %d rejected\n", s.ClicksSent, s.ClicksAcked, s.Rejected)
	fmt.Fprintf(&b, "  rate         target %s clicks/s, acknowledged %s clicks/s\n", formatRate(s.TargetRate), formatRate(s.AckedPerSec))
	fmt.Fprintf(&b, "  latency      p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (%d acknowledged requests)\n",
		formatDuration(s.Latency.P50), formatDuration(s.Latency.P90), formatDuration(s.Latency.P99),
		formatDuration(s.Latency.P999), formatDuration(s.Latency.Max), s.Latency.Count)
	if len(s.RejectedByCode) > 0 {
		fmt.Fprintf(&b, "  rejected     %s\n", formatCounts(s.RejectedByCode))
	}
	fmt.Fprintf(&b, "  failed       %d requests", s.Failed)
	if len(s.Errors) > 0 {
		fmt.Fprintf(&b, ": %s", formatCounts(s.Errors))
	}
	b.WriteByte('\n')
	for _, k := range slices.Sorted(maps.Keys(s.ErrorSamples)) {
		fmt.Fprintf(&b, "    %s: %s\n", k, s.ErrorSamples[k])
	}
	io.WriteString(w, b.String())
}

// formatCounts lists counts by decreasing count, then name.
func formatCounts(m map[string]int64) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			if m[a] > m[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + " " + strconv.FormatInt(m[k], 10)
	}
	return strings.Join(parts, ", ")
}

func formatRate(r float64) string {
	switch {
	case r >= 10_000:
		return strconv.FormatFloat(r, 'f', 0, 64)
	case r >= 10:
		return strconv.FormatFloat(r, 'f', 1, 64)
	default:
		return strconv.FormatFloat(r, 'f', 2, 64)
	}
}

func formatDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}
