// Package jwtauth validates bearer JWTs (RFC 9068 access tokens, as
// Wristband and Hydra issue them) against an issuer's JWKS, and provides the
// Echo middleware that protects routes with them.
//
// Build one Validator per issuer at start-up. It loads the JWKS in the
// background and answers ErrNotReady (HTTP 503) until a key set was loaded
// once; the first fetch is retried at 50 ms, doubling, and logged at debug
// for the first 2 s (the IdP is usually just starting too). The set is
// refreshed every RefreshInterval.
//
// # Verification
//
// jwx does the JOSE work: jws.Verify parses the compact JWS and checks the
// signature with exactly one key and algorithm, chosen by kid from a key set
// filtered when the JWKS is loaded (kid required, "use"/"key_ops" respected,
// RSA >= 2048 bits, one allowed algorithm per key: its "alg", or when it has
// none the single allowed algorithm that fits its type, else the key is
// refused). The registered claims are checked by jwx's jwt.Validate
// (iss, exp required, nbf, iat, aud, with the leeway and our clock). Around them, checks jwx does not make: size and shape before
// decoding, canonical base64 and a header that is exactly one JSON object
// (jws.Verify verifies a re-encoding of what it parsed, so this makes it the
// bytes received), "crit", "b64", JWE headers, nested "cty": JWT, the header
// alg against the allow-list, typ, and strict claim types. "jku", "x5u",
// "jwk" and "x5c" are never read.
//
// # Keys
//
// A well-formed 200 JWKS answer is honoured at once: a key removed, or no
// longer for signatures, stops verifying, together with the cached tokens it
// verified; an empty set refuses every token until the IdP publishes a key.
// Transport errors, other statuses and bodies that are not a JWKS keep the
// last good set. A token with an unknown kid triggers one refetch (single
// flight), at most one per UnknownKIDCooldown (default 5 s, a
// golang.org/x/time/rate limiter), so a flood of random kids costs at most
// one fetch per cooldown; tokens with known kids never wait on it. JWKS
// requests follow redirects only to https on the same host name.
//
// # Cache
//
// A token that passed every check is cached, keyed by its SHA-256, until
// exp+leeway or until its key leaves the JWKS, so repeated requests with the
// same token (the M2M case) skip verification: ~0.7 µs of CPU and no
// allocation (README.md, ValidateCached).
//
// # Answers
//
// See Validator.Middleware: 401 with a bare Bearer challenge for a missing
// token or another scheme, 400 invalid_request for a malformed
// Authorization header, 401 invalid_token, 403 insufficient_scope (scopes,
// client, sub_kind), and 503 with Retry-After while no key set was ever
// loaded. Never 500.
//
// # Observability
//
// Stats counts JWKS fetches by outcome, rejections by reason
// (FailureReasons), cache hits and misses. Spans "jwtauth.fetch_jwks" and
// "jwtauth.validate" (cold path only) go to otel's global TracerProvider.
//
// The benchmark figures are in README.md.
package jwtauth
