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
package jwtauth
