package jwtauth

import (
	"errors"
	"log/slog"
)

// ErrNotReady is returned by Validate and Ready while no JWKS has ever been
// loaded. The middleware answers it with 503 and Retry-After: the token may
// be fine, we just cannot tell yet, and 401 would make clients discard it.
var ErrNotReady = errors.New("jwtauth: no key set loaded yet")

// ErrInvalidToken is wrapped by every rejection of the token itself; use
// errors.As with *TokenError for the reason.
var ErrInvalidToken = errors.New("invalid token")

// Failure reasons: the fixed, small set of values of TokenError.Reason and
// the keys of Stats.Failures. Metrics label by them, never by anything a
// caller sent.
const (
	ReasonMissing     = "missing"       // no token
	ReasonMalformed   = "malformed"     // not a well-formed compact JWS / JWT, or too large
	ReasonAlgorithm   = "algorithm"     // header alg outside the allow-list, or not the key's
	ReasonSignature   = "signature"     // signature does not verify
	ReasonUnknownKID  = "unknown_kid"   // no key with that kid, even after a refetch
	ReasonKeyUnusable = "key_unusable"  // the kid names a key we refused (use=enc, short RSA, ...)
	ReasonExpired     = "expired"       // exp (+leeway) has passed
	ReasonNotYetValid = "not_yet_valid" // nbf or iat in the future (beyond leeway)
	ReasonIssuer      = "issuer"        // iss is not the configured issuer
	ReasonAudience    = "audience"      // aud does not contain a configured audience
	ReasonType        = "type"          // header typ is not the required token type
	ReasonClaims      = "claims"        // a claim has the wrong type, or exp is missing
	ReasonForbidden   = "forbidden"     // valid token, refused by the route (scope, client, sub_kind): 403
	ReasonNotReady    = "not_ready"     // no key set loaded yet: 503
	ReasonUnsupported = "unsupported"   // JWE, nested JWT, crit, b64
	ReasonOther       = "other"         // anything else
)

// FailureReasons lists every reason, in a stable order. Stats.Failures has
// exactly these keys.
var FailureReasons = []string{
	ReasonMissing, ReasonMalformed, ReasonAlgorithm, ReasonSignature, ReasonUnknownKID,
	ReasonKeyUnusable, ReasonExpired, ReasonNotYetValid, ReasonIssuer, ReasonAudience,
	ReasonType, ReasonClaims, ReasonForbidden, ReasonNotReady, ReasonUnsupported, ReasonOther,
}

// reasonIndex maps a reason to its counter; built once from FailureReasons.
var reasonIndex = func() map[string]int {
	m := make(map[string]int, len(FailureReasons))
	for i, r := range FailureReasons {
		m[r] = i
	}
	return m
}()

// TokenError says why a token was rejected. Description is short, fixed text
// that is safe to send to the client (error_description); it never contains
// any part of the token. Reason is one of FailureReasons.
type TokenError struct {
	Description string
	Reason      string
	Err         error // detail for logs; may be nil
}

func (e *TokenError) Error() string {
	if e.Err != nil {
		return "invalid token: " + e.Description + ": " + e.Err.Error()
	}
	return "invalid token: " + e.Description
}

// Unwrap lets errors.Is match both ErrInvalidToken and the detail.
func (e *TokenError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalidToken, e.Err}
	}
	return []error{ErrInvalidToken}
}

func invalid(reason, desc string, err error) *TokenError {
	return &TokenError{Description: desc, Reason: reason, Err: err}
}

// Rejections that carry no detail are allocated once: the cached path
// returns them without allocating.
var (
	errMissingToken  = invalid(ReasonMissing, "missing token", nil)
	errTooLarge      = invalid(ReasonMalformed, "token too large", nil)
	errExpiredCached = invalid(ReasonExpired, "token expired", nil)
)

func errAttr(err error) slog.Attr { return slog.String("error", err.Error()) }
