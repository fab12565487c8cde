package web

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

func serve(h http.Handler, method, path string, header map[string]string) *http.Response {
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func embedded(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		files[strings.TrimPrefix(p, "static/")] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"index.html", "app.js", "app.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css", "vendor/uPlot.LICENSE"} {
		if files[want] == nil {
			t.Fatalf("%s is not embedded", want)
		}
	}
	return files
}

func TestHandler(t *testing.T) {
	h := Handler()
	for _, tt := range []struct {
		method, path string
		code         int
		contentType  string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8"},
		{"HEAD", "/", 200, "text/html; charset=utf-8"},
		{"GET", "/ui/app.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/ui/app.css", 200, "text/css; charset=utf-8"},
		{"GET", "/ui/favicon.svg", 200, "image/svg+xml"},
		{"GET", "/ui/vendor/uPlot.iife.min.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/ui/vendor/uPlot.min.css", 200, "text/css; charset=utf-8"},
		{"GET", "/ui/vendor/uPlot.LICENSE", 200, "text/plain; charset=utf-8"},
		{"GET", "/ui/index.html", 404, ""}, // one URL for the page
		{"GET", "/ui/", 404, ""},
		{"GET", "/ui/nope.js", 404, ""},
		{"GET", "/ui/../web.go", 404, ""},
		{"GET", "/index.html", 404, ""},
		{"POST", "/", 405, ""},
	} {
		resp := serve(h, tt.method, tt.path, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tt.code {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.code)
			continue
		}
		if got := resp.Header.Get("Content-Security-Policy"); got != ContentSecurityPolicy {
			t.Errorf("%s %s: Content-Security-Policy %q", tt.method, tt.path, got)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s %s: X-Content-Type-Options %q", tt.method, tt.path, got)
		}
		if tt.code != 200 {
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != tt.contentType {
			t.Errorf("%s %s: Content-Type %q, want %q", tt.method, tt.path, got, tt.contentType)
		}
		if tt.method == "HEAD" && len(body) != 0 {
			t.Errorf("HEAD %s: %d bytes of body", tt.path, len(body))
		}
		if tt.method == "GET" && len(body) == 0 {
			t.Errorf("GET %s: empty body", tt.path)
		}
	}
	if allow := serve(h, "POST", "/", nil).Header.Get("Allow"); allow != "GET, HEAD" {
		t.Errorf("405 without Allow: %q", allow)
	}
}

// TestCSPIsStrict: the policy allows this origin only and no inline code,
// whatever else it says.
func TestCSPIsStrict(t *testing.T) {
	directives := map[string]string{}
	for _, d := range strings.Split(ContentSecurityPolicy, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	for name, want := range map[string]string{"default-src": "'self'", "script-src": "'self'", "style-src": "'self'",
		"connect-src": "'self'", "object-src": "'none'", "frame-ancestors": "'none'", "base-uri": "'none'"} {
		if directives[name] != want {
			t.Errorf("%s %q, want %q", name, directives[name], want)
		}
	}
	if strings.Contains(ContentSecurityPolicy, "unsafe") || strings.Contains(ContentSecurityPolicy, "*") ||
		strings.Contains(ContentSecurityPolicy, "http") {
		t.Errorf("the policy lets in more than this origin: %s", ContentSecurityPolicy)
	}
}

// TestEveryFileServed: each embedded file is served with its ETag, and a
// browser that has it gets a 304.
func TestEveryFileServed(t *testing.T) {
	h := Handler()
	for name, content := range embedded(t) {
		path := Prefix + name
		if name == "index.html" {
			path = "/"
		}
		resp := serve(h, "GET", path, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !bytes.Equal(body, content) {
			t.Errorf("GET %s: %d, %d bytes, want 200 and the %d bytes of %s", path, resp.StatusCode, len(body), len(content), name)
			continue
		}
		etag := resp.Header.Get("ETag")
		if etag == "" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("GET %s: ETag %q, Cache-Control %q", path, etag, resp.Header.Get("Cache-Control"))
			continue
		}
		if resp := serve(h, "GET", path, map[string]string{"If-None-Match": etag}); resp.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", path, resp.StatusCode)
		}
		if resp := serve(h, "GET", path, map[string]string{"If-None-Match": `"other"`}); resp.StatusCode != 200 {
			t.Errorf("GET %s with another ETag: %d, want 200", path, resp.StatusCode)
		}
	}
	a, b := serve(h, "GET", "/ui/app.js", nil).Header.Get("ETag"), serve(h, "GET", "/ui/app.css", nil).Header.Get("ETag")
	if a == b {
		t.Errorf("two files have the ETag %s", a)
	}
}

func TestMount(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-From", "api")
		w.WriteHeader(http.StatusTeapot)
	})
	h := Mount(api)
	for _, tt := range []struct {
		method, path string
		dashboard    bool
	}{
		{"GET", "/", true},
		{"HEAD", "/", true},
		{"GET", "/ui/app.js", true},
		{"GET", "/ui/nope", true}, // the dashboard's 404
		{"POST", "/", false},
		{"DELETE", "/ui/app.js", false},
		{"GET", "/v1/ads/top", false},
		{"GET", "/healthz", false},
		{"GET", "/metrics", false},
		{"GET", "/favicon.ico", false},
		{"GET", "/uix", false},
		{"POST", "/v1/clicks", false},
	} {
		resp := serve(h, tt.method, tt.path, nil)
		if got := resp.Header.Get("X-From") != "api"; got != tt.dashboard {
			t.Errorf("%s %s: served by the dashboard %v, want %v (status %d)", tt.method, tt.path, got, tt.dashboard, resp.StatusCode)
		}
	}
}

// TestNoExternalReference: nothing in the embedded files points the browser
// at another origin. The only URLs allowed are the vendored library's banner
// comment, the SVG namespace (an identifier, never fetched) and the text of
// the README and licence.
func TestNoExternalReference(t *testing.T) {
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	banner := regexp.MustCompile(`^/\*! https://github\.com/leeoniya/uPlot \(v[0-9.]+\) \*/`)
	for name, b := range embedded(t) {
		if name == "vendor/README" || strings.HasSuffix(name, ".LICENSE") {
			continue
		}
		s := string(b)
		if strings.HasPrefix(name, "vendor/uPlot") {
			s = banner.ReplaceAllString(s, "")
		}
		if strings.HasSuffix(name, ".svg") {
			s = strings.ReplaceAll(s, `xmlns="http://www.w3.org/2000/svg"`, "")
		}
		for _, m := range url.FindAllStringIndex(s, -1) {
			t.Errorf("%s: external reference %q", name, s[max(m[0]-20, 0):min(m[1]+20, len(s))])
		}
		if strings.Contains(s, "@import") {
			t.Errorf("%s: @import", name)
		}
	}
}

// TestPageLoadsOnlyItsOwnFiles: the page's scripts and styles are files of
// the handler (no inline code, which the CSP would block anyway), and it has
// no inline event handler or style attribute.
func TestPageLoadsOnlyItsOwnFiles(t *testing.T) {
	h := Handler()
	doc, err := html.Parse(bytes.NewReader(embedded(t)["index.html"]))
	if err != nil {
		t.Fatal(err)
	}
	refs := 0
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			if n.Data == "style" {
				t.Error("an inline <style> element")
			}
			if n.Data == "script" && n.FirstChild != nil {
				t.Errorf("an inline script: %q", n.FirstChild.Data)
			}
			for _, a := range n.Attr {
				switch {
				case strings.HasPrefix(a.Key, "on"), a.Key == "style":
					t.Errorf("<%s %s=%q>: inline code", n.Data, a.Key, a.Val)
				case a.Key == "src" || (a.Key == "href" && n.Data == "link"):
					refs++
					if !strings.HasPrefix(a.Val, Prefix) {
						t.Errorf("<%s %s=%q>: not under %s", n.Data, a.Key, a.Val, Prefix)
					} else if resp := serve(h, "GET", a.Val, nil); resp.StatusCode != 200 {
						t.Errorf("<%s %s=%q>: %d", n.Data, a.Key, a.Val, resp.StatusCode)
					}
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if refs < 5 { // favicon, two stylesheets, two scripts
		t.Errorf("the page references %d files, want at least 5", refs)
	}
}

// TestVendorChecksums: the vendored files are those the README names.
func TestVendorChecksums(t *testing.T) {
	files := embedded(t)
	line := regexp.MustCompile(`^\s+(\S+)\s+=.*sha256 ([0-9a-f]{64})$`)
	checked := 0
	sc := bufio.NewScanner(bytes.NewReader(files["vendor/README"]))
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		sum := sha256.Sum256(files["vendor/"+m[1]])
		if got := hex.EncodeToString(sum[:]); got != m[2] {
			t.Errorf("vendor/%s: sha256 %s, the README says %s", m[1], got, m[2])
		}
		checked++
	}
	if checked != 2 {
		t.Errorf("checked %d checksums from vendor/README, want 2", checked)
	}
}
