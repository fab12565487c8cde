package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pedal-project/pedal/internal/clicks/clicktoken"
	"github.com/pedal-project/pedal/internal/clicks/reference"
)

// clickServer is a fake of pedal's POST /v1/clicks: it decodes and validates the
// bodies like the contract says, answers some requests 503 and rejects some
// records, and keeps what it accepted.
type clickServer struct {
	// unavailable reports whether the n-th request (from 1) gets a 503;
	// reject lists the indexes to reject in the n-th request.
	unavailable func(n int) bool
	reject      func(n int) []int

	mu       sync.Mutex
	requests int
	status   map[int]int // answers by status
	received int         // clicks in the requests answered 202
	invalid  []string    // records that broke the contract
	rejected int
	accepted []wireClick
}

func (s *clickServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/clicks" {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	s.requests++
	n := s.requests
	s.mu.Unlock()
	answer := func(status int, body any) {
		s.mu.Lock()
		s.status[status]++
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if status >= 400 {
			w.Header().Set("Content-Type", "application/problem+json")
		}
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(body)
	}
	problem := func(status int, detail string) {
		answer(status, map[string]any{"title": http.StatusText(status), "status": status, "detail": detail})
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<20))
	if err != nil {
		problem(http.StatusRequestEntityTooLarge, err.Error())
		return
	}
	var clicks []wireClick
	switch mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt {
	case "application/json":
		if err := json.Unmarshal(body, &clicks); err != nil {
			problem(http.StatusBadRequest, err.Error())
			return
		}
	case "application/x-ndjson":
		dec := json.NewDecoder(bytes.NewReader(body))
		for dec.More() {
			var c wireClick
			if err := dec.Decode(&c); err != nil {
				problem(http.StatusBadRequest, err.Error())
				return
			}
			clicks = append(clicks, c)
		}
	default:
		problem(http.StatusUnsupportedMediaType, mt)
		return
	}
	if s.unavailable != nil && s.unavailable(n) {
		problem(http.StatusServiceUnavailable, "event log full")
		return
	}
	type rejection struct {
		Index   int    `json:"index"`
		Code    string `json:"code"`
		Field   string `json:"field"`
		Message string `json:"message"`
	}
	rejected := []rejection{}
	var forced []int
	if s.reject != nil {
		forced = s.reject(n)
	}
	var accepted []wireClick
	for i, c := range clicks {
		if bad := checkWire(c); bad != "" {
			s.mu.Lock()
			s.invalid = append(s.invalid, fmt.Sprintf("%s: %+v", bad, c))
			s.mu.Unlock()
			rejected = append(rejected, rejection{i, "invalid", bad, "invalid " + bad})
			continue
		}
		if slices.Contains(forced, i) {
			rejected = append(rejected, rejection{i, "forced", "click_id", "rejected by the test"})
			continue
		}
		accepted = append(accepted, c)
	}
	if len(accepted) == 0 {
		problem(http.StatusBadRequest, "no valid click")
		return
	}
	s.mu.Lock()
	s.received += len(clicks)
	s.rejected += len(rejected)
	s.accepted = append(s.accepted, accepted...)
	s.mu.Unlock()
	answer(http.StatusAccepted, map[string]any{"accepted": len(accepted), "rejected": rejected})
}

func newClickServer(t *testing.T, s *clickServer) string {
	s.status = make(map[int]int)
	srv := httptest.NewServer(s) // loopback
	t.Cleanup(srv.Close)
	return srv.URL
}

// readLedger returns the ledger's lines as click_id, ad_id, country, ts (sorted)
// and its kinds by click id.
func readLedger(t *testing.T, path string) (lines []string, kinds map[string][]string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kinds = make(map[string][]string)
	_, err = ReadLedger(f, func(c LedgerClick) error {
		lines = append(lines, strings.Join([]string{c.ClickID, c.AdID, c.Country, strconv.FormatInt(c.Time.UnixMilli(), 10)}, "\t"))
		kinds[c.ClickID] = append(kinds[c.ClickID], c.Kind.String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(lines)
	return lines, kinds
}

func TestRunClicks(t *testing.T) {
	for _, format := range []Format{FormatJSON, FormatNDJSON} {
		t.Run(string(format), func(t *testing.T) {
			t.Parallel()
			srv := &clickServer{
				unavailable: func(n int) bool { return n == 2 || n == 5 },
				reject: func(n int) []int {
					if n%4 == 0 {
						return []int{3, 7}
					}
					return nil
				},
			}
			target := newClickServer(t, srv)
			ledger := filepath.Join(t.TempDir(), "ledger.tsv")
			var out bytes.Buffer
			s, err := Run(t.Context(), Config{
				Target: target, Format: format,
				Rate: 10_000, Batch: 100, Duration: 300 * time.Millisecond, Concurrency: 4,
				DupShare: 0.1, BotShare: 0.05, BurstShare: 0.1, LateShare: 0.05, TooLateShare: 0.02,
				Seed: 42, RunID: "test", Ledger: ledger,
			}, &out)
			if err != nil {
				t.Fatal(err)
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if len(srv.invalid) > 0 {
				t.Errorf("the server found %d invalid records, like %s", len(srv.invalid), srv.invalid[0])
			}
			if s.Scheduled != 30 || s.Requests+s.Unsent != s.Scheduled {
				t.Errorf("scheduled %d = %d sent + %d unsent, want 30 scheduled", s.Scheduled, s.Requests, s.Unsent)
			}
			if s.Requests < 5 {
				t.Fatalf("only %d requests sent: %s", s.Requests, out.String())
			}
			wantErrors := map[string]int64{"status_503": int64(srv.status[http.StatusServiceUnavailable])}
			got := struct {
				Requests, ClicksSent, ClicksAcked, Rejected, Failed int64
				Errors                                              map[string]int64
			}{s.Requests, s.ClicksSent, s.ClicksAcked, s.Rejected, s.Failed, s.Errors}
			want := got
			want.Requests = int64(srv.requests)
			want.ClicksSent = 100 * want.Requests
			want.ClicksAcked = int64(len(srv.accepted))
			want.Rejected = int64(srv.rejected)
			want.Failed = 2
			want.Errors = wantErrors
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("summary (-want +got):\n%s", diff)
			}
			if s.ClicksAcked+s.Rejected+200 != s.ClicksSent {
				t.Errorf("%d acked + %d rejected + 200 in 503s != %d sent", s.ClicksAcked, s.Rejected, s.ClicksSent)
			}
			if s.Rejected == 0 || s.RejectedByCode["forced"] != s.Rejected {
				t.Errorf("rejected %d, by code %v; want some, all forced", s.Rejected, s.RejectedByCode)
			}
			if s.Latency.Count != s.Requests-2 || s.Latency.P50 <= 0 || s.Latency.Max < s.Latency.P99 {
				t.Errorf("latency %+v of %d requests", s.Latency, s.Requests)
			}

			// The ledger holds exactly the clicks the server accepted.
			lines, kinds := readLedger(t, ledger)
			var accepted []string
			for _, c := range srv.accepted {
				accepted = append(accepted, strings.Join([]string{c.ClickID, c.AdID, c.Country, strconv.FormatInt(c.TS, 10)}, "\t"))
			}
			slices.Sort(accepted)
			if diff := cmp.Diff(accepted, lines); diff != "" {
				t.Errorf("ledger vs accepted clicks (-accepted +ledger):\n%s", diff)
			}

			// A duplicate repeats an earlier unique click: same id, ad, country and ts.
			byID := make(map[string][]string)
			for _, l := range lines {
				id, _, _ := strings.Cut(l, "\t")
				byID[id] = append(byID[id], l)
			}
			dups := 0
			for id, ks := range kinds {
				if !slices.Contains(ks, "duplicate") {
					continue
				}
				dups++
				if n := len(slices.Compact(slices.Clone(byID[id]))); n != 1 {
					t.Errorf("click %s sent with %d different ad/country/ts: %q", id, n, byID[id])
				}
				for _, k := range ks {
					if k != "duplicate" && k != "unique" {
						t.Errorf("click %s is %q and duplicate", id, k)
					}
				}
			}
			if dups == 0 {
				t.Error("no duplicate in the ledger")
			}

			exp, err := Expect(mustOpen(t, ledger), Rules())
			if err != nil {
				t.Fatal(err)
			}
			if exp.Clicks != s.ClicksAcked {
				t.Errorf("ledger has %d lines, want %d acknowledged clicks", exp.Clicks, s.ClicksAcked)
			}
			for k, share := range map[Kind]float64{KindDuplicate: 0.1, KindBot: 0.05, KindBurst: 0.1} {
				if got := float64(exp.ByKind[k]) / float64(exp.Clicks); got < share/2 || got > share*2 {
					t.Errorf("%v share %.3f, want about %.2f", k, got, share)
				}
			}
			// Late clicks wait for an acknowledgement on their ad or the top one.
			if exp.ByKind[KindLate] == 0 || exp.ByKind[KindTooLate] == 0 {
				t.Errorf("no late or too-late click: %v", exp.ByKind)
			}
			v := exp.Result.Verdicts
			if v[reference.IPRate] == 0 || v[reference.BotUserAgent] == 0 || v[reference.Duplicate] == 0 ||
				v[reference.TooLate] != exp.ByKind[KindTooLate] {
				t.Errorf("verdicts %v of kinds %v: want ip_rate, bots, duplicates and every too-late click too late", v, exp.ByKind)
			}

			for _, want := range []string{"loadgen summary", "seed 42", "status_503 2", "forced"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

func mustOpen(t *testing.T, path string) io.Reader {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b)
}

func TestRunRedirect(t *testing.T) {
	t.Parallel()
	secret := clicktoken.GenerateSecret()
	key, err := clicktoken.NewKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu          sync.Mutex
		verified    int
		impressions = make(map[string]int)
		landings    int
		problems    []string
	)
	adRE := regexp.MustCompile(`^ad-\d{6}$`)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/r/{token}", func(w http.ResponseWriter, r *http.Request) {
		c, err := key.Verify(r.PathValue("token"), time.Now())
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			problems = append(problems, err.Error())
			http.Error(w, "bad token", http.StatusNotFound)
			return
		}
		if !adRE.MatchString(c.AdID) || !strings.HasPrefix(c.ImpressionID, "lg-redir-") {
			problems = append(problems, fmt.Sprintf("claims %+v", c))
		}
		if r.Header.Get("User-Agent") == "" || net.ParseIP(r.Header.Get("X-Forwarded-For")) == nil {
			problems = append(problems, fmt.Sprintf("headers %v", r.Header))
		}
		verified++
		impressions[c.ImpressionID]++
		http.Redirect(w, r, c.Destination, http.StatusFound)
	})
	mux.HandleFunc("/landing", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		landings++
		mu.Unlock()
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	ledger := filepath.Join(t.TempDir(), "ledger.tsv")
	var out bytes.Buffer
	s, err := Run(t.Context(), Config{
		Target: srv.URL, Mode: ModeRedirect, SigningKey: secret,
		Destination: srv.URL + "/landing", // loopback too, were it followed
		Rate:        200, Duration: 250 * time.Millisecond, Concurrency: 4,
		DupShare: 0.2, Seed: 1, RunID: "redir", Ledger: ledger,
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("server saw %d problems, like %s", len(problems), problems[0])
	}
	if landings != 0 {
		t.Errorf("the redirect was followed %d times", landings)
	}
	if s.Requests == 0 || s.ClicksAcked != s.Requests || int(s.Requests) != verified || len(s.Errors) != 0 {
		t.Errorf("%d requests, %d acked, %d verified by the server, errors %v", s.Requests, s.ClicksAcked, verified, s.Errors)
	}
	if s.ClicksSent != s.Requests {
		t.Errorf("%d clicks sent in %d requests, want one each", s.ClicksSent, s.Requests)
	}
	repeated := 0
	for _, n := range impressions {
		if n > 1 {
			repeated += n - 1
		}
	}
	lines, kinds := readLedger(t, ledger)
	dupLines := 0
	for _, ks := range kinds {
		for _, k := range ks {
			if k == "duplicate" {
				dupLines++
			}
		}
	}
	if int64(len(lines)) != s.ClicksAcked || dupLines != repeated {
		t.Errorf("ledger: %d lines (%d duplicates), want %d acked clicks (%d repeated impressions)", len(lines), dupLines, s.ClicksAcked, repeated)
	}
}

func TestRunConnectionErrors(t *testing.T) {
	t.Parallel()
	// A loopback port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ledger := filepath.Join(t.TempDir(), "ledger.tsv")
	s, err := Run(t.Context(), Config{
		Target: "http://" + addr, Rate: 2000, Batch: 100, Duration: 100 * time.Millisecond, Concurrency: 2,
		Seed: 1, Ledger: ledger,
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests == 0 || s.ClicksAcked != 0 || s.Failed != s.Requests {
		t.Errorf("%d requests, %d failed, %d clicks acked; want all failed", s.Requests, s.Failed, s.ClicksAcked)
	}
	if diff := cmp.Diff(map[string]int64{"conn_refused": s.Requests}, s.Errors); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	if lines, _ := readLedger(t, ledger); len(lines) != 0 {
		t.Errorf("ledger holds %q, want no click", lines)
	}
}

func TestRunTimeoutsAndStalls(t *testing.T) {
	t.Parallel()
	// The server holds every request until the client gives up: with one worker the
	// schedule runs on, and every request but the first starts late or not at all.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	s, err := Run(t.Context(), Config{
		Target: srv.URL, Rate: 4000, Batch: 100, Duration: 200 * time.Millisecond, Concurrency: 1,
		Timeout: 50 * time.Millisecond, DrainTimeout: 5 * time.Second, Seed: 1,
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Scheduled != 8 || s.Requests+s.Unsent != s.Scheduled || s.Requests == 0 {
		t.Errorf("%d scheduled, %d sent, %d unsent", s.Scheduled, s.Requests, s.Unsent)
	}
	if diff := cmp.Diff(map[string]int64{"timeout": s.Requests}, s.Errors); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	if s.Requests > 1 && s.LateStarts == 0 {
		t.Errorf("%d requests behind a stalled one, none started late", s.Requests)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	t.Parallel()
	srv := &clickServer{}
	target := newClickServer(t, srv)
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // done before the run starts: nothing is sent
	s, err := Run(ctx, Config{Target: target, Rate: 100, Batch: 1, Duration: time.Hour, Seed: 1}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests != 0 || s.Scheduled != s.Unsent {
		t.Errorf("%d requests of %d scheduled (%d unsent) after cancellation", s.Requests, s.Scheduled, s.Unsent)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		cfg   Config
		field string
	}{
		{Config{Target: "127.0.0.1:8080"}, "Target"},
		{Config{Target: "ftp://host"}, "Target"},
		{Config{Mode: "post"}, "Mode"},
		{Config{Rate: -1}, "Rate"},
		{Config{Rate: 1, Batch: 500, Duration: time.Second}, "Rate"},
		{Config{Duration: -time.Second}, "Duration"},
		{Config{Batch: -5}, "Batch"},
		{Config{Concurrency: -1}, "Concurrency"},
		{Config{Format: "xml"}, "Format"},
		{Config{Ads: -1}, "Ads"},
		{Config{ZipfS: 1}, "ZipfS"},
		{Config{DupShare: 1.5}, "DupShare"},
		{Config{BotShare: -0.1}, "BotShare"},
		{Config{DupShare: 0.6, BurstShare: 0.6}, "add up"},
		{Config{RunID: "a b"}, "RunID"},
		{Config{Mode: ModeRedirect}, "SigningKey"},
		{Config{Mode: ModeRedirect, SigningKey: []byte("short")}, "SigningKey"},
		{Config{Mode: ModeRedirect, SigningKey: make([]byte, 32), Destination: "javascript:alert(1)"}, "Destination"},
		{Config{Mode: ModeRedirect, SigningKey: make([]byte, 32), LateShare: 0.1}, "LateShare"},
		{Config{Mode: ModeRedirect, SigningKey: make([]byte, 32), TooLateShare: 0.1}, "TooLateShare"},
		{Config{TooLateShare: 1.5}, "TooLateShare"},
		{Config{Timeout: -1}, "Timeout"},
	}
	for _, tt := range tests {
		_, err := tt.cfg.withDefaults()
		if err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%+v: error %v, want one naming %s", tt.cfg, err, tt.field)
		}
	}

	got, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Target: DefaultTarget, Mode: ModeClicks, Rate: DefaultRate, Duration: DefaultDuration, Batch: DefaultBatch,
		Concurrency: DefaultConcurrency, Format: FormatJSON, Ads: DefaultAds, ZipfS: DefaultZipfS,
		Destination: DefaultDestination, TokenTTL: DefaultTokenTTL, Timeout: DefaultTimeout, DrainTimeout: DefaultTimeout,
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Config{}, "Seed", "RunID")); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if got.Seed == 0 || got.RunID == "" {
		t.Errorf("seed %d, run id %q: want random ones", got.Seed, got.RunID)
	}
}

func TestProgressLine(t *testing.T) {
	p := progress{elapsed: 3 * time.Second, target: 350_000, sent: 349_800, acked: 349_000, p50: 1234 * time.Microsecond, p99: 8 * time.Millisecond, errors: 2, errorsAll: 5}
	var plain, tty bytes.Buffer
	p.write(&plain, false)
	p.write(&tty, true)
	want := "     3s  target 350000/s  sent 349800/s  acked 349000/s  p50 1.23ms  p99 8ms  errors 2 (total 5)"
	if got := plain.String(); got != want+"\n" {
		t.Errorf("plain progress = %q, want %q", got, want+"\n")
	}
	if got := tty.String(); got != "\r"+want+"\x1b[K" {
		t.Errorf("terminal progress = %q", got)
	}
}
