package observe

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestTraceContextReachesLogs(t *testing.T) {
	var logs bytes.Buffer
	logger := NewLogger(&logs, slog.LevelInfo)
	tp, shutdown, err := NewTracerProvider(t.Context(), "test", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t.Context())
	reg := NewRegistry()
	h := NewHTTPMetrics(reg).Wrap("GET /x", tp, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logger.InfoContext(r.Context(), "handled")
		w.WriteHeader(http.StatusTeapot)
	}))
	req := httptest.NewRequest("GET", "/x", nil)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)

	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log line %q: %v", logs.String(), err)
	}
	if line["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("trace_id = %v, want the incoming traceparent's trace id", line["trace_id"])
	}
	if sid, _ := line["span_id"].(string); len(sid) != 16 || sid == "00f067aa0ba902b7" {
		t.Errorf("span_id = %v, want a new server span under the caller's", line["span_id"])
	}
	// Without a span, no ids.
	logs.Reset()
	logger.Info("plain")
	if strings.Contains(logs.String(), "trace_id") {
		t.Errorf("a log without a span carries a trace id: %s", logs.String())
	}
	want := `pedal_http_request_duration_seconds_count{code="418",route="GET /x"} 1`
	var buf bytes.Buffer
	rr := httptest.NewRecorder()
	MetricsHandler(reg).ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	buf.Write(rr.Body.Bytes())
	if !strings.Contains(buf.String(), want) {
		t.Errorf("/metrics lacks %q", want)
	}
}

func TestExporterOffByDefault(t *testing.T) {
	if exportConfigured(func(string) string { return "" }) {
		t.Error("export configured with no OTEL_* variables")
	}
	if !exportConfigured(func(k string) string { return map[string]string{"OTEL_TRACES_EXPORTER": "console"}[k] }) {
		t.Error("OTEL_TRACES_EXPORTER=console does not enable export")
	}
}
