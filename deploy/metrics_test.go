package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pedal-project/pedal/internal/analytics/chtest"
	"github.com/pedal-project/pedal/internal/jwtauth"
)

// testJWTSecret signs the tokens of the servers the tests start.
const testJWTSecret = "de910ede910ede910ede910ede910ede910ede910ede910ede910ede910ede91"

// synthetic are series Prometheus makes itself rather than scrapes.
var synthetic = map[string]bool{"up": true, "ALERTS": true}

// scrape is what /metrics exported: for each sample name, the label names seen.
type scrape map[string]map[string]bool

func (s scrape) merge(o scrape) {
	for name, labels := range o {
		if s[name] == nil {
			s[name] = map[string]bool{}
		}
		for l := range labels {
			s[name][l] = true
		}
	}
}

// parseScrape reads the Prometheus text exposition format.
func parseScrape(text string) (scrape, error) {
	out := scrape{}
	for n, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end <= 0 {
			return nil, fmt.Errorf("line %d: no sample name: %q", n+1, line)
		}
		name := line[:end]
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		if line[end] != '{' {
			continue
		}
		_, labels, err := matchers(line, end)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", n+1, err)
		}
		for _, l := range labels {
			out[name][l] = true
		}
	}
	return out, nil
}

// targetLabels are added by Prometheus to every scraped series.
var targetLabels = map[string]bool{"job": true, "instance": true}

// missing returns, one line each, the references to metrics that scraped
// does not have, or with a label matcher on a label none of its samples has.
// Names with a colon are recording rules, checked against recorded.
func missing(refs []reference, scraped scrape, recorded map[string]bool) []string {
	var out []string
	for _, r := range refs {
		switch {
		case synthetic[r.Name]:
		case strings.Contains(r.Name, ":"):
			if !recorded[r.Name] {
				out = append(out, fmt.Sprintf("%s (recording rule not defined; %s)", r.Name, r.where))
			}
		case scraped[r.Name] == nil:
			out = append(out, fmt.Sprintf("%s (%s)", r.Name, r.where))
		default:
			for _, l := range r.Labels {
				if !targetLabels[l] && !scraped[r.Name][l] {
					out = append(out, fmt.Sprintf("%s has no label %q (%s)", r.Name, l, r.where))
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestMissing(t *testing.T) {
	scraped, err := parseScrape(`# HELP a_total A.
# TYPE a_total counter
a_total{code="x",route="r"} 1
b_bucket{le="+Inf"} 3
c 0
`)
	if err != nil {
		t.Fatal(err)
	}
	refs := []reference{
		{selector{"a_total", []string{"code", "job"}}, "r1"},
		{selector{"a_total", []string{"reason"}}, "r2"},
		{selector{"b_bucket", []string{"le", "instance"}}, "r3"},
		{selector{Name: "b"}, "r4"}, // a histogram's family name has no series of its own
		{selector{Name: "c"}, "r5"},
		{selector{Name: "d"}, "r6"},
		{selector{Name: "up"}, "r7"},
		{selector{Name: "job:a:rate5m"}, "r8"},
		{selector{Name: "job:e:rate5m"}, "r9"},
	}
	got := missing(refs, scraped, map[string]bool{"job:a:rate5m": true})
	want := []string{`a_total has no label "reason" (r2)`, "b (r4)", "d (r6)", "job:e:rate5m (recording rule not defined; r9)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("missing (-want +got):\n%s", diff)
	}
}

// TestMetricsExist starts pedal twice, on its embedded storage and on Kafka
// (kfake) with ClickHouse, sends each a little traffic so that metric vectors
// get their first children, and checks that every metric the rules and the
// dashboard name is exported by one of them.
func TestMetricsExist(t *testing.T) {
	if testing.Short() {
		t.Skip("builds pedal and starts servers")
	}
	refs, recorded := references(t)
	if t.Failed() {
		t.FailNow()
	}
	bin := pedalBinary(t)
	var mu sync.Mutex
	all := scrape{}
	scraped := 0
	t.Run("servers", func(t *testing.T) {
		t.Run("embedded", func(t *testing.T) {
			t.Parallel()
			s := startPedal(t, bin)
			got := s.exercise(t)
			mu.Lock()
			all.merge(got)
			scraped++
			mu.Unlock()
		})
		t.Run("kafka-clickhouse", func(t *testing.T) {
			t.Parallel()
			ch := chtest.Start(t)
			kafka, err := kfake.NewCluster(kfake.NumBrokers(1))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(kafka.Close)
			s := startPedal(t, bin, "--log", "kafka://"+strings.Join(kafka.ListenAddrs(), ",")+"/",
				"--analytics", ch, "--partitions", "4")
			got := s.exercise(t)
			mu.Lock()
			all.merge(got)
			scraped++
			mu.Unlock()
		})
	})
	if t.Failed() {
		t.FailNow() // a server did not run: its metrics would all look missing
	}
	if scraped < 2 { // ClickHouse not installed, outside CI (chtest fails under CI)
		t.Skip("pedal on Kafka and ClickHouse did not run; its metrics cannot be checked")
	}
	if m := missing(refs, all, recorded); len(m) > 0 {
		t.Errorf("the rules or the dashboard name metrics that pedal does not export:\n  %s", strings.Join(m, "\n  "))
	}
	t.Logf("%d references checked against %d exported sample names", len(refs), len(all))
}

var (
	buildOnce sync.Once
	binDir    string // removed by TestMain
	binPath   string
	buildErr  error
)

// pedalBinary builds cmd/pedal once per test binary.
func pedalBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("go not on PATH: %w", err)
			return
		}
		if binDir, buildErr = os.MkdirTemp("", "pedal-deploy-test-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "pedal")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", binPath, "github.com/pedal-project/pedal/cmd/pedal")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // the static build CI makes anyway: cached
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/pedal: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type pedal struct {
	url   string
	token string
}

// startPedal runs pedal serve on a free loopback port with an empty data dir,
// and stops it (SIGTERM, expecting exit status 0) when the test ends.
func startPedal(t *testing.T, bin string, args ...string) *pedal {
	t.Helper()
	args = append([]string{"serve", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0",
		"--log-min-free-bytes", "0", "--jwt-secret", testJWTSecret, "--aggregate-flush-interval", "50ms"}, args...)
	cmd := exec.Command(bin, args...)
	setPdeathsig(cmd)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			logs.Write(append(sc.Bytes(), '\n'))
			var m struct {
				Msg      string `json:"msg"`
				HTTPAddr string `json:"http_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &m) == nil && m.Msg == "pedal serving" {
				select {
				case addr <- m.HTTPAddr:
				default:
				}
			}
		}
		io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("pedal serve exited with %v:\n%s", err, logs.String())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("pedal serve did not stop within 30s of SIGTERM")
		}
	})
	select {
	case a := <-addr:
		key, err := jwtauth.ParseKey(testJWTSecret)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwtauth.Mint(key, jwtauth.MintClaims{Subject: "deploy-test", Role: jwtauth.RoleAdmin,
			Issuer: "pedal", Audience: "pedal", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return &pedal{url: "http://" + a, token: tok}
	case err := <-exited:
		t.Fatalf("pedal serve %s exited before serving: %v\n%s", strings.Join(args, " "), err, logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("pedal serve did not log \"pedal serving\" within 60s:\n%s", logs.String())
	}
	return nil
}

// exercise sends what makes pedal's metric vectors appear (accepted and
// refused clicks, a request refused by the gateway, a metadata task), waits
// until the clicks are aggregated and the task is finished, and returns the
// scrape.
func (p *pedal) exercise(t *testing.T) scrape {
	t.Helper()
	now := time.Now().UnixMilli()
	clicks := fmt.Sprintf(`[{"click_id":"d1","ad_id":"ad-1","ts":%d},`+
		`{"click_id":"d2","ad_id":"ad-2","ts":%d,"country":"ZZ"},`+
		`{"click_id":"d3","ad_id":"ad-1","ts":%d,"user_agent":"Googlebot/2.1"},`+
		`{"click_id":"d1","ad_id":"ad-1","ts":%d}]`, now, now, now, now)
	if code, body := p.post(t, "/v1/clicks", p.token, clicks); code != http.StatusAccepted {
		t.Fatalf("POST /v1/clicks: %d %s", code, body)
	}
	if code, body := p.post(t, "/v1/clicks", "", clicks); code != http.StatusUnauthorized {
		t.Fatalf("POST /v1/clicks without a token: %d %s, want 401", code, body)
	}
	// localhost resolves (from /etc/hosts, no DNS server asked) to a loopback
	// address, which the SSRF policy refuses: the task fails without any
	// connection being made.
	if code, body := p.post(t, "/v1/metadata/collect", p.token,
		`{"target_url": "http://localhost/", "requested_by": "deploy-test"}`); code != http.StatusAccepted {
		t.Fatalf("POST /v1/metadata/collect: %d %s", code, body)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		text := p.metrics(t)
		// valid and bot_user_agent (the duplicate may fall into the next flush)
		if strings.Contains(text, "\npedal_aggregate_freshness_seconds ") &&
			strings.Contains(text, "\npedal_metadata_tasks_total{") &&
			!strings.Contains(text, `pedal_aggregate_clicks_total{verdict="valid"} 0`) &&
			!strings.Contains(text, `pedal_aggregate_clicks_total{verdict="bot_user_agent"} 0`) {
			s, err := parseScrape(text)
			if err != nil {
				t.Fatalf("/metrics: %v", err)
			}
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("within 60s, the clicks were not aggregated or the metadata task did not finish:\n%s", text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *pedal) post(t *testing.T, path, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "POST", p.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *pedal) metrics(t *testing.T) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", p.url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	return "\n" + string(b)
}

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
