package collect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pedal-project/pedal/internal/safehttp"
)

// Error codes of a failed collection, as the API reports them.
const (
	CodeInvalidURL             = "invalid_url"
	CodeBlockedDestination     = "blocked_destination"
	CodeTimeout                = "timeout"
	CodeHTTPError              = "http_error"
	CodeUnsupportedContentType = "unsupported_content_type"
	CodeConnectionFailed       = "connection_failed"
	CodeDNSFailed              = "dns_failed"
	CodeTLSError               = "tls_error"
	CodeTooManyRedirects       = "too_many_redirects"
	CodeHostUnavailable        = "host_unavailable" // the host's circuit breaker is open
)

// Error is a failed collection. Message is meant for the requester: it names
// what went wrong without echoing response bodies or resolved addresses.
type Error struct {
	Code       string
	Message    string
	HTTPStatus int           // the page's status, when one was received
	Retryable  bool          // worth another attempt
	RetryAfter time.Duration // the server's Retry-After, if any
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// classify maps a client error to an *Error.
func classify(err error) *Error {
	var (
		be      *safehttp.BlockedError
		dnsErr  *net.DNSError
		netErr  net.Error
		certErr *tls.CertificateVerificationError
		uaErr   x509.UnknownAuthorityError
		hostErr x509.HostnameError
		invErr  x509.CertificateInvalidError
		recErr  tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &be) && be.Reason == "invalid_url":
		return &Error{Code: CodeInvalidURL, Message: "the URL is not valid"}
	case errors.As(err, &be):
		// Name the rule, not the address: the address of an internal name is
		// what an attacker probing the network would like to learn.
		return &Error{Code: CodeBlockedDestination, Message: fmt.Sprintf("the destination is not allowed (%s)", be.Reason)}
	case errors.Is(err, safehttp.ErrTooManyRedirects):
		return &Error{Code: CodeTooManyRedirects, Message: "too many redirects"}
	case errors.Is(err, safehttp.ErrBodyTooLarge):
		return &Error{Code: CodeHTTPError, Message: "the response is larger than allowed"}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return &Error{Code: CodeTimeout, Message: "the server did not answer in time", Retryable: true}
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return &Error{Code: CodeDNSFailed, Message: fmt.Sprintf("no such host %q", dnsErr.Name)}
		}
		return &Error{Code: CodeDNSFailed, Message: fmt.Sprintf("could not resolve %q", dnsErr.Name), Retryable: true}
	case errors.As(err, &certErr), errors.As(err, &uaErr), errors.As(err, &hostErr), errors.As(err, &invErr), errors.As(err, &recErr):
		return &Error{Code: CodeTLSError, Message: "TLS failed: the server's certificate or handshake was not accepted"}
	}
	return &Error{Code: CodeConnectionFailed, Message: "could not connect to the server or read its answer", Retryable: true}
}
