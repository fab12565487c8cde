// Package web serves pedal's dashboard: one page at "/" and its assets under
// "/ui/", embedded in the binary. The page is plain HTML, CSS and JavaScript
// with a vendored chart library (uPlot, static/vendor/); it loads nothing from
// any other origin and reads only pedal's public HTTP API: /readyz and
// /metrics, which are public, and the query and metadata APIs with the bearer
// token the user gives it (kept in the browser's localStorage).
//
// Invariants:
//   - Every answer carries a strict Content-Security-Policy (default-src
//     'self', no inline script or style), so the page cannot load or run
//     anything that is not one of these files, nor send data elsewhere.
//   - Assets are revalidated by ETag (a hash of their content): a new binary
//     is picked up by the next poll of a browser, unchanged files answer 304.
//   - The dashboard answers only GET and HEAD of "/" and of the files under
//     "/ui/"; Mount sends every other request to the API.
//
// The Handler and Mount's handler are safe for concurrent use.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Prefix is the path under which the dashboard's assets are served.
const Prefix = "/ui/"

// ContentSecurityPolicy is sent with every answer of the dashboard: only this
// origin's scripts, styles, images and API; no plugins, frames, inline code or
// form posts elsewhere.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// contentTypes maps the extensions of the embedded files to their types;
// a file with another extension is served as text/plain.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".json": "application/json",
}

type asset struct {
	body        []byte
	etag        string
	contentType string
}

type handler struct {
	assets map[string]asset // by path under static/, e.g. "app.js", "vendor/uPlot.min.css"
}

// Handler serves the dashboard page at "/" and the embedded files under
// Prefix; any other path is a 404.
func Handler() http.Handler {
	h := &handler{assets: map[string]asset{}}
	sub, _ := fs.Sub(static, "static") // "static" is a valid path: fs.Sub cannot fail
	// Reading the embedded tree cannot fail either; a file that could not be
	// read would simply be missing (and TestEveryFileServed would say so).
	fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return nil
		}
		sum := sha256.Sum256(b)
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			ct = "text/plain; charset=utf-8"
		}
		h.assets[p] = asset{body: b, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`, contentType: ct}
		return nil
	})
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := ""
	switch {
	case r.URL.Path == "/":
		name = "index.html"
	case strings.HasPrefix(r.URL.Path, Prefix):
		name = strings.TrimPrefix(r.URL.Path, Prefix)
	}
	a, ok := h.assets[name]
	if !ok || name == "index.html" && r.URL.Path != "/" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	hd.Set("Content-Type", a.contentType)
	hd.Set("ETag", a.etag)
	// Always revalidate: the ETag makes that a 304 while the binary is the same.
	hd.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body)) // no Last-Modified: the ETag decides
}

// Mount returns a handler that serves the dashboard (GET and HEAD of "/" and
// of paths under Prefix) and sends every other request to api.
func Mount(api http.Handler) http.Handler {
	dash := Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && (r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, Prefix)) {
			dash.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}
