// Package jwtauth validates bearer JWTs (RFC 9068 access tokens, as
// Wristband and Hydra issue them) against an issuer's JWKS, and provides the
// Echo middleware that protects routes with them.
//
// Build one Validator per issuer at start-up; it loads the JWKS in the
// background (jwx jwk.Cache, refreshed every RefreshInterval), and answers
// ErrNotReady (HTTP 503) until a key set was loaded once. After that the
// last good key set keeps serving through JWKS outages.
//
// A token with an unknown kid triggers one JWKS refetch (single flight), then
// a cooldown, so a flood of random kids costs at most one fetch per cooldown;
// tokens with known kids never wait on it. A token that passed every check is
// cached, keyed by its SHA-256, until exp+leeway or until its key leaves the
// JWKS, so repeated requests with the same token (the M2M case) skip the
// signature check.
//
// # Answers
//
// See Validator.Middleware: 401 with a bare Bearer challenge for a missing
// token or another scheme, 400 invalid_request for a malformed
// Authorization header, 401 invalid_token, 403 insufficient_scope, and 503
// with Retry-After while no key set was ever loaded. Never 500.
//
// # Benchmarks
//
// Measured with
//
//	cd pkg && go test -run '^$' -bench . -benchmem ./jwtauth/
//
// on a 2-core AMD EPYC, Go 1.26, one RS256 2048-bit token, checking iss, aud
// and exp:
//
//	benchmark                                   ns/op    B/op  allocs  x floor
//	FloorRSAVerify (sha256+rsa.VerifyPKCS1v15)  23494    1376       9     1.00
//	ValidateCold (this package, cache off)      26618    2648      43     1.13
//	ValidateCached (same token again)             476       0       0     0.020
//	MiddlewareCold (Echo route)                 27265    3256      50     1.16
//	MiddlewareCached (Echo route)                1009     608       7     0.043
//	EchoJWTKeyfunc (echo-jwt v4 + keyfunc v3)   30279    6017      99     1.29
//	Auth0Validator (go-jwt-middleware v2)       36491   11001     144     1.55
//	Auth0Middleware (its net/http CheckJWT)     38654   12181     156     1.65
package jwtauth
