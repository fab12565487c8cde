package loadgen

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/clicks/reference"
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
	g := testGenerator(t, Config{Seed: 7, RunID: "t", DupShare: 0.1, BotShare: 0.05, BurstShare: 0.08, LateShare: 0.05, TooLateShare: 0.02})
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
	burstIPs := make(map[uint64]uint64) // group by address
	const ackLag = 100                  // clicks generated before one is acknowledged
	var all []click
	for i := range n {
		if i >= ackLag {
			g.refs.note(all[i-ackLag].ad, all[i-ackLag].ts)
		}
		c := g.next(now + int64(i)) // a click per millisecond
		all = append(all, c)
		kinds[c.kind]++
		if i < ackLag && (c.kind == KindLate || c.kind == KindTooLate) {
			t.Fatalf("click %d is %v before any click was acknowledged", i, c.kind)
		}
		if !c.v6 && c.kind != KindBurst && slices.Contains(burstOctets[:], uint8(c.ip>>24)) {
			t.Errorf("%v click from burst address %s", c.kind, appendIP(nil, &c))
		}
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
				t.Errorf("late click %v old, want 2 to 45 minutes", time.Duration(age)*time.Millisecond)
			}
		case KindTooLate:
			if age := now + int64(i) - c.ts; age < tooLateMinMs || age > tooLateMaxMs {
				t.Errorf("too-late click %v old, want 80 to 90 minutes", time.Duration(age)*time.Millisecond)
			}
		case KindBurst:
			bg := groups[c.group]
			if bg == nil {
				bg = &burstGroup{ip: c.ip, ad: uint64(c.ad), country: c.country, minute: c.ts / minuteMs}
				groups[c.group] = bg
				if other, ok := burstIPs[c.ip]; ok {
					t.Errorf("burst groups %d and %d share address %s", other, c.group, appendIP(nil, &c))
				}
				burstIPs[c.ip] = c.group
			}
			bg.n++
			if c.ip != bg.ip || uint64(c.ad) != bg.ad || c.country != bg.country || c.ts/minuteMs != bg.minute {
				t.Errorf("burst group %d mixes IPs, ads, countries or minutes", c.group)
			}
		}
		if c.kind != KindBurst && c.kind != KindLate && c.kind != KindTooLate {
			if age := now + int64(i) - c.ts; age < 0 || age >= 1024 {
				t.Errorf("%v click %dms old", c.kind, age)
			}
		}
	}
	want := map[Kind]float64{KindUnique: 0.70, KindDuplicate: 0.1, KindBot: 0.05, KindBurst: 0.08, KindLate: 0.05, KindTooLate: 0.02}
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

func TestBurstIPsDistinct(t *testing.T) {
	seen := make(map[uint64]uint64)
	for n := uint64(1); n <= 1<<18; n++ {
		ip := burstIP(n)
		if other, ok := seen[ip]; ok {
			t.Fatalf("burst groups %d and %d share an address", other, n)
		}
		seen[ip] = n
		if o := uint8(ip >> 24); !slices.Contains(burstOctets[:], o) || slices.Contains(publicOctets[:], o) {
			t.Fatalf("burst group %d: address in %d.0.0.0/8", n, o)
		}
	}
}

func TestLateClicksNeedARecentReference(t *testing.T) {
	g := testGenerator(t, Config{Seed: 2, RunID: "t", Ads: 50, LateShare: 0.5, TooLateShare: 0.5})
	now := int64(1_772_366_400_000)
	for range 200 {
		if c := g.next(now); c.kind != KindUnique {
			t.Fatalf("%v click without any acknowledged click", c.kind)
		}
	}
	g.refs.note(0, now-refMaxAgeMs-1000) // too old to count
	for range 200 {
		if c := g.next(now); c.kind != KindUnique {
			t.Fatalf("%v click with a reference %v old", c.kind, time.Duration(refMaxAgeMs+1000)*time.Millisecond)
		}
	}
	g.refs.note(0, now-time.Minute.Milliseconds())
	late := 0
	for range 200 {
		c := g.next(now)
		if c.kind == KindUnique {
			continue
		}
		late++
		if !g.refs.since(c.ad, now-refMaxAgeMs) {
			t.Fatalf("%v click on ad %d, which has no recent acknowledged click", c.kind, c.ad)
		}
	}
	if late < 150 {
		t.Errorf("%d of 200 clicks late with a reference on the top ad, want nearly all", late)
	}
}

func TestUserAgentsAndBotList(t *testing.T) {
	// Browsers pass pedal's default bot list and bots do not, or the bot share
	// would be off.
	m := reference.New(Rules())
	for ua := range len(browserWeights) + len(botAgents) {
		v := m.Add(reference.Click{ClickID: strconv.Itoa(ua), AdID: "a", UserAgent: userAgent(uint8(ua)), Time: time.Unix(0, 0)})
		if want := ua >= len(browserWeights); (v == reference.BotUserAgent) != want {
			t.Errorf("user agent %q: verdict %v, want bot %v", userAgent(uint8(ua)), v, want)
		}
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
			// The ledger line carries the same id, ad, country, ts, ip and user agent.
			line := string(g.appendLedgerLine(nil, c, true))
			want := strings.Join([]string{w.ClickID, w.AdID, w.Country, itoa(w.TS), c.kind.String(), w.IP, itoa(int64(c.ua))}, "\t") + "\n"
			if line != want || userAgent(c.ua) != w.UserAgent {
				t.Fatalf("ledger line %q, want %q (user agent %q)", line, want, w.UserAgent)
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

func TestBuildBatchAllocs(t *testing.T) {
	g := testGenerator(t, Config{Seed: 1, RunID: "a", DupShare: 0.05, BotShare: 0.05, BurstShare: 0.05, LateShare: 0.05, TooLateShare: 0.02})
	g.refs.note(0, 1_772_366_400_000)
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
			g := testGenerator(b, Config{Seed: 1, RunID: "bench", DupShare: 0.05, BotShare: 0.02, BurstShare: 0.02, LateShare: 0.02, TooLateShare: 0.01})
			g.refs.note(0, time.Now().UnixMilli())
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
