package loadgen

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pedal-project/pedal/internal/clicks/reference"
	"github.com/pedal-project/pedal/internal/eventlog"
)

// ledgerText returns a ledger of mode holding lines, with the header Run writes.
func ledgerText(mode Mode, lines ...string) string {
	var b strings.Builder
	b.Write(appendLedgerHeader(nil, mode))
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// readAll returns the clicks of a ledger.
func readAll(t *testing.T, ledger []byte) (Mode, []LedgerClick) {
	t.Helper()
	var cs []LedgerClick
	mode, err := ReadLedger(bytes.NewReader(ledger), func(c LedgerClick) error {
		cs = append(cs, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return mode, cs
}

func TestLedgerRoundTrip(t *testing.T) {
	// Clicks written to a ledger read back as what was sent: in clicks mode the
	// fields of the JSON body, in redirect mode without the country.
	for _, mode := range []Mode{ModeClicks, ModeRedirect} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := Config{Seed: 9, RunID: "l", Mode: mode, DupShare: 0.1, BotShare: 0.1, BurstShare: 0.1, RunScopedAds: true}
			if mode == ModeClicks {
				cfg.LateShare, cfg.TooLateShare = 0.1, 0.05
			} else {
				cfg.SigningKey = make([]byte, 32)
			}
			g := testGenerator(t, cfg)
			now := int64(1_772_366_400_000)
			g.refs.note(0, now)
			var sent []click
			for i := range 4000 {
				sent = append(sent, g.next(now+int64(i)))
			}
			path := filepath.Join(t.TempDir(), "ledger.tsv")
			l, err := createLedger(path, g, mode)
			if err != nil {
				t.Fatal(err)
			}
			rejected := []int{0, 17, 3999}
			l.write(sent[:2000], rejected[:2])
			l.write(sent[2000:], []int{1999})
			if err := l.close(); err != nil {
				t.Fatal(err)
			}

			var wire []wireClick
			if err := json.Unmarshal(g.appendBatch(nil, sent, false), &wire); err != nil {
				t.Fatal(err)
			}
			var want []LedgerClick
			kinds := make(map[Kind]int)
			for i, w := range wire {
				if i == 0 || i == 17 || i == 3999 {
					continue
				}
				c := LedgerClick{ClickID: w.ClickID, AdID: w.AdID, Country: w.Country, Time: time.UnixMilli(w.TS).UTC(),
					Kind: sent[i].kind, IP: netip.MustParseAddr(w.IP).String(), UserAgent: w.UserAgent}
				if mode == ModeRedirect {
					c.Country = ""
				}
				want = append(want, c)
				kinds[c.Kind]++
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			gotMode, got := readAll(t, b)
			if gotMode != mode {
				t.Errorf("mode %q, want %q", gotMode, mode)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ledger read back (-sent +read):\n%s", diff)
			}
			if !strings.HasPrefix(want[0].AdID, "ad-l-") {
				t.Errorf("ad id %q, want it scoped to run l", want[0].AdID)
			}
			for _, k := range []Kind{KindUnique, KindDuplicate, KindBot, KindBurst} {
				if kinds[k] == 0 {
					t.Errorf("no %v click in the ledger", k)
				}
			}
			if mode == ModeClicks && (kinds[KindLate] == 0 || kinds[KindTooLate] == 0) {
				t.Errorf("no late or too-late click in the ledger: %v", kinds)
			}
		})
	}
}

func TestExpect(t *testing.T) {
	m0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) // a minute start
	at := func(d time.Duration) time.Time { return m0.Add(d) }
	const chrome, curl = "0", "9" // indexes of the header's user agents
	ledger := ledgerText(ModeClicks,
		"lg-r-1\tad-1\tUS\t1772366400100\tunique\t23.0.0.1\t"+chrome,
		"lg-r-2\tad-1\tUS\t1772366459999\tunique\t23.0.0.2\t"+chrome,
		"lg-r-3\tad-1\tUS\t1772366460000\tunique\t23.0.0.3\t"+chrome,    // next minute
		"lg-r-4\tad-2\tDE\t1772366400500\tduplicate\t23.0.0.4\t"+chrome, // before its original
		"lg-r-4\tad-2\tDE\t1772366400500\tunique\t23.0.0.4\t"+chrome,
		"lg-r-1\tad-1\tUS\t1772366400100\tduplicate\t23.0.0.1\t"+chrome,
		"lg-r-1\tad-9\tUS\t1772366400100\tunique\t23.0.0.1\t"+chrome, // same click id, other ad
		"lg-r-6\tad-1\tGB\t1772366400200\tbot\t23.0.0.6\t"+curl,
		// A burst of 7 on ad 3, the address spelled two ways: 5 valid, 2 ip_rate.
		"lg-r-10.b1\tad-3\tBR\t1772366400001\tburst\t2001:db8::0:0:0:1\t"+chrome,
		"lg-r-11.b1\tad-3\tBR\t1772366400002\tburst\t2001:db8::1\t"+chrome,
		"lg-r-12.b1\tad-3\tBR\t1772366400003\tburst\t2001:db8::1\t"+chrome,
		"lg-r-13.b1\tad-3\tBR\t1772366400004\tburst\t2001:db8::1\t"+chrome,
		"lg-r-14.b1\tad-3\tBR\t1772366400005\tburst\t2001:db8::1\t"+chrome,
		"lg-r-15.b1\tad-3\tBR\t1772366400006\tburst\t2001:db8::1\t"+chrome,
		"lg-r-16.b1\tad-3\tBR\t1772366400007\tburst\t2001:db8::0:0:0:1\t"+chrome,
		"lg-r-20\tad-4\tJP\t1772363700000\tlate\t23.0.0.20\t"+chrome,     // 45 minutes old: counts
		"lg-r-21\tad-4\tJP\t1772361000000\ttoo_late\t23.0.0.21\t"+chrome, // 90 minutes old: too late
	)
	got, err := Expect(strings.NewReader(ledger), Rules())
	if err != nil {
		t.Fatal(err)
	}
	k := func(ad, country string, start time.Time) reference.WindowKey {
		return reference.WindowKey{AdID: ad, Country: country, Start: start}
	}
	want := Expected{
		Mode:   ModeClicks,
		Clicks: 17,
		ByKind: map[Kind]int64{KindUnique: 5, KindDuplicate: 2, KindBot: 1, KindBurst: 7, KindLate: 1, KindTooLate: 1},
		Result: reference.Result{
			Windows: map[reference.WindowKey]reference.Counts{
				k("ad-1", "US", at(0)):               {Clicks: 2},
				k("ad-1", "US", at(time.Minute)):     {Clicks: 1},
				k("ad-2", "DE", at(0)):               {Clicks: 1},
				k("ad-9", "US", at(0)):               {Clicks: 1},
				k("ad-1", "GB", at(0)):               {Invalid: 1},
				k("ad-3", "BR", at(0)):               {Clicks: 5, Invalid: 2},
				k("ad-4", "JP", at(-45*time.Minute)): {Clicks: 1},
			},
			Verdicts: map[reference.Verdict]int64{
				reference.Valid: 11, reference.Duplicate: 2, reference.BotUserAgent: 1, reference.IPRate: 2, reference.TooLate: 1,
			},
		},
		Quality: map[string]Quality{
			"ad-1": {Valid: 3, Bot: 1, Duplicates: 1},
			"ad-2": {Valid: 1, Duplicates: 1},
			"ad-9": {Valid: 1},
			"ad-3": {Valid: 5, IPRate: 2},
			"ad-4": {Valid: 1, TooLate: 1},
		},
		First: at(-90 * time.Minute),
		Last:  at(time.Minute),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Expect (-want +got):\n%s", diff)
	}
}

func TestReadLedgerErrors(t *testing.T) {
	line := "lg-r-1\tad-1\tUS\t1772366400100\tunique\t23.0.0.1\t0"
	for name, ledger := range map[string]string{
		"empty":            "",
		"no header":        line + "\n",
		"old version":      "#pedal-loadgen-ledger\t1\tclicks\n" + line + "\n",
		"unknown mode":     "#pedal-loadgen-ledger\t2\tpost\n",
		"six fields":       ledgerText(ModeClicks, "lg-r-1\tad-1\tUS\t1772366400100\tunique\t23.0.0.1"),
		"eight fields":     ledgerText(ModeClicks, line+"\textra"),
		"bad ts":           ledgerText(ModeClicks, "lg-r-1\tad-1\tUS\tsoon\tunique\t23.0.0.1\t0"),
		"bad kind":         ledgerText(ModeClicks, "lg-r-1\tad-1\tUS\t1772366400100\tgood\t23.0.0.1\t0"),
		"empty click id":   ledgerText(ModeClicks, "\tad-1\tUS\t1772366400100\tunique\t23.0.0.1\t0"),
		"bad ip":           ledgerText(ModeClicks, "lg-r-1\tad-1\tUS\t1772366400100\tunique\t23.0.0\t0"),
		"unknown ua":       ledgerText(ModeClicks, "lg-r-1\tad-1\tUS\t1772366400100\tunique\t23.0.0.1\t99"),
		"ua out of order":  "#pedal-loadgen-ledger\t2\tclicks\n#ua\t1\tcurl/8\n",
		"a line too long":  ledgerText(ModeClicks, strings.Repeat("x", 70_000)),
		"click id invalid": ledgerText(ModeClicks, "lg r 1\tad-1\tUS\t1772366400100\tunique\t23.0.0.1\t0"),
	} {
		if _, err := ReadLedger(strings.NewReader(ledger), func(LedgerClick) error { return nil }); err == nil {
			t.Errorf("%s: ReadLedger succeeded, want an error", name)
		}
	}
}

// TestOrderInsensitive checks what makes Verify sound: the generated stream
// aggregates to the same windows and verdicts whatever the order of the clicks
// within a margin (the requests in flight together), and whether the clicks are
// split into partitions by ad or not.
func TestOrderInsensitive(t *testing.T) {
	const (
		n      = 20_000
		ackLag = 256 // clicks generated before one is acknowledged
		stepMs = 50  // event time between two clicks: 1000s in all
	)
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			t.Parallel()
			orderInsensitive(t, seed, n, ackLag, stepMs)
		})
	}
}

func orderInsensitive(t *testing.T, seed uint64, n, ackLag int, stepMs int64) {
	g := testGenerator(t, Config{Seed: seed, RunID: "o", Ads: 40, ZipfS: 1.3,
		DupShare: 0.15, BotShare: 0.05, BurstShare: 0.2, LateShare: 0.05, TooLateShare: 0.05})
	now := time.Date(2026, 3, 1, 11, 59, 40, 0, time.UTC).UnixMilli()
	var (
		sent   []click
		ledger []byte
	)
	ledger = appendLedgerHeader(ledger, ModeClicks)
	for i := range n {
		if i >= ackLag {
			g.refs.note(sent[i-ackLag].ad, sent[i-ackLag].ts)
		}
		c := g.next(now + int64(i)*stepMs)
		sent = append(sent, c)
		ledger = g.appendLedgerLine(ledger, &c, true)
	}
	_, cs := readAll(t, ledger)

	// Shuffled within blocks of ackLag clicks: a too-late click stays behind
	// the click that let it be drawn, ackLag clicks or more before it.
	rng := rand.New(rand.NewPCG(seed, 99))
	inOrder, shuffled := make([]int, n), make([]int, n)
	for i := range n {
		inOrder[i], shuffled[i] = i, i
	}
	for i := 0; i < n; i += ackLag {
		block := shuffled[i:min(i+ackLag, n)]
		rng.Shuffle(len(block), func(a, b int) { block[a], block[b] = block[b], block[a] })
	}

	want, wantVerdicts := feed(cs, inOrder, 1)
	for _, v := range []reference.Verdict{reference.Duplicate, reference.BotUserAgent, reference.IPRate, reference.TooLate} {
		if want.Verdicts[v] == 0 {
			t.Fatalf("seed %d: no %s click in the stream: the test shows nothing", seed, v)
		}
	}
	for _, partitions := range []int32{1, 4} {
		got, gotVerdicts := feed(cs, shuffled, partitions)
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("seed %d, %d partitions: shuffled within %d clicks, the totals change (-in order +shuffled):\n%s", seed, partitions, ackLag, diff)
		}
		// The order did change which clicks are duplicates or beyond the
		// IP limit, or the test would show nothing.
		changed := 0
		for i := range wantVerdicts {
			if wantVerdicts[i] != gotVerdicts[i] {
				changed++
			}
		}
		if changed == 0 {
			t.Errorf("seed %d, %d partitions: the shuffle changed no click's verdict", seed, partitions)
		}
	}
}

// feed returns the totals of reference models, one per partition, fed the clicks
// cs[order[0]], cs[order[1]], ..., and the verdict of each click of cs.
func feed(cs []LedgerClick, order []int, partitions int32) (reference.Result, []reference.Verdict) {
	models := make([]*reference.Model, partitions)
	for i := range models {
		models[i] = reference.New(Rules())
	}
	verdicts := make([]reference.Verdict, len(cs))
	for _, i := range order {
		c := &cs[i]
		verdicts[i] = models[eventlog.PartitionForString(c.AdID, partitions)].Add(reference.Click{
			ClickID: c.ClickID, AdID: c.AdID, Country: c.Country, UserAgent: c.UserAgent, IP: c.IP, Time: c.Time,
		})
	}
	rs := make([]reference.Result, len(models))
	for i, m := range models {
		rs[i] = m.Result()
	}
	return reference.Merge(rs...), verdicts
}
