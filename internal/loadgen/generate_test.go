package loadgen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// wireClick is a click as the server decodes it.
type wireClick struct {
	ClickID    string `json:"click_id"`
	AdID       string `json:"ad_id"`
	TS         int64  `json:"ts"`
	IP         string `json:"ip"`
	UserAgent  string `json:"user_agent"`
	Country    string `json:"country"`
	CampaignID string `json:"campaign_id"`
	UserID     string `json:"user_id"`
}

var (
	idRE      = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
	countryRE = regexp.MustCompile(`^[A-Z]{2}$`)
)

// checkWire returns what is wrong with c under the ingestion contract, or "".
func checkWire(c wireClick) string {
	switch {
	case !idRE.MatchString(c.ClickID):
		return "click_id"
	case !idRE.MatchString(c.AdID):
		return "ad_id"
	case c.TS <= 0:
		return "ts"
	case len(c.UserAgent) > 512:
		return "user_agent"
	case !countryRE.MatchString(c.Country):
		return "country"
	case len(c.CampaignID) > 128 || len(c.UserID) > 128:
		return "campaign_id"
	}
	if _, err := netip.ParseAddr(c.IP); err != nil {
		return "ip"
	}
	return ""
}

func testGenerator(t testing.TB, cfg Config) *generator {
	t.Helper()
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	g, err := newGenerator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestGeneratorShares(t *testing.T) {
	const n = 20_000
	g := testGenerator(t, Config{Seed: 7, RunID: "t", DupShare: 0.1, BotShare: 0.05, BurstShare: 0.08, LateShare: 0.05})
	now := time.Date(2026, 3, 1, 12, 0, 30, 0, time.UTC).UnixMilli()
	var kinds [numKinds]int
	seen := make(map[uint64]click) // unique clicks by seq
	type burstGroup struct {
		n       int
		ip, ad  uint64
		country uint8
		minute  int64
	}
	groups := make(map[uint64]*burstGroup)
	for i := range n {
		c := g.next(now + int64(i)) // a click per millisecond
		kinds[c.kind]++
		switch c.kind {
		case KindDuplicate:
			orig, ok := seen[c.seq]
			if !ok {
				t.Fatalf("click %d: duplicate of seq %d, which was not an earlier unique click", i, c.seq)
			}
			orig.kind = KindDuplicate
			if diff := cmp.Diff(orig, c, cmp.AllowUnexported(click{})); diff != "" {
				t.Fatalf("duplicate differs from its original (-want +got):\n%s", diff)
			}
			continue
		case KindUnique:
			seen[c.seq] = c
		case KindBot:
			if int(c.ua) < len(browserWeights) {
				t.Errorf("bot click with browser user agent %q", userAgent(c.ua))
			}
		case KindLate:
			if age := now + int64(i) - c.ts; age < lateMinMs || age > lateMaxMs {
				t.Errorf("late click %v old, want 2 to 90 minutes", time.Duration(age)*time.Millisecond)
			}
		case KindBurst:
			bg := groups[c.group]
			if bg == nil {
				bg = &burstGroup{ip: c.ip, ad: uint64(c.ad), country: c.country, minute: c.ts / minuteMs}
				groups[c.group] = bg
			}
			bg.n++
			if c.ip != bg.ip || uint64(c.ad) != bg.ad || c.country != bg.country || c.ts/minuteMs != bg.minute {
				t.Errorf("burst group %d mixes IPs, ads, countries or minutes", c.group)
			}
		}
		if c.kind != KindBurst && c.kind != KindLate {
			if age := now + int64(i) - c.ts; age < 0 || age >= 1024 {
				t.Errorf("%v click %dms old", c.kind, age)
			}
		}
	}
	want := map[Kind]float64{KindUnique: 0.72, KindDuplicate: 0.1, KindBot: 0.05, KindBurst: 0.08, KindLate: 0.05}
	for k, share := range want {
		got := float64(kinds[k]) / n
		if got < share*0.8 || got > share*1.2 {
			t.Errorf("%v share = %.4f, want about %.2f", k, got, share)
		}
	}
	for id, bg := range groups {
		if bg.n > burstMaxSize {
			t.Errorf("burst group %d has %d clicks", id, bg.n)
		}
	}
	complete := 0
	for _, bg := range groups {
		if bg.n >= burstMinSize {
			complete++
		}
	}
	if complete < len(groups)-1 { // the last group may be unfinished
		t.Errorf("%d of %d burst groups have at least %d clicks", complete, len(groups), burstMinSize)
	}
}

func TestGeneratorAdsZipf(t *testing.T) {
	g := testGenerator(t, Config{Seed: 3, Ads: 1000})
	counts := make([]int, 1000)
	for range 50_000 {
		counts[g.next(1).ad]++
	}
	// With s = 1.1 over 1000 ads the top ad draws about 19% of the clicks, the
	// tenth about 1.5%.
	if top := float64(counts[0]) / 50_000; top < 0.12 || top > 0.26 {
		t.Errorf("top ad share = %.3f, want about 0.19", top)
	}
	if counts[0] <= counts[9] || counts[9] <= counts[500] {
		t.Errorf("ad counts not decreasing with rank: ad 0 %d, ad 9 %d, ad 500 %d", counts[0], counts[9], counts[500])
	}
}

func TestGeneratorReproducible(t *testing.T) {
	a := testGenerator(t, Config{Seed: 11, RunID: "r", DupShare: 0.2, BurstShare: 0.2, BotShare: 0.1})
	b := testGenerator(t, Config{Seed: 11, RunID: "r", DupShare: 0.2, BurstShare: 0.2, BotShare: 0.1})
	for i := range 5000 {
		ca, cb := a.next(1e12), b.next(1e12)
		if ca != cb {
			t.Fatalf("click %d differs with the same seed: %+v vs %+v", i, ca, cb)
		}
	}
}

func TestAppendBatchDecodes(t *testing.T) {
	for _, ndjson := range []bool{false, true} {
		g := testGenerator(t, Config{Seed: 5, RunID: "enc", BotShare: 0.3, BurstShare: 0.2, DupShare: 0.1})
		g.seq = 9_990 // cross the click id cache's boundaries
		var clicks []click
		for i := range 3000 {
			clicks = append(clicks, g.next(1_772_366_400_000+int64(i)))
		}
		clicks = append(clicks, click{seq: 1, ts: 5, ad: 7, user: 3}, click{seq: 12_345_678, ts: 9_999, ad: 2_000_001, user: 99_999_999})
		body := g.appendBatch(nil, clicks, ndjson)
		var got []wireClick
		if ndjson {
			dec := json.NewDecoder(bytes.NewReader(body))
			for dec.More() {
				var c wireClick
				if err := dec.Decode(&c); err != nil {
					t.Fatal(err)
				}
				got = append(got, c)
			}
			if bytes.Count(body, []byte("\n")) != len(clicks) {
				t.Errorf("ndjson: %d lines for %d clicks", bytes.Count(body, []byte("\n")), len(clicks))
			}
		} else if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("json batch does not decode: %v", err)
		}
		if len(got) != len(clicks) {
			t.Fatalf("decoded %d clicks, want %d", len(got), len(clicks))
		}
		v6 := 0
		for i, w := range got {
			if bad := checkWire(w); bad != "" {
				t.Fatalf("click %d: bad %s: %+v", i, bad, w)
			}
			c := &clicks[i]
			// The ledger line carries the same id, ad, country and ts.
			line := string(g.appendLedgerLine(nil, c, true))
			want := strings.Join([]string{w.ClickID, w.AdID, w.Country, itoa(w.TS), c.kind.String()}, "\t") + "\n"
			if line != want {
				t.Fatalf("ledger line %q, want %q", line, want)
			}
			if strings.Contains(w.IP, ":") {
				v6++
				if !strings.HasPrefix(w.IP, "2001:db8:") {
					t.Errorf("IPv6 %s outside the documentation prefix", w.IP)
				}
			}
		}
		if v6 == 0 {
			t.Error("no IPv6 address drawn")
		}
	}
}

func itoa(n int64) string {
	return string(appendPadded(nil, uint64(n), 1))
}

func TestLedgerRoundTrip(t *testing.T) {
	// A ledger written from generated clicks summarizes to what they were.
	g := testGenerator(t, Config{Seed: 9, RunID: "l", DupShare: 0.1, BotShare: 0.1, BurstShare: 0.1})
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	var unique, bots int64
	for range 4000 {
		c := g.next(1_772_366_400_000)
		w.Write(g.appendLedgerLine(nil, &c, true))
		switch c.kind {
		case KindUnique:
			unique++
		case KindBot:
			bots++
		}
	}
	w.Flush()
	s, err := SummarizeLedger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if s.DistinctByKind[KindUnique] != unique || s.InvalidBot != bots || s.Distinct+s.DuplicateLines != s.Lines {
		t.Errorf("summary %+v, want %d unique and %d bots", s, unique, bots)
	}
	if s.InvalidBurst == 0 || s.InvalidBurst >= s.DistinctByKind[KindBurst] {
		t.Errorf("invalid bursts = %d of %d burst clicks", s.InvalidBurst, s.DistinctByKind[KindBurst])
	}
}

func TestBuildBatchAllocs(t *testing.T) {
	g := testGenerator(t, Config{Seed: 1, RunID: "a", DupShare: 0.05, BotShare: 0.05, BurstShare: 0.05, LateShare: 0.05})
	clicks := make([]click, 0, 500)
	var body []byte
	build := func() {
		clicks = clicks[:0]
		for range 500 {
			clicks = append(clicks, g.next(1_772_366_400_000))
		}
		body = g.appendBatch(body[:0], clicks, false)
	}
	build()
	if n := testing.AllocsPerRun(20, build); n != 0 {
		t.Errorf("building a batch allocates %v times, want 0", n)
	}
}

// BenchmarkBuildBatch measures drawing and encoding a batch of 500 clicks.
func BenchmarkBuildBatch(b *testing.B) {
	for _, format := range []Format{FormatJSON, FormatNDJSON} {
		b.Run(string(format), func(b *testing.B) {
			g := testGenerator(b, Config{Seed: 1, RunID: "bench", DupShare: 0.05, BotShare: 0.02, BurstShare: 0.02, LateShare: 0.02})
			clicks := make([]click, 0, 500)
			var body []byte
			b.ReportAllocs()
			for b.Loop() {
				now := time.Now().UnixMilli()
				clicks = clicks[:0]
				for range 500 {
					clicks = append(clicks, g.next(now))
				}
				body = g.appendBatch(body[:0], clicks, format == FormatNDJSON)
			}
			b.SetBytes(int64(len(body)))
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/500, "ns/click")
		})
	}
}
