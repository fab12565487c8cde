package clicks

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/eventlog"
)

var now = time.Date(2026, 5, 23, 8, 0, 0, 0, time.UTC)

var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
}

func decodeJSON(t *testing.T, body string) ([]Click, []Rejection) {
	t.Helper()
	var (
		d Decoder
		b Batch
	)
	if err := d.DecodeJSON([]byte(body), now, &b); err != nil {
		t.Fatalf("DecodeJSON(%s): %v", body, err)
	}
	return clicksOf(t, &b), b.Rejected
}

func clicksOf(t *testing.T, b *Batch) []Click {
	t.Helper()
	var out []Click
	for _, r := range b.Records(nil, 16) {
		c, err := Decode(r.Value)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if !r.Timestamp.Equal(c.Time) {
			t.Errorf("record timestamp %v, click time %v", r.Timestamp, c.Time)
		}
		if want := eventlog.PartitionForString(c.AdID, 16); r.Partition != want {
			t.Errorf("click for %s in partition %d, want %d", c.AdID, r.Partition, want)
		}
		out = append(out, c)
	}
	return out
}

func TestDecodeValid(t *testing.T) {
	ts := now.Add(-time.Minute)
	got, rej := decodeJSON(t, `[
		{"click_id":"c1","ad_id":"ad-1","ts":"`+ts.Format(time.RFC3339Nano)+`","ip":"203.0.113.7","user_agent":"Mozilla/5.0","country":"de","campaign_id":"camp 1","user_id":"u1","extra":{"ignored":true}},
		{"click_id":"c.2:x_y-z","ad_id":"AD_2","ts":`+strconv.FormatInt(ts.Add(1500*time.Millisecond).UnixMilli(), 10)+`,"ip":"2001:db8::1"},
		{"click_id":"c3","ad_id":"ad-1","ts":"2026-05-23T07:59:00.123456789+02:00","ip":"::ffff:192.0.2.1","country":null}
	]`)
	if len(rej) != 0 {
		t.Fatalf("rejected: %v", rej)
	}
	want := []Click{
		{ClickID: "c1", AdID: "ad-1", Time: ts, ReceivedAt: now, IP: netip.MustParseAddr("203.0.113.7"), UserAgent: "Mozilla/5.0", Country: "DE", CampaignID: "camp 1", UserID: "u1"},
		{ClickID: "c.2:x_y-z", AdID: "AD_2", Time: ts.Add(1500 * time.Millisecond), ReceivedAt: now, IP: netip.MustParseAddr("2001:db8::1")},
		{ClickID: "c3", AdID: "ad-1", Time: time.Date(2026, 5, 23, 5, 59, 0, 123e6, time.UTC), ReceivedAt: now, IP: netip.MustParseAddr("192.0.2.1")},
	}
	if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
		t.Errorf("decoded clicks (-want +got):\n%s", diff)
	}
}

func TestDecodeDefaultsTimestamp(t *testing.T) {
	got, _ := decodeJSON(t, `{"click_id":"c","ad_id":"a"}`)
	if len(got) != 1 || !got[0].Time.Equal(now) {
		t.Fatalf("click without ts = %+v, want time of receipt", got)
	}
}

func TestDecodeRejections(t *testing.T) {
	long := strings.Repeat("x", 129)
	tests := []struct {
		name, rec   string
		code, field string
	}{
		{"missing click_id", `{"ad_id":"a"}`, CodeMissing, "click_id"},
		{"null click_id", `{"click_id":null,"ad_id":"a"}`, CodeMissing, "click_id"},
		{"missing ad_id", `{"click_id":"c"}`, CodeMissing, "ad_id"},
		{"empty click_id", `{"click_id":"","ad_id":"a"}`, CodeInvalid, "click_id"},
		{"bad char", `{"click_id":"c/1","ad_id":"a"}`, CodeInvalid, "click_id"},
		{"non-ascii", `{"click_id":"c","ad_id":"é"}`, CodeInvalid, "ad_id"},
		{"number id", `{"click_id":5,"ad_id":"a"}`, CodeInvalid, "click_id"},
		{"long click_id", `{"click_id":"` + long + `","ad_id":"a"}`, CodeTooLong, "click_id"},
		{"long ad_id", `{"click_id":"c","ad_id":"` + long + `"}`, CodeTooLong, "ad_id"},
		{"bad ip", `{"click_id":"c","ad_id":"a","ip":"300.1.1.1"}`, CodeInvalid, "ip"},
		{"ip with zone", `{"click_id":"c","ad_id":"a","ip":"fe80::1%eth0"}`, CodeInvalid, "ip"},
		{"ip number", `{"click_id":"c","ad_id":"a","ip":1}`, CodeInvalid, "ip"},
		{"long ua", `{"click_id":"c","ad_id":"a","user_agent":"` + strings.Repeat("u", 513) + `"}`, CodeTooLong, "user_agent"},
		{"unassigned country", `{"click_id":"c","ad_id":"a","country":"XX"}`, CodeInvalid, "country"},
		{"alpha-3 country", `{"click_id":"c","ad_id":"a","country":"DEU"}`, CodeInvalid, "country"},
		{"long campaign", `{"click_id":"c","ad_id":"a","campaign_id":"` + long + `"}`, CodeTooLong, "campaign_id"},
		{"long user", `{"click_id":"c","ad_id":"a","user_id":"` + long + `"}`, CodeTooLong, "user_id"},
		{"ts garbage", `{"click_id":"c","ad_id":"a","ts":"yesterday"}`, CodeInvalid, "ts"},
		{"ts fraction", `{"click_id":"c","ad_id":"a","ts":1.5}`, CodeInvalid, "ts"},
		{"ts bool", `{"click_id":"c","ad_id":"a","ts":true}`, CodeInvalid, "ts"},
		{"ts future", `{"click_id":"c","ad_id":"a","ts":"2026-05-23T08:05:01Z"}`, CodeInFuture, "ts"},
		{"ts too old", `{"click_id":"c","ad_id":"a","ts":"2026-05-16T07:59:59Z"}`, CodeTooOld, "ts"},
		{"not an object", `"c"`, CodeNotAnObject, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each bad record sits between two good ones, which are still accepted.
			got, rej := decodeJSON(t, `[{"click_id":"ok1","ad_id":"a"},`+tt.rec+`,{"click_id":"ok2","ad_id":"a"}]`)
			if len(got) != 2 {
				t.Errorf("accepted %d records, want the 2 valid ones", len(got))
			}
			if len(rej) != 1 {
				t.Fatalf("rejections = %+v, want one", rej)
			}
			r := rej[0]
			if r.Index != 1 || r.Code != tt.code || r.Field != tt.field || r.Message == "" {
				t.Errorf("rejection = %+v, want index 1, code %q, field %q and a message", r, tt.code, tt.field)
			}
		})
	}
	// Boundaries that are accepted.
	ok := []string{
		`{"click_id":"` + long[:128] + `","ad_id":"a"}`,
		`{"click_id":"c","ad_id":"a","ts":"2026-05-23T08:05:00Z"}`,
		`{"click_id":"c","ad_id":"a","ts":"2026-05-16T08:00:00Z"}`,
		`{"click_id":"c","ad_id":"a","user_agent":"` + strings.Repeat("u", 512) + `"}`,
	}
	for _, rec := range ok {
		if _, rej := decodeJSON(t, rec); len(rej) != 0 {
			t.Errorf("%.60s... rejected: %+v", rec, rej)
		}
	}
}

func TestDecodeFraming(t *testing.T) {
	var (
		d  Decoder
		b  Batch
		fe *FramingError
	)
	err := d.DecodeJSON([]byte(`[{"click_id":"c","ad_id":"a"},{"click_id":]`), now, &b)
	if !errors.As(err, &fe) || fe.Offset != 42 {
		t.Errorf("broken JSON: got %v, want a FramingError at offset 42", err)
	}
	if err := d.DecodeJSON([]byte(`42`), now, &b); !errors.As(err, &fe) {
		t.Errorf("a number as body: got %v, want a FramingError", err)
	}
	b.Reset()
	body := "{\"click_id\":\"c1\",\"ad_id\":\"a\"}\n\n  \r\n{\"click_id\":\"c2\",\"ad_id\":\"a\"}\r\n[1]\n{\"ad_id\":\"a\"}"
	if err := d.DecodeNDJSON([]byte(body), now, &b); err != nil {
		t.Fatalf("DecodeNDJSON: %v", err)
	}
	if got := len(clicksOf(t, &b)); got != 2 {
		t.Errorf("NDJSON accepted %d, want 2", got)
	}
	want := []Rejection{{Index: 2, Code: CodeNotAnObject}, {Index: 3, Code: CodeMissing, Field: "click_id"}}
	ignoreMsg := cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Message" }, cmp.Ignore())
	if diff := cmp.Diff(want, b.Rejected, ignoreMsg); diff != "" {
		t.Errorf("NDJSON rejections (-want +got):\n%s", diff)
	}
	err = d.DecodeNDJSON([]byte("{\"click_id\":\"c1\",\"ad_id\":\"a\"}\n{\"click_id\":\"c2\",\n"), now, &b)
	if !errors.As(err, &fe) || fe.Line != 2 {
		t.Errorf("bad NDJSON line: got %v, want a FramingError on line 2", err)
	}
}

func TestWireRoundTrip(t *testing.T) {
	c := Click{ClickID: "c", AdID: "a", Time: time.UnixMilli(1_700_000_000_001), ReceivedAt: time.UnixMilli(1_700_000_000_501),
		IP: netip.MustParseAddr("2001:db8::7"), UserAgent: "ua", Country: "FR", CampaignID: "k", UserID: "u", Source: SourceRedirect}
	enc := c.AppendBinary(nil)
	got, err := Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, got, cmpOpts); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	for i := range len(enc) - 1 {
		if _, err := Decode(enc[:i]); err == nil {
			t.Errorf("Decode of %d of %d bytes succeeded", i, len(enc))
		}
	}
}

func TestValidID(t *testing.T) {
	for s, want := range map[string]bool{"a": true, "A-z_0.9:x": true, "": false, "a b": false, "a/b": false, strings.Repeat("a", 128): true, strings.Repeat("a", 129): false} {
		if got := ValidID(s); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", s, got, want)
		}
	}
}
