package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/jwtauth"
)

// chromiumPath returns Debian's chromium; without it the browser test is
// skipped, except under CI (.ci/run installs it), where it fails. Debian's
// binary is preferred to its launcher script, which adds Google API keys
// and flags of its own (/etc/chromium.d) that make the browser call Google's
// services.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/lib/chromium/chromium"); err == nil {
		return "/usr/lib/chromium/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (CI installs Debian's chromium: see .ci/run)")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// trapProxy is the proxy Chromium is told to use for everything but loopback:
// any connection it receives is the browser trying to reach the outside. It
// answers nothing and records the request line.
type trapProxy struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	seen []string
}

func newTrapProxy(t *testing.T) *trapProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &trapProxy{ln: ln}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			p.mu.Lock()
			p.seen = append(p.seen, strings.TrimSpace(line))
			p.mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *trapProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen)
}

// screenshot saves a full-page screenshot under the test's temp dir, and
// under $PEDAL_DASHBOARD_SCREENSHOTS when set (docs/dashboard.png is one).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	// From the top, where the sticky header belongs.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void]("window.scrollTo(0, 0)")); err != nil {
		t.Fatalf("scroll to the top: %v", err)
	}
	b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dirs := []string{t.TempDir()}
	if d := os.Getenv("PEDAL_DASHBOARD_SCREENSHOTS"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		path := filepath.Join(d, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}
}

// dashboardState is what the dashboard shows, read from its DOM (and, for the
// ad's chart, from the pixels uPlot drew).
type dashboardState struct {
	Polls         int               `json:"polls"`
	Health        string            `json:"health"`
	TokenAsked    bool              `json:"tokenAsked"`
	TokenReason   string            `json:"tokenReason"`
	Who           string            `json:"who"`
	Top           []topRow          `json:"top"`
	Quality       map[string]string `json:"quality"`
	SeriesAd      string            `json:"seriesAd"`
	SeriesValid   string            `json:"seriesValid"`
	SeriesInvalid string            `json:"seriesInvalid"`
	SeriesPoints  string            `json:"seriesPoints"`
	ValidPixels   int               `json:"validPixels"`
	InvalidPixels int               `json:"invalidPixels"`
	RatesPoints   string            `json:"ratesPoints"`
	LagPoints     string            `json:"lagPoints"`
	Charts        int               `json:"charts"`
	RateIngest    string            `json:"rateIngest"`
	RateOut       string            `json:"rateOut"`
	TotalIngest   string            `json:"totalIngest"`
	LagTotal      string            `json:"lagTotal"`
	Freshness     string            `json:"freshness"`
	Partitions    [][]string        `json:"partitions"`
	Breakers      map[string]string `json:"breakers"`
	Rejections    [][]string        `json:"rejections"`
	Tasks         []taskItem        `json:"tasks"`
	APIError      string            `json:"apiError"`
	Background    string            `json:"background"`
}

type topRow struct {
	Ad     string `json:"ad"`
	Clicks string `json:"clicks"`
}

type taskItem struct {
	Status string `json:"status"`
	Text   string `json:"text"`
}

// readDashboard is evaluated in the page; it only reads.
const readDashboard = `(() => {
  const $ = (id) => document.getElementById(id);
  const rows = (sel, f) => Array.from(document.querySelectorAll(sel)).map(f);
  const cells = (tr) => Array.from(tr.cells).map((c) => c.textContent.trim());
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  // Pixels of the ad's chart in a series' colour (bars are filled solid).
  const pixels = (hex) => {
    const canvas = document.querySelector("#chart-series canvas");
    if (!canvas || !/^#[0-9a-f]{6}$/i.test(hex)) return -1;
    // Read a copy, so that the page's own canvas is never read back.
    const copy = document.createElement("canvas");
    copy.width = canvas.width;
    copy.height = canvas.height;
    const ctx = copy.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(canvas, 0, 0);
    const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
    const [r, g, b] = rgb(hex);
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] === 255 && Math.abs(data[i] - r) < 3 && Math.abs(data[i + 1] - g) < 3 && Math.abs(data[i + 2] - b) < 3) n++;
    }
    return n;
  };
  const quality = {};
  rows("#quality tbody tr", (tr) => { quality[tr.dataset.kind] = cells(tr)[1]; });
  const breakers = {};
  rows("#breakers tbody tr", (tr) => { breakers[tr.dataset.cluster] = tr.dataset.state; });
  return {
    polls: Number(document.body.dataset.polls || 0),
    health: $("health").textContent,
    tokenAsked: !$("token-panel").hidden,
    tokenReason: $("token-panel").textContent,
    who: $("whoami").textContent,
    top: rows("#top-ads tbody tr", (tr) => ({ ad: tr.dataset.ad, clicks: cells(tr)[2] })),
    quality: quality,
    seriesAd: $("chart-series").dataset.ad || "",
    seriesValid: ($("series-valid") || {}).textContent || "",
    seriesInvalid: ($("series-invalid") || {}).textContent || "",
    seriesPoints: $("chart-series").dataset.points || "",
    validPixels: pixels(css("--c-valid")),
    invalidPixels: pixels(css("--c-invalid")),
    ratesPoints: $("chart-rates").dataset.points || "",
    lagPoints: $("chart-lag").dataset.points || "",
    charts: document.querySelectorAll(".uplot canvas").length,
    rateIngest: $("rate-ingest").textContent,
    rateOut: $("rate-out").textContent,
    totalIngest: $("total-ingest").textContent,
    lagTotal: $("lag-total").textContent,
    freshness: $("freshness").textContent,
    partitions: rows("#partitions tbody tr", cells),
    breakers: breakers,
    rejections: rows("#rejections tbody tr", cells),
    tasks: rows("#tasks li", (li) => ({ status: li.dataset.status, text: li.textContent })),
    apiError: $("api-error").hidden ? "" : $("api-error").textContent,
    background: getComputedStyle(document.body).backgroundColor,
  };
})()`

// TestDashboardInBrowser loads the dashboard of a running pedal serve in
// headless Chromium, which can reach nothing but loopback: the page asks for
// a token, is given one, and then shows exactly the clicks, quality, series,
// partitions, breakers and rejections the test caused; a metadata task
// submitted through its form shows its result; under loadgen its rates move.
// The console must stay free of errors and exceptions throughout, and every
// request of the page must go to the pedal server. A full-page screenshot is
// saved under the test's temp dir (and to $PEDAL_DASHBOARD_SCREENSHOT when
// set, which is how docs/dashboard.png is made).
func TestDashboardInBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	pages := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, `<html><head><title>Pedals &amp; Bikes</title><meta name="description" content="How pedals work."></head><body>hi</body></html>`)
	}))
	defer pages.Close()
	_, pagesPort, _ := net.SplitHostPort(pages.Listener.Addr().String())
	s := startServer(t, append([]string{"--data-dir", t.TempDir()},
		metadataFlags(t, pages, map[string]string{"pages.test": "127.0.0.1"})...)...)

	// The dashboard's user is a plain user, not an admin.
	key, err := jwtauth.ParseKey(testJWTSecret)
	if err != nil {
		t.Fatal(err)
	}
	token, err := jwtauth.Mint(key, jwtauth.MintClaims{Subject: "dash", Role: jwtauth.RoleUser, Issuer: "pedal", Audience: "pedal", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}

	// Clicks: three ads, two bots and two duplicates.
	var batch []string
	add := func(id, ad, ua string, n int) {
		batch = append(batch, fmt.Sprintf(`{"click_id":%q,"ad_id":%q,"ip":"192.0.2.%d","user_agent":%q,"country":"DE"}`, id, ad, n, ua))
	}
	for i := range 7 {
		add(fmt.Sprintf("one-%d", i), "ad-dash-1", "Mozilla/5.0", i+1)
	}
	add("bot-1", "ad-dash-1", "Googlebot/2.1", 100)
	add("bot-2", "ad-dash-1", "Googlebot/2.1", 101)
	for i := range 4 {
		add(fmt.Sprintf("two-%d", i), "ad-dash-2", "Mozilla/5.0", 20+i)
	}
	add("three-0", "ad-dash-3", "Mozilla/5.0", 30)
	add("three-1", "ad-dash-3", "Mozilla/5.0", 31)
	if code, _, m := postJSON(t, s.url+"/v1/clicks", "["+strings.Join(batch, ",")+"]", nil); code != 202 || m["accepted"] != 15.0 {
		t.Fatalf("POST /v1/clicks: %d %v", code, m)
	}
	dups := []string{batch[0], batch[1]} // the same (ad_id, click_id) again
	if code, _, m := postJSON(t, s.url+"/v1/clicks", "["+strings.Join(dups, ",")+"]", nil); code != 202 || m["accepted"] != 2.0 {
		t.Fatalf("POST /v1/clicks (duplicates): %d %v", code, m)
	}
	// One rejection by the gateway: a request without a token.
	if code, _, _ := call(t, "GET", s.url+"/v1/ads/top", "", ""); code != 401 {
		t.Fatalf("no token: %d, want 401", code)
	}

	// Chromium, headless, with every name but 127.0.0.1 unresolvable and
	// every non-loopback request sent to the trap proxy.
	trap := newTrapProxy(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", "new"),
		chromedp.WindowSize(1440, 1000),
		chromedp.Flag("lang", "en-US"),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-pings", true),
		// Features that call home, on top of those the defaults turn off.
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,OptimizationHints,OptimizationHintsFetching,"+
			"OptimizationGuideModelDownloading,OptimizationTargetPrediction,AutofillServerCommunication,NetworkTimeServiceQuerying,"+
			"MediaRouter,DialMediaRouteProvider,CertificateTransparencyComponentUpdater"),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"),
		chromedp.ProxyServer("http://"+trap.ln.Addr().String()),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium's sandbox refuses to run as root
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc() // after the tab's: waits for the browser to exit
	bctx, cancelTab := chromedp.NewContext(actx)

	// Subscribe before the first navigation, so that nothing is missed.
	var (
		mu       sync.Mutex
		console  []chromedp.ConsoleMessage
		requests []string
		readers  sync.WaitGroup
	)
	messages := chromedp.Console(bctx)
	sent := chromedp.Events(bctx, network.RequestWillBeSent)
	readers.Go(func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			mu.Lock()
			console = append(console, m)
			mu.Unlock()
		}
	})
	readers.Go(func() {
		for ev, err := range sent {
			if err != nil {
				return
			}
			mu.Lock()
			requests = append(requests, ev.Request.URL)
			mu.Unlock()
		}
	})
	defer readers.Wait() // the iterators end with the tab's context
	defer cancelTab()

	read := func() dashboardState {
		t.Helper()
		st, err := chromedp.Run(bctx, chromedp.Evaluate[dashboardState](readDashboard))
		if err != nil {
			t.Fatalf("read the dashboard: %v", err)
		}
		return st
	}
	// waitUntil reads the dashboard until ok accepts it; it only waits, with
	// a generous deadline, and reports what the page last showed.
	waitUntil := func(what string, ok func(dashboardState) bool) dashboardState {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			st := read()
			if ok(st) {
				return st
			}
			if time.Now().After(deadline) {
				b, _ := json.MarshalIndent(st, "", "  ")
				t.Fatalf("the dashboard did not show %s within 90s; it shows:\n%s", what, b)
			}
			<-tick.C
		}
	}
	badConsole := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var bad []string
		for _, m := range console {
			if m.IsException() || m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.Type == "assert" {
				bad = append(bad, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
			}
		}
		return bad
	}

	// 1. Without a token the page asks for one, and says how to mint it.
	if err := chromedp.Do(bctx, chromedp.Navigate(s.url+"/")); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	first := waitUntil("the token prompt and readiness", func(st dashboardState) bool { return st.TokenAsked && st.Health == "ready" })
	if !strings.Contains(first.TokenReason, "pedal token --sub me") {
		t.Errorf("the token prompt does not say how to mint one: %q", first.TokenReason)
	}
	if err := chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.ID("token-input"), token),
		chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)),
	); err != nil {
		t.Fatalf("give the token: %v", err)
	}

	// 2. It shows what the API answers about the clicks sent.
	st := waitUntil("the clicks sent", func(st dashboardState) bool {
		return !st.TokenAsked && len(st.Top) == 3 && st.Quality["duplicates"] == "2" && st.Quality["valid"] == "13" &&
			st.SeriesValid == "7" && st.SeriesInvalid == "2" && st.LagTotal == "0" && len(st.Rejections) > 0
	})
	if diff := cmp.Diff([]topRow{{"ad-dash-1", "7"}, {"ad-dash-2", "4"}, {"ad-dash-3", "2"}}, st.Top); diff != "" {
		t.Errorf("top ads (-want +got):\n%s", diff)
	}
	wantQuality := map[string]string{"valid": "13", "bot user agent": "2", "ip rate": "0", "duplicates": "2", "too late": "0"}
	if diff := cmp.Diff(wantQuality, st.Quality); diff != "" {
		t.Errorf("traffic quality (-want +got):\n%s", diff)
	}
	if st.SeriesAd != "ad-dash-1" || st.SeriesPoints == "" || st.SeriesPoints == "0" {
		t.Errorf("the ad's chart shows %q with %s points, want ad-dash-1 with its minutes", st.SeriesAd, st.SeriesPoints)
	}
	if st.ValidPixels < 20 || st.InvalidPixels < 5 {
		t.Errorf("the ad's chart drew %d pixels of valid clicks and %d of invalid ones: no bars", st.ValidPixels, st.InvalidPixels)
	}
	if st.Who != "as dash" {
		t.Errorf("whoami %q, want %q", st.Who, "as dash")
	}
	if st.TotalIngest != "17" {
		t.Errorf("clicks ingested %q, want 17 (from pedal_ingest_clicks_accepted_total)", st.TotalIngest)
	}
	var logEnd, committed int
	for _, p := range st.Partitions {
		e, _ := strconv.Atoi(p[1])
		c, _ := strconv.Atoi(p[2])
		logEnd, committed = logEnd+e, committed+c
	}
	if len(st.Partitions) != 16 || logEnd != 17 || committed != 17 {
		t.Errorf("partitions: %d rows, log ends summing to %d, committed to %d; want 16, 17, 17", len(st.Partitions), logEnd, committed)
	}
	if st.Freshness == "–" || st.Freshness == "" {
		t.Errorf("freshness %q, want a number", st.Freshness)
	}
	for _, c := range []string{clusterClicks, clusterQuery, clusterMetadata, clusterOps} {
		if st.Breakers[c] != "closed" {
			t.Errorf("breaker of %s: %q, want closed (all: %v)", c, st.Breakers[c], st.Breakers)
		}
	}
	if !slices.ContainsFunc(st.Rejections, func(r []string) bool {
		return r[0] == "query-top" && r[1] == "unauthorized" && r[2] == "1"
	}) {
		t.Errorf("rejections %v: want query-top unauthorized 1", st.Rejections)
	}
	if st.APIError != "" {
		t.Errorf("the page shows an API error: %s", st.APIError)
	}

	// 3. A metadata task submitted through the form shows its result.
	target := fmt.Sprintf("http://pages.test:%s/article", pagesPort)
	if err := chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.ID("collect-url"), target),
		chromedp.Click(chromedp.CSS(`#collect-form button[type="submit"]`)),
	); err != nil {
		t.Fatalf("submit a URL: %v", err)
	}
	st = waitUntil("the metadata task's result", func(st dashboardState) bool {
		return len(st.Tasks) == 1 && (st.Tasks[0].Status == "SUCCEEDED" || st.Tasks[0].Status == "FAILED")
	})
	if task := st.Tasks[0]; task.Status != "SUCCEEDED" || !strings.Contains(task.Text, "Pedals & Bikes") ||
		!strings.Contains(task.Text, "How pedals work.") || !strings.Contains(task.Text, target) {
		t.Errorf("metadata task: %+v, want SUCCEEDED with the page's title and description", task)
	}

	// 4. Under load, the rates move; once it stops, the top ads are the API's.
	lctx, stopLoad := context.WithCancel(ctx)
	var (
		load    sync.WaitGroup
		loadErr error
	)
	defer load.Wait()
	defer stopLoad()
	load.Go(func() {
		loadErr = run(lctx, []string{"loadgen", "--target", s.url, "--token", testToken, "--rate", "1500", "--batch", "50",
			"--concurrency", "4", "--duration", "2m", "--ads", "40", "--dup-share", "0.05", "--bot-share", "0.05",
			"--burst-share", "0.05", "--seed", "7"}, func(string) string { return "" }, io.Discard, io.Discard)
	})
	positive := func(s string) bool {
		f, err := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
		return err == nil && f > 0
	}
	before := read().Polls
	st = waitUntil("non-zero rates under load", func(st dashboardState) bool {
		return positive(st.RateIngest) && positive(st.RateOut) && st.Polls >= before+6
	})
	if n, _ := strconv.Atoi(st.RatesPoints); n < 6 {
		t.Errorf("the throughput chart has %q points, want one per poll", st.RatesPoints)
	}
	if st.Charts < 3 {
		t.Errorf("%d chart canvases, want 3", st.Charts)
	}
	screenshot(t, bctx, "dashboard.png")
	stopLoad()
	load.Wait()
	if loadErr != nil {
		t.Logf("loadgen: %v", loadErr) // stopped early on purpose; its figures do not matter here
	}
	var want struct {
		Ads []struct {
			AdID   string `json:"ad_id"`
			Clicks int64  `json:"clicks"`
		} `json:"ads"`
	}
	st = waitUntil("the API's top ads after the load", func(st dashboardState) bool {
		if st.LagTotal != "0" {
			return false
		}
		getJSONTo(t, http.DefaultClient, s.url+"/v1/ads/top?window=5m&limit=10", &want)
		if len(want.Ads) != len(st.Top) {
			return false
		}
		for i, a := range want.Ads {
			if st.Top[i].Ad != a.AdID || strings.ReplaceAll(st.Top[i].Clicks, ",", "") != strconv.FormatInt(a.Clicks, 10) {
				return false
			}
		}
		return true
	})

	// 5. In a dark theme the charts are drawn again, without an error.
	light := st.Background
	if _, err := chromedp.Call(bctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
	}); err != nil {
		t.Fatalf("emulate a dark theme: %v", err)
	}
	polls := read().Polls
	st = waitUntil("the dark theme", func(st dashboardState) bool {
		return st.Background != light && st.Polls >= polls+2 && st.Charts >= 3 && st.ValidPixels > 0
	})
	screenshot(t, bctx, "dashboard-dark.png")

	// Throughout: no console error or exception, no request elsewhere.
	if bad := badConsole(); len(bad) > 0 {
		t.Errorf("the console has errors:\n%s", strings.Join(bad, "\n"))
	}
	mu.Lock()
	reqs := slices.Clone(requests)
	mu.Unlock()
	if len(reqs) < 10 {
		t.Errorf("only %d requests seen: %v", len(reqs), reqs)
	}
	for _, u := range reqs {
		if !strings.HasPrefix(u, s.url+"/") {
			t.Errorf("the page requested %s, not of the pedal server %s", u, s.url)
		}
	}
	// Chromium's own services (sign-in's account list, the component
	// updater) call Google whatever the flags; the trap proxy, with every
	// other name unresolvable, is why none of those calls left the machine.
	if seen := trap.requests(); len(seen) > 0 {
		t.Logf("Chromium's own requests, stopped by the trap proxy: %q", seen)
	}
}
