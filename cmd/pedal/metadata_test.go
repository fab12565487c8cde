package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer answers A queries for the names in zone on a loopback UDP port,
// NXDOMAIN for others and no AAAA records at all: a stand-in for the
// resolver of --fetch-dns-server.
func dnsServer(t *testing.T, zone map[string]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			name := strings.TrimSuffix(q.Name.String(), ".")
			addr, known := zone[name]
			rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeSuccess}
			if !known {
				rh.RCode = dnsmessage.RCodeNameError
			}
			b := dnsmessage.NewBuilder(nil, rh)
			b.EnableCompression()
			b.StartQuestions()
			b.Question(q)
			b.StartAnswers()
			if known && q.Type == dnsmessage.TypeA {
				a := netip.MustParseAddr(addr).As4()
				b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: a})
			}
			msg, err := b.Finish()
			if err == nil {
				pc.WriteTo(msg, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// metadataFlags points the outbound fetches of a pedal serve at pages: the
// names resolve through a test DNS server, 127.0.0.1 is let through the
// address policy, and the page server's port is allowed.
func metadataFlags(t *testing.T, pages *httptest.Server, zone map[string]string) []string {
	_, port, _ := net.SplitHostPort(pages.Listener.Addr().String())
	return []string{"--fetch-dns-server", dnsServer(t, zone), "--fetch-allow-cidr", "127.0.0.1/32", "--fetch-allowed-ports", port}
}

func postJSON(t *testing.T, url, body string, header map[string]string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("POST %s: %d %q", url, resp.StatusCode, b)
	}
	return resp.StatusCode, resp.Header, m
}

func submitTask(t *testing.T, base, target string) string {
	t.Helper()
	code, _, m := postJSON(t, base+"/v1/metadata/collect", fmt.Sprintf(`{"target_url": %q, "requested_by": "e2e"}`, target), nil)
	if code != 202 {
		t.Fatalf("collect %s: %d %v", target, code, m)
	}
	return m["task_id"].(string)
}

func waitTask(t *testing.T, base, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var m map[string]any
		getJSONTo(t, http.DefaultClient, base+"/v1/metadata/tasks/"+id, &m)
		if st := m["status"]; st == "SUCCEEDED" || st == "FAILED" {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s unfinished after 60s: %v", id, m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMetadataServe(t *testing.T) {
	pages := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<html><head><meta property="og:title" content="Page %s"><link rel="canonical" href="%s"></head></html>`, r.URL.Path, r.URL.Path)
	}))
	defer pages.Close()
	_, port, _ := net.SplitHostPort(pages.Listener.Addr().String())
	s := startServer(t, append([]string{"--data-dir", t.TempDir()},
		metadataFlags(t, pages, map[string]string{"pages.test": "127.0.0.1", "intranet.test": "10.0.0.7"})...)...)

	target := fmt.Sprintf("http://pages.test:%s/hello", port)
	task := waitTask(t, s.url, submitTask(t, s.url, target))
	res, _ := task["result"].(map[string]any)
	if task["status"] != "SUCCEEDED" || res["title"] != "Page /hello" || res["canonical_url"] != target {
		t.Errorf("task %v", task)
	}

	// A name that resolves to a private address: accepted (names are resolved
	// when fetched), then FAILED as blocked_destination, counted by reason.
	task = waitTask(t, s.url, submitTask(t, s.url, fmt.Sprintf("http://intranet.test:%s/", port)))
	if e, _ := task["error"].(map[string]any); task["status"] != "FAILED" || e["code"] != "blocked_destination" {
		t.Errorf("intranet task %v", task)
	}
	_, metrics := get(t, s.url+"/metrics")
	if !strings.Contains(metrics, `pedal_fetch_blocked_total{reason="private"} 1`) {
		t.Errorf("the refusal is not counted: %s", grepLines(metrics, "pedal_fetch_blocked_total"))
	}
	for _, name := range []string{"pedal_metadata_tasks_total", "pedal_outbox_published_total", "pedal_metadata_collections_total"} {
		if !strings.Contains(metrics, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	// A literal private address is refused at the door.
	if code, _, m := postJSON(t, s.url+"/v1/metadata/collect", `{"target_url": "http://10.0.0.7/", "requested_by": "e2e"}`, nil); code != 400 || m["parameter"] != "target_url" {
		t.Errorf("literal private address: %d %v", code, m)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestMetadataTasksSurviveKills kills pedal (SIGKILL) after a task was
// accepted and before its outbox event was published, and again while a
// worker was fetching a page; every accepted task still completes.
func TestMetadataTasksSurviveKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pedal processes")
	}
	var gateOpen atomic.Bool
	inFlight := make(chan struct{}, 16)
	pages := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/held" && !gateOpen.Load() {
			inFlight <- struct{}{}
			<-r.Context().Done() // held until the client goes away
			return
		}
		fmt.Fprintf(w, "<title>%s</title>", r.URL.Path)
	}))
	defer pages.Close()
	_, port, _ := net.SplitHostPort(pages.Listener.Addr().String())
	dir := t.TempDir()
	flags := metadataFlags(t, pages, map[string]string{"pages.test": "127.0.0.1"})

	var mu sync.Mutex
	var running *exec.Cmd
	start := func(extra ...string) string {
		t.Helper()
		args := append([]string{"serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--log-min-free-bytes", "0",
			"--jwt-secret", testJWTSecret}, flags...)
		cmd := exec.Command(os.Args[0], append(args, extra...)...)
		cmd.Env = append(os.Environ(), "PEDAL_TEST_MAIN=1")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		running = cmd
		mu.Unlock()
		// The relay's first pass is behind us when it says so: a task
		// accepted from then on waits for its next pass.
		return childAddr(t, stdout, "outbox relay started")
	}
	kill := func() {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		running.Process.Kill()
		running.Wait()
		running = nil
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if running != nil {
			running.Process.Kill()
			running.Wait()
		}
	})

	// 1. The relay makes one pass at start, then sleeps an hour: the task
	// is committed with its outbox event, which is not published when pedal dies.
	url := start("--outbox-poll-interval", "1h")
	unpublished := submitTask(t, url, fmt.Sprintf("http://pages.test:%s/unpublished", port))
	var m map[string]any
	getJSONTo(t, http.DefaultClient, url+"/v1/metadata/tasks/"+unpublished, &m)
	if m["status"] != "QUEUED" {
		t.Fatalf("before the kill: %v", m)
	}
	kill()

	// 2. Restarted, the relay publishes it and a worker completes it. A second
	// task is killed while its page is being fetched.
	url = start()
	if task := waitTask(t, url, unpublished); task["status"] != "SUCCEEDED" {
		t.Errorf("the unpublished task after a restart: %v", task)
	}
	held := submitTask(t, url, fmt.Sprintf("http://pages.test:%s/held", port))
	select {
	case <-inFlight:
	case <-time.After(30 * time.Second):
		t.Fatal("the held page was never requested")
	}
	// Longer than the workers' commit interval (200ms): a worker that
	// committed its position past unfinished tasks would lose this one.
	time.Sleep(time.Second)
	kill()

	// 3. Restarted, the task is delivered again and completes on its second attempt.
	gateOpen.Store(true)
	url = start()
	task := waitTask(t, url, held)
	if res, _ := task["result"].(map[string]any); task["status"] != "SUCCEEDED" || res["title"] != "/held" || task["attempts"] != 2.0 {
		t.Errorf("the task killed mid-fetch: %v", task)
	}
}
