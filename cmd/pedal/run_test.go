package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pedal-project/pedal/internal/analytics/chtest"
	"github.com/pedal-project/pedal/internal/jwtauth"
	"github.com/pedal-project/pedal/internal/pgtest"
)

// testJWTSecret signs the tokens of every server the tests start (--jwt-secret);
// testToken is an admin's, sent by every request the tests make through
// http.DefaultTransport.
const testJWTSecret = "7e57c0de7e57c0de7e57c0de7e57c0de7e57c0de7e57c0de7e57c0de7e57c0de"

var testToken string

func TestMain(m *testing.M) {
	// The kill test re-executes this binary as a pedal process.
	if os.Getenv("PEDAL_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	key, err := jwtauth.ParseKey(testJWTSecret)
	if err != nil {
		panic(err)
	}
	testToken, err = jwtauth.Mint(key, jwtauth.MintClaims{Subject: "test-admin", Role: jwtauth.RoleAdmin, Issuer: "pedal",
		Audience: "pedal", TTL: 24 * time.Hour})
	if err != nil {
		panic(err)
	}
	http.DefaultTransport = bearer{http.DefaultTransport}
	goleak.VerifyTestMain(servers{m}, goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"))
}

// servers runs the tests, then stops the database servers they started.
type servers struct{ m *testing.M }

func (s servers) Run() int {
	code := chtest.Main(s.m).Run()
	pgtest.Stop()
	return code
}

// bearer adds testToken to requests that carry no Authorization.
type bearer struct{ next http.RoundTripper }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+testToken)
	}
	return b.next.RoundTrip(r)
}

func (b bearer) CloseIdleConnections() {
	if c, ok := b.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// lineWriter collects output lines and tells waiters about them.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines []string
	added chan struct{}
}

func newLineWriter() *lineWriter { return &lineWriter{added: make(chan struct{}, 1)} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			break
		}
		w.lines = append(w.lines, string(w.buf.Next(i+1)))
	}
	select {
	case w.added <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "") + w.buf.String()
}

// waitFor returns the first JSON log line whose msg is msg.
func (w *lineWriter) waitFor(t *testing.T, msg string, done <-chan error) map[string]any {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		for _, l := range w.lines {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
				w.mu.Unlock()
				return m
			}
		}
		w.mu.Unlock()
		select {
		case <-w.added:
		case err := <-done:
			t.Fatalf("pedal exited before logging %q: %v\n%s", msg, err, w.String())
		case <-deadline:
			t.Fatalf("no %q log line within 30s:\n%s", msg, w.String())
		}
	}
}

type server struct {
	url    string
	cancel context.CancelFunc
	done   chan error
	out    *lineWriter
}

// startServer runs pedal serve in-process on a free port.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := newLineWriter()
	done := make(chan error, 1)
	args = append([]string{"serve", "--http-addr", "127.0.0.1:0", "--log-min-free-bytes", "0", "--jwt-secret", testJWTSecret}, args...)
	go func() { done <- run(ctx, args, func(string) string { return "" }, out, out) }()
	m := out.waitFor(t, "pedal serving", done)
	s := &server{url: "http://" + m["http_addr"].(string), cancel: cancel, done: done, out: out}
	t.Cleanup(func() { s.stop(t) })
	return s
}

func (s *server) stop(t *testing.T) {
	t.Helper()
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("pedal serve returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("pedal serve did not stop within 30s")
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeEndToEnd(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, "--data-dir", dir)
	if code, body := get(t, s.url+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, _ := get(t, s.url+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d, want 200", code)
	}
	req, _ := http.NewRequest("POST", s.url+"/v1/clicks", strings.NewReader(`[{"click_id":"c1","ad_id":"ad-1"},{"click_id":"c2","ad_id":"ad-2","country":"ZZ"}]`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 202 || !strings.Contains(string(b), `"accepted":1`) || !strings.Contains(string(b), `"field":"country"`) {
		t.Errorf("POST /v1/clicks = %d %s", resp.StatusCode, b)
	}
	code, metrics := get(t, s.url+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		"go_goroutines ", "process_cpu_seconds_total ",
		"pedal_ingest_clicks_accepted_total 1",
		`pedal_ingest_clicks_rejected_total{code="invalid"} 1`,
		`http_server_request_duration_seconds_count{code="202",route="clicks-ingest"} 1`,
		"pedal_eventlog_appended_records_total 1",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	checkMetricsWithPromtool(t, metrics)
	if _, err := os.Stat(filepath.Join(dir, signingKeyFile)); err != nil {
		t.Errorf("no signing key generated in the data dir: %v", err)
	}
	s.stop(t)
	if !strings.Contains(s.out.String(), `"msg":"draining"`) {
		t.Errorf("no draining log line on shutdown:\n%s", s.out.String())
	}
	// A restart on the same data dir keeps the clicks and the key.
	s2 := startServer(t, "--data-dir", dir)
	_, metrics = get(t, s2.url+"/metrics")
	if !strings.Contains(metrics, "pedal_eventlog_disk_bytes") {
		t.Errorf("restarted server's /metrics lacks the event log")
	}
}

func checkMetricsWithPromtool(t *testing.T, metrics string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not installed (apt-get install prometheus)")
		}
		t.Log("promtool not installed; skipping the metrics lint")
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(metrics)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestServeHelpDocumentsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	err := run(t.Context(), []string{"serve", "--help"}, func(string) string { return "" }, &out, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("serve --help: %v", err)
	}
	for _, name := range []string{"data-dir", "http-addr", "max-body-bytes", "max-event-age", "partitions", "click-signing-key", "trusted-proxies", "log-retention", "OTEL_TRACES_EXPORTER"} {
		if !strings.Contains(out.String(), name) {
			t.Errorf("serve --help does not mention %s", name)
		}
	}
	// Every flag names its environment variable.
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "-") && !strings.Contains(out.String(), envName(strings.Fields(strings.TrimSpace(line))[0][1:])) {
			t.Errorf("flag line %q has no PEDAL_* variable in the help", line)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--partitions", "0"}, nil, "--partitions"},
		{[]string{"--http-addr", "nonsense"}, nil, "--http-addr"},
		{[]string{"--log-level", "loud"}, nil, "--log-level"},
		{[]string{"--trusted-proxies", "10.0.0.0/8,not-an-ip"}, nil, "not-an-ip"},
		{nil, map[string]string{"PEDAL_MAX_EVENT_AGE": "a week"}, "PEDAL_MAX_EVENT_AGE"},
		{nil, map[string]string{"PEDAL_MAX_BODY_BYTES": "lots"}, "PEDAL_MAX_BODY_BYTES"},
		{[]string{"extra"}, nil, "unexpected arguments"},
		{[]string{"--dedup-horizon", "0s"}, nil, "--dedup-horizon"},
		{[]string{"--ip-rate-limit", "0"}, nil, "--ip-rate-limit"},
		{[]string{"--aggregate-session-timeout", "0s"}, nil, "--aggregate-session-timeout"},
		{[]string{"--analytics-retention", "-1h"}, nil, "--analytics-retention"},
		{[]string{"--bot-ua-file", "/nonexistent/bots.txt"}, nil, "--bot-ua-file"},
		{[]string{"--bot-ua-file", emptyFile(t)}, nil, "no substrings"},
		{[]string{"--fetch-dns-server", "10.0.0.53"}, nil, "--fetch-dns-server"},
		{[]string{"--fetch-allow-cidr", "10.0.0.0/33"}, nil, "--fetch-allow-cidr"},
		{[]string{"--fetch-deny-cidr", "nonsense"}, nil, "--fetch-deny-cidr"},
		{[]string{"--fetch-allowed-ports", "80,0"}, nil, "--fetch-allowed-ports"},
		{[]string{"--fetch-allowed-ports", ","}, nil, "--fetch-allowed-ports"},
		{[]string{"--metadata-workers", "0"}, nil, "--metadata-workers"},
		{[]string{"--metadata-per-host", "-1"}, nil, "--metadata-per-host"},
		{[]string{"--metadata-max-bytes", "512"}, nil, "--metadata-max-bytes"},
		{[]string{"--metadata-timeout", "0s"}, nil, "--metadata-timeout"},
		{[]string{"--metadata-retries", "-1"}, nil, "--metadata-retries"},
		{[]string{"--metadata-cache-ttl", "-1m"}, nil, "--metadata-cache-ttl"},
		{[]string{"--outbox-poll-interval", "0s"}, nil, "--outbox-poll-interval"},
		{[]string{"--outbox-max-attempts", "0"}, nil, "--outbox-max-attempts"},
		{[]string{"--components", "gateway,cache"}, nil, "--components"},
		{[]string{"--aggregate-partitions", "0-16"}, nil, "--aggregate-partitions"},
		{[]string{"--aggregate-partitions", "3-1"}, nil, "--aggregate-partitions"},
		{[]string{"--aggregate-partitions", "x"}, nil, "--aggregate-partitions"},
		{[]string{"--components", ","}, nil, "--components"},
		{[]string{"--remote", "query"}, nil, "--remote"},
		{[]string{"--remote", "ops=http://127.0.0.1:1"}, nil, "--remote"},
		{[]string{"--remote", "query=ftp://x"}, nil, "--remote"},
		{[]string{"--log", "pulsar://x"}, nil, "--log"},
		{[]string{"--log", "kafka:///"}, nil, "--log"},
		{[]string{"--log", "kafka://b:9092/?acks=1"}, nil, "--log"},
		{[]string{"--sql", "mysql://x"}, nil, "--sql"},
		{[]string{"--sql-replica", "postgres://r/db"}, nil, "--sql-replica"},
		{[]string{"--analytics", "clickhouse"}, nil, "--analytics"},
		{[]string{"--cache", "redis://h:1/zero"}, nil, "--cache"},
	}
	for _, tt := range tests {
		_, err := parseServeConfig(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseServeConfig(%v, %v) = %v, want an error naming %s", tt.args, tt.env, err, tt.want)
		}
	}
	cfg, err := parseServeConfig([]string{"--max-body-bytes", "2MiB"}, func(k string) string {
		return map[string]string{"PEDAL_HTTP_ADDR": "127.0.0.1:9999", "PEDAL_MAX_BODY_BYTES": "1MiB"}[k]
	}, io.Discard)
	if err != nil || cfg.HTTPAddr != "127.0.0.1:9999" || cfg.Ingest.MaxBodyBytes != 2<<20 {
		t.Errorf("env default and flag override: addr %q body %d, %v", cfg.HTTPAddr, cfg.Ingest.MaxBodyBytes, err)
	}
	bots := filepath.Join(t.TempDir(), "bots.txt")
	if err := os.WriteFile(bots, []byte("# ours\nEvilCrawler\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err = parseServeConfig([]string{"--bot-ua-file", bots}, func(string) string { return "" }, io.Discard)
	if err != nil || len(cfg.Aggregate.BotSubstrings) != 1 || cfg.Aggregate.BotSubstrings[0] != "evilcrawler" {
		t.Errorf("--bot-ua-file: %q, %v", cfg.Aggregate.BotSubstrings, err)
	}
	if err := run(t.Context(), []string{"frobnicate"}, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
		t.Error("an unknown command succeeded")
	}
}

func TestSignClickRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, "--data-dir", dir)
	var out bytes.Buffer
	err := run(t.Context(), []string{"sign-click", "--data-dir", dir, "--ad-id", "ad-5", "--dest", "https://shop.example/x", "--public-url", s.url}, func(string) string { return "" }, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "https://shop.example/x" {
		t.Errorf("signed URL answered %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	err = run(t.Context(), []string{"sign-click", "--data-dir", dir, "--ad-id", "ad-5", "--dest", "ftp://x"}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--dest") {
		t.Errorf("sign-click with an ftp destination: %v, want an error naming --dest", err)
	}
	err = run(t.Context(), []string{"sign-click", "--data-dir", t.TempDir(), "--ad-id", "a", "--dest", "https://x.example/"}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--click-signing-key") {
		t.Errorf("sign-click without a key: %v, want advice naming --click-signing-key", err)
	}
}

// postBatch sends n clicks with ids prefix-0..n-1 and reports whether they were
// acknowledged.
func postBatch(client *http.Client, url, prefix string, n int) (bool, error) {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"click_id":"%s-%d","ad_id":"ad-%d"}`, prefix, i, i%37)
	}
	b.WriteByte(']')
	req, err := http.NewRequest("POST", url+"/v1/clicks", strings.NewReader(b.String()))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusAccepted, nil
}

// childAddr reads a child's stdout for its listening address, and for the
// log messages also named in wait.
func childAddr(t *testing.T, r io.Reader, wait ...string) string {
	t.Helper()
	sc := bufio.NewScanner(r)
	addr := ""
	missing := map[string]bool{}
	for _, w := range wait {
		missing[w] = true
	}
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		msg, _ := m["msg"].(string)
		delete(missing, msg)
		if msg == "pedal serving" {
			addr = "http://" + m["http_addr"].(string)
		}
		if addr != "" && len(missing) == 0 {
			go io.Copy(io.Discard, r) // keep the pipe drained
			return addr
		}
	}
	t.Fatalf("child exited without serving: %v", sc.Err())
	return ""
}

func emptyFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
