// Package collecttest stands an in-process HTTP server in for the public
// internet, for tests of code that fetches through safehttp: a resolver maps
// test host names to public (or, to test refusals, internal) addresses, and a
// dialer connects every address the policy approved to the test server and
// records it. Nothing else is ever dialled.
package collecttest

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"

	"github.com/pedal-project/pedal/internal/safehttp"
)

// Hosts are the names the Net resolves, and their addresses. The .example
// names with public addresses reach the server; the others are refused by
// safehttp's policy before anything is dialled.
var Hosts = map[string]string{
	"news.example":     "93.184.215.14",
	"cdn.example":      "93.184.215.15",
	"slow.example":     "93.184.215.16",
	"flaky.example":    "93.184.215.17",
	"other.example":    "93.184.215.18",
	"internal.example": "10.0.0.5",
	"meta.example":     "169.254.169.254",
	"local.example":    "127.0.0.1",
}

// Net is the fake internet.
type Net struct {
	Server *httptest.Server

	mu      sync.Mutex
	extra   map[string]string
	dials   []string
	lookups []string
}

// New starts a server for handler, stopped at the end of the test. Requests
// reach handler with their original Host, so an http.ServeMux can route by
// host ("news.example/path").
func New(t testing.TB, handler http.Handler) *Net {
	n := &Net{Server: httptest.NewServer(handler), extra: map[string]string{}}
	t.Cleanup(n.Server.Close)
	return n
}

// Map makes host resolve to addr (on top of Hosts).
func (n *Net) Map(host, addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.extra[host] = addr
}

// Use points cfg's resolver and dialer at n.
func (n *Net) Use(cfg *safehttp.Config) {
	cfg.Resolver = n
	cfg.DialContext = n.dial
}

// LookupNetIP implements safehttp.Resolver.
func (n *Net) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lookups = append(n.lookups, host)
	a, ok := n.extra[host]
	if !ok {
		a, ok = Hosts[host]
	}
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return []netip.Addr{netip.MustParseAddr(a)}, nil
}

func (n *Net) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	n.mu.Lock()
	n.dials = append(n.dials, addr)
	n.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, network, n.Server.Listener.Addr().String())
}

// Dialled returns the addresses dialled so far (as the policy approved them,
// before they were redirected to the server).
func (n *Net) Dialled() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.dials...)
}
