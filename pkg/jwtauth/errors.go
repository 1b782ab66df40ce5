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

// TokenError says why a token was rejected. Description is short, fixed text
// that is safe to send to the client (error_description); it never contains
// any part of the token.
type TokenError struct {
	Description string
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

func invalid(desc string, err error) *TokenError { return &TokenError{Description: desc, Err: err} }

func errAttr(err error) slog.Attr { return slog.String("error", err.Error()) }
