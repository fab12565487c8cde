package extract

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"
)

// FuzzExtract checks that Extract never panics, returns only absolute
// http(s) URLs, valid JSON-LD and valid UTF-8 text within the caps.
func FuzzExtract(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.html"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "text/html", "https://example.com/a/b")
	}
	f.Add([]byte(`<base href="javascript:x"><meta property=og:image content="//h/x"><link rel=icon href="data:,">`), "", "http://example.com/")
	f.Add([]byte(`<svg><title>x</svg></title><title>y`), "text/html; charset=gbk", "ftp://x/")
	f.Fuzz(func(t *testing.T, doc []byte, contentType, base string) {
		b, err := url.Parse(base)
		if err != nil {
			b = nil
		}
		md, err := Extract(bytes.NewReader(doc), contentType, b, Options{IncludeImages: true, MaxImages: 5, MaxJSONLD: 3, MaxJSONLDBytes: 4096})
		if err != nil {
			return
		}
		urls := []string{md.CanonicalURL, md.Favicon, md.OEmbedURL}
		for _, img := range md.Images {
			if img.URL == "" {
				t.Errorf("image without URL: %+v", img)
			}
			urls = append(urls, img.URL)
		}
		for _, s := range urls {
			if s == "" {
				continue
			}
			u, err := url.Parse(s)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Errorf("non-http(s) URL %q", s)
			}
		}
		if len(md.Images) > 5 || len(md.JSONLD) > 3 {
			t.Errorf("caps exceeded: %d images, %d JSON-LD", len(md.Images), len(md.JSONLD))
		}
		for _, j := range md.JSONLD {
			if !json.Valid(j) || len(j) > 4096 {
				t.Errorf("bad JSON-LD %q", j)
			}
		}
		for _, s := range []string{md.Title, md.Description, md.SiteName, md.Author, md.Lang, md.Type, md.Locale} {
			if !utf8.ValidString(s) {
				t.Errorf("invalid UTF-8 %q", s)
			}
		}
		if len(md.Title) > maxTitle || len(md.Description) > maxDesc {
			t.Errorf("text caps exceeded: title %d, description %d", len(md.Title), len(md.Description))
		}
	})
}
