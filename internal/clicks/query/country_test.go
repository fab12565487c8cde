package query

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/clicks"
)

// TestCountryMatchesIngestion checks that the query API accepts exactly the
// country codes that the ingestion API stores, and names them alike.
func TestCountryMatchesIngestion(t *testing.T) {
	var chars []byte
	for c := byte('A'); c <= 'Z'; c++ {
		chars = append(chars, c, c+'a'-'A')
	}
	chars = append(chars, '@', '[', '`', '{', '0', '9', ' ', 0xC4)
	codes := []string{"", "D", "DEU", "de "}
	for _, a := range chars {
		for _, b := range chars {
			codes = append(codes, string([]byte{a, b}))
		}
	}

	var d clicks.Decoder
	accepted := 0
	for _, code := range codes {
		c, err := json.Marshal(code)
		if err != nil {
			t.Fatal(err)
		}
		var batch clicks.Batch
		if err := d.DecodeJSON([]byte(`{"click_id":"c","ad_id":"a","country":`+string(c)+`}`), time.Now(), &batch); err != nil {
			t.Fatal(err)
		}
		want, wantOK := "", batch.Len() == 1
		if wantOK {
			click, err := clicks.Decode(batch.Records(nil, 1)[0].Value)
			if err != nil {
				t.Fatal(err)
			}
			want = click.Country
			accepted++
		}
		if got, ok := normalizeCountry(code); got != want || ok != wantOK {
			t.Errorf("normalizeCountry(%q) = %q, %v; ingestion: %q, %v", code, got, ok, want, wantOK)
		}
	}
	if accepted != 2*2*249 { // every assigned code in four spellings: DE, De, dE, de
		t.Errorf("ingestion accepted %d spellings, want %d", accepted, 4*249)
	}
}
