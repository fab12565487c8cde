package safehttp

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pedal-project/pedal/internal/safehttp/safehttptest"
)

// Addresses that stand for hosts on the internet. No test ever dials them:
// testNet connects them to loopback listeners or in-memory pipes.
const (
	publicIP  = "93.184.215.14"
	publicIP2 = "93.184.215.15"
)

// marker is what test origins answer, so a test can tell their response from
// any other.
const marker = "pedal test server"

func serveMarker(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, marker) }

// testResolver is a Resolver with fixed answers.
type testResolver = safehttptest.Resolver

func newTestResolver() *testResolver { return safehttptest.NewResolver() }

// testNet is the DialContext every test but TestDefaultDialer gives NewClient.
// It connects the public addresses a test routes to loopback listeners or to
// in-memory pipes, records every dial, and fails the test when asked to dial
// anything else (or anything but a literal IP:port): no test reaches beyond
// the machine, even when the code under test is wrong.
type testNet struct {
	t      testing.TB
	mu     sync.Mutex
	routes map[netip.AddrPort]func(ctx context.Context) (net.Conn, error)
	dials  []string
	wg     sync.WaitGroup // the servers of routePipe
}

func newTestNet(t testing.TB) *testNet {
	n := &testNet{t: t, routes: map[netip.AddrPort]func(context.Context) (net.Conn, error){}}
	t.Cleanup(n.wg.Wait)
	return n
}

func (n *testNet) add(public string, dial func(ctx context.Context) (net.Conn, error)) {
	n.t.Helper()
	ap, err := netip.ParseAddrPort(public)
	if err != nil {
		n.t.Fatalf("route %q: %v", public, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.routes[ap] = dial
}

// route makes dials to public (IP:port) connect to the loopback listener at ln.
func (n *testNet) route(public string, ln net.Addr) {
	n.t.Helper()
	to, err := netip.ParseAddrPort(ln.String())
	if err != nil || !to.Addr().IsLoopback() {
		n.t.Fatalf("route %s to %s: not a loopback address", public, ln)
	}
	n.add(public, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", to.String())
	})
}

// routePipe makes each dial to public return one end of a net.Pipe, with
// serve running on the other: no socket at all, so that the test can run in
// a synctest bubble.
func (n *testNet) routePipe(public string, serve func(net.Conn)) {
	n.t.Helper()
	n.add(public, func(context.Context) (net.Conn, error) {
		client, server := net.Pipe()
		n.wg.Go(func() {
			defer server.Close()
			serve(server)
		})
		return client, nil
	})
}

// routeBlackhole makes dials to public hang until their context ends, like a
// SYN sent to an unroutable address.
func (n *testNet) routeBlackhole(public string) {
	n.t.Helper()
	n.add(public, func(ctx context.Context) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
}

// routeRefused makes dials to public fail at once, like a closed port.
func (n *testNet) routeRefused(public string) {
	n.t.Helper()
	n.add(public, func(context.Context) (net.Conn, error) {
		return nil, errors.New("testNet: connection refused")
	})
}

func (n *testNet) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		n.t.Errorf("DialContext(%q, %q): not a literal IP:port", network, addr)
		return nil, err
	}
	n.mu.Lock()
	n.dials = append(n.dials, addr)
	dial := n.routes[ap]
	n.mu.Unlock()
	if dial == nil {
		n.t.Errorf("DialContext(%q, %q): not an address this test routes; refusing to dial it", network, addr)
		return nil, fmt.Errorf("testNet: %s not routed", addr)
	}
	return dial(ctx)
}

func (n *testNet) dialed() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.dials)
}

// origin is an httptest server standing in for a public host. It counts the
// requests it gets.
type origin struct {
	*httptest.Server
	hits atomic.Int64
}

func newOrigin(t testing.TB, h http.HandlerFunc) *origin {
	o := &origin{}
	o.Server = httptest.NewServer(o.count(h))
	t.Cleanup(o.Close)
	return o
}

// newTLSOrigin's certificate is for example.com, *.example.com, 127.0.0.1
// and ::1.
func newTLSOrigin(t testing.TB, h http.HandlerFunc) *origin {
	o := &origin{}
	o.Server = httptest.NewTLSServer(o.count(h))
	t.Cleanup(o.Close)
	return o
}

func (o *origin) count(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		h(w, r)
	})
}

// newTestClient returns NewClient(cfg), whose idle connections are closed when
// the test ends. cfg must dial through a testNet.
func newTestClient(t testing.TB, cfg Config) *http.Client {
	t.Helper()
	if cfg.DialContext == nil {
		t.Fatal("newTestClient: no DialContext: tests dial through a testNet")
	}
	c := NewClient(cfg)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// fetch GETs rawURL and reads the whole body. err is the first error, from the
// request or from reading the body; resp may be non-nil with an error when
// CheckRedirect stopped the client (its body is closed then).
func fetch(ctx context.Context, c *http.Client, rawURL string) (resp *http.Response, body string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err = c.Do(req)
	if err != nil {
		return resp, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// blockedReason returns the reason of the *BlockedError err wraps, or "".
func blockedReason(err error) string {
	var be *BlockedError
	if errors.As(err, &be) {
		return be.Reason
	}
	return ""
}

// blockedCalls records Config.OnBlocked calls.
type blockedCalls struct {
	mu    sync.Mutex
	calls [][2]string
}

func (b *blockedCalls) record(reason, host string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, [2]string{reason, host})
}

func (b *blockedCalls) get() [][2]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.calls)
}

// publicSite returns a resolver that maps host to publicIP and a testNet that
// connects publicIP:80 to a new origin serving h.
func publicSite(t *testing.T, host string, h http.HandlerFunc) (*testResolver, *testNet, *origin) {
	res := newTestResolver()
	res.Set(host, []string{publicIP})
	n := newTestNet(t)
	o := newOrigin(t, h)
	n.route(publicIP+":80", o.Listener.Addr())
	return res, n, o
}

func TestFetchNormalisesTheHost(t *testing.T) {
	var hosts []string
	var mu sync.Mutex
	res, n, o := publicSite(t, "example.test", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hosts = append(hosts, r.Host)
		mu.Unlock()
		serveMarker(w, r)
	})
	c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext})
	for _, u := range []string{"http://example.test/", "HTTP://EXAMPLE.TEST./", "http://example.test:00080/"} {
		_, body, err := fetch(t.Context(), c, u)
		if err != nil || body != marker {
			t.Fatalf("GET %s = %q, %v; want %q", u, body, err, marker)
		}
	}
	if diff := cmp.Diff([]string{"example.test", "example.test", "example.test:80"}, hosts); diff != "" {
		t.Errorf("Host headers (-want +got):\n%s", diff)
	}
	// One connection, dialled on the checked address and reused: the pool is
	// keyed by the normalised host and port.
	if diff := cmp.Diff([]string{publicIP + ":80"}, n.dialed()); diff != "" {
		t.Errorf("dials (-want +got):\n%s", diff)
	}
	if got := o.hits.Load(); got != 3 {
		t.Errorf("origin got %d requests, want 3", got)
	}
}

// gzipBomb returns a gzip stream that decodes to size bytes of zeros, about a
// thousandth of that on the wire. It is built by repeating one deflate
// segment (1 MiB of zeros, ending on a byte boundary), so even a 10 GiB bomb
// costs nothing to make; it has no trailer, since no reader gets that far.
func gzipBomb(t testing.TB, size int64) (header, segment []byte, count int64) {
	t.Helper()
	var seg bytes.Buffer
	fw, err := flate.NewWriter(&seg, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	const segSize = 1 << 20
	if _, err := fw.Write(make([]byte, segSize)); err != nil {
		t.Fatal(err)
	}
	if err := fw.Flush(); err != nil {
		t.Fatal(err)
	}
	header = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff} // gzip, deflate, no flags, unknown OS
	return header, seg.Bytes(), size / segSize
}

// TestBodyLimit covers corpus cases 170 (chunked, no Content-Length), 172
// (gzip bomb) and 184 (a smaller cap for secondary fetches is a second client
// with a smaller MaxBodyBytes).
func TestBodyLimit(t *testing.T) {
	const limit = 1 << 20
	bombHeader, bombSegment, bombSegments := gzipBomb(t, 10<<30)
	for _, tt := range []struct {
		name         string
		serve        http.HandlerFunc
		wantLen      int
		wantTooLarge bool
		wantDecoded  bool // the Transport gunzipped the body
	}{
		{
			name:    "under the cap",
			serve:   func(w http.ResponseWriter, _ *http.Request) { w.Write(make([]byte, 1000)) },
			wantLen: 1000,
		},
		{
			name:    "exactly the cap",
			serve:   func(w http.ResponseWriter, _ *http.Request) { w.Write(make([]byte, limit)) },
			wantLen: limit,
		},
		{
			name: "declared length over the cap",
			serve: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(4*limit))
				w.Write(make([]byte, 4*limit))
			},
			wantLen: limit, wantTooLarge: true,
		},
		{
			name: "chunked without Content-Length",
			serve: func(w http.ResponseWriter, _ *http.Request) {
				chunk := bytes.Repeat([]byte("<p>"), 10<<10)
				for range 1 << 15 { // 1 GiB, unless the client hangs up first
					if _, err := w.Write(chunk); err != nil {
						return
					}
					w.(http.Flusher).Flush()
				}
			},
			wantLen: limit, wantTooLarge: true,
		},
		{
			name: "gzip bomb",
			serve: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Encoding", "gzip")
				w.Write(bombHeader)
				for range bombSegments { // 10 GiB once decoded, unless the client hangs up first
					if _, err := w.Write(bombSegment); err != nil {
						return
					}
				}
			},
			wantLen: limit, wantTooLarge: true, wantDecoded: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, n, _ := publicSite(t, "example.test", tt.serve)
			c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext, MaxBodyBytes: limit})
			resp, body, err := fetch(t.Context(), c, "http://example.test/")
			if resp == nil {
				t.Fatalf("GET: %v", err)
			}
			if len(body) != tt.wantLen || errors.Is(err, ErrBodyTooLarge) != tt.wantTooLarge {
				t.Errorf("read %d bytes, %v; want %d bytes, ErrBodyTooLarge: %t", len(body), err, tt.wantLen, tt.wantTooLarge)
			}
			if !tt.wantTooLarge && err != nil {
				t.Errorf("read: %v", err)
			}
			if resp.Uncompressed != tt.wantDecoded {
				t.Errorf("Uncompressed = %t, want %t", resp.Uncompressed, tt.wantDecoded)
			}
		})
	}
}

// TestContentLengthNotTrusted covers corpus case 171: a declared length is
// neither a reason to read more than the cap nor to read more than declared.
func TestContentLengthNotTrusted(t *testing.T) {
	const limit = 1 << 20
	for _, tt := range []struct {
		name         string
		declared     int64
		sent         int
		wantLen      int
		wantTooLarge bool
	}{
		{name: "declares 10 GiB", declared: 10 << 30, sent: 2 * limit, wantLen: limit, wantTooLarge: true},
		{name: "declares less than it sends", declared: 5, sent: 100, wantLen: 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, n, _ := publicSite(t, "example.test", func(w http.ResponseWriter, _ *http.Request) {
				conn, bw, err := w.(http.Hijacker).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close()
				fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", tt.declared)
				bw.Write(bytes.Repeat([]byte("a"), tt.sent))
				bw.Flush()
				io.Copy(io.Discard, conn) // until the client hangs up
			})
			c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext, MaxBodyBytes: limit})
			resp, body, err := fetch(t.Context(), c, "http://example.test/")
			if resp == nil {
				t.Fatalf("GET: %v", err)
			}
			if len(body) != tt.wantLen || errors.Is(err, ErrBodyTooLarge) != tt.wantTooLarge {
				t.Errorf("read %d bytes, %v; want %d bytes, ErrBodyTooLarge: %t", len(body), err, tt.wantLen, tt.wantTooLarge)
			}
			if !tt.wantTooLarge && err != nil {
				t.Errorf("read: %v", err)
			}
			c.CloseIdleConnections() // the second case leaves garbage after the body
		})
	}
}

// TestOnlyGzipIsAdvertised covers corpus case 173: a caller's Accept-Encoding
// is replaced, so no encoding comes back that the body cap cannot count.
func TestOnlyGzipIsAdvertised(t *testing.T) {
	got := make(chan string, 1)
	res, n, _ := publicSite(t, "example.test", func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Accept-Encoding")
		serveMarker(w, r)
	})
	c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://example.test/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "br, zstd")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ae := <-got; ae != "gzip" {
		t.Errorf("server saw Accept-Encoding %q, want %q", ae, "gzip")
	}
	if req.Header.Get("Accept-Encoding") != "br, zstd" {
		t.Error("the caller's request was modified")
	}
}

// TestStackedEncodingIsNotDecoded covers corpus case 174: only a single gzip
// the Transport asked for is decoded; anything else is returned as sent, and
// capped as sent.
func TestStackedEncodingIsNotDecoded(t *testing.T) {
	var inner, outer bytes.Buffer
	zw := gzip.NewWriter(&inner)
	zw.Write(make([]byte, 1<<20))
	zw.Close()
	zw = gzip.NewWriter(&outer)
	zw.Write(inner.Bytes())
	zw.Close()
	res, n, _ := publicSite(t, "example.test", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Encoding", "gzip, gzip")
		w.Write(outer.Bytes())
	})
	c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext})
	resp, body, err := fetch(t.Context(), c, "http://example.test/")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Uncompressed || body != outer.String() {
		t.Errorf("got %d bytes (Uncompressed %t), want the %d bytes sent", len(body), resp.Uncompressed, outer.Len())
	}
}

// TestResponseHeaderLimit covers corpus cases 179 (huge headers) and 185 (a
// flood of 1xx responses: Go counts their headers against the same limit).
func TestResponseHeaderLimit(t *testing.T) {
	for _, tt := range []struct {
		name    string
		serve   http.HandlerFunc
		wantErr bool
	}{
		{
			name: "32 KiB of headers",
			serve: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Pad", strings.Repeat("a", 32<<10))
				serveMarker(w, r)
			},
		},
		{
			name: "1 MiB of headers",
			serve: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Pad", strings.Repeat("a", 1<<20))
				serveMarker(w, r)
			},
			wantErr: true,
		},
		{
			name: "a few 103 Early Hints",
			serve: func(w http.ResponseWriter, r *http.Request) {
				for range 3 {
					w.Header().Set("Link", "</style.css>; rel=preload")
					w.WriteHeader(http.StatusEarlyHints)
				}
				serveMarker(w, r)
			},
		},
		{
			name: "flood of 103 Early Hints",
			serve: func(w http.ResponseWriter, r *http.Request) {
				for range 5000 { // about 300 KB of 1xx headers
					w.Header().Set("Link", "</style.css>; rel=preload")
					w.WriteHeader(http.StatusEarlyHints)
				}
				serveMarker(w, r)
			},
			wantErr: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, n, o := publicSite(t, "example.test", tt.serve)
			c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext}) // default: 64 KiB
			_, body, err := fetch(t.Context(), c, "http://example.test/")
			if tt.wantErr {
				if err == nil {
					t.Errorf("GET = %q, want an error", body)
				}
			} else if err != nil || body != marker {
				t.Errorf("GET = %q, %v; want %q", body, err, marker)
			}
			if o.hits.Load() != 1 {
				t.Errorf("origin got %d requests, want 1", o.hits.Load())
			}
		})
	}
}

// readRequest reads one request from a test server's connection, reporting
// whether it did.
func readRequest(br *bufio.Reader) bool {
	req, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, req.Body)
	return true
}

// TestTimeouts covers corpus cases 175 (slowloris body), 176 (no response
// headers), 177 (TLS handshake never completes) and 178 (SYN to a
// blackhole). It runs in a synctest bubble over pipes, so each limit fires at
// exactly its configured time.
func TestTimeouts(t *testing.T) {
	slowloris := func(c net.Conn) {
		br := bufio.NewReader(c)
		if !readRequest(br) {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n") // a body until the connection closes
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for range tick.C {
			if _, err := c.Write([]byte("<")); err != nil {
				return
			}
		}
	}
	for _, tt := range []struct {
		name        string
		url         string
		route       func(n *testNet)
		ctxTimeout  time.Duration // 0: none
		wantElapsed time.Duration
	}{
		{
			name:        "dial",
			url:         "http://example.test/",
			route:       func(n *testNet) { n.routeBlackhole(publicIP + ":80") },
			wantElapsed: 5 * time.Second,
		},
		{
			name: "TLS handshake",
			url:  "https://example.test/",
			route: func(n *testNet) {
				n.routePipe(publicIP+":443", func(c net.Conn) { io.Copy(io.Discard, c) }) // accepts and never speaks
			},
			wantElapsed: 5 * time.Second,
		},
		{
			name: "response headers",
			url:  "http://example.test/",
			route: func(n *testNet) {
				n.routePipe(publicIP+":80", func(c net.Conn) {
					br := bufio.NewReader(c)
					if readRequest(br) {
						io.Copy(io.Discard, br) // never answers
					}
				})
			},
			wantElapsed: 10 * time.Second,
		},
		{
			name:        "slowloris body, overall timeout",
			url:         "http://example.test/",
			route:       func(n *testNet) { n.routePipe(publicIP+":80", slowloris) },
			wantElapsed: 30 * time.Second,
		},
		{
			name:        "slowloris body, context deadline",
			url:         "http://example.test/",
			route:       func(n *testNet) { n.routePipe(publicIP+":80", slowloris) },
			ctxTimeout:  12 * time.Second,
			wantElapsed: 12 * time.Second,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				res := newTestResolver()
				res.Set("example.test", []string{publicIP})
				n := newTestNet(t)
				tt.route(n)
				c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext}) // the defaults
				ctx := t.Context()
				if tt.ctxTimeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.ctxTimeout)
					defer cancel()
				}
				start := time.Now()
				_, _, err := fetch(ctx, c, tt.url)
				elapsed := time.Since(start)
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("GET: %v; want a timeout", err)
				}
				if elapsed != tt.wantElapsed {
					t.Errorf("failed after %v, want %v", elapsed, tt.wantElapsed)
				}
			})
		})
	}
}

func TestIdleConnTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		closed := make(chan time.Time, 1)
		res := newTestResolver()
		res.Set("example.test", []string{publicIP})
		n := newTestNet(t)
		n.routePipe(publicIP+":80", func(c net.Conn) {
			br := bufio.NewReader(c)
			if !readRequest(br) {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n"+marker)
			br.ReadByte() // until the client closes the idle connection
			closed <- time.Now()
		})
		c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext, IdleConnTimeout: time.Minute})
		start := time.Now()
		if _, body, err := fetch(t.Context(), c, "http://example.test/"); err != nil || body != marker {
			t.Fatalf("GET = %q, %v", body, err)
		}
		if got := (<-closed).Sub(start); got != time.Minute {
			t.Errorf("idle connection closed after %v, want 1m", got)
		}
	})
}

// TestRedirects covers the hop limit, loops (corpus 159), relative redirects
// (157) and hops that the policy refuses (147–155), by URL or by address.
func TestRedirects(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/to/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		if n == 0 {
			serveMarker(w, r)
			return
		}
		http.Redirect(w, r, "/to/"+strconv.Itoa(n-1), http.StatusFound)
	})
	redirect := func(path, location string) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", location)
			w.WriteHeader(http.StatusFound)
		})
	}
	redirect("/a", "/b")
	redirect("/b", "/a")
	redirect("/dir/relative", "final") // /dir/final
	mux.HandleFunc("/dir/final", serveMarker)
	redirect("/other-host", "http://other.test/")
	redirect("/metadata", "http://169.254.169.254/latest/meta-data/")
	redirect("/intranet", "http://intranet.test/") // resolves to 10.0.0.1
	redirect("/port", "http://redirector.test:6379/")
	redirect("/userinfo", "http://user:pw@other.test/")
	redirect("/file", "file:///etc/passwd")

	for _, tt := range []struct {
		name         string
		path         string
		maxRedirects int
		wantErr      error // nil, ErrTooManyRedirects or ErrBlocked
		wantReason   string
		wantStatus   int
		wantPath     string // of the final response
		wantHits     int64
		wantOther    int64 // requests to other.test
	}{
		{name: "5 hops", path: "/to/5", wantStatus: 200, wantPath: "/to/0", wantHits: 6},
		{name: "6 hops", path: "/to/6", wantErr: ErrTooManyRedirects, wantHits: 6},
		{name: "2 hops, at most 2", path: "/to/2", maxRedirects: 2, wantStatus: 200, wantPath: "/to/0", wantHits: 3},
		{name: "not followed", path: "/to/2", maxRedirects: -1, wantStatus: 302, wantPath: "/to/2", wantHits: 1},
		{name: "loop", path: "/a", wantErr: ErrTooManyRedirects, wantHits: 6},
		{name: "relative", path: "/dir/relative", wantStatus: 200, wantPath: "/dir/final", wantHits: 2},
		{name: "other public host", path: "/other-host", wantStatus: 200, wantPath: "/", wantHits: 1, wantOther: 1},
		{name: "to the metadata address", path: "/metadata", wantErr: ErrBlocked, wantReason: "cloud_metadata", wantHits: 1},
		{name: "to a name of a private address", path: "/intranet", wantErr: ErrBlocked, wantReason: "private", wantHits: 1},
		{name: "to a port not allowed", path: "/port", wantErr: ErrBlocked, wantReason: "port", wantHits: 1},
		{name: "with userinfo", path: "/userinfo", wantErr: ErrBlocked, wantReason: "userinfo", wantHits: 1},
		{name: "to file", path: "/file", wantErr: ErrBlocked, wantReason: "scheme", wantHits: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := newTestResolver()
			res.Set("redirector.test", []string{publicIP})
			res.Set("other.test", []string{publicIP2})
			res.Set("intranet.test", []string{"10.0.0.1"})
			n := newTestNet(t)
			o := newOrigin(t, mux.ServeHTTP)
			other := newOrigin(t, serveMarker)
			n.route(publicIP+":80", o.Listener.Addr())
			n.route(publicIP2+":80", other.Listener.Addr())
			var blocked blockedCalls
			c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext, MaxRedirects: tt.maxRedirects, OnBlocked: blocked.record})

			resp, body, err := fetch(t.Context(), c, "http://redirector.test"+tt.path)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("GET = %v, want %v", err, tt.wantErr)
				}
			} else {
				if err != nil {
					t.Fatalf("GET: %v", err)
				}
				if resp.StatusCode != tt.wantStatus || resp.Request.URL.Path != tt.wantPath {
					t.Errorf("GET = %d from %s, want %d from %s", resp.StatusCode, resp.Request.URL.Path, tt.wantStatus, tt.wantPath)
				}
				if tt.wantStatus == 200 && body != marker {
					t.Errorf("body = %q, want %q", body, marker)
				}
			}
			if got := blockedReason(err); got != tt.wantReason {
				t.Errorf("reason = %q, want %q", got, tt.wantReason)
			}
			if got := len(blocked.get()); (tt.wantReason != "") != (got == 1) || got > 1 {
				t.Errorf("OnBlocked called %d times: %v", got, blocked.get())
			}
			if o.hits.Load() != tt.wantHits || other.hits.Load() != tt.wantOther {
				t.Errorf("origins got %d and %d requests, want %d and %d", o.hits.Load(), other.hits.Load(), tt.wantHits, tt.wantOther)
			}
		})
	}
}

// TestEnvironmentProxyIgnored points the proxy variables at a host the test
// routes to a server that fails the test if contacted. net/http reads the
// variables once per process, so the test runs itself in a fresh process with
// them set; an earlier test cannot have read them empty.
func TestEnvironmentProxyIgnored(t *testing.T) {
	const child = "SAFEHTTP_TEST_PROXY_CHILD"
	if os.Getenv(child) == "" {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestEnvironmentProxyIgnored$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), child+"=1", "NO_PROXY=", "no_proxy=")
		for _, k := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"} {
			cmd.Env = append(cmd.Env, k+"=http://proxy.test:80")
		}
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestEnvironmentProxyIgnored")) {
			t.Fatalf("in a process with HTTP_PROXY set: %v\n%s", err, out)
		}
		return
	}
	if os.Getenv("HTTP_PROXY") == "" {
		t.Fatal("HTTP_PROXY is not set")
	}
	res, n, o := publicSite(t, "example.test", serveMarker)
	res.Set("proxy.test", []string{publicIP2})
	proxy := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the proxy was asked for %s %s", r.Method, r.URL)
		http.Error(w, "proxy", http.StatusBadGateway)
	})
	n.route(publicIP2+":80", proxy.Listener.Addr())
	c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext})
	if _, body, err := fetch(t.Context(), c, "http://example.test/"); err != nil || body != marker {
		t.Errorf("GET = %q, %v; want %q", body, err, marker)
	}
	if o.hits.Load() != 1 || proxy.hits.Load() != 0 {
		t.Errorf("origin got %d requests and proxy %d, want 1 and 0", o.hits.Load(), proxy.hits.Load())
	}
}

// TestDNSRebinding covers corpus cases 093–095: the name resolves to a public
// address, then to 127.0.0.1.
func TestDNSRebinding(t *testing.T) {
	setup := func(t *testing.T) (*testResolver, *testNet, *origin, *http.Client) {
		res, n, o := publicSite(t, "rebind.test", serveMarker)
		res.Set("rebind.test", []string{publicIP}, []string{"127.0.0.1"})
		return res, n, o, newTestClient(t, Config{Resolver: res, DialContext: n.DialContext})
	}
	t.Run("a new connection resolves again", func(t *testing.T) {
		res, n, o, c := setup(t)
		if _, body, err := fetch(t.Context(), c, "http://rebind.test/"); err != nil || body != marker {
			t.Fatalf("first GET = %q, %v; want %q", body, err, marker)
		}
		c.CloseIdleConnections() // the next request dials again
		_, _, err := fetch(t.Context(), c, "http://rebind.test/favicon.ico")
		if !errors.Is(err, ErrBlocked) || blockedReason(err) != "loopback" {
			t.Errorf("second GET: %v; want blocked (loopback)", err)
		}
		if diff := cmp.Diff([]string{publicIP + ":80"}, n.dialed()); diff != "" {
			t.Errorf("dials (-want +got):\n%s", diff)
		}
		if o.hits.Load() != 1 || res.Count("rebind.test") != 2 {
			t.Errorf("%d requests, %d lookups; want 1 and 2", o.hits.Load(), res.Count("rebind.test"))
		}
	})
	t.Run("a pooled connection is reused", func(t *testing.T) {
		res, n, o, c := setup(t)
		for range 2 {
			if _, body, err := fetch(t.Context(), c, "http://rebind.test/"); err != nil || body != marker {
				t.Fatalf("GET = %q, %v; want %q", body, err, marker)
			}
		}
		if diff := cmp.Diff([]string{publicIP + ":80"}, n.dialed()); diff != "" {
			t.Errorf("dials (-want +got):\n%s", diff)
		}
		if o.hits.Load() != 2 || res.Count("rebind.test") != 1 {
			t.Errorf("%d requests, %d lookups; want 2 and 1", o.hits.Load(), res.Count("rebind.test"))
		}
	})
}

// TestMixedAnswers covers corpus case 091: only allowed answers are dialled,
// in order, whatever order the resolver gives.
func TestMixedAnswers(t *testing.T) {
	for _, tt := range []struct {
		name      string
		answers   []string
		refused   []string // allowed answers whose dial fails
		wantDials []string
	}{
		{name: "public first", answers: []string{publicIP, "127.0.0.1"}, wantDials: []string{publicIP + ":80"}},
		{name: "public last", answers: []string{"127.0.0.1", "::1", "10.0.0.1", "::ffff:169.254.169.254", publicIP}, wantDials: []string{publicIP + ":80"}},
		{
			name:      "first public answer down",
			answers:   []string{"127.0.0.1", publicIP2, "192.168.0.1", publicIP},
			refused:   []string{publicIP2},
			wantDials: []string{publicIP2 + ":80", publicIP + ":80"},
		},
		{name: "IPv4-mapped public answer", answers: []string{"::ffff:" + publicIP}, wantDials: []string{publicIP + ":80"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, n, o := publicSite(t, "mixed.test", serveMarker)
			res.Set("mixed.test", tt.answers)
			for _, a := range tt.refused {
				n.routeRefused(a + ":80")
			}
			var blocked blockedCalls
			c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext, OnBlocked: blocked.record})
			if _, body, err := fetch(t.Context(), c, "http://mixed.test/"); err != nil || body != marker {
				t.Errorf("GET = %q, %v; want %q", body, err, marker)
			}
			if diff := cmp.Diff(tt.wantDials, n.dialed()); diff != "" {
				t.Errorf("dials (-want +got):\n%s", diff)
			}
			if o.hits.Load() != 1 || len(blocked.get()) != 0 {
				t.Errorf("origin got %d requests, OnBlocked %v; want 1 and none", o.hits.Load(), blocked.get())
			}
		})
	}
}

// TestOnBlocked checks that each refusal, at whichever stage, reaches
// OnBlocked exactly once, with the reason of the error returned.
func TestOnBlocked(t *testing.T) {
	for _, tt := range []struct {
		url, reason string
	}{
		{"http://127.0.0.1/", "loopback"},
		{"http://[::ffff:a9fe:a9fe]/", "cloud_metadata"},
		{"http://127.1/", "non_canonical_ip"},
		{"ftp://example.test/", "scheme"},
		{"http://example.test:22/", "port"},
		{"http://user@example.test/", "userinfo"},
		{"http://intranet.test/", "private"},      // by its answer, when dialling
		{"http://localhost.test/", "loopback"},    // every answer blocked: the first refusal
		{"http://redirector.test/", "link_local"}, // on the redirect hop
	} {
		t.Run(tt.url, func(t *testing.T) {
			res, n, o := publicSite(t, "redirector.test", func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://169.254.1.1/", http.StatusFound)
			})
			res.Set("intranet.test", []string{"10.0.0.1", "10.0.0.2"})
			res.Set("localhost.test", []string{"127.0.0.1", "::1"})
			var blocked blockedCalls
			c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext, OnBlocked: blocked.record})
			_, _, err := fetch(t.Context(), c, tt.url)
			var be *BlockedError
			if !errors.As(err, &be) || !errors.Is(err, ErrBlocked) {
				t.Fatalf("GET: %v; want a *BlockedError", err)
			}
			if diff := cmp.Diff([][2]string{{tt.reason, be.Host}}, blocked.get()); diff != "" || be.Reason != tt.reason {
				t.Errorf("error reason %q; OnBlocked calls (-want +got):\n%s", be.Reason, diff)
			}
			wantHits := int64(0)
			if strings.Contains(tt.url, "redirector") {
				wantHits = 1
			}
			if o.hits.Load() != wantHits {
				t.Errorf("origin got %d requests, want %d", o.hits.Load(), wantHits)
			}
		})
	}
}

// TestHTTPSVerifiesTheHostName: the Transport dials the checked IP but
// verifies the certificate against, and sends SNI for, the URL's host name.
func TestHTTPSVerifiesTheHostName(t *testing.T) {
	serverNames := make(chan string, 1)
	o := newTLSOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		serverNames <- r.TLS.ServerName
		serveMarker(w, r)
	})
	roots := x509.NewCertPool()
	roots.AddCert(o.Certificate())
	res := newTestResolver()
	res.Set("www.example.com", []string{publicIP}) // the certificate's name
	res.Set("other.test", []string{publicIP})
	n := newTestNet(t)
	n.route(publicIP+":443", o.Listener.Addr())

	c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext, RootCAs: roots})
	if _, body, err := fetch(t.Context(), c, "https://www.example.com/"); err != nil || body != marker {
		t.Fatalf("GET = %q, %v; want %q", body, err, marker)
	}
	if got := <-serverNames; got != "www.example.com" {
		t.Errorf("SNI %q, want www.example.com", got)
	}

	_, _, err := fetch(t.Context(), c, "https://other.test/")
	var hostErr x509.HostnameError
	if !errors.As(err, &hostErr) {
		t.Errorf("GET https://other.test/ (certificate for example.com): %v; want a x509.HostnameError", err)
	}
	system := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext}) // the system roots
	_, _, err = fetch(t.Context(), system, "https://www.example.com/")
	var authErr x509.UnknownAuthorityError
	if !errors.As(err, &authErr) {
		t.Errorf("GET with the system roots: %v; want a x509.UnknownAuthorityError", err)
	}
	if o.hits.Load() != 1 {
		t.Errorf("origin got %d requests, want 1", o.hits.Load())
	}
}

// TestRefreshAndScriptNotFollowed covers corpus cases 161 and 163: the
// client follows 3xx Location only; a Refresh header, a meta refresh or a
// script is part of the response, returned as is.
func TestRefreshAndScriptNotFollowed(t *testing.T) {
	const page = `<meta http-equiv="refresh" content="0; url=http://127.0.0.1/"><script>location="http://127.0.0.1/"</script>`
	res, n, o := publicSite(t, "example.test", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Refresh", "0; url=http://127.0.0.1/")
		io.WriteString(w, page)
	})
	var blocked blockedCalls
	c := newTestClient(t, Config{Resolver: res, DialContext: n.DialContext, OnBlocked: blocked.record})
	resp, body, err := fetch(t.Context(), c, "http://example.test/")
	if err != nil || resp.StatusCode != 200 || body != page {
		t.Errorf("GET = %v %q, %v; want 200 and the page", resp, body, err)
	}
	if o.hits.Load() != 1 || len(blocked.get()) != 0 || len(n.dialed()) != 1 {
		t.Errorf("%d requests, %d dials, OnBlocked %v; want 1, 1, none", o.hits.Load(), len(n.dialed()), blocked.get())
	}
}

// TestDefaultDialer exercises the net.Dialer path with its ControlContext
// check. The only address the resolver gives is 127.0.0.1, so the only socket
// the test can open is to loopback.
func TestDefaultDialer(t *testing.T) {
	o := newOrigin(t, serveMarker)
	ap := netip.MustParseAddrPort(o.Listener.Addr().String())
	res := newTestResolver()
	res.Set("local.test", []string{ap.Addr().String()})
	url := fmt.Sprintf("http://local.test:%d/", ap.Port())

	refused := NewClient(Config{Resolver: res, AllowedPorts: []uint16{ap.Port()}})
	t.Cleanup(refused.CloseIdleConnections)
	if _, _, err := fetch(t.Context(), refused, url); blockedReason(err) != "loopback" {
		t.Errorf("GET without an exception: %v; want blocked (loopback)", err)
	}
	allowed := NewClient(Config{
		Resolver:     res,
		AllowedPorts: []uint16{ap.Port()},
		AllowCIDRs:   []netip.Prefix{netip.PrefixFrom(ap.Addr(), ap.Addr().BitLen())},
	})
	t.Cleanup(allowed.CloseIdleConnections)
	if _, body, err := fetch(t.Context(), allowed, url); err != nil || body != marker {
		t.Errorf("GET with an exception = %q, %v; want %q", body, err, marker)
	}
	if o.hits.Load() != 1 {
		t.Errorf("origin got %d requests, want 1", o.hits.Load())
	}
}

// TestControlJudgesTheSocketAddress calls the second line of defence directly:
// the first line never lets it see a blocked address.
func TestControlJudgesTheSocketAddress(t *testing.T) {
	d := &dialer{policy: newPolicy(nil, nil, nil)}
	control := d.control("example.test")
	for _, tt := range []struct {
		address, reason string
	}{
		{publicIP + ":443", ""},
		{"[2606:4700::1111]:443", ""},
		{"127.0.0.1:80", "loopback"},
		{"[::ffff:169.254.169.254]:80", "cloud_metadata"},
		{"[fe80::1%eth0]:80", "zone"},
	} {
		err := control(t.Context(), "tcp", tt.address, nil)
		if got := blockedReason(err); got != tt.reason || (tt.reason == "") != (err == nil) {
			t.Errorf("control(%s) = %v; want reason %q", tt.address, err, tt.reason)
		}
	}
}

// TestDefaultDialerUsesControl skips the first line (dialAddr is what
// dialContext calls once an answer has passed) to show that the net.Dialer
// refuses a loopback listener on its own: no connection reaches it.
func TestDefaultDialerUsesControl(t *testing.T) {
	accepted := make(chan struct{}, 1)
	o := httptest.NewUnstartedServer(http.HandlerFunc(serveMarker))
	o.Config.ConnState = func(net.Conn, http.ConnState) {
		select {
		case accepted <- struct{}{}:
		default:
		}
	}
	o.Start()
	t.Cleanup(o.Close)
	d := &dialer{policy: newPolicy(nil, nil, nil), timeout: time.Second}
	conn, err := d.dialAddr(t.Context(), "tcp", "local.test", netip.MustParseAddrPort(o.Listener.Addr().String()))
	if err == nil {
		conn.Close()
	}
	if blockedReason(err) != "loopback" {
		t.Fatalf("dialAddr(%s): %v; want blocked (loopback)", o.Listener.Addr(), err)
	}
	o.Close() // waits for any connection to be tracked
	select {
	case <-accepted:
		t.Error("the listener accepted a connection")
	default:
	}
}
