package loadgen

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/clicks/reference"
	"github.com/pedal-project/pedal/internal/loadgen/loadgentest"
)

// newFakePedal starts a loadgentest server on loopback.
func newFakePedal(t *testing.T, setup func(*loadgentest.Server)) (*loadgentest.Server, string) {
	t.Helper()
	s := loadgentest.New(Rules(), 4)
	if setup != nil {
		setup(s)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func TestVerify(t *testing.T) {
	t.Parallel()
	// The fake aggregates the clicks in the order they arrive, 8 requests in
	// flight at a time; Verify models them in the ledger's order. Once one window
	// is altered, Verify reports it, and only it.
	var alter atomic.Pointer[reference.WindowKey]
	fake, target := newFakePedal(t, func(s *loadgentest.Server) {
		s.Window = func(ad string, start time.Time, c reference.Counts) reference.Counts {
			if k := alter.Load(); k != nil && k.AdID == ad && k.Start.Equal(start) {
				c.Clicks++
			}
			return c
		}
	})
	dir := t.TempDir()
	ledger := filepath.Join(dir, "ledger.tsv")
	s, err := Run(t.Context(), Config{
		Target: target, Rate: 20_000, Batch: 50, Duration: time.Second, Concurrency: 8, Ads: 200,
		DupShare: 0.1, BotShare: 0.05, BurstShare: 0.15, LateShare: 0.05, TooLateShare: 0.03,
		Seed: 5, RunID: "v1", RunScopedAds: true, Ledger: ledger,
	}, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	if s.Failed != 0 || s.ClicksAcked == 0 {
		t.Fatalf("run: %d failed requests, %d clicks acknowledged", s.Failed, s.ClicksAcked)
	}

	cfg := VerifyConfig{Target: target, Timeout: 10 * time.Second, PollInterval: 10 * time.Millisecond, Report: filepath.Join(dir, "report.txt")}
	var out bytes.Buffer
	rep, err := Verify(t.Context(), cfg, ledger, &out)
	if err != nil {
		t.Fatalf("Verify: %v\n%s", err, out.String())
	}
	if !rep.OK() || rep.Windows == 0 || rep.Clicks != s.ClicksAcked || rep.Ads == 0 {
		t.Errorf("report %+v of %d acknowledged clicks", rep, s.ClicksAcked)
	}
	if diff := cmp.Diff(rep.Expected, rep.Actual); diff != "" {
		t.Errorf("totals (-expected +actual):\n%s", diff)
	}
	if q := rep.Expected.Quality; q.Bot == 0 || q.IPRate == 0 || q.Duplicates == 0 || q.TooLate == 0 ||
		q.Valid+q.Bot+q.IPRate+q.Duplicates+q.TooLate != rep.Clicks || rep.Expected.Clicks != q.Valid {
		t.Errorf("expected quality %+v, windows %d clicks: want every verdict, adding up to %d", q, rep.Expected.Clicks, rep.Clicks)
	}
	if !strings.Contains(out.String(), "verify: OK") {
		t.Errorf("output lacks verify: OK:\n%s", out.String())
	}

	// Alter the served totals of one window.
	var key reference.WindowKey
	for k := range fake.Result().Windows {
		if k.AdID > key.AdID || (k.AdID == key.AdID && k.Start.After(key.Start)) {
			key = k
		}
	}
	key.Country = ""
	alter.Store(&key)
	out.Reset()
	rep, err = Verify(t.Context(), cfg, ledger, &out)
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("Verify of an altered window: error %v, want ErrMismatch\n%s", err, out.String())
	}
	if len(rep.Mismatches) != 1 || len(rep.QualityMismatches) != 0 {
		t.Fatalf("mismatches %+v and %+v, want one window", rep.Mismatches, rep.QualityMismatches)
	}
	m := rep.Mismatches[0]
	if m.AdID != key.AdID || !m.Start.Equal(key.Start) || m.Got.Clicks != m.Want.Clicks+1 || m.Got.Invalid != m.Want.Invalid {
		t.Errorf("mismatch %+v, want one more click in %s at %v", m, key.AdID, key.Start)
	}
	line := "window " + key.AdID + " " + key.Start.Format(time.RFC3339)
	report, err := os.ReadFile(cfg.Report)
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"output": out.String(), "report": string(report)} {
		if !strings.Contains(text, line) || !strings.Contains(text, "verify: FAILED") {
			t.Errorf("%s lacks %q:\n%s", name, line, text)
		}
	}
}

// postLedger sends the clicks of a ledger to a fake pedal, one request each.
func postLedger(t *testing.T, target, ledger string) {
	t.Helper()
	_, err := ReadLedger(strings.NewReader(ledger), func(c LedgerClick) error {
		body := `{"click_id":"` + c.ClickID + `","ad_id":"` + c.AdID + `","ts":` + itoa(c.Time.UnixMilli()) +
			`,"ip":"` + c.IP + `","user_agent":"` + c.UserAgent + `","country":"` + c.Country + `"}`
		resp, err := http.Post(target+"/v1/clicks", "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST /v1/clicks: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.tsv")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVerifySplitsLongRanges(t *testing.T) {
	t.Parallel()
	// Eight days between two clicks of an ad: more minutes than one series
	// request may cover. The old click comes first, so it is not too late, and a
	// click more than a day away of another ad shows where each was counted.
	ledger := ledgerText(ModeClicks,
		"lg-r-1\tad-1\tUS\t1771675200000\tunique\t23.0.0.1\t0",
		"lg-r-2\tad-2\tFR\t1772000000000\tunique\t23.0.0.2\t0",
		"lg-r-3\tad-1\tUS\t1772366400100\tunique\t23.0.0.3\t0",
		"lg-r-4\tad-1\tUS\t1772366400200\tbot\t23.0.0.4\t9",
	)
	_, target := newFakePedal(t, nil)
	postLedger(t, target, ledger)
	var out bytes.Buffer
	rep, err := Verify(t.Context(), VerifyConfig{Target: target, PollInterval: time.Millisecond}, writeFile(t, ledger), &out)
	if err != nil {
		t.Fatalf("Verify: %v\n%s", err, out.String())
	}
	want := VerifyTotals{Clicks: 3, Invalid: 1, Quality: Quality{Valid: 3, Bot: 1}}
	if diff := cmp.Diff(want, rep.Actual); diff != "" || rep.Windows != 3 {
		t.Errorf("%d windows, totals (-want +got):\n%s", rep.Windows, diff)
	}
}

func TestVerifyWaitsForThePipeline(t *testing.T) {
	t.Parallel()
	ledger := ledgerText(ModeClicks, "lg-r-1\tad-1\tUS\t1772366400100\tunique\t23.0.0.1\t0")
	var polls atomic.Int64
	_, target := newFakePedal(t, func(s *loadgentest.Server) {
		s.Lag = func() int64 {
			if polls.Add(1) <= 3 {
				return 1
			}
			return 0
		}
	})
	postLedger(t, target, ledger)
	path := writeFile(t, ledger)
	var out bytes.Buffer
	if _, err := Verify(t.Context(), VerifyConfig{Target: target, PollInterval: time.Millisecond}, path, &out); err != nil {
		t.Fatalf("Verify: %v\n%s", err, out.String())
	}
	if n := polls.Load(); n != 5 { // 3 behind, then 2 caught up in a row
		t.Errorf("%d status polls, want 5", n)
	}

	_, stuck := newFakePedal(t, func(s *loadgentest.Server) { s.Lag = func() int64 { return 7 } })
	out.Reset()
	_, err := Verify(t.Context(), VerifyConfig{Target: stuck, Timeout: 100 * time.Millisecond, PollInterval: 5 * time.Millisecond}, path, &out)
	if !errors.Is(err, ErrNotCaughtUp) || !strings.Contains(err.Error(), "lag 7") {
		t.Errorf("Verify with a stuck pipeline: error %v, want ErrNotCaughtUp naming the lag", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	t.Parallel()
	_, target := newFakePedal(t, nil)
	for name, tt := range map[string]struct {
		ledger, want string
	}{
		"redirect ledger": {ledgerText(ModeRedirect, "lg-r-1\tad-1\t\t1772366400100\tunique\t23.0.0.1\t0"), "redirect-mode ledger"},
		"no click":        {ledgerText(ModeClicks), "nothing to verify"},
		"not a ledger":    {"lg-r-1\tad-1\tUS\t1772366400100\tunique\n", "not a ledger"},
	} {
		_, err := Verify(t.Context(), VerifyConfig{Target: target}, writeFile(t, tt.ledger), new(bytes.Buffer))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one saying %q", name, err, tt.want)
		}
	}
	_, err := Verify(t.Context(), VerifyConfig{Target: target}, filepath.Join(t.TempDir(), "missing"), new(bytes.Buffer))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing ledger: error %v", err)
	}
}

func TestVerifyQueryErrors(t *testing.T) {
	t.Parallel()
	// A query API that fails for good is an error, not a mismatch; a 503 is tried
	// again.
	ledger := writeFile(t, ledgerText(ModeClicks, "lg-r-1\tad-1\tUS\t1772366400100\tunique\t23.0.0.1\t0"))
	var series atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/pipeline/status", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"partitions":[{"partition":0,"log_end_offset":1,"committed_offset":1,"lag":0}]}`))
	})
	mux.HandleFunc("GET /v1/ads/{ad}/clicks", func(w http.ResponseWriter, r *http.Request) {
		if series.Add(1) == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{"points":[{"window_start":"2026-03-01T12:00:00Z","clicks":1,"invalid_clicks":0,"final":true}]}`))
	})
	mux.HandleFunc("GET /v1/traffic/quality", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such endpoint yet", http.StatusNotFound)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	_, err := Verify(t.Context(), VerifyConfig{Target: srv.URL, PollInterval: time.Millisecond}, ledger, new(bytes.Buffer))
	if err == nil || errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "404") {
		t.Errorf("error %v, want the 404 of the quality query", err)
	}
	if n := series.Load(); n != 2 {
		t.Errorf("%d series requests, want 2 (one 503, tried again)", n)
	}
}

func TestVerifyReportPrint(t *testing.T) {
	rep := VerifyReport{Ads: 2, Windows: 5,
		Mismatches: []WindowMismatch{
			{AdID: "ad-1", Start: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Want: reference.Counts{Clicks: 3}, Got: reference.Counts{Clicks: 2}},
			{AdID: "ad-2", Start: time.Date(2026, 3, 1, 12, 1, 0, 0, time.UTC), Want: reference.Counts{Invalid: 1}},
		},
		QualityMismatches: []QualityMismatch{{AdID: "ad-2", Want: Quality{Valid: 1, TooLate: 2}, Got: Quality{Valid: 1}}},
	}
	var all, some bytes.Buffer
	rep.print(&all, -1)
	rep.print(&some, 1)
	for _, want := range []string{
		"window ad-1 2026-03-01T12:00:00Z: clicks 2, want 3; invalid_clicks 0, want 0",
		"window ad-2 2026-03-01T12:01:00Z: clicks 0, want 0; invalid_clicks 0, want 1",
		"quality ad-2: too_late 0, want 2",
		"verify: FAILED: 2 of 5 windows and the quality figures of 1 of 2 ads differ",
	} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, all.String())
		}
	}
	lines := strings.Split(some.String(), "\n")
	if !slices.Contains(lines, "verify: the first 1:") || strings.Contains(some.String(), "ad-2 2026") {
		t.Errorf("report limited to one mismatch:\n%s", some.String())
	}
}
