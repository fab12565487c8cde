package safehttp

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pedal-project/pedal/internal/safehttp/safehttptest"
)

type corpusCase = safehttptest.Case

var corpusPublic = safehttptest.CorpusPublic

// coveredElsewhere says, for each case that describes a page or a limit
// rather than a URL to fetch, which test covers it, or whose concern it is.
var coveredElsewhere = map[string]string{
	"161": "covered by TestRefreshAndScriptNotFollowed",
	"163": "covered by TestRefreshAndScriptNotFollowed",
	"170": "covered by TestBodyLimit/chunked_without_Content-Length (the prefix, then ErrBodyTooLarge: the worker marks it truncated)",
	"171": "covered by TestContentLengthNotTrusted",
	"172": "covered by TestBodyLimit/gzip_bomb",
	"173": "covered by TestOnlyGzipIsAdvertised",
	"174": "covered by TestStackedEncodingIsNotDecoded",
	"175": "covered by TestTimeouts/slowloris_body,_overall_timeout and TestTimeouts/slowloris_body,_context_deadline",
	"176": "covered by TestTimeouts/response_headers",
	"177": "covered by TestTimeouts/TLS_handshake",
	"178": "covered by TestTimeouts/dial",
	"179": "covered by TestResponseHeaderLimit",
	"180": "not the client's: the metadata worker checks Content-Type before reading the body",
	"181": "not the client's: metadata extraction caps its collections",
	"182": "not the client's: bounded here by the body cap, then by encoding/json's depth limit",
	"183": "not the client's: the metadata API clamps max_depth_bytes",
	"184": "covered by TestBodyLimit: MaxBodyBytes is per client, so secondary fetches use a client with a smaller cap",
	"185": "covered by TestResponseHeaderLimit/flood_of_103_Early_Hints",
}

// TestCorpus runs every case of the shared corpus: each URL case is fetched
// through a client whose resolver gives the case's answers and whose dialer
// connects the corpus's public addresses to in-process servers serving the
// case's answer. ALLOW must get a response from a test server; BLOCK and
// REJECT an error matching ErrBlocked (or, for REJECT, a URL that
// net/url cannot parse, so no request exists), with no server contacted for
// the refused hop.
func TestCorpus(t *testing.T) {
	cases := safehttptest.LoadCorpus(t)
	for _, c := range cases {
		t.Run(c.ID, func(t *testing.T) {
			t.Parallel()
			switch {
			case coveredElsewhere[c.ID] != "":
				t.Skipf("%s: %s", c.Input, coveredElsewhere[c.ID])
			case c.ID == "095":
				corpusKeepAlive(t, c)
			case c.ID == "159":
				corpusLoop(t, c)
			case c.Category == "dns-rebinding":
				corpusRebinding(t, c)
			case c.Category == "secondary-fetch":
				corpusSecondaryFetch(t, c)
			case strings.HasPrefix(c.Expected, "ALLOW"):
				corpusFetch(t, c, true)
			case strings.HasPrefix(c.Expected, "BLOCK"), strings.HasPrefix(c.Expected, "REJECT"):
				corpusFetch(t, c, false)
			default:
				t.Errorf("case %s (%q, expected %q): no test covers it", c.ID, c.Input, c.Expected)
			}
		})
	}
}

// corpusEnv is one case's world: a resolver with the case's answers, and the
// corpus's public addresses connected to a plain and a TLS test server that
// share one handler and one request count.
type corpusEnv struct {
	res     *testResolver
	net     *testNet
	client  *http.Client
	hits    *atomic.Int64
	blocked *blockedCalls
}

func newCorpusEnv(t *testing.T, c corpusCase, h http.HandlerFunc) *corpusEnv {
	t.Helper()
	env := &corpusEnv{res: newTestResolver(), net: newTestNet(t), hits: new(atomic.Int64), blocked: new(blockedCalls)}
	c.SetDNS(t, env.res)
	counted := func(w http.ResponseWriter, r *http.Request) {
		env.hits.Add(1)
		h(w, r)
	}
	plain, tls := newOrigin(t, counted), newTLSOrigin(t, counted)
	for _, ip := range corpusPublic {
		env.net.route(ip+":80", plain.Listener.Addr())
		env.net.route(ip+":443", tls.Listener.Addr())
	}
	pool := tls.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	env.client = newTestClient(t, Config{Resolver: env.res, DialContext: env.net.DialContext, RootCAs: pool, OnBlocked: env.blocked.record})
	return env
}

// firstAnswer serves the case's server answer to the first request and the
// marker to the others.
func firstAnswer(c corpusCase) http.HandlerFunc {
	var n atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 && c.Server != nil {
			w.Header().Set("Location", c.Server.Location)
			w.WriteHeader(c.Server.Status)
			return
		}
		serveMarker(w, r)
	}
}

// corpusURL returns the URL of a case: its input, or the first word of an
// input that goes on to describe what happens next.
func corpusURL(c corpusCase) string {
	if c.Category == "redirect" || c.Category == "dns-rebinding" {
		return strings.Fields(c.Input)[0]
	}
	return c.Input
}

// corpusFetch covers the cases of categories baseline, ipv4-encoding,
// ipv4-range, ipv6, dns, unicode-host, parser-confusion, scheme, port, and the
// redirect cases 147–157.
func corpusFetch(t *testing.T, c corpusCase, allow bool) {
	env := newCorpusEnv(t, c, firstAnswer(c))
	raw := corpusURL(c)
	resp, body, err := fetch(t.Context(), env.client, raw)
	if _, perr := url.Parse(raw); perr != nil {
		// http.NewRequest refused it: there is no request to send.
		if allow || !strings.Contains(c.Expected, "REJECT") {
			t.Fatalf("%q: %v; want %s", raw, perr, c.Expected)
		}
		return
	}
	if allow {
		if err != nil || resp.StatusCode != http.StatusOK || body != marker {
			t.Fatalf("GET %q = %v, %q, %v; want %s from a test server", raw, resp, body, err, c.Expected)
		}
		return
	}
	if !errors.Is(err, ErrBlocked) {
		t.Fatalf("GET %q: %v; want %s (ErrBlocked)", raw, err, c.Expected)
	}
	want := int64(0) // the refused request never reached a server
	if c.Server != nil {
		want = 1 // the redirector did; the refused hop did not
	}
	if got := env.hits.Load(); got != want {
		t.Errorf("test servers got %d requests, want %d", got, want)
	}
	if got := len(env.blocked.get()); got != 1 {
		t.Errorf("OnBlocked called %d times, want 1", got)
	}
	t.Logf("%s: %v", c.Expected, err)
}

// corpusRebinding covers cases 093 and 094: the first fetch dials the public
// answer; a later one on a new connection (a favicon, say) resolves again, gets
// the internal answer and is blocked.
func corpusRebinding(t *testing.T, c corpusCase) {
	env := newCorpusEnv(t, c, serveMarker)
	raw := corpusURL(c)
	if _, body, err := env.fetch(t, raw); err != nil || body != marker {
		t.Fatalf("first GET %q = %q, %v; want the public server", raw, body, err)
	}
	env.client.CloseIdleConnections() // a pooled connection would be reused without resolving: case 095
	if _, _, err := env.fetch(t, raw); !errors.Is(err, ErrBlocked) {
		t.Fatalf("second GET %q: %v; want ErrBlocked", raw, err)
	}
	if got := env.hits.Load(); got != 1 {
		t.Errorf("test servers got %d requests, want 1", got)
	}
}

func (env *corpusEnv) fetch(t *testing.T, raw string) (*http.Response, string, error) {
	return fetch(t.Context(), env.client, raw)
}

// corpusKeepAlive covers case 095: a connection is checked when dialled; a
// request reusing it does not resolve again, even though the name now points
// at 127.0.0.1.
func corpusKeepAlive(t *testing.T, c corpusCase) {
	c.DNS = map[string]json.RawMessage{"keepalive.test": json.RawMessage(`[["93.184.215.14"], ["127.0.0.1"]]`)}
	env := newCorpusEnv(t, c, serveMarker)
	for range 2 {
		if _, body, err := env.fetch(t, "http://keepalive.test/"); err != nil || body != marker {
			t.Fatalf("GET = %q, %v; want the public server (%s)", body, err, c.Expected)
		}
	}
	if got := env.res.Count("keepalive.test"); got != 1 {
		t.Errorf("%d lookups, want 1", got)
	}
}

// corpusLoop covers case 159: /a redirects to /b and /b to /a.
func corpusLoop(t *testing.T, c corpusCase) {
	env := newCorpusEnv(t, c, func(w http.ResponseWriter, r *http.Request) {
		next := map[string]string{"/a": "/b", "/b": "/a"}[r.URL.Path]
		http.Redirect(w, r, next, http.StatusFound)
	})
	_, _, err := env.fetch(t, corpusURL(c))
	if !errors.Is(err, ErrTooManyRedirects) {
		t.Fatalf("GET: %v; want ErrTooManyRedirects (%s)", err, c.Expected)
	}
	if got := env.hits.Load(); got != 6 { // the request and 5 redirects
		t.Errorf("test servers got %d requests, want 6", got)
	}
}

// linkAttr finds the URL attributes of the tags in a corpus snippet.
var linkAttr = regexp.MustCompile(`<(\w+)[^>]*?\s(?:href|content)="([^"]*)"`)

// corpusSecondaryFetch covers cases 164–169: a URL found in a page, fetched
// through the same client, is judged like any other. Keeping the rest of the
// metadata is the worker's part.
func corpusSecondaryFetch(t *testing.T, c corpusCase) {
	env := newCorpusEnv(t, c, serveMarker)
	base, _ := url.Parse("http://page.test/")
	fetched := 0
	for _, m := range linkAttr.FindAllStringSubmatch(c.Input, -1) {
		ref, err := base.Parse(m[2])
		if err != nil {
			t.Fatalf("%s: %v", m[2], err)
		}
		if m[1] == "base" {
			base = ref
			continue
		}
		if _, _, err := env.fetch(t, ref.String()); !errors.Is(err, ErrBlocked) {
			t.Errorf("GET %s: %v; want ErrBlocked (%s)", ref, err, c.Expected)
		}
		fetched++
	}
	if fetched == 0 {
		t.Fatalf("no URL found in %q", c.Input)
	}
	if got := env.hits.Load(); got != 0 {
		t.Errorf("test servers got %d requests, want 0", got)
	}
}
