package extract

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from the current output")

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestGolden runs Extract over each testdata/*.html and compares the whole
// Metadata with testdata/<name>.golden.json. The goldens were reviewed by
// hand; TestFields below pins the properties each file exists for.
func TestGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.file, func(t *testing.T) {
			md := extractFile(t, tc)
			got, err := json.MarshalIndent(md, "", "\t")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata", strings.TrimSuffix(tc.file, ".html")+".golden.json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", golden, diff)
			}
		})
	}
}

type goldenCase struct {
	file        string
	contentType string
	base        string
}

var goldenCases = []goldenCase{
	{"latin1_meta.html", "text/html", "https://example.com/fr"},
	{"latin1_header.html", "text/html; charset=ISO-8859-1", "https://example.com/"},
	{"sjis_meta.html", "text/html", "https://example.jp/"},
	{"sjis_header.html", "text/html; charset=Shift_JIS", "https://example.jp/"},
	{"relative.html", "text/html", "https://example.com/dir/sub/doc.html"},
	{"base_href.html", "text/html", "http://example.com/a/b"},
	{"base_javascript.html", "text/html", "https://example.com/x/"},
	{"og_images.html", "text/html", "https://example.com/"},
	{"entities.html", "text/html", "https://example.com/"},
	{"missing.html", "", "https://example.com/page"},
	{"precedence.html", "text/html; charset=utf-8", "https://example.com/"},
	{"jsonld_fallback.html", "text/html", "https://example.com/"},
}

func extractFile(t *testing.T, tc goldenCase) Metadata {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", tc.file))
	if err != nil {
		t.Fatal(err)
	}
	md, err := Extract(bytes.NewReader(b), tc.contentType, mustURL(t, tc.base), Options{IncludeImages: true})
	if err != nil {
		t.Fatalf("Extract: %v", err)
	}
	return md
}

func caseFor(t *testing.T, file string) goldenCase {
	for _, tc := range goldenCases {
		if tc.file == file {
			return tc
		}
	}
	t.Fatalf("no golden case %s", file)
	return goldenCase{}
}

// TestFields states, per file, the fields it is there to check.
func TestFields(t *testing.T) {
	tests := []struct {
		file  string
		field func(Metadata) any
		want  any
	}{
		{"latin1_meta.html", func(m Metadata) any { return m.Title }, "Café crème"},
		{"latin1_meta.html", func(m Metadata) any { return m.Description }, "Déjà vu à la française"},
		{"latin1_meta.html", func(m Metadata) any { return m.Lang }, "fr"},
		{"latin1_header.html", func(m Metadata) any { return m.Title }, "Naïve résumé"},
		{"sjis_meta.html", func(m Metadata) any { return m.Title }, "日本語のページ"},
		{"sjis_header.html", func(m Metadata) any { return m.Title }, "東京タワー"},
		{"relative.html", func(m Metadata) any { return imageURLs(m) }, []string{"https://example.com/img/a.png"}},
		{"relative.html", func(m Metadata) any { return m.CanonicalURL }, "https://example.com/dir/sub/page"},
		{"relative.html", func(m Metadata) any { return m.Favicon }, "https://example.com/dir/icon.png"},
		{"relative.html", func(m Metadata) any { return m.OEmbedURL }, "https://example.com/oembed?url=x"},
		{"base_href.html", func(m Metadata) any { return imageURLs(m) }, []string{"https://cdn.example.net/assets/hero.jpg"}},
		{"base_href.html", func(m Metadata) any { return m.CanonicalURL }, "https://cdn.example.net/canon"},
		{"base_href.html", func(m Metadata) any { return m.Favicon }, "https://cdn.example.net/assets/fav.ico"},
		{"base_javascript.html", func(m Metadata) any { return imageURLs(m) }, []string{"https://example.com/x/hero.jpg"}},
		{"base_javascript.html", func(m Metadata) any { return m.Favicon }, "https://example.com/favicon.ico"},
		{"og_images.html", func(m Metadata) any { return m.Images }, []Image{
			{URL: "https://example.com/1.jpg", Width: 800, Height: 600, Alt: "first"},
			{URL: "https://example.com/2.jpg", Alt: "second"},
			{URL: "https://example.com/3.jpg", Width: 300},
			{URL: "https://example.com/tw.jpg"},
			{URL: "https://example.com/body.png", Width: 10, Height: 20, Alt: "body"},
		}},
		{"entities.html", func(m Metadata) any { return m.Title }, `Tom & Jerry — "Cat" &'Mouse'`},
		{"entities.html", func(m Metadata) any { return m.Description }, "Café <b>bold</b> &amp;"},
		{"entities.html", func(m Metadata) any { return m.SiteName }, "A&B"},
		{"missing.html", func(m Metadata) any { return m }, Metadata{Favicon: "https://example.com/favicon.ico"}},
		{"precedence.html", func(m Metadata) any { return m.Title }, "Twitter title"},
		{"precedence.html", func(m Metadata) any { return m.Description }, "twitter description"},
		{"precedence.html", func(m Metadata) any { return m.SiteName }, "LD Pub"},
		{"precedence.html", func(m Metadata) any { return m.Author }, "Ada Lovelace"},
		{"precedence.html", func(m Metadata) any { return m.PublishedAt }, "2024-03-05T10:11:12+01:00"},
		{"precedence.html", func(m Metadata) any { return len(m.JSONLD) }, 1},
		{"precedence.html", func(m Metadata) any { return []string{m.Type, m.Locale, m.Lang} }, []string{"article", "en_GB", "en-GB"}},
		{"jsonld_fallback.html", func(m Metadata) any { return []string{m.Title, m.Description, m.Author, m.PublishedAt} },
			[]string{"From LD", "LD description", "Grace Hopper", "2021-07-01T00:00:00Z"}},
	}
	for _, tt := range tests {
		md := extractFile(t, caseFor(t, tt.file))
		if diff := cmp.Diff(tt.want, tt.field(md)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.file, diff)
		}
	}
}

func imageURLs(m Metadata) []string {
	var out []string
	for _, img := range m.Images {
		out = append(out, img.URL)
	}
	return out
}

func TestCaps(t *testing.T) {
	t.Run("images", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("<html><body>")
		for range 200_000 {
			b.WriteString(`<img src="/i.png?x">`)
		}
		md, err := Extract(strings.NewReader(b.String()), "text/html", mustURL(t, "https://example.com/"), Options{IncludeImages: true, MaxImages: 7})
		if err != nil {
			t.Fatal(err)
		}
		if len(md.Images) != 1 { // all the same URL: deduplicated
			t.Errorf("got %d images, want 1", len(md.Images))
		}
		b.Reset()
		b.WriteString("<html><body>")
		for i := range 200_000 {
			b.WriteString(`<img src="/i` + strings.Repeat("x", i%50) + `.png">`)
		}
		md, err = Extract(strings.NewReader(b.String()), "text/html", mustURL(t, "https://example.com/"), Options{IncludeImages: true, MaxImages: 7})
		if err != nil {
			t.Fatal(err)
		}
		if len(md.Images) != 7 {
			t.Errorf("got %d images, want 7", len(md.Images))
		}
		md, err = Extract(strings.NewReader(b.String()), "text/html", mustURL(t, "https://example.com/"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if md.Images != nil {
			t.Errorf("images without IncludeImages: %d", len(md.Images))
		}
	})
	t.Run("jsonld", func(t *testing.T) {
		big := `{"a":"` + strings.Repeat("x", 2000) + `"}`
		doc := `<script type="application/ld+json">` + big + `</script>` +
			`<script type="application/ld+json">{"ok":1}</script>` +
			`<script type="application/ld+json">{"bad":</script>` +
			strings.Repeat(`<script type="application/ld+json">[1]</script>`, 10)
		md, err := Extract(strings.NewReader(doc), "text/html", nil, Options{MaxJSONLD: 3, MaxJSONLDBytes: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, j := range md.JSONLD {
			got = append(got, string(j))
		}
		if diff := cmp.Diff([]string{`{"ok":1}`, `[1]`, `[1]`}, got); diff != "" {
			t.Errorf("JSONLD (-want +got):\n%s", diff)
		}
	})
	t.Run("text", func(t *testing.T) {
		doc := "<title>" + strings.Repeat("é", 1000) + "</title><meta name=description content='" + strings.Repeat("word ", 1000) + "'>"
		md, err := Extract(strings.NewReader(doc), "text/html; charset=utf-8", nil, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(md.Title) > maxTitle || !strings.HasPrefix(md.Title, "éé") || strings.ContainsRune(md.Title, '\uFFFD') {
			t.Errorf("title: %d bytes, %q...", len(md.Title), md.Title[:8])
		}
		if len(md.Description) > maxDesc || strings.HasSuffix(md.Description, " ") {
			t.Errorf("description: %d bytes", len(md.Description))
		}
	})
}

func TestNilBase(t *testing.T) {
	doc := `<base href="https://x.example/"><meta property="og:image" content="/rel.png"><link rel=icon href="https://ok.example/i.ico">`
	md, err := Extract(strings.NewReader(doc), "", nil, Options{IncludeImages: true})
	if err != nil {
		t.Fatal(err)
	}
	want := Metadata{Favicon: "https://ok.example/i.ico"}
	if diff := cmp.Diff(want, md); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestUnknownCharset(t *testing.T) {
	// An unknown label in the header falls back to sniffing; it is not an error.
	md, err := Extract(strings.NewReader("<title>x</title>"), "text/html; charset=no-such-thing", nil, Options{})
	if err != nil || md.Title != "x" {
		t.Errorf("got %q, %v", md.Title, err)
	}
}
