package logship

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"testing"
	"testing/slogtest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/protobuf/proto"
)

// capture is a handler whose records are kept in memory.
func capture(level slog.Leveler) (*handler, *[]*logspb.LogRecord) {
	var got []*logspb.LogRecord
	return &handler{emit: func(r *logspb.LogRecord) { got = append(got, r) }, level: level}, &got
}

// goValue turns an OTLP value back into what slogtest compares: strings,
// numbers, bools, bytes and nested maps for groups.
func goValue(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_BytesValue:
		return x.BytesValue
	case *commonpb.AnyValue_KvlistValue:
		return goAttrs(x.KvlistValue.GetValues())
	case nil:
		return nil
	default:
		return x
	}
}

func goAttrs(kvs []*commonpb.KeyValue) map[string]any {
	m := map[string]any{}
	for _, kv := range kvs {
		m[kv.GetKey()] = goValue(kv.GetValue())
	}
	return m
}

// TestHandlerConformance runs the standard library's handler conformance
// suite: groups, WithAttrs, empty groups and attributes, inline groups,
// LogValuer resolution, a zero time left out.
func TestHandlerConformance(t *testing.T) {
	var got *[]*logspb.LogRecord
	slogtest.Run(t, func(*testing.T) slog.Handler {
		var h *handler
		h, got = capture(slog.LevelInfo)
		return h
	}, func(t *testing.T) map[string]any {
		if len(*got) != 1 {
			t.Fatalf("%d records, want 1", len(*got))
		}
		r := (*got)[0]
		m := goAttrs(r.GetAttributes())
		if r.GetTimeUnixNano() != 0 {
			m[slog.TimeKey] = time.Unix(0, int64(r.GetTimeUnixNano()))
		}
		m[slog.LevelKey] = r.GetSeverityText()
		m[slog.MessageKey] = goValue(r.GetBody())
		return m
	})
}

func TestHandlerRecord(t *testing.T) {
	h, got := capture(slog.LevelDebug)
	logger := slog.New(h).With("component", "ingest").WithGroup("req").With("route", "GET /x")
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled,
	}))
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	logger.WarnContext(ctx, "slow \xff request",
		"ms", 12, "ratio", 0.5, "ok", true, "big", uint64(1<<63), "took", 1500*time.Millisecond,
		"at", at, "err", errors.New("boom"), "addr", netip.MustParseAddr("10.0.0.1"), "raw", []byte{1, 2},
		"obj", map[string]int{"a": 1}, slog.Group("empty"))
	logger.Info("plain")

	if len(*got) != 2 {
		t.Fatalf("%d records, want 2", len(*got))
	}
	r := (*got)[0]
	if r.GetSeverityNumber() != logspb.SeverityNumber_SEVERITY_NUMBER_WARN || r.GetSeverityText() != "WARN" {
		t.Errorf("severity %v %q, want WARN", r.GetSeverityNumber(), r.GetSeverityText())
	}
	if got, want := goValue(r.GetBody()), "slow \uFFFD request"; got != want {
		t.Errorf("body %q, want %q (invalid UTF-8 replaced)", got, want)
	}
	if r.GetTimeUnixNano() == 0 || r.GetObservedTimeUnixNano() == 0 {
		t.Errorf("time %d, observed %d: want both set", r.GetTimeUnixNano(), r.GetObservedTimeUnixNano())
	}
	if trace.TraceID(r.GetTraceId()) != tid || trace.SpanID(r.GetSpanId()) != sid || r.GetFlags() != 1 {
		t.Errorf("trace %x span %x flags %d, want the active span's", r.GetTraceId(), r.GetSpanId(), r.GetFlags())
	}
	want := map[string]any{
		"component": "ingest",
		"req": map[string]any{
			"route": "GET /x", "ms": int64(12), "ratio": 0.5, "ok": true, "big": "9223372036854775808",
			"took": int64(1500 * time.Millisecond), "at": "2030-01-02T03:04:05.000000006Z", "err": "boom",
			"addr": "10.0.0.1", "raw": []byte{1, 2}, "obj": `{"a":1}`,
		},
	}
	if diff := cmp.Diff(want, goAttrs(r.GetAttributes())); diff != "" {
		t.Errorf("attributes (-want +got):\n%s", diff)
	}
	// Without a span, no ids.
	if p := (*got)[1]; len(p.GetTraceId()) != 0 || len(p.GetSpanId()) != 0 {
		t.Errorf("record without a span has trace %x span %x", p.GetTraceId(), p.GetSpanId())
	}
}

func TestSeverity(t *testing.T) {
	for _, tc := range []struct {
		level slog.Level
		want  logspb.SeverityNumber
	}{
		{slog.LevelDebug - 20, logspb.SeverityNumber_SEVERITY_NUMBER_TRACE},
		{slog.LevelDebug, logspb.SeverityNumber_SEVERITY_NUMBER_DEBUG},
		{slog.LevelInfo, logspb.SeverityNumber_SEVERITY_NUMBER_INFO},
		{slog.LevelInfo + 2, logspb.SeverityNumber_SEVERITY_NUMBER_INFO3},
		{slog.LevelWarn, logspb.SeverityNumber_SEVERITY_NUMBER_WARN},
		{slog.LevelError, logspb.SeverityNumber_SEVERITY_NUMBER_ERROR},
		{slog.LevelError + 100, logspb.SeverityNumber_SEVERITY_NUMBER_FATAL4},
	} {
		if got := severity(tc.level); got != tc.want {
			t.Errorf("severity(%v) = %v, want %v", tc.level, got, tc.want)
		}
	}
}

func TestHandlerLevel(t *testing.T) {
	h, got := capture(slog.LevelWarn)
	l := slog.New(h)
	l.Info("no")
	l.Error("yes")
	if len(*got) != 1 || goValue((*got)[0].GetBody()) != "yes" {
		t.Errorf("got %v, want only the record at or above WARN", *got)
	}
}

// BenchmarkHandle measures what logging costs the caller with shipping on:
// the conversion to OTLP and the size the queue accounts (the spool and the
// network are the shipper's goroutines' work; see BenchmarkShip).
func BenchmarkHandle(b *testing.B) {
	h := &handler{emit: func(lr *logspb.LogRecord) { proto.Size(lr) }, level: slog.LevelInfo}
	logger := slog.New(h).With("component", "ingest")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		logger.LogAttrs(ctx, slog.LevelInfo, "click batch appended", slog.Int("clicks", 500), slog.String("partition", "7"), slog.Duration("took", 3*time.Millisecond))
	}
}

// BenchmarkShip measures the whole pipeline: records logged, spooled, sent
// and decoded by a receiver on the same machine, until all are delivered.
func BenchmarkShip(b *testing.B) {
	rc := newReceiver(&testing.T{})
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s, err := New(Config{Endpoint: srv.URL + "/v1/logs", Dir: b.TempDir(), MaxQueue: 1 << 16}, prometheus.NewRegistry(), io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(s.Handler()).With("component", "ingest")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		logger.LogAttrs(ctx, slog.LevelInfo, "click batch appended", slog.Int("clicks", 500), slog.String("partition", "7"), slog.Duration("took", 3*time.Millisecond))
	}
	if err := s.Close(b.Context()); err != nil {
		b.Fatal(err)
	}
	if d := droppedTotal(s); d > 0 {
		b.ReportMetric(float64(d)/float64(b.N), "dropped/op")
	}
}
