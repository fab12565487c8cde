package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pedal-project/pedal/internal/eventlog/pebblelog"
	"github.com/pedal-project/pedal/internal/metadata/collect"
	"github.com/pedal-project/pedal/internal/metadata/collect/collecttest"
	"github.com/pedal-project/pedal/internal/metadata/taskstore"
	"github.com/pedal-project/pedal/internal/outbox"
)

// service is the metadata service wired as pedal serve wires it: task store,
// outbox relay into an event log, worker, and the API on a test server.
type service struct {
	t      *testing.T
	net    *collecttest.Net
	store  *taskstore.Store
	log    *pebblelog.Log
	api    *httptest.Server
	worker *Worker
	reg    *prometheus.Registry
	stop   func()
}

func newService(t *testing.T, pages http.Handler, wcfg WorkerConfig, ccfg collect.Config) *service {
	t.Helper()
	fn := collecttest.New(t, pages)
	fn.Use(&ccfg.Fetch)
	s := startService(t, wcfg, ccfg)
	s.net = fn
	return s
}

// startService wires the service around ccfg, whose Fetch must keep every
// dial on loopback.
func startService(t *testing.T, wcfg WorkerConfig, ccfg collect.Config) *service {
	t.Helper()
	dir := t.TempDir()
	store, err := taskstore.Open(t.Context(), filepath.Join(dir, "tasks.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	log, err := pebblelog.Open(filepath.Join(dir, "log"), pebblelog.Config{MinFreeBytes: -1, Fatal: func(msg string) { panic(msg) }}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	for _, topic := range []string{taskstore.TopicTasks, taskstore.TopicResults} {
		if err := log.CreateTopic(t.Context(), topic, 4); err != nil {
			t.Fatal(err)
		}
	}
	s := &service{t: t, store: store, log: log, reg: prometheus.NewRegistry()}
	col := collect.New(ccfg, nil, s.reg)
	est := NewEstimator(max(wcfg.Workers, 1), 20*time.Millisecond)
	s.api = httptest.NewServer(s.mux(NewAPI(store, col, est, nil)))
	t.Cleanup(s.api.Close)
	s.worker = NewWorker(wcfg, log, store, col, est, nil, s.reg)
	s.start()
	return s
}

func (s *service) mux(a *API) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/metadata/collect", a.HandleCollect())
	mux.Handle("GET /v1/metadata/tasks/{task_id}", a.HandleTask())
	return mux
}

// start runs the relay and the worker until stop.
func (s *service) start() {
	ctx, cancel := context.WithCancel(context.Background())
	relay := &outbox.Relay{DB: s.store.DB(), Publisher: outbox.LogPublisher{Log: s.log, Topic: taskstore.Topic},
		PollInterval: 20 * time.Millisecond}
	var wg sync.WaitGroup
	wg.Go(func() { relay.Run(ctx) })
	wg.Go(func() {
		if err := s.worker.Run(ctx); err != nil {
			s.t.Errorf("worker: %v", err)
		}
	})
	s.stop = func() { cancel(); wg.Wait() }
	s.t.Cleanup(s.stop)
}

type response struct {
	status int
	header http.Header
	body   map[string]any
}

func (s *service) do(method, path string, body string, header map[string]string) response {
	s.t.Helper()
	req, err := http.NewRequest(method, s.api.URL+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := s.api.Client().Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(b, &r.body); err != nil {
		s.t.Fatalf("%s %s: %d, body %q is not a JSON object", method, path, resp.StatusCode, b)
	}
	return r
}

func (s *service) submit(url string, opts string, header map[string]string) response {
	s.t.Helper()
	body := fmt.Sprintf(`{"target_url": %q, "requested_by": "tester"`, url)
	if opts != "" {
		body += `, "extraction_options": ` + opts
	}
	r := s.do("POST", "/v1/metadata/collect", body+"}", header)
	if r.status != http.StatusAccepted {
		s.t.Fatalf("collect %s: %d %v", url, r.status, r.body)
	}
	return r
}

// wait polls the task until it is finished.
func (s *service) wait(id string) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := s.do("GET", "/v1/metadata/tasks/"+id, "", nil)
		if r.status != http.StatusOK {
			s.t.Fatalf("task %s: %d %v", id, r.status, r.body)
		}
		if st := r.body["status"]; st == "SUCCEEDED" || st == "FAILED" {
			return r.body
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("task %s not finished after 30s: %v", id, r.body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// completionPublished reports whether metadata.results holds the completion of task id.
func (s *service) completionPublished(id string) bool {
	for p := range int32(4) {
		_, end, err := s.log.Offsets(s.t.Context(), taskstore.TopicResults, p)
		if err != nil || end == 0 {
			continue
		}
		recs, err := s.log.Fetch(s.t.Context(), taskstore.TopicResults, p, 0, int(end))
		if err != nil {
			s.t.Fatal(err)
		}
		for _, rec := range recs {
			var m outbox.Message
			if err := json.Unmarshal(rec.Value, &m); err != nil {
				s.t.Fatal(err)
			}
			var ev taskstore.CompletedEvent
			if err := json.Unmarshal(m.Payload, &ev); err != nil {
				s.t.Fatal(err)
			}
			if string(rec.Key) == id && m.EventType == taskstore.EventTaskCompleted && ev.TaskID == id {
				return true
			}
		}
	}
	return false
}

const pageHTML = `<html lang="en"><head><title>Fallback</title>
<meta property="og:title" content="A page">
<meta name="description" content="About pedals.">
<meta property="og:image" content="/hero.png">
<link rel="canonical" href="/a"></head><body></body></html>`

func TestCollectContract(t *testing.T) {
	var hits atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("news.example/a", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, pageHTML)
	})
	s := newService(t, mux, WorkerConfig{Workers: 2}, collect.Config{})

	before := time.Now().UTC().Truncate(time.Millisecond)
	r := s.submit("http://news.example/a", `{"include_images": true, "max_depth_bytes": 4096}`, nil)
	id, _ := r.body["task_id"].(string)
	if !regexp.MustCompile(`^tsk_[0-9A-HJKMNP-TV-Z]{26}$`).MatchString(id) {
		t.Errorf("task_id %q", id)
	}
	if r.body["status"] != "QUEUED" {
		t.Errorf("status %v", r.body["status"])
	}
	if ms, ok := r.body["estimated_completion_ms"].(float64); !ok || ms <= 0 || ms != float64(int64(ms)) {
		t.Errorf("estimated_completion_ms %v: want a positive integer", r.body["estimated_completion_ms"])
	}
	created, err := time.Parse(time.RFC3339, fmt.Sprint(r.body["created_at"]))
	if err != nil || created.Before(before) || created.After(time.Now()) {
		t.Errorf("created_at %v (%v)", r.body["created_at"], err)
	}
	if loc := r.header.Get("Location"); loc != "/v1/metadata/tasks/"+id {
		t.Errorf("Location %q", loc)
	}
	if len(r.body) != 4 {
		t.Errorf("202 body has members beyond the contract: %v", r.body)
	}

	task := s.wait(id)
	if task["status"] != "SUCCEEDED" || task["attempts"] != 1.0 || task["target_url"] != "http://news.example/a" ||
		task["final_url"] != "http://news.example/a" || task["requested_by"] != "tester" {
		t.Errorf("task %v", task)
	}
	for _, k := range []string{"created_at", "updated_at", "started_at", "finished_at"} {
		if _, err := time.Parse(time.RFC3339, fmt.Sprint(task[k])); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	res, _ := task["result"].(map[string]any)
	want := map[string]any{"title": "A page", "description": "About pedals.", "canonical_url": "http://news.example/a",
		"lang": "en", "http_status": 200.0, "content_type": "text/html; charset=utf-8", "truncated": false,
		"bytes_read": float64(len(pageHTML)), "favicon": "http://news.example/favicon.ico"}
	for k, v := range want {
		if res[k] != v {
			t.Errorf("result.%s = %#v, want %#v", k, res[k], v)
		}
	}
	if imgs, _ := res["images"].([]any); len(imgs) != 1 || imgs[0].(map[string]any)["url"] != "http://news.example/hero.png" {
		t.Errorf("images %v", res["images"])
	}
	if _, ok := task["error"]; ok {
		t.Errorf("a succeeded task has an error: %v", task["error"])
	}

	// The completion goes out on metadata.results, keyed by the task id.
	deadline := time.Now().Add(10 * time.Second)
	for !s.completionPublished(id) {
		if time.Now().After(deadline) {
			t.Fatal("no completion event for the task on metadata.results")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The same URL and options again: answered from the cache, no second fetch.
	task2 := s.wait(s.submit("http://news.example/a", `{"include_images": true, "max_depth_bytes": 4096}`, nil).body["task_id"].(string))
	if task2["status"] != "SUCCEEDED" || hits.Load() != 1 {
		t.Errorf("second task %v after %d fetches", task2["status"], hits.Load())
	}

	if r := s.do("GET", "/v1/metadata/tasks/tsk_01KBCDEFGHJKMNPQRSTVWXYZ00", "", nil); r.status != 404 {
		t.Errorf("unknown task: %d", r.status)
	}
	if r := s.do("GET", "/v1/metadata/tasks/nope", "", nil); r.status != 404 || !strings.Contains(fmt.Sprint(r.body["detail"]), "nope") {
		t.Errorf("malformed task id: %d %v", r.status, r.body)
	}
}

func TestCollectValidation(t *testing.T) {
	s := newService(t, http.NotFoundHandler(), WorkerConfig{}, collect.Config{MaxDepthBytes: 2 << 20})
	long := "http://news.example/" + strings.Repeat("a", 2048)
	for _, c := range []struct {
		body, param, reason string
	}{
		{`{"requested_by": "x"}`, "target_url", "missing"},
		{`{"target_url": "", "requested_by": "x"}`, "target_url", "missing"},
		{`{"target_url": "not a url", "requested_by": "x"}`, "target_url", ""},
		{`{"target_url": "ftp://news.example/", "requested_by": "x"}`, "target_url", "scheme"},
		{`{"target_url": "http://user:pw@news.example/", "requested_by": "x"}`, "target_url", "userinfo"},
		{`{"target_url": "http:///path", "requested_by": "x"}`, "target_url", ""},
		{`{"target_url": "http://10.0.0.1/", "requested_by": "x"}`, "target_url", "private"},
		{`{"target_url": "http://127.0.0.1:8080/", "requested_by": "x"}`, "target_url", ""},
		{`{"target_url": "http://[::1]/", "requested_by": "x"}`, "target_url", "loopback"},
		{`{"target_url": "http://169.254.169.254/latest/", "requested_by": "x"}`, "target_url", "cloud_metadata"},
		{fmt.Sprintf(`{"target_url": %q, "requested_by": "x"}`, long), "target_url", "too_long"},
		{`{"target_url": 42, "requested_by": "x"}`, "target_url", "wrong_type"},
		{`{"target_url": "http://news.example/"}`, "requested_by", "missing"},
		{`{"target_url": "http://news.example/", "requested_by": ""}`, "requested_by", "invalid"},
		{`{"target_url": "http://news.example/", "requested_by": "   "}`, "requested_by", "invalid"},
		{fmt.Sprintf(`{"target_url": "http://news.example/", "requested_by": %q}`, strings.Repeat("é", 129)), "requested_by", "invalid"},
		{`{"target_url": "http://news.example/", "requested_by": "x", "extraction_options": {"max_depth_bytes": 1023}}`, "extraction_options.max_depth_bytes", "out_of_range"},
		{`{"target_url": "http://news.example/", "requested_by": "x", "extraction_options": {"max_depth_bytes": 0}}`, "extraction_options.max_depth_bytes", "out_of_range"},
		{`{"target_url": "http://news.example/", "requested_by": "x", "extraction_options": {"max_depth_bytes": 2097153}}`, "extraction_options.max_depth_bytes", "out_of_range"},
		{`{"target_url": "http://news.example/", "requested_by": "x", "extraction_options": {"max_depth_bytes": 2048.5}}`, "extraction_options.max_depth_bytes", "not_integer"},
		{`{"target_url": "http://news.example/", "requested_by": "x", "extraction_options": {"max_depth_bytes": "2048"}}`, "extraction_options.max_depth_bytes", "not_integer"},
		{`{"target_url": "http://news.example/", "requested_by": "x", "extraction_options": {"include_images": "yes"}}`, "extraction_options.include_images", "wrong_type"},
		{`{"target_url": "http://news.example/", "requested_by": "x", "extraction_option": {}}`, "extraction_option", "unknown"},
		{`{"target_url": "http://news.example/", `, "body", ""},
		{`[1, 2]`, "body", ""},
	} {
		r := s.do("POST", "/v1/metadata/collect", c.body, nil)
		if r.status != 400 || r.header.Get("Content-Type") != "application/problem+json" || r.body["parameter"] != c.param ||
			(c.reason != "" && r.body["reason"] != c.reason) || r.body["detail"] == "" {
			t.Errorf("%.80s: %d %v; want 400 naming %s (%s)", c.body, r.status, r.body, c.param, c.reason)
		}
	}
	// 2,048 bytes is allowed; the upper bound of max_depth_bytes is the configured cap.
	s.submit("http://news.example/"+strings.Repeat("a", 2048-len("http://news.example/")), `{"max_depth_bytes": 2097152}`, nil)
	s.submit("http://news.example/", `{"max_depth_bytes": 1024, "include_images": false}`, nil)

	if r := s.do("POST", "/v1/metadata/collect", `{}`, map[string]string{"Content-Type": "text/plain"}); r.status != 415 {
		t.Errorf("text/plain body: %d", r.status)
	}
	big := `{"target_url": "http://news.example/", "requested_by": "` + strings.Repeat("x", 20<<10) + `"}`
	if r := s.do("POST", "/v1/metadata/collect", big, nil); r.status != 413 {
		t.Errorf("20 KiB body: %d", r.status)
	}
	if r := s.do("POST", "/v1/metadata/collect", `{"target_url": "http://news.example/", "requested_by": "x"}`,
		map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}); r.status != 400 || r.body["parameter"] != "Idempotency-Key" {
		t.Errorf("long idempotency key: %d %v", r.status, r.body)
	}
}

func TestIdempotencyKey(t *testing.T) {
	var hits atomic.Int32
	s := newService(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "<title>once</title>")
	}), WorkerConfig{}, collect.Config{CacheTTL: -1})
	key := map[string]string{"Idempotency-Key": "order-42"}
	first := s.submit("http://news.example/once", "", key)
	id := first.body["task_id"].(string)
	s.wait(id)
	// The same request spelled with the default options: the same task, not fetched again.
	again := s.submit("http://news.example/once", `{"include_images": false, "max_depth_bytes": 1048576}`, key)
	if again.body["task_id"] != id || again.header.Get("Idempotent-Replayed") != "true" || again.body["status"] != "SUCCEEDED" {
		t.Errorf("replay: %v %v", again.body, again.header)
	}
	if again.body["created_at"] != first.body["created_at"] {
		t.Errorf("replay created_at %v, first %v", again.body["created_at"], first.body["created_at"])
	}
	r := s.do("POST", "/v1/metadata/collect", `{"target_url": "http://news.example/other", "requested_by": "tester"}`, key)
	if r.status != 422 || r.body["parameter"] != "Idempotency-Key" {
		t.Errorf("same key, other body: %d %v", r.status, r.body)
	}
	// Keys are per requester: another's use of the same key is another request.
	r = s.do("POST", "/v1/metadata/collect", `{"target_url": "http://news.example/other", "requested_by": "someone-else"}`, key)
	if r.status != 202 || r.body["task_id"] == id {
		t.Errorf("another requester, same key: %d %v", r.status, r.body)
	}
	// Without a key, or with another, a new task.
	if other := s.submit("http://news.example/once", "", map[string]string{"Idempotency-Key": "order-43"}); other.body["task_id"] == id {
		t.Error("another key answered the same task")
	}
	time.Sleep(200 * time.Millisecond) // let the other task run
	s.stop()
	if n := hits.Load(); n != 3 {
		t.Errorf("%d fetches for three distinct tasks", n)
	}
}

func TestBlockedDestinationFailsWithoutDialling(t *testing.T) {
	s := newService(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://meta.example/latest/meta-data/", http.StatusFound)
	}), WorkerConfig{}, collect.Config{})
	// A name resolving to a private address passes validation (names are not
	// resolved then) and fails when the worker connects.
	task := s.wait(s.submit("http://internal.example/admin", "", nil).body["task_id"].(string))
	e, _ := task["error"].(map[string]any)
	if task["status"] != "FAILED" || e["code"] != "blocked_destination" || e["message"] == "" || task["result"] != nil {
		t.Errorf("task %v", task)
	}
	if d := s.net.Dialled(); len(d) != 0 {
		t.Fatalf("dialled %v", d)
	}
	// A public page redirecting to the metadata service: only the public hop is dialled.
	task = s.wait(s.submit("http://news.example/redirect", "", nil).body["task_id"].(string))
	if e, _ := task["error"].(map[string]any); e["code"] != "blocked_destination" {
		t.Errorf("redirect to cloud metadata: %v", task)
	}
	for _, d := range s.net.Dialled() {
		if !strings.HasPrefix(d, "93.184.215.14:") {
			t.Errorf("dialled %s", d)
		}
	}
}

func TestRedeliveredTaskIsNotRedone(t *testing.T) {
	var hits atomic.Int32
	s := newService(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "<title>x</title>")
	}), WorkerConfig{CommitInterval: 10 * time.Millisecond}, collect.Config{CacheTTL: -1})
	id := s.submit("http://news.example/x", "", nil).body["task_id"].(string)
	first := s.wait(id)
	s.stop()
	// Rewind the workers' positions: every task is delivered again.
	for p := range int32(4) {
		if err := s.log.CommitOffset(t.Context(), "metadata-workers", taskstore.TopicTasks, p, 0); err != nil {
			t.Fatal(err)
		}
	}
	s.worker = NewWorker(WorkerConfig{}, s.log, s.store, s.worker.col, nil, nil, prometheus.NewRegistry())
	s.start()
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(s.worker.m.redelivered) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the redelivered task was not seen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	again := s.wait(id)
	if hits.Load() != 1 || again["finished_at"] != first["finished_at"] || again["attempts"] != first["attempts"] {
		t.Errorf("redelivery redid the task: %d fetches, %v → %v", hits.Load(), first, again)
	}
}

func TestSlowHostDoesNotStarveOthers(t *testing.T) {
	gate := make(chan struct{})
	var slowNow, slowMax atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("slow.example/", func(w http.ResponseWriter, r *http.Request) {
		n := slowNow.Add(1)
		defer slowNow.Add(-1)
		for {
			m := slowMax.Load()
			if n <= m || slowMax.CompareAndSwap(m, n) {
				break
			}
		}
		<-gate
		io.WriteString(w, "<title>slow</title>")
	})
	mux.HandleFunc("news.example/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<title>fast</title>")
	})
	s := newService(t, mux, WorkerConfig{Workers: 4, PerHost: 2}, collect.Config{CacheTTL: -1})
	var release sync.Once
	open := func() { release.Do(func() { close(gate) }) }
	t.Cleanup(open) // before the service stops, even when the test fails
	var slow []string
	for i := range 8 {
		slow = append(slow, s.submit(fmt.Sprintf("http://slow.example/%d", i), "", nil).body["task_id"].(string))
	}
	// The slow host holds 2 workers; the fast host's tasks finish meanwhile.
	for i := range 4 {
		if task := s.wait(s.submit(fmt.Sprintf("http://news.example/%d", i), "", nil).body["task_id"].(string)); task["status"] != "SUCCEEDED" {
			t.Fatalf("fast task: %v", task)
		}
	}
	if got := slowMax.Load(); got != 2 {
		t.Errorf("%d concurrent requests to the slow host, want its limit 2", got)
	}
	if got := testutil.ToFloat64(s.worker.m.waiting); got < 1 {
		t.Errorf("waiting tasks gauge %v while the slow host's tasks queue", got)
	}
	open()
	for _, id := range slow {
		if task := s.wait(id); task["status"] != "SUCCEEDED" {
			t.Errorf("slow task: %v", task)
		}
	}
	if got := slowMax.Load(); got != 2 {
		t.Errorf("%d concurrent requests to the slow host, want its limit 2", got)
	}
}

func TestTaskFailureCodes(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("news.example/pdf", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pdf")
		io.WriteString(w, "%PDF")
	})
	mux.HandleFunc("news.example/gone", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "gone", http.StatusGone) })
	mux.HandleFunc("news.example/down", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	s := newService(t, mux, WorkerConfig{}, collect.Config{RetryBase: time.Millisecond, RetryCap: 2 * time.Millisecond})
	for url, want := range map[string]struct {
		code     string
		attempts float64
	}{
		"http://news.example/pdf":  {"unsupported_content_type", 1},
		"http://news.example/gone": {"http_error", 1},
		"http://news.example/down": {"http_error", 3}, // 5xx: retried twice
		"http://nxdomain.example/": {"dns_failed", 1},
	} {
		task := s.wait(s.submit(url, "", nil).body["task_id"].(string))
		e, _ := task["error"].(map[string]any)
		if task["status"] != "FAILED" || e["code"] != want.code || task["attempts"] != want.attempts {
			t.Errorf("%s: %v; want FAILED %s after %v attempts", url, task, want.code, want.attempts)
		}
	}
}

// TestHostBacklogIsDeferred: beyond MaxWaitingPerHost, a host's tasks are
// left QUEUED instead of filling the read-ahead, and Requeue brings them back.
func TestHostBacklogIsDeferred(t *testing.T) {
	gate := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("slow.example/", func(w http.ResponseWriter, r *http.Request) {
		<-gate
		io.WriteString(w, "<title>slow</title>")
	})
	mux.HandleFunc("news.example/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<title>fast</title>") })
	s := newService(t, mux, WorkerConfig{Workers: 2, PerHost: 1, MaxWaitingPerHost: 3}, collect.Config{CacheTTL: -1})
	var release sync.Once
	open := func() { release.Do(func() { close(gate) }) }
	t.Cleanup(open)
	var slow []string
	for i := range 10 {
		slow = append(slow, s.submit(fmt.Sprintf("http://slow.example/%d", i), "", nil).body["task_id"].(string))
	}
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(s.worker.m.deferred) < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("%v tasks deferred, want 6 (1 running, 3 waiting)", testutil.ToFloat64(s.worker.m.deferred))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Another host is served meanwhile.
	if task := s.wait(s.submit("http://news.example/", "", nil).body["task_id"].(string)); task["status"] != "SUCCEEDED" {
		t.Fatalf("fast task: %v", task)
	}
	open()
	time.Sleep(5 * time.Millisecond)
	if n, err := s.store.Requeue(t.Context(), 0); err != nil || n < 6 {
		t.Fatalf("requeue: %d, %v; want the 6 deferred tasks", n, err)
	}
	// Requeued tasks may be deferred again while the host drains; the relay
	// role's sweep repeats (here faster than its minute).
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				s.store.Requeue(context.Background(), 50*time.Millisecond)
			}
		}
	}()
	for _, id := range slow {
		if task := s.wait(id); task["status"] != "SUCCEEDED" {
			t.Errorf("slow task %s: %v", id, task)
		}
	}
}
