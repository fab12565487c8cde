package safehttp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrBodyTooLarge is returned by a Response.Body read once the body has
// produced Config.MaxBodyBytes bytes and has more. The bytes before the cap
// have been delivered by then, so a caller that wants a truncated prefix keeps
// what it read and treats this error as "truncated".
var ErrBodyTooLarge = errors.New("safehttp: response body too large")

// ErrTooManyRedirects is returned (wrapped in a *url.Error) when a request
// would follow more than Config.MaxRedirects redirects; a redirect loop ends
// this way.
var ErrTooManyRedirects = errors.New("safehttp: too many redirects")

// Resolver looks up the addresses of a host name. *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config configures NewClient. The zero value is a safe client for the public
// internet: ports 80 and 443, the built-in deny list, the system resolver and
// the defaults given below. Zero or negative durations and sizes mean the
// default.
type Config struct {
	// Resolver looks up host names; nil means the system resolver. Every
	// address it returns is judged by the policy before it is dialled.
	Resolver Resolver

	// DialContext connects to an address; nil means a net.Dialer whose
	// ControlContext judges the socket address once more. It is only ever
	// called with a literal IP:port that passed the policy, and is the hook
	// tests use to stand in-process servers in for public addresses.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	AllowedPorts []uint16       // ports that may be fetched; default 80 and 443
	AllowCIDRs   []netip.Prefix // exceptions to the deny list, e.g. an internal service a deployment trusts
	DenyCIDRs    []netip.Prefix // added to the built-in deny list

	// MaxRedirects is the number of redirects followed; each hop is checked
	// like the first request. Zero means 5; a negative value means redirects
	// are not followed and the 3xx response is returned as is.
	MaxRedirects int

	// RootCAs verifies servers' certificates; nil means the system roots.
	// Certificates are always verified, against the URL's host name.
	RootCAs *x509.CertPool

	DialTimeout           time.Duration // name resolution, then each connection attempt; default 5s
	TLSHandshakeTimeout   time.Duration // default 5s
	ResponseHeaderTimeout time.Duration // from the request written to the response headers read; default 10s
	IdleConnTimeout       time.Duration // a pooled connection idle this long is closed; default 90s
	// Timeout bounds a whole request: connection, redirects and reading the
	// body; default 30s. A request's context may set a shorter deadline.
	Timeout time.Duration

	// MaxResponseHeaderBytes bounds the response headers, 1xx responses
	// included; default 64 KiB. (A request whose httptrace.ClientTrace has a
	// Got1xxResponse hook takes the 1xx responses out of this budget: net/http
	// leaves the hook to bound them.)
	MaxResponseHeaderBytes int64
	// MaxBodyBytes bounds the bytes read from each Response.Body after gzip
	// decoding; default 10 MiB. Reading past it returns an error matching
	// ErrBodyTooLarge. A declared Content-Length is not trusted either way.
	MaxBodyBytes int64

	// OnBlocked, if set, is called once for each request refused by the
	// policy, with the BlockedError's reason and host, for a metric (label it
	// with the reason only: host is what the URL or redirect said) and a log
	// line. It may be called from several goroutines at once.
	OnBlocked func(reason, host string)
}

func (c Config) withDefaults() Config {
	if c.Resolver == nil {
		c.Resolver = new(net.Resolver)
	}
	if c.MaxRedirects == 0 {
		c.MaxRedirects = 5
	}
	setDefault(&c.DialTimeout, 5*time.Second)
	setDefault(&c.TLSHandshakeTimeout, 5*time.Second)
	setDefault(&c.ResponseHeaderTimeout, 10*time.Second)
	setDefault(&c.IdleConnTimeout, 90*time.Second)
	setDefault(&c.Timeout, 30*time.Second)
	setDefault(&c.MaxResponseHeaderBytes, 64<<10)
	setDefault(&c.MaxBodyBytes, 10<<20)
	return c
}

func setDefault[T time.Duration | int64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// NewClient returns an HTTP client that fetches only what the policy allows.
// Each request, and each redirect hop, is checked by URL (scheme, userinfo,
// port, host) before it is sent; host names are resolved once per connection
// and every answer judged, and only the checked addresses are dialled.
// Proxies from the environment are ignored, only HTTP/1.1 is spoken, and
// only gzip is advertised, so that the body cap counts decoded bytes.
//
// Every refusal by policy is returned as an error wrapping a *BlockedError, so
// errors.Is(err, ErrBlocked) holds for it. Connections are pooled per client
// and keyed by the normalised host and port: a connection is checked when it
// is dialled, and a request reusing it does not resolve the name again.
func NewClient(cfg Config) *http.Client {
	cfg = cfg.withDefaults()
	p := newPolicy(cfg.AllowCIDRs, cfg.DenyCIDRs, cfg.AllowedPorts)
	d := &dialer{
		policy:    p,
		resolver:  cfg.Resolver,
		dial:      cfg.DialContext,
		timeout:   cfg.DialTimeout,
		onBlocked: cfg.OnBlocked,
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	t := &http.Transport{
		Proxy:                  nil, // never HTTP_PROXY and friends
		DialContext:            d.DialContext,
		TLSClientConfig:        &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    cfg.TLSHandshakeTimeout,
		ResponseHeaderTimeout:  cfg.ResponseHeaderTimeout,
		IdleConnTimeout:        cfg.IdleConnTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxIdleConns:           100,
		MaxResponseHeaderBytes: cfg.MaxResponseHeaderBytes,
		Protocols:              &protocols,
	}
	return &http.Client{
		Transport: &transport{
			policy:    p,
			next:      t,
			maxBody:   cfg.MaxBodyBytes,
			onBlocked: cfg.OnBlocked,
		},
		CheckRedirect: checkRedirect(cfg.MaxRedirects),
		Timeout:       cfg.Timeout,
	}
}

// checkRedirect counts hops. The hops themselves are checked by
// transport.RoundTrip, which the client calls for every one of them.
func checkRedirect(maxHops int) func(*http.Request, []*http.Request) error {
	return func(_ *http.Request, via []*http.Request) error {
		if maxHops < 0 {
			return http.ErrUseLastResponse
		}
		if len(via) > maxHops {
			return fmt.Errorf("%w: stopped after %d", ErrTooManyRedirects, maxHops)
		}
		return nil
	}
}

// transport checks each request's URL, sends it with the host normalised and
// only gzip advertised, and caps the body of the response.
type transport struct {
	policy    *policy
	next      *http.Transport
	maxBody   int64
	onBlocked func(reason, host string)
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	host, port, err := t.policy.checkURL(req.URL)
	if err != nil {
		if req.Body != nil {
			req.Body.Close() // a RoundTripper closes the body, even on errors
		}
		reportBlocked(t.onBlocked, err)
		return nil, err
	}
	r := req.Clone(req.Context())
	r.URL.Scheme = strings.ToLower(r.URL.Scheme)
	// The Transport dials, pools and verifies certificates by URL.Host: make it
	// the host the policy judged.
	r.URL.Host = urlHost(host, port, req.URL.Port() != "")
	if req.Host == "" || req.Host == req.URL.Host {
		r.Host = ""
	}
	// Let the Transport add "Accept-Encoding: gzip" and decode it, so that
	// the body cap counts decoded bytes; a caller's br or zstd would come back
	// encoded and be decoded beyond the cap.
	r.Header.Del("Accept-Encoding")
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{rc: resp.Body, left: t.maxBody, limit: t.maxBody}
	return resp, nil
}

// CloseIdleConnections closes pooled connections; http.Client's method of the
// same name calls it.
func (t *transport) CloseIdleConnections() { t.next.CloseIdleConnections() }

// urlHost returns host and port as URL.Host: the port only if the URL named
// one (so that the Host header stays as the caller wrote it), and IPv6 in
// brackets.
func urlHost(host string, port uint16, explicitPort bool) string {
	if explicitPort {
		return net.JoinHostPort(host, strconv.Itoa(int(port)))
	}
	if strings.Contains(host, ":") {
		return "[" + host + "]"
	}
	return host
}

// dialer connects to the host:port the Transport asks for, dialling only
// addresses the policy allows.
type dialer struct {
	policy    *policy
	resolver  Resolver
	dial      func(ctx context.Context, network, addr string) (net.Conn, error) // nil: a net.Dialer
	timeout   time.Duration
	onBlocked func(reason, host string)
}

func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := d.dialContext(ctx, network, addr)
	if err != nil {
		reportBlocked(d.onBlocked, err)
		return nil, err
	}
	return conn, nil
}

// dialContext resolves the host once, judges every answer, and tries the
// allowed ones in order. If none is allowed it returns the first refusal; if
// all the allowed ones fail it returns the first connection error.
func (d *dialer) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	// RoundTrip has checked this host and port already; checking again keeps
	// the dialer safe whatever reaches it.
	host, port, err := d.policy.checkURL(&url.URL{Scheme: "http", Host: addr})
	if err != nil {
		return nil, err
	}
	addrs, err := d.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	var blocked, failed error
	for _, a := range addrs {
		a = a.Unmap()
		if network == "tcp4" && !a.Is4() || network == "tcp6" && !a.Is6() {
			continue
		}
		if err := d.policy.checkAddr(host, a); err != nil {
			if blocked == nil {
				blocked = err
			}
			continue
		}
		conn, err := d.dialAddr(ctx, network, host, netip.AddrPortFrom(a, port))
		if err == nil {
			return conn, nil
		}
		if failed == nil {
			failed = err
		}
	}
	switch {
	case failed != nil:
		return nil, failed
	case blocked != nil:
		return nil, blocked
	}
	return nil, fmt.Errorf("resolve %s: no %s address", host, network)
}

// lookup returns the addresses of host: the literal itself, or the resolver's
// answers.
func (d *dialer) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	addrs, err := d.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	return addrs, nil
}

func (d *dialer) dialAddr(ctx context.Context, network, host string, ap netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel() // an established connection outlives its dial context
	if d.dial != nil {
		return d.dial(ctx, network, ap.String())
	}
	nd := net.Dialer{ControlContext: d.control(host)}
	return nd.DialContext(ctx, network, ap.String())
}

// control is the second line of defence: it judges the address the socket is
// about to connect to.
func (d *dialer) control(host string) func(ctx context.Context, network, address string, c syscall.RawConn) error {
	return func(_ context.Context, _, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("safehttp: unexpected socket address %q: %w", address, err)
		}
		return d.policy.checkAddr(host, ap.Addr())
	}
}

// reportBlocked calls onBlocked if err is a refusal by policy.
func reportBlocked(onBlocked func(reason, host string), err error) {
	var be *BlockedError
	if onBlocked != nil && errors.As(err, &be) {
		onBlocked(be.Reason, be.Host)
	}
}

// limitedBody returns at most limit bytes of rc, then ErrBodyTooLarge if rc
// has more (like http.MaxBytesReader, it reads one byte past the cap to tell).
type limitedBody struct {
	rc    io.ReadCloser
	left  int64 // bytes that may still be returned
	limit int64
	err   error // sticky ErrBodyTooLarge
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if int64(n) <= b.left {
		b.left -= int64(n)
		return n, err
	}
	n = int(b.left)
	b.left = 0
	b.err = fmt.Errorf("%w: more than %d bytes", ErrBodyTooLarge, b.limit)
	return n, b.err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
