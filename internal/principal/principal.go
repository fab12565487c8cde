// Package principal carries the authenticated caller of a request from the
// gateway, which authenticates it, to the services, which authorise by it.
// It holds no state; its functions are safe for concurrent use.
package principal

import "context"

// Roles.
const (
	RoleUser  = "user"
	RoleAdmin = "admin"
)

// Principal is an authenticated caller.
type Principal struct {
	Subject string // the token's sub
	Role    string // RoleUser or RoleAdmin
}

// IsAdmin reports whether p has the admin role.
func (p Principal) IsAdmin() bool { return p.Role == RoleAdmin }

type ctxKey struct{}

// With returns ctx carrying p.
func With(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// From returns the principal ctx carries; ok is false for an anonymous
// request (a public route, or a service called without the gateway).
func From(ctx context.Context) (p Principal, ok bool) {
	p, ok = ctx.Value(ctxKey{}).(Principal)
	return p, ok
}
