package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/eventlog/eventlogtest"
	"github.com/pedal-project/pedal/internal/eventlog/pebblelog"
)

// TestNoAcknowledgedClickLost kills a pedal process in the middle of a load, with
// SIGKILL (a crash) and SIGTERM (a graceful stop), and checks that every click it
// acknowledged is in its log exactly once.
func TestNoAcknowledgedClickLost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pedal processes")
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--log-min-free-bytes", "0",
				"--jwt-secret", testJWTSecret)
			cmd.Env = append(os.Environ(), "PEDAL_TEST_MAIN=1")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := false
			t.Cleanup(func() {
				if !exited {
					cmd.Process.Kill()
					cmd.Wait()
				}
			})
			url := childAddr(t, stdout)

			const perBatch = 50
			var (
				mu     sync.Mutex
				acked  []string // batch prefixes
				wg     sync.WaitGroup
				enough = make(chan struct{})
				once   sync.Once
			)
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
			defer client.CloseIdleConnections()
			for w := range 8 {
				wg.Go(func() {
					for seq := 0; seq < 100_000; seq++ {
						prefix := fmt.Sprintf("w%d-%d", w, seq)
						ok, err := postBatch(client, url, prefix, perBatch)
						if err != nil {
							return // the server is gone
						}
						if ok {
							mu.Lock()
							acked = append(acked, prefix)
							if len(acked) >= 1000 {
								once.Do(func() { close(enough) })
							}
							mu.Unlock()
						}
					}
				})
			}
			select {
			case <-enough:
			case <-time.After(60 * time.Second):
				t.Fatal("fewer than 1000 batches acknowledged in 60s")
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			werr := cmd.Wait()
			exited = true
			wg.Wait()
			if sig == syscall.SIGTERM && werr != nil {
				t.Errorf("after SIGTERM pedal exited with %v, want status 0", werr)
			}
			var ee *exec.ExitError
			if sig == syscall.SIGKILL && !errors.As(werr, &ee) {
				t.Errorf("after SIGKILL: %v", werr)
			}

			log, err := pebblelog.Open(filepath.Join(dir, "log"), pebblelog.Config{MinFreeBytes: -1}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer log.Close()
			seen := map[string]int{}
			parts, err := log.Partitions(t.Context(), clicks.Topic)
			if err != nil {
				t.Fatal(err)
			}
			for p := range parts {
				for _, r := range eventlogtest.ReadAll(t, log, clicks.Topic, p, 0) {
					c, err := clicks.Decode(r.Value)
					if err != nil {
						t.Fatal(err)
					}
					seen[c.ClickID]++
				}
			}
			missing := 0
			for _, prefix := range acked {
				for i := range perBatch {
					id := fmt.Sprintf("%s-%d", prefix, i)
					switch seen[id] {
					case 1:
					case 0:
						missing++
					default:
						t.Errorf("click %s stored %d times", id, seen[id])
					}
				}
			}
			t.Logf("%d batches acknowledged, %d clicks in the log", len(acked), len(seen))
			if missing > 0 {
				t.Errorf("%d acknowledged clicks missing after %v", missing, sig)
			}
		})
	}
}
