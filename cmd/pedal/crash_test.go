package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/clicks/reference"
	"github.com/pedal-project/pedal/internal/eventlog/eventlogtest"
	"github.com/pedal-project/pedal/internal/eventlog/pebblelog"
)

// TestCrashesCountEachClickOnce drives pedal serve under load and kills it with
// SIGKILL at random points, again and again; after each restart the client
// resends what was not acknowledged and, like a client whose retry raced its
// acknowledgement, some of what was. At the end the totals served by the query
// API must equal the reference model run over the log in log order, window by
// window: no click lost, none counted twice. PEDAL_CRASH_ROUNDS sets the number
// of kills (default 10).
func TestCrashesCountEachClickOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts pedal processes")
	}
	rounds := 10
	if s := os.Getenv("PEDAL_CRASH_ROUNDS"); s != "" {
		var err error
		if rounds, err = strconv.Atoi(s); err != nil {
			t.Fatalf("PEDAL_CRASH_ROUNDS=%q: %v", s, err)
		}
	}
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))    // retries; under mu
	killAt := rand.New(rand.NewPCG(seed, 8)) // kill times; the test goroutine's
	gen := newCrashStream(time.Now())
	var (
		mu      sync.Mutex
		unacked []crashBatch // to send, oldest first
		acked   []crashBatch
	)
	start := func() (*exec.Cmd, string) {
		t.Helper()
		cmd := exec.Command(os.Args[0], "serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--jwt-secret", testJWTSecret,
			"--log-min-free-bytes", "0", "--partitions", "4", "--aggregate-flush-interval", "50ms")
		cmd.Env = append(os.Environ(), "PEDAL_TEST_MAIN=1")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, childAddr(t, stdout)
	}
	next := func() crashBatch {
		mu.Lock()
		defer mu.Unlock()
		if len(unacked) > 0 {
			b := unacked[0]
			unacked = unacked[1:]
			return b
		}
		if len(acked) > 0 && rng.IntN(10) == 0 {
			return acked[rng.IntN(len(acked))] // a retry of an acknowledged batch
		}
		return gen.batch()
	}
	send := func(client *http.Client, base string, stop <-chan struct{}) {
		for {
			select {
			case <-stop:
				return
			default:
			}
			b := next()
			resp, err := client.Post(base+"/v1/clicks", "application/x-ndjson", strings.NewReader(b.body))
			ok := err == nil && resp.StatusCode == http.StatusAccepted
			if err == nil {
				resp.Body.Close()
			}
			mu.Lock()
			if ok {
				acked = append(acked, b)
			} else {
				unacked = append(unacked, b)
			}
			mu.Unlock()
			if !ok {
				return // the server is gone
			}
		}
	}
	for round := range rounds {
		cmd, base := start()
		client := &http.Client{Timeout: 10 * time.Second}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 4 {
			wg.Go(func() { send(client, base, stop) })
		}
		time.Sleep(time.Duration(200+killAt.IntN(1000)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		close(stop)
		wg.Wait()
		client.CloseIdleConnections()
		mu.Lock()
		t.Logf("round %d: %d batches acknowledged, %d to resend", round, len(acked), len(unacked))
		mu.Unlock()
	}

	// The last run: resend what is left, wait for the pipeline, read the totals.
	cmd, base := start()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	client := &http.Client{Timeout: 10 * time.Second}
	for {
		mu.Lock()
		n := len(unacked)
		mu.Unlock()
		if n == 0 {
			break
		}
		b := next()
		resp, err := client.Post(base+"/v1/clicks", "application/x-ndjson", strings.NewReader(b.body))
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("resend after the last restart: %v %v", err, resp)
		}
		resp.Body.Close()
	}
	waitCaughtUp(t, client, base)
	from, to := gen.minTS.Add(-3*time.Hour), gen.maxTS.Add(time.Hour)
	served := map[string]map[time.Time]reference.Counts{}
	for ad := range crashAds {
		served[crashAd(ad)] = seriesOf(t, client, base, crashAd(ad), from, to)
	}
	var quality trafficQuality
	getJSONTo(t, client, base+"/v1/traffic/quality?"+url.Values{"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}.Encode(), &quality)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pedal serve after SIGTERM: %v", err)
	}

	// The reference: the rules applied to the log in log order.
	log, err := pebblelog.Open(filepath.Join(dir, "log"), pebblelog.Config{MinFreeBytes: -1}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	parts, err := log.Partitions(t.Context(), clicks.Topic)
	if err != nil {
		t.Fatal(err)
	}
	inLog := map[string]bool{}
	var results []reference.Result
	for p := range parts {
		m := reference.New(reference.DefaultRules(clicks.DefaultBotSubstrings()))
		for _, r := range eventlogtest.ReadAll(t, log, clicks.Topic, p, 0) {
			c, err := clicks.Decode(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			inLog[c.AdID+"/"+c.ClickID] = true
			rc := reference.Click{ClickID: c.ClickID, AdID: c.AdID, Country: c.Country, UserAgent: c.UserAgent, Time: c.Time}
			if c.IP.IsValid() {
				rc.IP = c.IP.String()
			}
			m.Add(rc)
		}
		results = append(results, m.Result())
	}
	want := reference.Merge(results...)
	for _, b := range acked {
		for _, id := range b.ids {
			if !inLog[id] {
				t.Errorf("acknowledged click %s is not in the log", id)
			}
		}
	}
	expected := map[string]map[time.Time]reference.Counts{}
	for k, c := range want.Windows {
		if expected[k.AdID] == nil {
			expected[k.AdID] = map[time.Time]reference.Counts{}
		}
		e := expected[k.AdID][k.Start]
		e.Clicks += c.Clicks
		e.Invalid += c.Invalid
		expected[k.AdID][k.Start] = e
	}
	mismatches := 0
	for ad, wins := range expected {
		for start, e := range wins {
			if g := served[ad][start]; g != e {
				mismatches++
				t.Errorf("%s %s: served %+v, reference %+v", ad, start.Format(time.RFC3339), g, e)
			}
		}
		for start, g := range served[ad] {
			if _, ok := wins[start]; !ok {
				mismatches++
				t.Errorf("%s %s: served %+v, reference has no such window", ad, start.Format(time.RFC3339), g)
			}
		}
	}
	v := want.Verdicts
	if quality.Valid != v[reference.Valid] || quality.Invalid.Bot != v[reference.BotUserAgent] || quality.Invalid.IPRate != v[reference.IPRate] ||
		quality.Duplicates != v[reference.Duplicate] || quality.TooLate != v[reference.TooLate] {
		t.Errorf("quality %+v, reference %v", quality, v)
	}
	t.Logf("%d kills; %d clicks in the log; reference %v; %d mismatches", rounds, len(inLog), v, mismatches)
	if v[reference.Duplicate] == 0 || v[reference.BotUserAgent] == 0 || v[reference.IPRate] == 0 || v[reference.TooLate] == 0 {
		t.Errorf("the stream does not exercise every rule: %v", v)
	}
}

const crashAds = 23

func crashAd(i int) string { return fmt.Sprintf("ad-crash-%d", i) }

type crashBatch struct {
	body string
	ids  []string // ad/click
}

// crashStream makes batches of 50 clicks: mostly unique, with repeats of
// earlier clicks, bots, bursts from a few ips, and late and too-late clicks.
type crashStream struct {
	rng          *rand.Rand
	t0           time.Time
	seq          int
	recent       []string // NDJSON lines of earlier clicks
	minTS, maxTS time.Time
}

func newCrashStream(now time.Time) *crashStream {
	return &crashStream{rng: rand.New(rand.NewPCG(1, 2)), t0: now, minTS: now, maxTS: now}
}

func (g *crashStream) batch() crashBatch {
	var b strings.Builder
	var ids []string
	for range 50 {
		r := g.rng
		if len(g.recent) > 0 && r.IntN(10) == 0 {
			line := g.recent[r.IntN(len(g.recent))]
			b.WriteString(line)
			continue
		}
		g.seq++
		ad := crashAd(r.IntN(crashAds))
		ts := time.Now().Add(-time.Duration(r.IntN(3000)) * time.Millisecond)
		switch x := r.IntN(100); {
		case x < 2:
			ts = ts.Add(-2 * time.Hour) // too late
		case x < 5:
			ts = ts.Add(-20 * time.Minute) // late, within the horizon
		}
		ua := "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
		if r.IntN(20) == 0 {
			ua = "python-requests/2.31.0"
		}
		ip := fmt.Sprintf("81.2.%d.%d", r.IntN(256), r.IntN(256))
		if r.IntN(10) == 0 {
			ip = fmt.Sprintf("81.3.0.%d", r.IntN(3)) // a burst
		}
		id := fmt.Sprintf("k-%d", g.seq)
		line := fmt.Sprintf(`{"click_id":%q,"ad_id":%q,"ts":%q,"ip":%q,"user_agent":%q,"country":"US"}`+"\n",
			id, ad, ts.UTC().Format(time.RFC3339Nano), ip, ua)
		b.WriteString(line)
		ids = append(ids, ad+"/"+id)
		g.recent = append(g.recent, line)
		if len(g.recent) > 2000 {
			g.recent = g.recent[1000:]
		}
		g.minTS, g.maxTS = minTime(g.minTS, ts), maxTime(g.maxTS, ts)
	}
	return crashBatch{body: b.String(), ids: ids}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func getJSONTo(t *testing.T, client *http.Client, u string, v any) {
	t.Helper()
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

func waitCaughtUp(t *testing.T, client *http.Client, base string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct {
			Partitions []struct{ Lag int64 } `json:"partitions"`
		}
		getJSONTo(t, client, base+"/v1/pipeline/status", &st)
		caught := len(st.Partitions) > 0
		for _, p := range st.Partitions {
			caught = caught && p.Lag == 0
		}
		if caught {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pipeline did not catch up: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func seriesOf(t *testing.T, client *http.Client, base, ad string, from, to time.Time) map[time.Time]reference.Counts {
	t.Helper()
	var s struct {
		Points []struct {
			WindowStart   time.Time `json:"window_start"`
			Clicks        int64     `json:"clicks"`
			InvalidClicks int64     `json:"invalid_clicks"`
		} `json:"points"`
	}
	getJSONTo(t, client, base+"/v1/ads/"+ad+"/clicks?"+url.Values{"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}.Encode(), &s)
	out := map[time.Time]reference.Counts{}
	for _, p := range s.Points {
		out[p.WindowStart] = reference.Counts{Clicks: p.Clicks, Invalid: p.InvalidClicks}
	}
	return out
}

// trafficQuality is the answer of GET /v1/traffic/quality.
type trafficQuality struct {
	Valid   int64 `json:"valid"`
	Invalid struct {
		Bot    int64 `json:"bot_user_agent"`
		IPRate int64 `json:"ip_rate"`
	} `json:"invalid"`
	Duplicates int64 `json:"duplicates"`
	TooLate    int64 `json:"too_late"`
}
