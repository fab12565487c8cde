package logship

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/protobuf/proto"
)

// receiver is an OTLP/HTTP logs endpoint that keeps what it is sent: the
// "seq" attribute of every record, request by request.
type receiver struct {
	t *testing.T
	// answer, when set, picks the status and body of the n-th request (from
	// 1); a nil body means an empty ExportLogsServiceResponse.
	answer func(n int) (int, []byte)

	mu       sync.Mutex
	requests []request
	seen     map[int64]int
}

type request struct {
	path    string
	header  http.Header
	seqs    []int64
	records []*logspb.LogRecord
	req     *collogspb.ExportLogsServiceRequest
}

func newReceiver(t *testing.T) *receiver {
	return &receiver{t: t, seen: map[int64]int{}}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			rc.t.Errorf("gzip body: %v", err)
			http.Error(w, "bad gzip", http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return // the connection went away
	}
	var req collogspb.ExportLogsServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		rc.t.Errorf("request body is not an ExportLogsServiceRequest: %v", err)
		http.Error(w, "bad protobuf", http.StatusBadRequest)
		return
	}
	got := request{path: r.URL.Path, header: r.Header.Clone(), req: &req}
	for _, rl := range req.GetResourceLogs() {
		for _, sl := range rl.GetScopeLogs() {
			for _, lr := range sl.GetLogRecords() {
				got.records = append(got.records, lr)
				for _, kv := range lr.GetAttributes() {
					if kv.GetKey() == "seq" {
						got.seqs = append(got.seqs, kv.GetValue().GetIntValue())
					}
				}
			}
		}
	}
	rc.mu.Lock()
	rc.requests = append(rc.requests, got)
	n := len(rc.requests)
	status, answer := http.StatusOK, []byte(nil)
	if rc.answer != nil {
		status, answer = rc.answer(n)
	}
	if status/100 == 2 {
		for _, s := range got.seqs {
			rc.seen[s]++
		}
	}
	rc.mu.Unlock()
	if answer == nil {
		answer, _ = proto.Marshal(&collogspb.ExportLogsServiceResponse{})
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(status)
	w.Write(answer)
}

// records returns how many records were accepted.
func (rc *receiver) records() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, c := range rc.seen {
		n += c
	}
	return n
}

func (rc *receiver) snapshot() ([]request, map[int64]int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	seen := make(map[int64]int, len(rc.seen))
	for k, v := range rc.seen {
		seen[k] = v
	}
	return append([]request(nil), rc.requests...), seen
}

// serve starts h on addr ("127.0.0.1:0" for a free port); the server is
// closed at the end of the test if not before.
func serve(t *testing.T, addr string, h http.Handler) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// canceled is a done context: Close with it stops at once, leaving what is
// not delivered in the spool (for cleanups after a failed test).
var canceled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// waitFor polls cond until it holds, failing the test after a generous
// deadline (a deadline for waiting, not a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// counts of a shipper's metrics.
func counter64(c prometheus.Collector) int { return int(testutil.ToFloat64(c)) }
func exported(s *Shipper) int              { return int(testutil.ToFloat64(s.m.exported)) }
func failures(s *Shipper) int              { return int(testutil.ToFloat64(s.m.failures)) }
func dropped(s *Shipper, reason string) int {
	return int(testutil.ToFloat64(s.m.dropped.WithLabelValues(reason)))
}
func droppedTotal(s *Shipper) int {
	n := 0
	for _, r := range []string{reasonQueueFull, reasonSpoolFull, reasonSpoolError, reasonCorrupt, reasonRejected, reasonClosed} {
		n += dropped(s, r)
	}
	return n
}

// accounted is every record the shipper was given and knows where it is:
// exported, dropped, spooled or queued.
func accounted(s *Shipper) int {
	n, _ := s.spool.size()
	return exported(s) + droppedTotal(s) + int(n) + s.q.len()
}

// lockedBuffer is a stderr tests can read while the shipper writes it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) lines() []string {
	s := strings.TrimSuffix(b.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// counter is a slog handler counting the records it is given.
type counter struct{ n *atomic.Int64 }

func (c counter) Enabled(context.Context, slog.Level) bool  { return true }
func (c counter) Handle(context.Context, slog.Record) error { c.n.Add(1); return nil }
func (c counter) WithAttrs([]slog.Attr) slog.Handler        { return c }
func (c counter) WithGroup(string) slog.Handler             { return c }

// leaks is a slog handler keeping the messages it is given.
type leaks struct {
	mu   sync.Mutex
	msgs []string
}

func (l *leaks) Enabled(context.Context, slog.Level) bool { return true }
func (l *leaks) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *leaks) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *leaks) WithGroup(string) slog.Handler      { return l }

func (l *leaks) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.msgs) == 0 {
		return ""
	}
	return fmt.Sprintf("%d records reached slog's default logger: %q", len(l.msgs), l.msgs)
}

// catchLeaks makes slog's default logger, which the standard log package
// also writes to, keep its records for the rest of the test: anything the
// shipper, its HTTP client or OpenTelemetry wrote through slog.Default or
// log.Print would show up there. (The test servers log elsewhere.)
func catchLeaks(t *testing.T) *leaks {
	l := &leaks{}
	prev := slog.Default()
	slog.SetDefault(slog.New(l))
	t.Cleanup(func() { slog.SetDefault(prev) })
	return l
}

// spoolBytesOnDisk sums the sizes of the files in dir, temporary ones too.
func spoolBytesOnDisk(dir string) int64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			n += info.Size()
		}
	}
	return n
}

func resourceAttr(r *collogspb.ExportLogsServiceRequest, key string) string {
	for _, rl := range r.GetResourceLogs() {
		for _, kv := range rl.GetResource().GetAttributes() {
			if kv.GetKey() == key {
				return kv.GetValue().GetStringValue()
			}
		}
	}
	return ""
}
