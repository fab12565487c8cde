package logship

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		on      bool
		want    Config
		wantErr string // a part of the error naming what is wrong
	}{
		{name: "unset", env: nil},
		{name: "none", env: map[string]string{"OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}},
		{name: "defaults", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp"}, on: true,
			want: Config{Endpoint: "http://localhost:4318/v1/logs"}},
		{name: "base endpoint gets /v1/logs", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "https://c.example:4318/otlp/"}, on: true,
			want: Config{Endpoint: "https://c.example:4318/otlp/v1/logs"}},
		{name: "logs endpoint as is, and everything else", on: true, env: map[string]string{
			"OTEL_LOGS_EXPORTER":                  "none,otlp",
			"OTEL_EXPORTER_OTLP_ENDPOINT":         "http://ignored:4318",
			"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT":    "http://c:9999/custom",
			"OTEL_EXPORTER_OTLP_PROTOCOL":         "http/protobuf",
			"OTEL_EXPORTER_OTLP_HEADERS":          "ignored=1",
			"OTEL_EXPORTER_OTLP_LOGS_HEADERS":     "Authorization=Bearer%20t0k, x-tenant = a%2Cb ",
			"OTEL_EXPORTER_OTLP_TIMEOUT":          "2500",
			"OTEL_EXPORTER_OTLP_LOGS_COMPRESSION": "gzip",
			"OTEL_RESOURCE_ATTRIBUTES":            "deployment.environment=prod,service.name=overridden",
			"OTEL_SERVICE_NAME":                   "pedal-eu",
			"OTEL_BLRP_MAX_QUEUE_SIZE":            "4096",
			"OTEL_BLRP_MAX_EXPORT_BATCH_SIZE":     "1024",
			"OTEL_BLRP_SCHEDULE_DELAY":            "250",
			"PEDAL_LOG_SPOOL_BYTES":               "8MiB",
		}, want: Config{
			Endpoint: "http://c:9999/custom",
			Headers:  map[string]string{"Authorization": "Bearer t0k", "x-tenant": "a,b"},
			Timeout:  2500 * time.Millisecond, Gzip: true,
			Resource: map[string]string{"deployment.environment": "prod", "service.name": "pedal-eu"},
			MaxQueue: 4096, BatchSize: 1024, BatchDelay: 250 * time.Millisecond,
			MaxSpoolBytes: 8 << 20,
		}},
		{name: "console", env: map[string]string{"OTEL_LOGS_EXPORTER": "console"}, wantErr: `OTEL_LOGS_EXPORTER="console"`},
		{name: "grpc", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, wantErr: `OTEL_EXPORTER_OTLP_PROTOCOL="grpc"`},
		{name: "logs protocol wins", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/json"}, wantErr: "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"},
		{name: "bad endpoint", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, wantErr: "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{name: "user info", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://u:p@c:4318/v1/logs"}, wantErr: "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"},
		{name: "bad header", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "a=1,novalue"}, wantErr: `OTEL_EXPORTER_OTLP_HEADERS: "novalue"`},
		{name: "bad timeout", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "10s"}, wantErr: "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT"},
		{name: "bad compression", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, wantErr: "OTEL_EXPORTER_OTLP_COMPRESSION"},
		{name: "client certificate", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "/c.pem"}, wantErr: "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"},
		{name: "missing CA file", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"}, wantErr: "OTEL_EXPORTER_OTLP_CERTIFICATE"},
		{name: "batch above queue", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_BLRP_MAX_QUEUE_SIZE": "10", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "20"}, wantErr: "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"},
		{name: "bad queue", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_BLRP_MAX_QUEUE_SIZE": "-1"}, wantErr: "OTEL_BLRP_MAX_QUEUE_SIZE"},
		{name: "huge queue", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_BLRP_MAX_QUEUE_SIZE": "1000000000"}, wantErr: "OTEL_BLRP_MAX_QUEUE_SIZE"},
		{name: "small spool", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "PEDAL_LOG_SPOOL_BYTES": "64KiB"}, wantErr: "PEDAL_LOG_SPOOL_BYTES"},
		{name: "bad resource", env: map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_RESOURCE_ATTRIBUTES": "=x"}, wantErr: "OTEL_RESOURCE_ATTRIBUTES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, on, err := configFromEnv(env(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if on != tc.on {
				t.Fatalf("on = %v, want %v", on, tc.on)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(Config{}, "Level", "Now"), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCACertificateFromEnv(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o644)
	_, _, err := configFromEnv(env(map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_CERTIFICATE": bad}))
	if err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("error %v, want one saying the file holds no certificate", err)
	}
}

func TestFromEnvOff(t *testing.T) {
	h, closeFn, err := FromEnv(env(nil), t.TempDir(), slog.LevelInfo, prometheus.NewRegistry(), nil)
	if err != nil || h != nil {
		t.Fatalf("FromEnv without OTEL_LOGS_EXPORTER: %v, %v; want no handler", h, err)
	}
	if err := closeFn(t.Context()); err != nil {
		t.Error(err)
	}
}

// TestFromEnvShips runs the whole path the server uses: variables in, a
// record with a span out at the collector, with its headers, compression,
// path and resource; and otel's global error handler writes to stderr, not
// into slog.
func TestFromEnvShips(t *testing.T) {
	leaked := catchLeaks(t)
	prevOtel := otel.GetErrorHandler()
	t.Cleanup(func() { otel.SetErrorHandler(prevOtel) })
	rc := newReceiver(t)
	srv := serve(t, "127.0.0.1:0", rc)
	dataDir := t.TempDir()
	var stderr lockedBuffer
	h, closeFn, err := FromEnv(env(map[string]string{
		"OTEL_LOGS_EXPORTER":               "otlp",
		"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": srv.URL + "/custom/logs",
		"OTEL_EXPORTER_OTLP_HEADERS":       "authorization=Bearer%20abc,x-tenant=t1",
		"OTEL_EXPORTER_OTLP_COMPRESSION":   "gzip",
		"OTEL_SERVICE_NAME":                "pedal-test",
		"OTEL_RESOURCE_ATTRIBUTES":         "deployment.environment=ci",
	}), dataDir, slog.LevelInfo, prometheus.NewRegistry(), &stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeFn(canceled) })
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	logger := slog.New(h)
	logger.DebugContext(ctx, "below the level")
	logger.InfoContext(ctx, "shipped", "seq", 7)
	if _, err := os.Stat(filepath.Join(dataDir, SpoolDirName)); err != nil {
		t.Errorf("spool directory: %v", err)
	}
	if err := closeFn(t.Context()); err != nil { // Close delivers what is queued
		t.Fatal(err)
	}
	reqs, _ := rc.snapshot()
	if len(reqs) != 1 || len(reqs[0].records) != 1 {
		t.Fatalf("%d requests, want 1 with the one record at INFO", len(reqs))
	}
	r := reqs[0]
	for k, want := range map[string]string{"Authorization": "Bearer abc", "X-Tenant": "t1", "Content-Encoding": "gzip", "Content-Type": "application/x-protobuf"} {
		if got := r.header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if r.path != "/custom/logs" {
		t.Errorf("path %q, want /custom/logs", r.path)
	}
	for k, want := range map[string]string{"service.name": "pedal-test", "deployment.environment": "ci"} {
		if got := resourceAttr(r.req, k); got != want {
			t.Errorf("resource %s = %q, want %q", k, got, want)
		}
	}
	if lr := r.records[0]; trace.TraceID(lr.GetTraceId()) != tid || lr.GetBody().GetStringValue() != "shipped" {
		t.Errorf("record %v, want the body and the span's trace id", lr)
	}

	otel.Handle(errors.New("exporter exploded"))
	if !strings.Contains(stderr.String(), "pedal: otel: exporter exploded") {
		t.Errorf("otel's error did not reach stderr: %q", stderr.String())
	}
	if l := leaked.String(); l != "" {
		t.Error(l)
	}
}
