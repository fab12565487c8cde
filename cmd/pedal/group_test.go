package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pedal-project/pedal/internal/analytics/chtest"
)

// child is a pedal serve process of a test.
type child struct {
	cmd *exec.Cmd
	url string
}

// startChild runs pedal serve in a child process on a free port; it is
// killed when the test ends if still running.
func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	args = append([]string{"serve", "--http-addr", "127.0.0.1:0", "--log-min-free-bytes", "0", "--jwt-secret", testJWTSecret}, args...)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "PEDAL_TEST_MAIN=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	// PEDAL_TEST_CHILD_LOGS=DIR keeps the children's logs there.
	if dir := os.Getenv("PEDAL_TEST_CHILD_LOGS"); dir != "" {
		f, err := os.CreateTemp(dir, "child-*.log")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return &child{cmd: cmd, url: childAddr(t, io.TeeReader(stdout, f))}
	}
	return &child{cmd: cmd, url: childAddr(t, stdout)}
}

// TestAggregatorGroupSurvivesKillAndZombie runs one ingest process and two
// aggregator processes in one consumer group on Kafka (kfake), with totals in
// ClickHouse, under a ledger-keeping load with duplicates, bots, bursts and
// late clicks. Mid-run, one aggregator is stopped (SIGSTOP) past its session,
// so that the other takes its partitions over, and resumed: a zombie until
// the group tells it. Then the other is killed with SIGKILL, and the first
// takes every partition over. The totals in ClickHouse must equal the
// ledger's reference model exactly.
func TestAggregatorGroupSurvivesKillAndZombie(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pedal processes and database servers")
	}
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close) // after the servers, which stop in cleanups registered later
	shared := []string{"--partitions", "4", "--aggregate-flush-interval", "100ms", "--aggregate-session-timeout", "6s",
		"--log", "kafka://" + strings.Join(kafka.ListenAddrs(), ",") + "/", "--analytics", chtest.Start(t)}
	front := startServer(t, append([]string{"--data-dir", t.TempDir(), "--components", "gateway,ingest,query,metadata,relay"}, shared...)...)
	aggregator := func() *child {
		return startChild(t, append([]string{"--data-dir", t.TempDir(), "--components", "aggregate"}, shared...)...)
	}
	a, b := aggregator(), aggregator()

	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(t.Context(), []string{"loadgen", "--target", front.url, "--token", testToken, "--rate", "2000", "--batch", "50",
			"--duration", "24s", "--concurrency", "4", "--ads", "200", "--dup-share", "0.1", "--bot-share", "0.05",
			"--burst-share", "0.05", "--late-share", "0.05", "--too-late-share", "0.02",
			"--verify", "--verify-timeout", "90s"}, func(string) string { return "" }, &out, &out)
	}()
	step := func(after time.Duration, what string, sig syscall.Signal, c *child) {
		time.Sleep(after)
		t.Logf("%s", what)
		if err := c.cmd.Process.Signal(sig); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	step(4*time.Second, "SIGSTOP a: b takes its partitions over once its session expires", syscall.SIGSTOP, a)
	step(9*time.Second, "SIGCONT a: a zombie until the group tells it", syscall.SIGCONT, a)
	step(5*time.Second, "SIGKILL b: a takes every partition over", syscall.SIGKILL, b)
	if err := <-done; err != nil {
		t.Fatalf("loadgen --verify: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "verify: OK, no mismatch") {
		t.Fatalf("loadgen --verify:\n%s", out.String())
	}
	t.Logf("%s", out.String())

	// a rebuilt partitions from the log, and b's, before it died, too.
	_, metrics := get(t, a.url+"/metrics")
	var rebuilds float64
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, `pedal_aggregate_takeover_duration_seconds_count{how="rebuild"}`) {
			fmt.Sscan(strings.Fields(line)[1], &rebuilds)
		}
	}
	if rebuilds == 0 {
		t.Errorf("the surviving aggregator rebuilt no partition:\n%s", metrics)
	}
}
