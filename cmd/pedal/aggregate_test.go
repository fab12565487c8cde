package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/clicks/reference"
)

// TestLoadgenVerifyAgainstServe is the acceptance test of the click pipeline:
// pedal loadgen sends a stream with duplicates, bots, ip bursts, late and
// too-late clicks to a real pedal serve, then checks every window of every ad
// against the reference model through the query API: zero mismatches.
func TestLoadgenVerifyAgainstServe(t *testing.T) {
	s := startServer(t, "--data-dir", t.TempDir(), "--partitions", "4")
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"loadgen", "--target", s.url, "--token", testToken, "--rate", "6000", "--batch", "50",
		"--duration", "2s", "--concurrency", "8", "--ads", "200", "--dup-share", "0.1", "--bot-share", "0.05",
		"--burst-share", "0.1", "--late-share", "0.05", "--too-late-share", "0.02",
		"--verify", "--verify-timeout", "60s"}, func(string) string { return "" }, &stdout, &stderr)
	if err != nil {
		t.Fatalf("loadgen --verify: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "verify: OK, no mismatch") {
		t.Fatalf("no verification verdict:\n%s", stdout.String())
	}
	t.Log(stdout.String())
}

// TestQueryAPIServesAggregates posts a few clicks and reads them back through
// every query endpoint.
func TestQueryAPIServesAggregates(t *testing.T) {
	s := startServer(t, "--data-dir", t.TempDir(), "--partitions", "2")
	now := time.Now().UTC().Truncate(time.Minute).Add(-2 * time.Minute)
	ts := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339Nano) }
	body := fmt.Sprintf(`{"click_id":"a","ad_id":"ad-q","ts":%q,"country":"DE","ip":"81.2.3.4"}
{"click_id":"a","ad_id":"ad-q","ts":%q,"country":"DE","ip":"81.2.3.4"}
{"click_id":"b","ad_id":"ad-q","ts":%q,"country":"US","ip":"81.2.3.5"}
{"click_id":"c","ad_id":"ad-q","ts":%q,"country":"US","user_agent":"curl/8.5.0"}
{"click_id":"d","ad_id":"ad-r","ts":%q,"country":"US"}
`, ts(time.Second), ts(2*time.Second), ts(3*time.Second), ts(70*time.Second), ts(5*time.Second))
	resp, err := http.Post(s.url+"/v1/clicks", "application/x-ndjson", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("POST /v1/clicks = %d %s", resp.StatusCode, b)
	}
	getJSON := func(path string, v any) int {
		t.Helper()
		resp, err := http.Get(s.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp.StatusCode
	}
	waitCaughtUp(t, http.DefaultClient, s.url)
	from, to := now.Add(-time.Hour).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339)

	got := seriesOf(t, http.DefaultClient, s.url, "ad-q", now.Add(-time.Hour), now.Add(time.Hour))
	want := map[time.Time]reference.Counts{now: {Clicks: 2}, now.Add(time.Minute): {Invalid: 1}}
	if !maps.Equal(got, want) {
		t.Errorf("series of ad-q = %v, want %v", got, want)
	}
	var series struct {
		Points []struct {
			Clicks int64 `json:"clicks"`
		} `json:"points"`
	}
	if code := getJSON("/v1/ads/ad-q/clicks?from="+from+"&to="+to+"&country=de", &series); code != 200 || len(series.Points) != 1 || series.Points[0].Clicks != 1 {
		t.Errorf("series of ad-q in DE = %d %+v, want one click", code, series.Points)
	}

	var top struct {
		Ads []struct {
			AdID   string `json:"ad_id"`
			Clicks int64  `json:"clicks"`
		} `json:"ads"`
	}
	if code := getJSON("/v1/ads/top?from="+from+"&to="+to, &top); code != 200 ||
		fmt.Sprint(top.Ads) != "[{ad-q 2} {ad-r 1}]" {
		t.Errorf("top = %d %v, want [{ad-q 2} {ad-r 1}]", code, top.Ads)
	}
	var quality trafficQuality
	if code := getJSON("/v1/traffic/quality?ad_id=ad-q&from="+from+"&to="+to, &quality); code != 200 ||
		quality.Valid != 2 || quality.Invalid.Bot != 1 || quality.Duplicates != 1 {
		t.Errorf("quality of ad-q = %d %+v, want 2 valid, 1 bot, 1 duplicate", code, quality)
	}
	var problem struct{ Detail string }
	if code := getJSON("/v1/ads/ad-q/clicks?granularity=5m", &problem); code != 400 || !strings.Contains(problem.Detail, "granularity") {
		t.Errorf("bad granularity = %d %q", code, problem.Detail)
	}
}
