package extract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// peersDir holds the 63 cases collected from six peer projects' test suites
// (see its README.md). It lives outside the repository and is not copied in.
const peersDir = "../../../../shared/testdata/metadata-peers"

// peerDeviations lists, per "case id: field", where a peer's expectation
// differs from our documented rules, and why. A listed check that starts to
// agree fails the test, so the table stays honest.
var peerDeviations = map[string]string{
	"metascraper/astier: publisher":                      "metascraper's publisher heuristics (title suffix, JSON-LD, app names); we find no declared site name",
	"metascraper/astier: date":                           "metascraper infers a date from page text or URLs; we read only declared metadata (meta, JSON-LD, <time datetime>)",
	"metascraper/bbc: publisher":                         "metascraper's publisher heuristics pick another name; we take og:site_name first",
	"metascraper/bbc: date":                              "metascraper's date is modified > published; we report the declared publish date",
	"metascraper/bfi: author":                            "metascraper infers the author from bylines and links in the body; we read only declared metadata",
	"metascraper/bfi: date":                              "metascraper's date is modified > published; we report the declared publish date",
	"metascraper/entrepreneur: date":                     "metascraper's date is modified > published; we report the declared publish date",
	"metascraper/github: author":                         "metascraper infers the author from bylines and links in the body; we read only declared metadata",
	"metascraper/learnnode: image":                       "metascraper prefers a <video poster>; we take og:image first",
	"metascraper/learnnode: author":                      "metascraper infers the author from bylines and links in the body; we read only declared metadata",
	"metascraper/medium: publisher":                      "metascraper's publisher heuristics pick another name; we take og:site_name first",
	"metascraper/medium: date":                           "metascraper's date is modified > published; we report the declared publish date",
	"metascraper/milanocittastato: author":               "metascraper infers the author from bylines and links in the body; we read only declared metadata",
	"metascraper/milanocittastato: date":                 "metascraper's date is modified > published; we report the declared publish date",
	"metascraper/npr: publisher":                         "metascraper's publisher heuristics pick another name; we take og:site_name first",
	"metascraper/npr: date":                              "metascraper's date is modified > published; we report the declared publish date",
	"metascraper/nytimes-article: publisher":             "metascraper's publisher heuristics (title suffix, JSON-LD, app names); we find no declared site name",
	"metascraper/nytimes-article: date":                  "metascraper's date is modified > published; we report the declared publish date",
	"metascraper/nytimes-opinion: publisher":             "metascraper's publisher heuristics (title suffix, JSON-LD, app names); we find no declared site name",
	"metascraper/nytimes-opinion: date":                  "metascraper's date is modified > published; we report the declared publish date",
	"metascraper/pikabu: date":                           "metascraper's date is modified > published; we report the declared publish date",
	"metascraper/reactpodcast: description":              "metascraper keeps a raw line break inside the description; we collapse white space",
	"metascraper/smitten-kitchen: publisher":             "metascraper's publisher heuristics (title suffix, JSON-LD, app names); we find no declared site name",
	"metascraper/smitten-kitchen: date":                  "metascraper infers a date from page text or URLs; we read only declared metadata (meta, JSON-LD, <time datetime>)",
	"metascraper/softwarefordays: description":           "metascraper falls back to body text (readability); we read only declared metadata",
	"metascraper/softwarefordays: image":                 "og:image points at an .mp4; metascraper substitutes the video poster, we report og:image as declared",
	"metascraper/teslahunt: author":                      "metascraper infers the author from bylines and links in the body; we read only declared metadata",
	"metascraper/the-verge: image":                       "metascraper picks a player thumbnail; we take og:image first",
	"metascraper/transistor: author":                     "metascraper infers the author from bylines and links in the body; we read only declared metadata",
	"metascraper/transistor: publisher":                  "metascraper's publisher heuristics (title suffix, JSON-LD, app names); we find no declared site name",
	"metascraper/transistor: date":                       "metascraper infers a date from page text or URLs; we read only declared metadata (meta, JSON-LD, <time datetime>)",
	"metascraper/twitter-image: author":                  "metascraper infers the author from bylines and links in the body; we read only declared metadata",
	"metascraper/twitter-image: publisher":               "metascraper's publisher heuristics pick another name; we take og:site_name first",
	"metascraper/vimeo: date":                            "metascraper's date is modified > published; we report the declared publish date",
	"metascraper/wikipedia: description":                 "metascraper falls back to body text (readability); we read only declared metadata",
	"metascraper/wikipedia: publisher":                   "metascraper's publisher heuristics (title suffix, JSON-LD, app names); we find no declared site name",
	"metascraper/wikipedia: date":                        "metascraper infers a date from page text or URLs; we read only declared metadata (meta, JSON-LD, <time datetime>)",
	"metascraper/wsj: publisher":                         "metascraper's publisher heuristics pick another name; we take og:site_name first",
	"metascraper/yandex: description":                    "metascraper falls back to body text (readability); we read only declared metadata",
	"metascraper/yandex: image":                          "no og/twitter image: metascraper picks a large image by heuristics, we fall back to the first <img>",
	"metascraper/the-guardian: date":                     "metascraper's date is modified > published; we report the declared publish date",
	"unfurlist/korean: title":                            "og:title wins by our precedence; unfurlist checks the <title> element",
	"unfurl/double-escaped-entities: result.description": "policy: we decode entities once (like browsers and metascraper); unfurl.js decodes twice",
	"unfurl/oembed-xml-discovery: oembed_url":            "only JSON oEmbed (application/json+oembed) is discovered; the page offers XML only",
	"metainspector/charset_002: charset":                 "the detected charset label is not a service field (decoding is checked by the charset cases)",
}

type peerCase struct {
	ID         string    `json:"id"`
	RequestURL *string   `json:"request_url"`
	Variants   []string  `json:"request_url_variants"`
	Serve      peerServe `json:"serve"`
	Expected   string    `json:"expected_file"`
}

type peerServe struct {
	ContentType string `json:"content_type"`
	BodyFile    string `json:"body_file"`
	Resources   []struct {
		Path        string `json:"path"`
		ContentType string `json:"content_type"`
		File        string `json:"file"`
	} `json:"resources"`
}

// check is one field comparison: want as the peer states it (mapped onto
// our field), got as we produce it.
type check struct {
	field     string
	want, got any
}

func TestPeers(t *testing.T) {
	if _, err := os.Stat(filepath.Join(peersDir, "index.json")); err != nil {
		t.Skipf("peer fixtures not found at %s (they live beside the repository, not in it): %v", peersDir, err)
	}
	var index []struct {
		ID string `json:"id"`
	}
	readJSON(t, filepath.Join(peersDir, "index.json"), &index)

	var cases, casesOK, checks, checksOK int
	deviated := map[string]bool{}
	used := map[string]bool{}
	for _, row := range index {
		cases++
		dir := filepath.Join(peersDir, filepath.FromSlash(row.ID))
		var pc peerCase
		readJSON(t, filepath.Join(dir, "case.json"), &pc)
		var all []check
		for _, base := range requestURLs(pc) {
			md := extractPeer(t, dir, pc, base)
			all = append(all, peerChecks(t, dir, pc, base, md)...)
		}
		if len(all) == 0 {
			t.Errorf("%s: no checks derived from the expectations", row.ID)
		}
		ok := true
		for _, c := range all {
			checks++
			key := row.ID + ": " + c.field
			agree := reflect.DeepEqual(c.want, c.got)
			reason, listed := peerDeviations[key]
			switch {
			case agree && listed:
				t.Errorf("%s: agrees now; remove the deviation %q", key, reason)
			case agree:
				checksOK++
			case listed:
				used[key] = true
				deviated[row.ID] = true
				ok = false
			default:
				t.Errorf("%s:\n want %#v\n  got %#v", key, c.want, c.got)
				ok = false
			}
		}
		if ok {
			casesOK++
		}
	}
	for key := range peerDeviations {
		if !used[key] {
			t.Errorf("deviation %q matched no failing check", key)
		}
	}
	t.Logf("peer cases: %d/%d fully agree, %d with recorded deviations (%d entries); field checks: %d/%d agree",
		casesOK, cases, len(deviated), len(peerDeviations), checksOK, checks)
}

func readJSON(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func requestURLs(pc peerCase) []string {
	if len(pc.Variants) > 0 {
		return pc.Variants
	}
	if pc.RequestURL != nil {
		return []string{*pc.RequestURL}
	}
	return []string{"https://peer.example/page"}
}

func extractPeer(t *testing.T, dir string, pc peerCase, base string) Metadata {
	t.Helper()
	file, ct := pc.Serve.BodyFile, pc.Serve.ContentType
	u := mustURL(t, base)
	for _, r := range pc.Serve.Resources {
		if r.Path == u.Path {
			file, ct = r.File, r.ContentType
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	md, err := Extract(bytes.NewReader(b), ct, u, Options{IncludeImages: true, MaxImages: 50, MaxJSONLD: 50})
	if err != nil {
		t.Fatalf("%s: %v", pc.ID, err)
	}
	return md
}

func peerChecks(t *testing.T, dir string, pc peerCase, base string, md Metadata) []check {
	source, _, _ := strings.Cut(pc.ID, "/")
	var exp any
	readJSON(t, filepath.Join(dir, pc.Expected), &exp)
	switch source {
	case "metascraper":
		return metascraperChecks(exp.(map[string]any), base, md)
	case "unfurl":
		return unfurlChecks(t, pc, exp.(map[string]any), base, md)
	case "unfurlist":
		e := exp.(map[string]any)
		return []check{{"title", clean(str(e["title"]), maxTitle), md.Title}}
	case "metainspector":
		return metainspectorChecks(t, dir, pc, exp.(map[string]any), base, md)
	case "html-metadata":
		return htmlMetadataChecks(exp.(map[string]any), md)
	case "extruct":
		if strings.HasSuffix(pc.Expected, ".jsonld.json") {
			return []check{{"json_ld", exp, flattenLD(t, md.JSONLD)}}
		}
		return extructOGChecks(exp.([]any), md)
	}
	t.Fatalf("%s: unknown source", pc.ID)
	return nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func firstImage(md Metadata) string {
	if len(md.Images) == 0 {
		return ""
	}
	return md.Images[0].URL
}

// instant maps two timestamps to a comparable form: the UTC instant
// when both parse, else the raw strings.
func instant(s string) string {
	for _, l := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.000Z"} {
		if tm, err := time.Parse(l, s); err == nil {
			return tm.UTC().Format(time.RFC3339)
		}
	}
	return s
}

// looseURL drops what normalize-url (metascraper) changes: a trailing slash
// and the fragment.
func looseURL(s string) string {
	s, _, _ = strings.Cut(s, "#")
	return strings.TrimSuffix(s, "/")
}

func metascraperChecks(e map[string]any, base string, md Metadata) []check {
	canonical := md.CanonicalURL
	if canonical == "" {
		canonical = base // metascraper falls back to the request URL; so will the worker (final_url)
	}
	lang, _, _ := strings.Cut(strings.ToLower(md.Lang), "-")
	return []check{
		{"title", typographic(str(e["title"])), typographic(md.Title)},
		{"description", typographic(str(e["description"])), typographic(md.Description)},
		{"url", looseURL(str(e["url"])), looseURL(canonical)},
		{"image", looseURL(str(e["image"])), looseURL(firstImage(md))},
		{"lang", str(e["lang"]), lang},
		{"author", typographic(str(e["author"])), typographic(md.Author)},
		{"publisher", typographic(str(e["publisher"])), typographic(md.SiteName)},
		{"date", instant(str(e["date"])), instant(md.PublishedAt)},
	}
}

func unfurlChecks(t *testing.T, pc peerCase, e map[string]any, base string, md Metadata) []check {
	var cs []check
	if strings.Contains(pc.ID, "oembed") {
		u := mustURL(t, base)
		return []check{{"oembed_url", u.ResolveReference(&url.URL{Path: "/json/oembed.json"}).String(), md.OEmbedURL}}
	}
	for k, ours := range map[string]string{"title": md.Title, "description": md.Description, "favicon": md.Favicon,
		"canonical_url": md.CanonicalURL, "author": md.Author, "result.description": md.Description, "type": md.Type} {
		if v, ok := e[k]; ok {
			cs = append(cs, check{k, str(v), ours})
		}
	}
	if imgs, ok := e["images"].([]any); ok {
		var want, got []Image
		for _, x := range imgs {
			m := x.(map[string]any)
			w, _ := m["width"].(float64)
			h, _ := m["height"].(float64)
			want = append(want, Image{URL: str(m["url"]), Width: int(w), Height: int(h), Alt: str(m["alt"])})
		}
		got = md.Images
		cs = append(cs, check{"images", want, got})
	}
	if arts, ok := e["articles"].([]any); ok && len(arts) > 0 {
		a := arts[0].(map[string]any)
		cs = append(cs, check{"articles[0].published_time", instant(str(a["published_time"])), instant(md.PublishedAt)},
			check{"articles[0].author", str(a["author"]), md.Author})
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].field < cs[j].field })
	return cs
}

func metainspectorChecks(t *testing.T, dir string, pc peerCase, e map[string]any, base string, md Metadata) []check {
	if byScheme, ok := e[mustURL(t, base).Scheme].(map[string]any); ok {
		e = byScheme
	}
	var cs []check
	for k, v := range e {
		switch k {
		case "best_title", "title":
			cs = append(cs, check{k, v, md.Title})
		case "images.owner_suggested":
			cs = append(cs, check{k, v, firstImage(md)})
		case "images.favicon":
			cs = append(cs, check{k, v, md.Favicon})
		case "charset":
			cs = append(cs, check{k, v, "(not a service field)"})
		case "links.internal", "links.all":
			// Not a service field, but the same resolver makes og:image,
			// favicon and canonical absolute: feed it the page's <a href>s.
			cs = append(cs, check{k, v, resolveAnchors(t, filepath.Join(dir, pc.Serve.BodyFile), base)})
		default:
			t.Errorf("%s: unmapped expectation %q", pc.ID, k)
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].field < cs[j].field })
	return cs
}

// resolveAnchors returns the page's <a href> values resolved exactly as
// Extract resolves URLs (base URL, then <base href>).
func resolveAnchors(t *testing.T, file, base string) any {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	u := mustURL(t, base)
	p := parser{doc: u, base: u}
	var out []any
	z := html.NewTokenizer(bytes.NewReader(b))
	for tt := z.Next(); tt != html.ErrorToken; tt = z.Next() {
		if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
			continue
		}
		name, more := z.TagName()
		attrs := readAttrs(z, more)
		switch string(name) {
		case "base":
			p.setBase(attrs["href"])
		case "a":
			if s := p.resolve(attrs["href"]); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

func htmlMetadataChecks(e map[string]any, md Metadata) []check {
	g, _ := e["general"].(map[string]any)
	og, _ := e["openGraph"].(map[string]any)
	tw, _ := e["twitter"].(map[string]any)
	var ogImage string
	if imgs, ok := og["image"].([]any); ok && len(imgs) > 0 {
		ogImage = str(imgs[0].(map[string]any)["url"])
	} else if img, ok := og["image"].(map[string]any); ok {
		ogImage = str(img["url"])
	}
	var ld any = []any{}
	if j, ok := e["jsonLd"]; ok && j != nil {
		ld = flattenValue(j)
	}
	ourLD := flattenLDNoT(md.JSONLD)
	return []check{
		// Our precedence applied to the peer's per-vocabulary output.
		{"title", first(str(og["title"]), str(tw["title"]), str(g["title"])), md.Title},
		{"description", first(str(og["description"]), str(tw["description"]), str(g["description"])), md.Description},
		{"canonical", first(str(og["url"]), str(tw["url"]), str(g["canonical"])), md.CanonicalURL},
		{"site_name", str(og["site_name"]), md.SiteName},
		{"image", ogImage, firstImage(md)},
		{"lang", str(g["lang"]), md.Lang},
		{"author", str(g["author"]), md.Author},
		{"jsonLd", ld, ourLD},
	}
}

func extructOGChecks(e []any, md Metadata) []check {
	props := map[string]string{}
	for _, block := range e {
		for _, pv := range block.(map[string]any)["properties"].([]any) {
			kv := pv.([]any)
			if _, dup := props[str(kv[0])]; !dup {
				props[str(kv[0])] = str(kv[1])
			}
		}
	}
	return []check{
		{"og:title", props["og:title"], md.Title},
		{"og:type", props["og:type"], md.Type},
		{"og:url", props["og:url"], md.CanonicalURL},
		{"og:image", props["og:image"], firstImage(md)},
		{"og:description", props["og:description"], md.Description},
		{"og:site_name", props["og:site_name"], md.SiteName},
	}
}

// flattenLD decodes our JSON-LD blocks into the peers' shape: top-level
// arrays flattened, nulls dropped.
func flattenLD(t *testing.T, blocks []json.RawMessage) any {
	v := flattenLDNoT(blocks)
	if err, ok := v.(error); ok {
		t.Fatal(err)
	}
	return v
}

func flattenLDNoT(blocks []json.RawMessage) any {
	out := []any{}
	for _, b := range blocks {
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("our JSON-LD does not decode: %v", err)
		}
		out = append(out, flattenValue(v).([]any)...)
	}
	return out
}

func flattenValue(v any) any {
	switch v := v.(type) {
	case []any:
		var out []any
		for _, e := range v {
			if e != nil {
				out = append(out, e)
			}
		}
		if out == nil {
			out = []any{}
		}
		return out
	case nil:
		return []any{}
	default:
		return []any{v}
	}
}

// typographic undoes metascraper's rewriting of straight quotes and "..."
// into typographic ones, so that both sides compare on the words.
var typographic = strings.NewReplacer("’", "'", "‘", "'", "“", `"`, "”", `"`, "…", "...").Replace
