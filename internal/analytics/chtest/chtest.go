// Package chtest gives tests a ClickHouse database of their own.
//
// Start returns the DSN of a fresh database (test_<random>, dropped when the
// test ends) on one of two servers: the server named by TEST_CLICKHOUSE_DSN
// when it is set, otherwise a private clickhouse-server started once per test
// binary from a private configuration (127.0.0.1 only, free ports, data and
// logs under a temporary directory). NewServer starts a dedicated server that a
// test may kill and restart, to test outages.
//
// When no server is available, tests are skipped, or fail when CI is set. CI
// installs the server with `apt-get install -y clickhouse-server` (Debian's
// 18.16, or any later release).
//
// A package using Start must wrap its tests with Main in TestMain, so that the
// shared server stops after them. Everything here is safe for concurrent use
// by parallel tests. Only tests import this package.
package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// shared is the per-binary server that Start uses; Main stops it.
var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Main wraps m so that its Run stops the shared server, if one was started,
// after the tests. Call it from TestMain:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(chtest.Main(m)) }
//	func TestMain(m *testing.M) { os.Exit(chtest.Main(m).Run()) }
func Main(m *testing.M) interface{ Run() int } { return mainM{m} }

type mainM struct{ m *testing.M }

func (m mainM) Run() int {
	code := m.m.Run()
	if shared.srv != nil {
		shared.srv.stop()
		os.RemoveAll(shared.srv.dir)
	}
	return code
}

// Start returns the DSN (clickhouse://host:port/test_<random>) of a new, empty
// database; it is dropped when the test ends.
func Start(t testing.TB) string {
	t.Helper()
	base := os.Getenv("TEST_CLICKHOUSE_DSN")
	if base == "" {
		shared.once.Do(func() {
			dir, err := os.MkdirTemp("", "chtest-")
			if err != nil {
				shared.err = err
				return
			}
			shared.srv, shared.err = startServer(dir)
			if shared.err != nil {
				os.RemoveAll(dir)
			}
		})
		if errors.Is(shared.err, errNotInstalled) {
			skipOrFail(t, shared.err.Error())
		}
		if shared.err != nil {
			t.Fatalf("chtest: %v", shared.err)
		}
		base = shared.srv.DSN("default")
	}
	return createDatabase(t, base)
}

// Server is a private clickhouse-server process.
type Server struct {
	dir               string // config, data and logs
	bin               string
	args              []string
	tcpPort, httpPort int

	mu     sync.Mutex
	cmd    *exec.Cmd     // nil when stopped
	exited chan struct{} // closed when cmd has exited
}

// NewServer starts a dedicated server for t, stopped and removed when t ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	if os.Getenv("TEST_CLICKHOUSE_DSN") != "" {
		if _, _, err := lookServer(); err != nil {
			t.Skip("chtest: a dedicated server needs clickhouse-server installed locally; TEST_CLICKHOUSE_DSN cannot be stopped")
		}
	}
	s, err := startServer(t.TempDir())
	if errors.Is(err, errNotInstalled) {
		skipOrFail(t, err.Error())
	}
	if err != nil {
		t.Fatalf("chtest: %v", err)
	}
	t.Cleanup(s.stop)
	return s
}

// DSN returns the native-protocol DSN of database db on s.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("clickhouse://127.0.0.1:%d/%s", s.tcpPort, db)
}

// Database creates a new, empty database on s for t and returns its DSN.
func (s *Server) Database(t testing.TB) string {
	t.Helper()
	return createDatabase(t, s.DSN("default"))
}

// Stop stops the server (SIGTERM, then SIGKILL after 10s); its data stays.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.stop()
}

// Kill kills the server at once, as a crash would; its data stays.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart starts a stopped server again on the same ports and data.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.run(); err != nil {
		t.Fatalf("chtest: restart: %v", err)
	}
}

var errNotInstalled = errors.New("clickhouse-server is not installed (apt-get install -y clickhouse-server), and TEST_CLICKHOUSE_DSN is not set")

// lookServer finds the server binary: clickhouse-server, or the single
// clickhouse binary of newer releases.
func lookServer() (bin string, args []string, err error) {
	for _, name := range []string{"clickhouse-server", "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil, nil
		}
	}
	for _, name := range []string{"clickhouse", "/usr/bin/clickhouse"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, []string{"server"}, nil
		}
	}
	return "", nil, errNotInstalled
}

func startServer(dir string) (*Server, error) {
	bin, args, err := lookServer()
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, bin: bin, args: args}
	// Another process may take a free port between picking and binding it:
	// try a few times.
	for range 3 {
		if s.tcpPort, s.httpPort, err = freePorts(); err != nil {
			return nil, err
		}
		if err = s.writeConfig(); err != nil {
			return nil, err
		}
		if err = s.run(); err == nil {
			return s, nil
		}
	}
	return nil, err
}

func freePorts() (tcp, http int, err error) {
	var ports [2]int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], nil
}

const configTemplate = `<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>%[1]s/log/server.log</log>
    <errorlog>%[1]s/log/server.err.log</errorlog>
    <console>0</console>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>%[2]d</tcp_port>
  <http_port>%[3]d</http_port>
  <path>%[1]s/data/</path>
  <tmp_path>%[1]s/tmp/</tmp_path>
  <user_files_path>%[1]s/user_files/</user_files_path>
  <format_schema_path>%[1]s/format_schemas/</format_schema_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <query_log>
    <database>system</database>
    <table>query_log</table>
    <flush_interval_milliseconds>500</flush_interval_milliseconds>
  </query_log>
</yandex>
`

func (s *Server) writeConfig() error {
	for _, d := range []string{"log", "data", "tmp", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o755); err != nil {
			return err
		}
	}
	cfg := fmt.Sprintf(configTemplate, s.dir, s.tcpPort, s.httpPort)
	return os.WriteFile(filepath.Join(s.dir, "config.xml"), []byte(cfg), 0o644)
}

// run starts the process and waits until it answers.
func (s *Server) run() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("already running")
	}
	out, err := os.OpenFile(filepath.Join(s.dir, "log", "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(s.bin, append(s.args, "--config-file="+filepath.Join(s.dir, "config.xml"))...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr() // dies with the test binary
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	// Ready when the native protocol answers a ping: it is the protocol the
	// tests use, and internal/archtest keeps net/http clients to
	// internal/safehttp.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if s.ping() == nil {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("clickhouse-server exited at startup: %s", s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("clickhouse-server did not answer on port %d within 30s: %s", s.tcpPort, s.logTail())
		}
	}
}

func (s *Server) ping() error {
	opts, err := clickhouse.ParseDSN(s.DSN("default"))
	if err != nil {
		return err
	}
	opts.DialTimeout = time.Second
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return conn.Ping(ctx)
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "log", "server.err.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(terminate)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

func createDatabase(t testing.TB, base string) string {
	t.Helper()
	opts, err := clickhouse.ParseDSN(base)
	if err != nil {
		t.Fatalf("chtest: parse DSN: %v", err)
	}
	var b [6]byte
	rand.Read(b[:])
	db := "test_" + hex.EncodeToString(b[:])
	opts.Auth.Database = "default"
	conn, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatalf("chtest: connect: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		conn.Close()
		t.Fatalf("chtest: create database: %v", err)
	}
	t.Cleanup(func() {
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db); err != nil {
			t.Logf("chtest: drop database %s: %v", db, err)
		}
	})
	return dsnOf(opts, db)
}

// dsnOf returns the DSN of database db on the first address of opts.
func dsnOf(opts *clickhouse.Options, db string) string {
	u := "clickhouse://"
	if opts.Auth.Username != "" && opts.Auth.Username != "default" || opts.Auth.Password != "" {
		u += opts.Auth.Username + ":" + opts.Auth.Password + "@"
	}
	host := "127.0.0.1:9000"
	if len(opts.Addr) > 0 {
		host = opts.Addr[0]
	}
	return u + host + "/" + db
}

func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
		t.Fatal("chtest: " + msg)
	}
	t.Skip("chtest: " + msg)
}
