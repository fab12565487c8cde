// Package redistest runs a private redis-server for tests.
//
// [Start] launches
//
//	redis-server --bind 127.0.0.1 --port <free port> --save '' --appendonly no --dir <t.TempDir()>
//
// for one test and kills it when the test ends, so every test gets an empty
// server of its own and tests may use t.Parallel. It never touches a Redis
// that already runs on the machine (such as one on 127.0.0.1:6379).
//
// When redis-server is not on PATH the test is skipped, or fails if the CI
// environment variable is set; install it with
//
//	apt-get install -y redis-server
//
// Failure tests use [Server.Stop] (the process is killed: connections are
// refused), [Server.Pause] (the process is stopped with SIGSTOP: the kernel
// still accepts connections but nothing answers, so clients run into their
// timeouts) and [Server.Restart] (a fresh, empty server on the same port).
//
// # Concurrency
//
// The methods of a [Server] are meant to be called from the test goroutine;
// [Server.Addr] may be called from any goroutine.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pedal-project/pedal/internal/redisconn"
)

// startTimeout bounds how long Start waits for the server to answer PING.
const startTimeout = 10 * time.Second

// Server is a redis-server process owned by one test.
type Server struct {
	t      testing.TB
	bin    string
	dir    string
	addr   string        // 127.0.0.1:port, fixed for the life of the Server
	proc   *os.Process   // nil when not running
	exited chan struct{} // closed when proc has been waited for
}

// Start starts a redis-server on a free loopback port and registers its
// shutdown with t.Cleanup. It skips the test when redis-server is not
// installed (fails when CI is set).
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server not found on PATH; install it with: apt-get install -y redis-server"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(s.kill)
	var lastErr error
	for range 3 { // the free port may be taken between probe and bind
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: %v", lastErr)
	return nil
}

// Addr returns the server's address, "127.0.0.1:port". It stays the same
// across Stop and Restart.
func (s *Server) Addr() string { return s.addr }

// Stop kills the server (SIGKILL) and waits for it to exit: from then on
// connections to Addr are refused. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.t.Helper()
	s.kill()
}

// Restart starts a new, empty server on the same address, stopping the
// running one first if any.
func (s *Server) Restart() {
	s.t.Helper()
	s.kill()
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart: %v", err)
	}
}

// Pause freezes the server with SIGSTOP. The kernel keeps accepting TCP
// connections on its port, but no command is answered until Resume: clients
// see a hung server and run into their read timeouts.
func (s *Server) Pause() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP)
}

// Resume undoes Pause.
func (s *Server) Resume() {
	s.t.Helper()
	s.signal(syscall.SIGCONT)
}

func (s *Server) signal(sig syscall.Signal) {
	if s.proc == nil {
		s.t.Fatalf("redistest: %v: server is not running", sig)
	}
	if err := s.proc.Signal(sig); err != nil {
		s.t.Fatalf("redistest: %v: %v", sig, err)
	}
}

func (s *Server) start() error {
	_, port, _ := net.SplitHostPort(s.addr)
	logPath := filepath.Join(s.dir, "redis.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(s.bin,
		"--bind", "127.0.0.1",
		"--port", port,
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	setPdeathsig(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	var waitErr error
	s.proc, s.exited = cmd.Process, make(chan struct{})
	go func(exited chan struct{}) { // ends when the process does; kill waits for it
		waitErr = cmd.Wait()
		close(exited)
	}(s.exited)

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.exited:
			s.proc, s.exited = nil, nil
			return fmt.Errorf("redis-server on %s exited at start (%v): %s", s.addr, waitErr, tail(logPath))
		default:
		}
		if err := ping(s.addr); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server on %s did not answer PING within %v (%v): %s", s.addr, startTimeout, err, tail(logPath))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill stops the process, if running, and waits for it to exit.
func (s *Server) kill() {
	if s.proc == nil {
		return
	}
	_ = s.proc.Kill() // SIGKILL also ends a SIGSTOPped process
	<-s.exited
	s.proc, s.exited = nil, nil
}

// ping sends an inline PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("listener address is not TCP")
	}
	return addr.Port, nil
}

// tail returns the end of the server's log, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

// Client returns a fail-fast client (package redisconn) for the Redis at
// addr, closed when the test ends.
func Client(t testing.TB, addr string) *redis.Client {
	t.Helper()
	rdb, err := redisconn.New(redisconn.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}
