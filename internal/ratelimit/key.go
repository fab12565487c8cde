package ratelimit

import (
	"net/netip"
)

// Key returns the key under which a request on route is limited: per
// authenticated subject when subject is not empty, else per client address.
// IPv6 addresses are limited per /64, the smallest block a single client
// usually holds; IPv4-mapped IPv6 addresses count as IPv4. Requests on route
// with neither a subject nor a valid address share one key. route must not
// contain a NUL byte.
func Key(route, subject string, addr netip.Addr) string {
	if subject != "" {
		return route + "\x00s:" + subject
	}
	addr = addr.Unmap()
	if addr.Is6() {
		p, _ := addr.WithZone("").Prefix(64) // cannot fail for a valid IPv6 address
		return route + "\x00n:" + p.String()
	}
	if addr.IsValid() {
		return route + "\x00a:" + addr.String()
	}
	return route + "\x00-"
}
