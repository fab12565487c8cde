package jwtauth

import (
	"fmt"
	"net/http"
	"strings"
)

// BearerToken returns the token of the request's "Authorization: Bearer"
// header. The scheme is matched case-insensitively (RFC 7235). It reports
// [ErrMissingToken] when the header is absent, uses another scheme or carries
// no token, and [ErrInvalidToken] when the header is repeated.
func BearerToken(r *http.Request) (string, error) {
	values := r.Header.Values("Authorization")
	switch len(values) {
	case 0:
		return "", fmt.Errorf("%w: no Authorization header", ErrMissingToken)
	case 1:
	default:
		return "", fmt.Errorf("%w: more than one Authorization header", ErrInvalidToken)
	}
	scheme, token, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: Authorization scheme is not Bearer", ErrMissingToken)
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", fmt.Errorf("%w: Authorization header has an empty Bearer token", ErrMissingToken)
	}
	return token, nil
}
