package logship

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
)

// SpoolDirName is the spool's directory under the data dir.
const SpoolDirName = "log-spool"

// FromEnv builds a Shipper from the standard OpenTelemetry variables, read
// with getenv, and returns its Handler and Close. Shipping is off unless
// OTEL_LOGS_EXPORTER=otlp: then the handler is nil and close does nothing.
//
//	OTEL_LOGS_EXPORTER                  otlp, or none (the default)
//	OTEL_EXPORTER_OTLP_LOGS_ENDPOINT    full URL of the logs endpoint, used as is
//	OTEL_EXPORTER_OTLP_ENDPOINT         base URL; /v1/logs is appended (default http://localhost:4318)
//	OTEL_EXPORTER_OTLP[_LOGS]_PROTOCOL  http/protobuf (the only one supported, and the default)
//	OTEL_EXPORTER_OTLP[_LOGS]_HEADERS   key=value,... (values percent-decoded)
//	OTEL_EXPORTER_OTLP[_LOGS]_TIMEOUT   milliseconds per request (default 10000)
//	OTEL_EXPORTER_OTLP[_LOGS]_COMPRESSION  gzip or none
//	OTEL_EXPORTER_OTLP[_LOGS]_CERTIFICATE  PEM file of CAs verifying an https endpoint
//	OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES  resource (service.name defaults to pedal)
//	OTEL_BLRP_MAX_QUEUE_SIZE            records held in memory (default 2048, at most 1048576)
//	OTEL_BLRP_MAX_EXPORT_BATCH_SIZE     records per batch (default 512)
//	OTEL_BLRP_SCHEDULE_DELAY            milliseconds a record may wait for a batch (default 1000)
//	PEDAL_LOG_SPOOL_BYTES               spool cap, e.g. 64MiB (default), at least 1MiB
//
// The _LOGS_ variable wins over the general one. OTEL_BLRP_EXPORT_TIMEOUT has
// no use here: a batch is never abandoned on a timer, it waits in the spool.
// Client certificates (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE) are refused as
// unsupported rather than ignored.
//
// The spool is <dataDir>/log-spool. When shipping is on, FromEnv also sends
// otel's global error handler to stderr (rate-limited), so that errors of the
// OpenTelemetry SDK can never travel through the standard log package into
// slog and the logs being shipped.
func FromEnv(getenv func(string) string, dataDir string, level slog.Leveler, reg prometheus.Registerer, stderr io.Writer) (slog.Handler, func(context.Context) error, error) {
	noop := func(context.Context) error { return nil }
	cfg, on, err := configFromEnv(getenv)
	if err != nil || !on {
		return nil, noop, err
	}
	cfg.Dir = filepath.Join(dataDir, SpoolDirName)
	cfg.Level = level
	s, err := New(cfg, reg, stderr)
	if err != nil {
		return nil, noop, err
	}
	otel.SetErrorHandler(otelErrors{newReporter(stderr, "pedal: otel: ", s.cfg.ReportInterval, s.cfg.Now)})
	return s.Handler(), s.Close, nil
}

// configFromEnv reads the variables FromEnv documents; on reports whether
// shipping is asked for.
func configFromEnv(getenv func(string) string) (cfg Config, on bool, err error) {
	for _, v := range strings.Split(getenv("OTEL_LOGS_EXPORTER"), ",") {
		switch v = strings.TrimSpace(v); v {
		case "", "none":
		case "otlp":
			on = true
		default:
			return cfg, false, fmt.Errorf("OTEL_LOGS_EXPORTER=%q: pedal ships logs with otlp only (they always go to stdout as JSON); want otlp or none", v)
		}
	}
	if !on {
		return cfg, false, nil
	}
	// first returns the signal-specific variable if set, else the general one.
	first := func(suffix string) (name, value string) {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_LOGS_" + suffix, "OTEL_EXPORTER_OTLP_" + suffix} {
			if v := strings.TrimSpace(getenv(k)); v != "" {
				return k, v
			}
		}
		return "", ""
	}
	if k, v := first("PROTOCOL"); v != "" && v != "http/protobuf" {
		return cfg, false, fmt.Errorf("%s=%q: pedal ships logs over http/protobuf only (set OTEL_EXPORTER_OTLP_LOGS_PROTOCOL=http/protobuf, and OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, to keep another protocol for traces)", k, v)
	}
	if cfg.Endpoint, err = endpointFromEnv(getenv); err != nil {
		return cfg, false, err
	}
	if k, v := first("HEADERS"); v != "" {
		if cfg.Headers, err = parsePairs(k, v); err != nil {
			return cfg, false, err
		}
	}
	if k, v := first("TIMEOUT"); v != "" {
		if cfg.Timeout, err = millis(k, v); err != nil {
			return cfg, false, err
		}
	}
	switch k, v := first("COMPRESSION"); v {
	case "", "none":
	case "gzip":
		cfg.Gzip = true
	default:
		return cfg, false, fmt.Errorf("%s=%q: want gzip or none", k, v)
	}
	if k, v := first("CERTIFICATE"); v != "" {
		pem, err := os.ReadFile(v)
		if err != nil {
			return cfg, false, fmt.Errorf("%s: %w", k, err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return cfg, false, fmt.Errorf("%s=%s: no PEM certificate in the file", k, v)
		}
	}
	for _, suffix := range []string{"CLIENT_CERTIFICATE", "CLIENT_KEY"} {
		if k, v := first(suffix); v != "" {
			return cfg, false, fmt.Errorf("%s: client certificates are not supported for log export", k)
		}
	}
	if v := strings.TrimSpace(getenv("OTEL_RESOURCE_ATTRIBUTES")); v != "" {
		if cfg.Resource, err = parsePairs("OTEL_RESOURCE_ATTRIBUTES", v); err != nil {
			return cfg, false, err
		}
	}
	if v := strings.TrimSpace(getenv("OTEL_SERVICE_NAME")); v != "" {
		if cfg.Resource == nil {
			cfg.Resource = map[string]string{}
		}
		cfg.Resource["service.name"] = v
	}
	for name, dst := range map[string]*int{"OTEL_BLRP_MAX_QUEUE_SIZE": &cfg.MaxQueue, "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": &cfg.BatchSize} {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 || n > maxQueue {
				return cfg, false, fmt.Errorf("%s=%q: want a number of records from 1 to %d", name, v, maxQueue)
			}
			*dst = n
		}
	}
	if cfg.MaxQueue > 0 && cfg.BatchSize > cfg.MaxQueue {
		return cfg, false, fmt.Errorf("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE=%d: want at most OTEL_BLRP_MAX_QUEUE_SIZE (%d)", cfg.BatchSize, cfg.MaxQueue)
	}
	if v := strings.TrimSpace(getenv("OTEL_BLRP_SCHEDULE_DELAY")); v != "" {
		if cfg.BatchDelay, err = millis("OTEL_BLRP_SCHEDULE_DELAY", v); err != nil {
			return cfg, false, err
		}
	}
	if v := strings.TrimSpace(getenv("PEDAL_LOG_SPOOL_BYTES")); v != "" {
		n, err := parseBytes(v)
		if err != nil || n < 1<<20 {
			return cfg, false, fmt.Errorf("PEDAL_LOG_SPOOL_BYTES=%q: want a size of at least 1MiB, such as 64MiB", v)
		}
		cfg.MaxSpoolBytes = n
	}
	return cfg, true, nil
}

// endpointFromEnv returns the logs endpoint: the signal-specific URL as is,
// or the base URL with /v1/logs appended to its path.
func endpointFromEnv(getenv func(string) string) (string, error) {
	name, raw, base := "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")), false
	if raw == "" {
		name, raw, base = "OTEL_EXPORTER_OTLP_ENDPOINT", strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")), true
	}
	if raw == "" {
		return "http://localhost:4318/v1/logs", nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("%s=%q: want an http or https URL without user info, such as http://collector:4318", name, raw)
	}
	if base {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/logs"
		u.RawPath = ""
	}
	return u.String(), nil
}

// parsePairs reads key=value,key=value with percent-encoded values (the
// format of OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES).
func parsePairs(name, s string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range strings.Split(s, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%s: %q is not key=value", name, item)
		}
		dv, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%s: value of %q: %w", name, k, err)
		}
		out[k] = dv
	}
	return out, nil
}

func millis(name, v string) (time.Duration, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || n > int64(time.Hour/time.Millisecond) {
		return 0, fmt.Errorf("%s=%q: want a positive number of milliseconds (at most an hour)", name, v)
	}
	return time.Duration(n) * time.Millisecond, nil
}

// parseBytes reads a byte count with an optional suffix, as pedal's size
// flags do: KiB, MiB, GiB (binary), KB, MB, GB (decimal) or B.
func parseBytes(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}
