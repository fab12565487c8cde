// Package jwtauth verifies the JSON Web Tokens that clients of pedal's API
// gateway present as "Authorization: Bearer <jwt>".
//
// A [Verifier] accepts HS256 tokens signed with a shared key from
// configuration (see [ParseKey] and [LoadOrCreateKey]) and RS256, ES256 and
// EdDSA tokens signed with a key published in a JWKS document, which it fetches
// at start, refreshes in the background and refetches (rate-limited) when a
// token names an unknown key ID. [Mint] issues HS256 tokens for the embedded
// default's "pedal token" command.
//
// # Invariants
//
//   - The algorithm comes from an allow-list fixed at construction: HS256 only
//     when an HMAC key is configured, RS256, ES256 and EdDSA only when a JWKS URL
//     is. "none" is never accepted. Independently, the key lookup returns a key
//     whose type matches the token's algorithm (a []byte only for HS256, an
//     *rsa.PublicKey only for RS256, ...), so a token signed HS256 with a public
//     key as the secret fails even if one of the two checks were missing.
//   - exp is required, nbf and iat are honoured, all with the configured
//     leeway; iss and aud are checked when configured; sub must be non-empty and
//     role, when present, must be "user" or "admin".
//   - The session cache holds only tokens that passed full verification, keyed
//     by the SHA-256 of the token, and never answers for a token at or past its
//     exp. Revocation is checked on every call, cache hit or not.
//   - A revocation lasts until the token's exp plus the leeway, so a revoked
//     token cannot come back to life inside the leeway window.
//   - Errors wrap one of the exported sentinels ([ErrMissingToken],
//     [ErrInvalidToken], [ErrExpired], [ErrRevoked]) and never contain the
//     token or key material.
//
// # Concurrency
//
// A [Verifier] is safe for concurrent use by many goroutines; so is
// [MemoryRevocations]. [Verifier.Close] stops the JWKS refresh and may be called
// more than once. The package has no global state.
package jwtauth
