package ratelimit

import (
	"net/http"
	"strconv"
	"time"
)

// SetHeaders describes res to the client in h, following the IETF draft
// "RateLimit header fields for HTTP", draft-ietf-httpapi-ratelimit-headers-10
// (September 2025; the field syntax is unchanged since -08):
//
//	RateLimit-Policy: "<policy>";q=<Rate>;w=<Period in seconds>
//	RateLimit: "<policy>";r=<Remaining>;t=<ResetAfter in seconds>
//
// and, when res refused the request, Retry-After: <RetryAfter in seconds>
// (RFC 9110, section 10.2.3).
//
// Durations are rounded up to whole seconds, so a client that waits as told
// is not refused for having come back early; w and Retry-After are at least
// 1. The quota q is Rate: a policy advertises the sustained rate, and r may
// exceed q when Burst > Rate. policy is sent as a Structured Field String:
// '"' and '\' are escaped and bytes outside printable ASCII become '_'.
//
// Both fields are Structured Field Lists, so SetHeaders adds a list member
// rather than replacing the field: calling it once per limit that applied to
// a request (per route, per client, ...) describes every policy. Retry-After
// keeps the largest of the values set.
func SetHeaders(h http.Header, policy string, res Result) {
	var buf [128]byte
	b := appendString(buf[:0], policy)
	n := len(b)

	b = append(b, ";q="...)
	b = strconv.AppendInt(b, int64(res.Limit.Rate), 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, max(ceilSeconds(res.Limit.Period), 1), 10)
	h.Add("RateLimit-Policy", string(b))

	b = append(b[:n], ";r="...)
	b = strconv.AppendInt(b, int64(max(res.Remaining, 0)), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, max(ceilSeconds(res.ResetAfter), 0), 10)
	h.Add("RateLimit", string(b))

	if res.Allowed {
		return
	}
	retry := max(ceilSeconds(res.RetryAfter), 1)
	if old, err := strconv.ParseInt(h.Get("Retry-After"), 10, 64); err == nil && old > retry {
		return
	}
	h.Set("Retry-After", strconv.FormatInt(retry, 10))
}

// ceilSeconds returns d in seconds, rounded up.
func ceilSeconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if d%time.Second > 0 {
		s++
	}
	return s
}

// appendString appends s as a Structured Field String (RFC 9651, section
// 3.3.3), replacing bytes it cannot carry with '_'.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c > 0x7e:
			b = append(b, '_')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
