package reference

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestVerdicts(t *testing.T) {
	rules := DefaultRules([]string{"Googlebot", " curl/ ", ""})
	tests := []struct {
		name string
		in   []Click
		want []Verdict
	}{
		{"distinct clicks are valid", []Click{
			{ClickID: "a", AdID: "ad1", Time: at(0)},
			{ClickID: "b", AdID: "ad1", Time: at(0)},
			{ClickID: "a", AdID: "ad2", Time: at(0)}, // same click id, other ad
		}, []Verdict{Valid, Valid, Valid}},
		{"duplicates within the horizon, either side", []Click{
			{ClickID: "a", AdID: "ad1", Time: at(5 * time.Minute)},
			{ClickID: "a", AdID: "ad1", Time: at(5 * time.Minute)},
			{ClickID: "a", AdID: "ad1", Time: at(15 * time.Minute)}, // exactly 10m later
			{ClickID: "a", AdID: "ad1", Time: at(-5 * time.Minute)}, // exactly 10m earlier
		}, []Verdict{Valid, Duplicate, Duplicate, Duplicate}},
		{"beyond the horizon counts again", []Click{
			{ClickID: "a", AdID: "ad1", Time: at(0)},
			{ClickID: "a", AdID: "ad1", Time: at(10*time.Minute + time.Millisecond)},
			{ClickID: "a", AdID: "ad1", Time: at(20 * time.Minute)}, // within 10m of the second
		}, []Verdict{Valid, Valid, Duplicate}},
		{"bots, case-insensitive substrings; empty UA is not a bot", []Click{
			{ClickID: "a", AdID: "ad1", UserAgent: "Mozilla/5.0 (compatible; GOOGLEBOT/2.1)", Time: at(0)},
			{ClickID: "b", AdID: "ad1", UserAgent: "curl/8.1", Time: at(0)},
			{ClickID: "c", AdID: "ad1", UserAgent: "", Time: at(0)},
			{ClickID: "a", AdID: "ad1", UserAgent: "Mozilla", Time: at(0)}, // duplicate of an invalid click
		}, []Verdict{BotUserAgent, BotUserAgent, Valid, Duplicate}},
		{"ip rate: the sixth click of an ip on an ad in a minute", []Click{
			{ClickID: "1", AdID: "ad1", IP: "192.0.2.1", Time: at(0)},
			{ClickID: "2", AdID: "ad1", IP: "192.0.2.1", Time: at(1 * time.Second)},
			{ClickID: "2", AdID: "ad1", IP: "192.0.2.1", Time: at(2 * time.Second)},                      // duplicate: not numbered
			{ClickID: "b", AdID: "ad1", IP: "192.0.2.1", UserAgent: "curl/8", Time: at(3 * time.Second)}, // bot: not numbered
			{ClickID: "3", AdID: "ad1", IP: "192.0.2.1", Time: at(4 * time.Second)},
			{ClickID: "4", AdID: "ad1", IP: "192.0.2.1", Time: at(5 * time.Second)},
			{ClickID: "5", AdID: "ad1", IP: "192.0.2.1", Time: at(6 * time.Second)},
			{ClickID: "x", AdID: "ad2", IP: "192.0.2.1", Time: at(6 * time.Second)}, // other ad
			{ClickID: "6", AdID: "ad1", IP: "192.0.2.1", Time: at(7 * time.Second)},
			{ClickID: "7", AdID: "ad1", IP: "192.0.2.1", Time: at(8 * time.Second)},
			{ClickID: "8", AdID: "ad1", IP: "192.0.2.1", Time: at(60 * time.Second)}, // next minute
			{ClickID: "9", AdID: "ad1", Time: at(9 * time.Second)},                   // no ip
		}, []Verdict{Valid, Valid, Duplicate, BotUserAgent, Valid, Valid, Valid, Valid, IPRate, IPRate, Valid, Valid}},
		{"too late: older than the watermark minus the late horizon", []Click{
			{ClickID: "a", AdID: "ad1", Time: at(2 * time.Hour)},
			{ClickID: "b", AdID: "ad1", Time: at(2*time.Hour - 30*time.Second - time.Hour)},                    // exactly at the limit
			{ClickID: "c", AdID: "ad1", Time: at(2*time.Hour - 30*time.Second - time.Hour - time.Millisecond)}, // beyond
			{ClickID: "c", AdID: "ad1", Time: at(2*time.Hour - 30*time.Second - time.Hour)},                    // not remembered by dedup
		}, []Verdict{Valid, Valid, TooLate, Valid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(rules)
			var got []Verdict
			for _, c := range tt.in {
				got = append(got, m.Add(c))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("verdicts (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWindowsAndMerge(t *testing.T) {
	rules := DefaultRules([]string{"bot"})
	a, b := New(rules), New(rules)
	a.Add(Click{ClickID: "1", AdID: "ad1", Country: "DE", Time: at(10 * time.Second)})
	a.Add(Click{ClickID: "2", AdID: "ad1", Country: "DE", Time: at(59 * time.Second)})
	a.Add(Click{ClickID: "3", AdID: "ad1", Country: "DE", UserAgent: "a bot", Time: at(30 * time.Second)})
	a.Add(Click{ClickID: "1", AdID: "ad1", Country: "DE", Time: at(20 * time.Second)}) // duplicate
	a.Add(Click{ClickID: "4", AdID: "ad1", Country: "FR", Time: at(60 * time.Second)})
	b.Add(Click{ClickID: "1", AdID: "ad2", Time: at(0)})
	got := Merge(a.Result(), b.Result())
	want := Result{
		Windows: map[WindowKey]Counts{
			{"ad1", "DE", t0}:                  {Clicks: 2, Invalid: 1},
			{"ad1", "FR", t0.Add(time.Minute)}: {Clicks: 1},
			{"ad2", "", t0}:                    {Clicks: 1},
		},
		Verdicts: map[Verdict]int64{Valid: 4, BotUserAgent: 1, Duplicate: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("merged result (-want +got):\n%s", diff)
	}
}
