// Package safehttp is pedal's only way to make an outbound HTTP request to an
// address a user chose (pages, oEmbed, favicons, images, gateway upstreams):
// NewClient returns an *http.Client that refuses Server-Side Request Forgery,
// whatever the URL, the DNS answers or the redirects say.
//
// Invariants of a client from NewClient:
//
//   - Every request and every redirect hop is validated before it is sent:
//     http or https only, no userinfo, an allowed port, and a host normalised
//     through IDNA (lower case, no trailing dot); non-canonical numeric hosts
//     such as 127.1 or 0x7f000001 are refused.
//   - Addresses are judged when they are dialled, on the exact address: a name
//     is resolved once per connection, every answer is checked against the
//     IANA special-purpose registries (IPv4 embedded in IPv6 unwrapped), and
//     only allowed answers are dialled, so DNS rebinding cannot slip between a
//     check and a connect. The default dialer judges the socket address once
//     more in net.Dialer.ControlContext.
//   - Proxies from the environment are ignored. Only 3xx Location redirects
//     are followed (at most Config.MaxRedirects); Refresh headers, meta
//     refresh and scripts never are.
//   - Every refusal by policy wraps a *BlockedError, so errors.Is(err,
//     ErrBlocked) holds, and Config.OnBlocked sees it once.
//   - Resources are bounded: decoded body bytes (ErrBodyTooLarge), response
//     header bytes, dial, TLS handshake, response header and idle timeouts,
//     and an overall deadline per request.
//
// Everything here is safe for concurrent use. A client's connection pool is
// its own: clients built from different Configs never share connections.
package safehttp
