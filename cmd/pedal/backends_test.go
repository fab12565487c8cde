package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pedal-project/pedal/internal/analytics/chtest"
	"github.com/pedal-project/pedal/internal/jwtauth"
	"github.com/pedal-project/pedal/internal/pgtest"
	"github.com/pedal-project/pedal/internal/redistest"
)

// TestServeOnRealEngines runs pedal serve on Kafka (kfake, in process),
// PostgreSQL, ClickHouse and Redis instead of its embedded storage: clicks are
// counted through Kafka into ClickHouse, a metadata task goes through the
// PostgreSQL outbox, and a revocation is kept in Redis.
func TestServeOnRealEngines(t *testing.T) {
	if testing.Short() {
		t.Skip("starts database servers")
	}
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close) // after the servers, which stop in cleanups registered later
	pg := pgtest.DSN(t)
	ch := chtest.Start(t)
	rd := redistest.Start(t)

	pages := http.NewServeMux()
	pages.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<title>on real engines</title>") })
	pageSrv := httptest.NewServer(pages)
	defer pageSrv.Close()
	args := []string{"--data-dir", t.TempDir(), "--partitions", "4", "--aggregate-flush-interval", "50ms",
		"--log", "kafka://" + strings.Join(kafka.ListenAddrs(), ",") + "/",
		"--sql", pg, "--sql-replica", pg, "--analytics", ch, "--cache", "redis://" + rd.Addr() + "/0"}
	args = append(args, metadataFlags(t, pageSrv, map[string]string{"pages.test": "127.0.0.1"})...)
	s := startServer(t, args...)

	// Clicks: through Kafka and the aggregator into ClickHouse.
	ok, err := postBatch(http.DefaultClient, s.url, "eng", 40)
	if err != nil || !ok {
		t.Fatalf("post clicks: %v %v", ok, err)
	}
	waitTotalClicks(t, s.url, 40)
	_, metrics := get(t, s.url+"/metrics")
	for _, want := range []string{"pedal_kafkalog_appended_records_total 40", "pedal_analytics_ch_inserts_total"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A metadata task through the PostgreSQL outbox.
	_, port, _ := strings.Cut(strings.TrimPrefix(pageSrv.URL, "http://"), ":")
	task := waitTask(t, s.url, submitTask(t, s.url, fmt.Sprintf("http://pages.test:%s/", port)))
	if res, _ := task["result"].(map[string]any); task["status"] != "SUCCEEDED" || res["title"] != "on real engines" {
		t.Errorf("task %v", task)
	}

	// The result is cached in Redis, for every process.
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	if keys, err := rdb.Keys(t.Context(), "pedal:mdcache:*").Result(); err != nil || len(keys) != 1 {
		t.Errorf("metadata results in Redis: %v %v", keys, err)
	}

	// A revocation kept in Redis.
	if code, _, _ := call(t, "POST", s.url+"/v1/auth/revoke", testToken, ""); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	if code, _, _ := call(t, "GET", s.url+"/v1/ads/top", testToken, ""); code != 401 {
		t.Errorf("a revoked token: %d", code)
	}
	if code, _ := get(t, s.url+"/readyz"); code != 200 {
		t.Errorf("/readyz with every engine up: %d", code)
	}

	// Redis down: not ready, and revocations cannot be checked, so tokens are
	// refused (503, without details) rather than possibly accepted revoked.
	rd.Stop()
	if code, body := get(t, s.url+"/readyz"); code != 503 || body != "not ready: cache unavailable\n" {
		t.Errorf("/readyz without Redis: %d %q", code, body)
	}
	other := mintTestToken(t, "bob")
	code, _, m := call(t, "GET", s.url+"/v1/ads/top", other, "")
	if code != 503 || strings.Contains(fmt.Sprint(m), rd.Addr()) {
		t.Errorf("a token while revocations are unreachable: %d %v", code, m)
	}
}

func mintTestToken(t *testing.T, sub string) string {
	t.Helper()
	key, err := jwtauth.ParseKey(testJWTSecret)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwtauth.Mint(key, jwtauth.MintClaims{Subject: sub, Issuer: "pedal", Audience: "pedal", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestRolesInSeparateProcesses splits pedal into a front process (gateway and
// ingestion) and two back ones (one aggregating half the partitions and
// serving queries, metadata and its relay; one aggregating the other half),
// sharing Kafka, PostgreSQL and ClickHouse: clicks sent to the front are
// counted by the back and queried through the front.
func TestRolesInSeparateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts database servers")
	}
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close) // after the servers, which stop in cleanups registered later
	shared := []string{"--partitions", "4", "--aggregate-flush-interval", "50ms",
		"--log", "kafka://" + strings.Join(kafka.ListenAddrs(), ",") + "/", "--sql", pgtest.DSN(t), "--analytics", chtest.Start(t)}
	// Two aggregators split the clicks topic's four partitions.
	back := startServer(t, append([]string{"--data-dir", t.TempDir(), "--components", "aggregate,query,metadata,relay",
		"--aggregate-partitions", "0-1"}, shared...)...)
	startServer(t, append([]string{"--data-dir", t.TempDir(), "--components", "aggregate", "--aggregate-partitions", "2,3"}, shared...)...)
	front := startServer(t, append([]string{"--data-dir", t.TempDir(), "--components", "gateway,ingest",
		"--remote", "query=" + back.url + ",metadata=" + back.url}, shared...)...)

	ok, err := postBatch(http.DefaultClient, front.url, "split", 30)
	if err != nil || !ok {
		t.Fatalf("post clicks to the front: %v %v", ok, err)
	}
	// The back serves no gateway: no token needed, and none checked.
	if code, _, _ := call(t, "GET", back.url+"/v1/pipeline/status", "", ""); code != 200 {
		t.Errorf("the back's query API: %d", code)
	}
	waitTotalClicks(t, front.url, 30)
	// The caller's identity crosses to the back: metadata tasks stay their requester's.
	alice := mintTestToken(t, "alice")
	if code, _, m := call(t, "POST", front.url+"/v1/metadata/collect", alice, `{"target_url": "https://news.example/", "requested_by": "bob"}`); code != 403 {
		t.Errorf("alice collecting for bob through the front: %d %v", code, m)
	}
	// The front answers no query itself, and the back no click.
	if code, _, _ := call(t, "POST", back.url+"/v1/clicks", "", `[{"click_id":"x","ad_id":"y"}]`); code != 404 {
		t.Errorf("POST /v1/clicks on the back: %d, want 404", code)
	}
	if code, _, _ := call(t, "GET", front.url+"/v1/ads/top", "", ""); code != 401 {
		t.Errorf("the front without a token: %d, want 401", code)
	}
}

// waitTotalClicks waits until the top ads of the last hour add up to want clicks.
func waitTotalClicks(t *testing.T, base string, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var top struct {
			Ads []struct {
				Clicks int `json:"clicks"`
			} `json:"ads"`
		}
		getJSONTo(t, http.DefaultClient, base+"/v1/ads/top?window=1h&limit=100", &top)
		total := 0
		for _, a := range top.Ads {
			total += a.Clicks
		}
		if total == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d clicks counted after 30s", total, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
