package safehttp

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
)

// ErrBlocked is matched (errors.Is) by every refusal by policy.
var ErrBlocked = errors.New("safehttp: blocked by policy")

// BlockedError is a refusal by policy: a URL that may not be fetched or an
// address that may not be dialled. errors.Is(err, ErrBlocked) holds for it.
type BlockedError struct {
	// Reason names the rule: invalid_url, scheme, userinfo, port, host,
	// non_canonical_ip, zone, denied_cidr, or the address range (loopback,
	// private, cgnat, link_local, this_network, ietf_protocol, documentation,
	// benchmarking, multicast, reserved, cloud_metadata, unique_local,
	// site_local, nat64_local, ipv6_special, not_global_unicast, …).
	Reason string
	Host   string     // the host as given, or normalised
	Addr   netip.Addr // the address judged, when one was
}

func (e *BlockedError) Error() string {
	switch {
	case e.Addr.IsValid():
		return fmt.Sprintf("safehttp: %s: address %s is blocked (%s)", e.Host, e.Addr, e.Reason)
	case e.Host != "":
		return fmt.Sprintf("safehttp: %s: blocked (%s)", e.Host, e.Reason)
	default:
		return fmt.Sprintf("safehttp: blocked (%s)", e.Reason)
	}
}

// Is reports whether target is ErrBlocked.
func (e *BlockedError) Is(target error) bool { return target == ErrBlocked }

// deny is the built-in deny list: the IANA IPv4 and IPv6 special-purpose
// registries (every block not marked globally reachable, and a few that are but
// must not be fetched), plus cloud endpoints on public addresses. Addresses that
// embed an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are unwrapped
// before the list is consulted; see embedded.
var deny = []struct {
	prefix netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this_network"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "cgnat"}, // includes Alibaba's 100.100.100.200
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.169.254/32"), "cloud_metadata"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link_local"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "ietf_protocol"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4_relay"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("168.63.129.16/32"), "cloud_metadata"}, // Azure WireServer

	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "nat64_local"},
	{netip.MustParsePrefix("100::/64"), "discard"},
	{netip.MustParsePrefix("fc00::/7"), "unique_local"}, // includes AWS's fd00:ec2::254
	{netip.MustParsePrefix("fe80::/10"), "link_local"},
	{netip.MustParsePrefix("fec0::/10"), "site_local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
	// Inside 2000::/3.
	{netip.MustParsePrefix("2001::/23"), "ietf_protocol"}, // Teredo (2001::/32) is unwrapped first
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("3fff::/20"), "documentation"},
	{netip.MustParsePrefix("5f00::/16"), "srv6_sid"},
}

var (
	global6 = netip.MustParsePrefix("2000::/3")
	mapped  = netip.MustParsePrefix("::ffff:0:0/96")
	compat  = netip.MustParsePrefix("::/96")
	nat64   = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4  = netip.MustParsePrefix("2002::/16")
	teredo  = netip.MustParsePrefix("2001::/32")
)

// embedded returns the IPv4 addresses an IPv6 address carries by a
// transition mechanism: IPv4-mapped, IPv4-compatible, NAT64 (64:ff9b::/96),
// 6to4 and Teredo (server and client).
func embedded(a netip.Addr) []netip.Addr {
	if !a.Is6() {
		return nil
	}
	b := a.As16()
	v4 := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{b[i], b[i+1], b[i+2], b[i+3]}) }
	switch {
	case mapped.Contains(a), nat64.Contains(a):
		return []netip.Addr{v4(12)}
	case compat.Contains(a):
		if a == netip.IPv6Unspecified() || a == netip.IPv6Loopback() {
			return nil
		}
		return []netip.Addr{v4(12)}
	case sixTo4.Contains(a):
		return []netip.Addr{v4(2)}
	case teredo.Contains(a):
		client := netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
		return []netip.Addr{v4(4), client}
	}
	return nil
}

// classify returns the reason the built-in list refuses a, or "".
func classify(a netip.Addr) string {
	if a.Zone() != "" {
		return "zone"
	}
	if inner := embedded(a); inner != nil {
		for _, v4 := range inner {
			if r := classify(v4); r != "" {
				return r
			}
		}
		return ""
	}
	for _, d := range deny {
		if d.prefix.Contains(a) {
			return d.reason
		}
	}
	if a.Is6() && !global6.Contains(a) {
		return "not_global_unicast"
	}
	return ""
}

// policy decides which URLs may be fetched and which addresses dialled.
type policy struct {
	allow, deny []netip.Prefix
	ports       map[uint16]bool
}

func newPolicy(allow, deny []netip.Prefix, ports []uint16) *policy {
	p := &policy{allow: allow, deny: deny, ports: map[uint16]bool{}}
	if len(ports) == 0 {
		ports = []uint16{80, 443}
	}
	for _, port := range ports {
		p.ports[port] = true
	}
	return p
}

// checkAddr returns a *BlockedError when a may not be dialled. An address in
// AllowCIDRs is allowed whatever else says; one in DenyCIDRs is refused; then
// the built-in list decides. Addresses that embed an IPv4 address are judged
// by it as well.
func (p *policy) checkAddr(host string, a netip.Addr) error {
	if a.Zone() != "" {
		return &BlockedError{Reason: "zone", Host: host, Addr: a}
	}
	cands := append([]netip.Addr{a.Unmap()}, embedded(a)...)
	for _, c := range cands {
		for _, pre := range p.allow {
			if pre.Contains(c) {
				return nil
			}
		}
	}
	for _, c := range cands {
		for _, pre := range p.deny {
			if pre.Contains(c) {
				return &BlockedError{Reason: "denied_cidr", Host: host, Addr: a}
			}
		}
	}
	if r := classify(a); r != "" {
		return &BlockedError{Reason: r, Host: host, Addr: a}
	}
	return nil
}

// checkURL validates a URL to be fetched: http or https, no userinfo, an
// allowed port, and a host that is a canonical IP literal (judged at once) or a
// DNS name (IDNA to ASCII, lower case, trailing dot removed; a name whose last
// label is numeric is a non-canonical IPv4 form such as 127.1, 0x7f.1 or
// 2130706433 and is refused, since resolvers turn those into addresses). It
// returns the normalised host (IPv6 without brackets) and the port.
func (p *policy) checkURL(u *url.URL) (host string, port uint16, err error) {
	block := func(reason string) (string, uint16, error) {
		return "", 0, &BlockedError{Reason: reason, Host: u.Host}
	}
	switch strings.ToLower(u.Scheme) {
	case "http":
		port = 80
	case "https":
		port = 443
	default:
		return block("scheme")
	}
	if u.User != nil {
		return block("userinfo")
	}
	if u.Opaque != "" || u.Host == "" {
		return block("host")
	}
	if s := u.Port(); s != "" {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 || strings.TrimLeft(s, "0123456789") != "" {
			return block("port")
		}
		port = uint16(n)
	} else if strings.HasSuffix(u.Host, ":") {
		return block("port")
	}
	if !p.ports[port] {
		return block("port")
	}
	host, err = normalizeHost(u.Hostname())
	if err != nil {
		return "", 0, err
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if err := p.checkAddr(host, a); err != nil {
			return "", 0, err
		}
	}
	return host, port, nil
}

// normalizeHost returns the canonical form of a URL host (without brackets):
// an IP literal as netip prints it, or a lower-case ASCII DNS name without a
// trailing dot. Zones, non-canonical numeric IPv4 forms and invalid names are
// refused.
func normalizeHost(h string) (string, error) {
	block := func(reason string) (string, error) { return "", &BlockedError{Reason: reason, Host: h} }
	if h == "" {
		return block("host")
	}
	if strings.Contains(h, "%") {
		return block("zone")
	}
	if a, err := netip.ParseAddr(h); err == nil {
		return a.String(), nil
	}
	if strings.Contains(h, ":") {
		return block("host")
	}
	// UTS #46 mapping: full-width characters and ideographic full stops
	// become ASCII, so "１２７。０。０。１" is judged as 127.0.0.1.
	ascii, err := idna.Lookup.ToASCII(h)
	if err != nil {
		return block("host")
	}
	ascii = strings.TrimSuffix(strings.ToLower(ascii), ".")
	if a, err := netip.ParseAddr(ascii); err == nil && a.Is4() {
		return a.String(), nil
	}
	if ascii == "" || len(ascii) > 253 {
		return block("host")
	}
	labels := strings.Split(ascii, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return block("host")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return block("host")
			}
		}
		if strings.HasPrefix(l, "xn--") {
			// Punycode must decode to a valid label.
			if _, err := idna.Lookup.ToUnicode(l); err != nil {
				return block("host")
			}
		}
	}
	if numericLabel(labels[len(labels)-1]) {
		return block("non_canonical_ip")
	}
	return ascii, nil
}

// numericLabel reports whether l is a number in the forms an IPv4 parser
// accepts (decimal, 0x hexadecimal, 0 octal): WHATWG's "ends in a number".
func numericLabel(l string) bool {
	if strings.HasPrefix(l, "0x") {
		l = l[2:]
		for i := 0; i < len(l); i++ {
			if !strings.ContainsRune("0123456789abcdef", rune(l[i])) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return l != ""
}

// Validate parses rawURL and applies the URL checks of the policy cfg
// describes (scheme, userinfo, port, host form, and the address policy for an
// IP literal), as a service does before accepting a URL to fetch later. DNS
// names are not resolved: the client checks their addresses when it connects.
// Every refusal satisfies errors.Is(err, ErrBlocked).
func Validate(rawURL string, cfg Config) (*url.URL, error) {
	if rawURL != strings.TrimSpace(rawURL) || strings.ContainsAny(rawURL, "\\\x00\t\r\n") {
		return nil, &BlockedError{Reason: "invalid_url"}
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", &BlockedError{Reason: "invalid_url"}, err)
	}
	p := newPolicy(cfg.AllowCIDRs, cfg.DenyCIDRs, cfg.AllowedPorts)
	if _, _, err := p.checkURL(u); err != nil {
		return nil, err
	}
	return u, nil
}
