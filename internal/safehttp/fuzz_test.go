package safehttp

import (
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// FuzzCheckURL: whatever the URL, checkURL either refuses it or returns a
// normalised host that a resolver cannot read as a blocked address and a port
// that is allowed.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"http://example.com/", "http://127.1/", "http://0x7f.1/", "http://[::ffff:127.0.0.1]/",
		"http://127。0。0。1/", "http://xn--bcher-kva.example/", "https://a.b.c:443/x?y#z",
		"http://2130706433/", "http://0177.0.0.1/", "http://[fe80::1%25eth0]/", "http://example.com:00080/",
	} {
		f.Add(s)
	}
	p := newPolicy(nil, nil, nil)
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		host, port, err := p.checkURL(u)
		if err != nil {
			return
		}
		if port != 80 && port != 443 {
			t.Fatalf("%q: port %d allowed", raw, port)
		}
		if a, err := netip.ParseAddr(host); err == nil {
			if classify(a) != "" {
				t.Fatalf("%q: blocked address %s allowed", raw, a)
			}
			return
		}
		if host == "" || strings.ToLower(host) != host || strings.HasSuffix(host, ".") {
			t.Fatalf("%q: host %q not normalised", raw, host)
		}
		labels := strings.Split(host, ".")
		if numericLabel(labels[len(labels)-1]) {
			t.Fatalf("%q: numeric host %q allowed", raw, host)
		}
	})
}

// FuzzCheckAddr: an allowed address never lies in a blocked range, directly or
// through an embedded IPv4 address.
func FuzzCheckAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::", "64:ff9b::a9fe:a9fe", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "8.8.8.8"} {
		a := netip.MustParseAddr(s).As16()
		f.Add(a[:])
	}
	p := newPolicy(nil, nil, nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		if p.checkAddr("h", a) != nil {
			return
		}
		for _, c := range append([]netip.Addr{a.Unmap()}, embedded(a)...) {
			if c.IsLoopback() || c.IsPrivate() || c.IsLinkLocalUnicast() || c.IsMulticast() || c.IsUnspecified() || c.IsLinkLocalMulticast() {
				t.Fatalf("%s (as %s) allowed", a, c)
			}
			if c.Is6() && !global6.Contains(c) && embedded(c) == nil {
				t.Fatalf("%s outside 2000::/3 allowed", c)
			}
		}
	})
}
