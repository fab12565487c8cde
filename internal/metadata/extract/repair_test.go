package extract

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestJSONLDRepair(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string // JSONLD blocks kept
	}{
		{"valid", `{"a":"b // not a comment, <!-- nor this -->"}`, []string{`{"a":"b // not a comment, <!-- nor this -->"}`}},
		{"comment wrapper", "<!--\n{\"a\":1}\n-->", []string{`{"a":1}`}},
		{"leading prose comment", "<!-- John joined. -->\n{\"a\":1}", []string{`{"a":1}`}},
		{"js comments and trailing comma", "{\"a\":1, // one\n/* two */ \"b\":[2,],\n//\"c\":3\n}", []string{`{"a":1,"b":[2]}`}},
		{"raw new line in string", "{\"a\":\"x\ny\tz\"}", []string{`{"a":"x\ny\tz"}`}},
		{"escaped quote kept", `{"a":"say \"hi\" // there"}`, []string{`{"a":"say \"hi\" // there"}`}},
		{"unterminated block comment", `{"a":1 /* oops`, nil},
		{"not JSON at all", `var x = {a: 1};`, nil},
		{"null", `null`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := `<script type="application/ld+json">` + tt.in + `</script>`
			md, err := Extract(strings.NewReader(doc), "text/html; charset=utf-8", nil, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, b := range md.JSONLD {
				got = append(got, string(b))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
