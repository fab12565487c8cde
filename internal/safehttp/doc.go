// Package safehttp is pedal's only way to make an outbound HTTP request to an
// address a user chose (pages, oEmbed, favicons, images, gateway upstreams). It
// refuses Server-Side Request Forgery: URLs are validated (http and https only,
// no userinfo, allowed ports, hosts normalised through IDNA, non-canonical
// numeric hosts refused), and every address is judged when it is dialled,
// against the IANA special-purpose registries with IPv4-in-IPv6 forms unwrapped,
// so DNS rebinding cannot slip between a check and a connect. Every refusal
// satisfies errors.Is(err, ErrBlocked).
//
// Everything here is safe for concurrent use.
package safehttp
