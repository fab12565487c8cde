package metadata

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/metadata/collect"

	"github.com/pedal-project/pedal/internal/safehttp/safehttptest"
)

type ssrfCase = safehttptest.Case

// ssrfNotHere says, for each case that describes a limit of the HTTP client
// rather than a URL to submit, which test covers it.
var ssrfNotHere = map[string]string{
	"171": "covered by safehttp's TestContentLengthNotTrusted",
	"172": "covered by safehttp's TestBodyLimit/gzip_bomb",
	"173": "covered by safehttp's TestOnlyGzipIsAdvertised",
	"174": "covered by safehttp's TestStackedEncodingIsNotDecoded",
	"175": "covered by safehttp's TestTimeouts (slowloris body)",
	"176": "covered by safehttp's TestTimeouts/response_headers",
	"177": "covered by safehttp's TestTimeouts/TLS_handshake",
	"178": "covered by safehttp's TestTimeouts/dial",
	"179": "covered by safehttp's TestResponseHeaderLimit",
	"181": "a limit of package extract, not of the SSRF policy",
	"182": "bounded by the body cap, then by encoding/json's depth limit",
	"184": "covered by safehttp's TestBodyLimit and collect's oEmbed cap",
	"185": "covered by safehttp's TestResponseHeaderLimit/flood_of_103_Early_Hints",
}

// TestSSRFCorpus submits every case of the shared corpus to the metadata
// service's API and lets its worker carry it out, through a resolver giving
// the case's answers and a dialer connecting the corpus's public addresses to
// in-process servers. BLOCK and REJECT must be refused at the door (400 naming
// target_url) or end FAILED with blocked_destination (invalid_url too, for
// REJECT), with no address dialled but the public first hop of a redirect.
// ALLOW must end SUCCEEDED with the test page's metadata.
func TestSSRFCorpus(t *testing.T) {
	cases := safehttptest.LoadCorpus(t)
	env := newSSRFEnv(t)
	// The cases run one after the other on one service, so that each case's
	// dials and requests are its own.
	for _, c := range cases {
		t.Run(c.ID, func(t *testing.T) {
			env.reset(t, c)
			switch {
			case ssrfNotHere[c.ID] != "":
				t.Skipf("%s: %s", c.Input, ssrfNotHere[c.ID])
			case c.ID == "095":
				env.keepAlive(c)
			case c.ID == "159":
				env.loop(c)
			case c.ID == "161" || c.ID == "163":
				env.notFollowed(c)
			case c.ID == "170":
				env.bigBody(c)
			case c.ID == "180":
				env.notHTML(c)
			case c.ID == "183":
				env.depthClamped(c)
			case c.Category == "dns-rebinding":
				env.rebinding(c)
			case c.Category == "secondary-fetch":
				env.secondary(c)
			case strings.HasPrefix(c.Expected, "ALLOW"):
				env.allow(c)
			case strings.HasPrefix(c.Expected, "BLOCK"), strings.HasPrefix(c.Expected, "REJECT"):
				env.refuse(c)
			default:
				t.Errorf("case %s (%q, expected %q): no test covers it", c.ID, c.Input, c.Expected)
			}
			env.checkDials()
		})
	}
}

const ssrfTitle = "Corpus page"

var ssrfPage = "<html><head><title>" + ssrfTitle + "</title></head><body>ok</body></html>"

func servePage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	io.WriteString(w, ssrfPage)
}

// ssrfEnv is the service under test and its fake internet. Its resolver and
// dialer are set per case by reset.
type ssrfEnv struct {
	s *service

	t       *testing.T // the current case's
	c       ssrfCase
	handler atomic.Pointer[http.HandlerFunc]
	hits    atomic.Int64

	mu     sync.Mutex
	res    *safehttptest.Resolver
	routes map[netip.AddrPort]string // public address → loopback listener
	dials  []string
}

// newSSRFEnv wires the service as newService does, but with a resolver that
// can give several addresses and successive answers, and with a TLS server
// for https.
func newSSRFEnv(t *testing.T) *ssrfEnv {
	env := &ssrfEnv{t: t, routes: map[netip.AddrPort]string{}, res: safehttptest.NewResolver()}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		env.hits.Add(1)
		(*env.handler.Load())(w, r)
	})
	env.setHandler(servePage)
	plain, tls := httptest.NewServer(h), httptest.NewTLSServer(h) // certificate for example.com
	t.Cleanup(plain.Close)
	t.Cleanup(tls.Close)
	for _, ip := range safehttptest.CorpusPublic {
		env.routes[netip.MustParseAddrPort(ip+":80")] = plain.Listener.Addr().String()
		env.routes[netip.MustParseAddrPort(ip+":443")] = tls.Listener.Addr().String()
	}
	pool := x509.NewCertPool()
	pool.AddCert(tls.Certificate())

	ccfg := collect.Config{CacheTTL: -1, Retries: -1, BreakerMinCalls: 1 << 20, Timeout: 10 * time.Second}
	ccfg.Fetch.Resolver = env.res
	ccfg.Fetch.DialContext = env.dial
	ccfg.Fetch.RootCAs = pool

	s := startService(t, WorkerConfig{Workers: 2}, ccfg)
	env.s = s
	return env
}

func (env *ssrfEnv) setHandler(h http.HandlerFunc) { env.handler.Store(&h) }

// reset makes the world c's: its DNS answers (plus localhost), the first
// request answered by its server answer and the others by the test page, and
// no dial or request recorded.
func (env *ssrfEnv) reset(t *testing.T, c ssrfCase) {
	t.Helper()
	env.res.Reset()
	env.res.Set("localhost", []string{"127.0.0.1", "::1"})
	c.SetDNS(t, env.res)
	env.mu.Lock()
	env.t, env.c, env.dials = t, c, nil
	env.mu.Unlock()
	env.hits.Store(0)
	var n atomic.Int64
	env.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 && c.Server != nil {
			w.Header().Set("Location", c.Server.Location)
			w.WriteHeader(c.Server.Status)
			return
		}
		servePage(w, r)
	})
	env.s.t = t // s.do and s.wait report to the case
}

// dial records addr, which the policy approved, and connects the corpus's
// public addresses to the test servers. It refuses anything else, so nothing
// beyond loopback is ever dialled, even when the code under test is wrong.
func (env *ssrfEnv) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	env.mu.Lock()
	env.dials = append(env.dials, addr)
	ap, err := netip.ParseAddrPort(addr)
	to := env.routes[ap]
	env.mu.Unlock()
	if err != nil || to == "" {
		return nil, fmt.Errorf("ssrf corpus test: %s is not routed; refusing to dial it", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", to)
}

func (env *ssrfEnv) dialled() []string {
	env.mu.Lock()
	defer env.mu.Unlock()
	return slices.Clone(env.dials)
}

// checkDials fails the case if anything but a public address of the corpus
// was dialled.
func (env *ssrfEnv) checkDials() {
	env.t.Helper()
	for _, d := range env.dialled() {
		ap, err := netip.ParseAddrPort(d)
		if err != nil || !slices.Contains(safehttptest.CorpusPublic, ap.Addr().String()) {
			env.t.Errorf("dialled %s, not a public address of the corpus (dials %v)", d, env.dialled())
		}
	}
}

// submit posts raw; it returns the 400 answer if the API refused it, else the
// finished task.
func (env *ssrfEnv) submit(raw, opts string) (bad *response, task map[string]any) {
	env.t.Helper()
	u, err := json.Marshal(raw)
	if err != nil {
		env.t.Fatal(err)
	}
	body := `{"target_url": ` + string(u) + `, "requested_by": "ssrf-corpus"`
	if opts != "" {
		body += `, "extraction_options": ` + opts
	}
	r := env.s.do("POST", "/v1/metadata/collect", body+"}", nil)
	switch r.status {
	case http.StatusAccepted:
		id, _ := r.body["task_id"].(string)
		return nil, env.s.wait(id)
	case http.StatusBadRequest:
		return &r, nil
	}
	env.t.Fatalf("POST %q: %d %v; want 202 or 400", raw, r.status, r.body)
	return nil, nil
}

// succeeded submits raw and fails the case unless the task succeeds with the
// test page's title; it returns the task's result.
func (env *ssrfEnv) succeeded(raw, opts, title string) map[string]any {
	env.t.Helper()
	bad, task := env.submit(raw, opts)
	if bad != nil {
		env.t.Fatalf("POST %q: refused at the door: %v; want a task that succeeds (%s)", raw, bad.body, env.c.Expected)
	}
	res, _ := task["result"].(map[string]any)
	if task["status"] != "SUCCEEDED" || res["title"] != title {
		env.t.Fatalf("%q: task %v; want SUCCEEDED with title %q (%s)", raw, task, title, env.c.Expected)
	}
	return res
}

// failed checks that task ended FAILED with one of codes, and no result.
func (env *ssrfEnv) failed(raw string, task map[string]any, codes ...string) {
	env.t.Helper()
	e, _ := task["error"].(map[string]any)
	code, _ := e["code"].(string)
	if task["status"] != "FAILED" || !slices.Contains(codes, code) || task["result"] != nil {
		env.t.Errorf("%q: task %v; want FAILED with %s (%s)", raw, task, strings.Join(codes, " or "), env.c.Expected)
		return
	}
	env.t.Logf("%s: FAILED %s: %v", env.c.Expected, code, e["message"])
}

// ssrfURL returns the URL of a case: its input, or the first word of an input
// that goes on to describe what happens next.
func ssrfURL(c ssrfCase) string {
	if c.Category == "redirect" || c.Category == "dns-rebinding" {
		return strings.Fields(c.Input)[0]
	}
	return c.Input
}

// allow covers the ALLOW cases: the task succeeds, through a public address.
func (env *ssrfEnv) allow(c ssrfCase) {
	raw := ssrfURL(c)
	bad, task := env.submit(raw, "")
	if bad != nil {
		env.t.Fatalf("POST %q: refused at the door: %v; want a task that succeeds (%s)", raw, bad.body, c.Expected)
	}
	if res, _ := task["result"].(map[string]any); task["status"] != "SUCCEEDED" || res["title"] != ssrfTitle {
		env.t.Fatalf("%q: task %v; want SUCCEEDED with title %q (%s)", raw, task, ssrfTitle, c.Expected)
	}
	// The page came from a test server. (The dial may be an earlier case's:
	// the collector pools connections per host and port.)
	want := int64(1)
	if c.Server != nil {
		want = 2 // the redirect, then the page
		if final, _ := task["final_url"].(string); !strings.HasSuffix(final, c.Server.Location) {
			env.t.Errorf("final_url %q; want the redirect's target %q", final, c.Server.Location)
		}
	}
	if got := env.hits.Load(); got != want {
		env.t.Errorf("test servers got %d requests, want %d", got, want)
	}
}

// refuse covers the BLOCK and REJECT cases: refused at the door, or a task
// that fails with blocked_destination (or invalid_url, for REJECT) without
// dialling anything but the public first hop of a redirect.
func (env *ssrfEnv) refuse(c ssrfCase) {
	raw := ssrfURL(c)
	codes := []string{collect.CodeBlockedDestination}
	if strings.Contains(c.Expected, "REJECT") {
		codes = append(codes, collect.CodeInvalidURL)
	}
	bad, task := env.submit(raw, "")
	if bad != nil {
		if bad.body["parameter"] != "target_url" || bad.header.Get("Content-Type") != "application/problem+json" {
			env.t.Errorf("POST %q: 400 %v; want a problem naming target_url", raw, bad.body)
		}
		if d := env.dialled(); len(d) != 0 || env.hits.Load() != 0 {
			env.t.Errorf("refused at the door, yet dialled %v and served %d requests", d, env.hits.Load())
		}
		env.t.Logf("%s: 400 at the door (%v)", c.Expected, bad.body["reason"])
		return
	}
	env.failed(raw, task, codes...)
	want := int64(0) // the refused request never reached a server
	if c.Server != nil {
		want = 1 // the redirector did; the refused hop did not
	}
	if got := env.hits.Load(); got != want {
		env.t.Errorf("test servers got %d requests, want %d", got, want)
	}
	if d := env.dialled(); int64(len(d)) > want {
		env.t.Errorf("dialled %v; want at most %d dial (the public first hop)", d, want)
	}
}

// rebinding covers cases 093 and 094: the first fetch resolves to the public
// answer; a later fetch on a new connection resolves again, gets the internal
// answer and is blocked. The page closes its connection so that the next
// fetch cannot reuse it (095 covers reuse).
func (env *ssrfEnv) rebinding(c ssrfCase) {
	raw := ssrfURL(c)
	host := strings.TrimSuffix(strings.TrimPrefix(raw, "http://"), "/")
	var oembed atomic.Int64
	env.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		if r.URL.Path == "/oembed" {
			oembed.Add(1)
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"type": "rich", "version": "1.0"}`)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<html><head><title>`+ssrfTitle+`</title>`+
			`<link rel="alternate" type="application/json+oembed" href="/oembed"></head></html>`)
	})
	switch c.ID {
	case "094": // the page's oEmbed fetch, to the same host, is the second fetch
		res := env.succeeded(raw, "", ssrfTitle)
		if res["oembed"] != nil || oembed.Load() != 0 {
			env.t.Errorf("the oEmbed fetch after rebinding got an answer: %v (%d requests)", res["oembed"], oembed.Load())
		}
		if n := env.res.Count(host); n != 2 {
			env.t.Errorf("%s resolved %d times, want 2 (page, then oEmbed)", host, n)
		}
	default: // a second task for the same URL is the second fetch
		env.succeeded(raw, "", ssrfTitle)
		_, task := env.submit(raw, "")
		if task == nil {
			env.t.Fatalf("the second POST of %q was refused at the door, though the first was accepted", raw)
		}
		env.failed(raw, task, collect.CodeBlockedDestination)
	}
	if d := env.dialled(); len(d) != 1 {
		env.t.Errorf("dialled %v; want the public address once", d)
	}
}

// keepAlive covers case 095: a pooled connection, checked when dialled, is
// reused by the next task without resolving again, even though the name now
// points at 127.0.0.1.
func (env *ssrfEnv) keepAlive(c ssrfCase) {
	env.mu.Lock()
	env.res.Set("keepalive.test", []string{"93.184.215.14"}, []string{"127.0.0.1"})
	env.mu.Unlock()
	env.setHandler(servePage)
	for range 2 {
		env.succeeded("http://keepalive.test/", "", ssrfTitle)
	}
	if n := env.res.Count("keepalive.test"); n != 1 {
		env.t.Errorf("%d lookups, want 1 (%s)", n, c.Expected)
	}
}

// loop covers case 159: /a redirects to /b and /b to /a.
func (env *ssrfEnv) loop(c ssrfCase) {
	env.setHandler(func(w http.ResponseWriter, r *http.Request) {
		next := map[string]string{"/a": "/b", "/b": "/a"}[r.URL.Path]
		http.Redirect(w, r, next, http.StatusFound)
	})
	raw := ssrfURL(c)
	_, task := env.submit(raw, "")
	if task == nil {
		env.t.Fatalf("POST %q refused at the door", raw)
	}
	env.failed(raw, task, collect.CodeTooManyRedirects)
	if got := env.hits.Load(); got != 6 { // the request and 5 redirects
		env.t.Errorf("test servers got %d requests, want 6", got)
	}
}

// notFollowed covers cases 161 and 163: a Refresh header and a script that
// navigate to 127.0.0.1 are neither followed nor run.
func (env *ssrfEnv) notFollowed(c ssrfCase) {
	env.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		body := "<title>" + ssrfTitle + "</title>"
		if c.ID == "161" { // "Refresh: 0; url=http://127.0.0.1/ (HTTP header)"
			v := strings.TrimSpace(strings.TrimPrefix(c.Input, "Refresh:"))
			v, _, _ = strings.Cut(v, " (")
			w.Header().Set("Refresh", v)
		} else {
			body += c.Input
		}
		io.WriteString(w, body)
	})
	env.mu.Lock()
	env.res.Set("page.test", []string{"93.184.215.14"})
	env.mu.Unlock()
	env.succeeded("http://page.test/", "", ssrfTitle)
	if got := env.hits.Load(); got != 1 {
		env.t.Errorf("test servers got %d requests, want 1", got)
	}
}

// secondary covers cases 164–169: URLs in a page that point inside are not
// fetched (or refused when fetched), and the rest of the metadata is kept.
func (env *ssrfEnv) secondary(c ssrfCase) {
	env.mu.Lock()
	env.res.Set("page.test", []string{"93.184.215.14"})
	env.mu.Unlock()
	env.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html><head><title>"+ssrfTitle+"</title>"+c.Input+"</head><body></body></html>")
	})
	res := env.succeeded("http://page.test/", `{"include_images": true}`, ssrfTitle)
	if res["oembed"] != nil {
		env.t.Errorf("oembed %v: fetched from an internal address", res["oembed"])
	}
	if got := env.hits.Load(); got != 1 {
		env.t.Errorf("test servers got %d requests, want 1 (the page)", got)
	}
	env.t.Logf("result: %v", res)
}

// bigBody covers case 170: a chunked body far larger than max_depth_bytes is
// read up to it, and the result marked truncated.
func (env *ssrfEnv) bigBody(c ssrfCase) {
	env.mu.Lock()
	env.res.Set("page.test", []string{"93.184.215.14"})
	env.mu.Unlock()
	env.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html><head><title>"+ssrfTitle+"</title></head><body>")
		chunk := strings.Repeat("<p>filler</p>", 1024)
		for range (64 << 20) / len(chunk) { // far beyond the cap; stops when the client hangs up
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	})
	res := env.succeeded("http://page.test/", `{"max_depth_bytes": 4096}`, ssrfTitle)
	if res["truncated"] != true || res["bytes_read"] != 4096.0 {
		env.t.Errorf("truncated %v, bytes_read %v; want true, 4096 (%s)", res["truncated"], res["bytes_read"], c.Expected)
	}
}

// notHTML covers case 180: a large body that is not HTML is refused on its
// Content-Type.
func (env *ssrfEnv) notHTML(c ssrfCase) {
	env.mu.Lock()
	env.res.Set("page.test", []string{"93.184.215.14"})
	env.mu.Unlock()
	env.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		chunk := make([]byte, 32<<10)
		for range (64 << 20) / len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	_, task := env.submit("http://page.test/", "")
	if task == nil {
		env.t.Fatal("refused at the door")
	}
	env.failed("http://page.test/", task, collect.CodeUnsupportedContentType)
}

// depthClamped covers case 183: out-of-range max_depth_bytes are refused.
func (env *ssrfEnv) depthClamped(c ssrfCase) {
	for _, v := range []string{"-1", "0", "1000000000000"} {
		r := env.s.do("POST", "/v1/metadata/collect",
			`{"target_url": "http://page.test/", "requested_by": "x", "extraction_options": {"max_depth_bytes": `+v+`}}`, nil)
		if r.status != http.StatusBadRequest || r.body["parameter"] != "extraction_options.max_depth_bytes" {
			env.t.Errorf("max_depth_bytes %s: %d %v; want 400 naming it (%s)", v, r.status, r.body, c.Expected)
		}
	}
}
