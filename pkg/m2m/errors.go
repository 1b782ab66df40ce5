package m2m

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// ErrTokenUnavailable is matched (errors.Is) by every error Token returns, so
// that a caller can map "no token" to one answer (the gateway answers 503)
// whatever the underlying reason.
var ErrTokenUnavailable = errors.New("m2m: access token unavailable")

// ErrNoToken is Ready's answer before the first token has been fetched (or
// after the last one expired or was invalidated) when no fetch has failed.
var ErrNoToken = errors.New("no valid access token held")

// ErrClosed is returned (wrapped in ErrTokenUnavailable) by Token after Close.
var ErrClosed = errors.New("token source closed")

// errClosed is built once: Token after Close must not allocate per call.
var errClosed = fmt.Errorf("%w: %w", ErrTokenUnavailable, ErrClosed)

// unavailable gives err the ErrTokenUnavailable identity while keeping it
// reachable with errors.Is and errors.As.
func unavailable(err error) error {
	return fmt.Errorf("%w: %w", ErrTokenUnavailable, err)
}

// OAuthError is a permanent rejection by the token endpoint: any 4xx other
// than 408 and 429, typically RFC 6749 invalid_client or invalid_grant. It is
// not retried on demand (only slowly in the background, because an operator
// may fix the client in the IdP). Code and Description come from the RFC 6749
// error body when there is one; neither ever holds the client secret.
type OAuthError struct {
	StatusCode  int    // HTTP status of the token response
	Code        string // RFC 6749 "error", e.g. "invalid_client"; empty if the body had none
	Description string // RFC 6749 "error_description", shortened and cleaned
}

func (e *OAuthError) Error() string {
	var b strings.Builder
	b.WriteString("token endpoint rejected the client: HTTP ")
	b.WriteString(strconv.Itoa(e.StatusCode))
	if t := http.StatusText(e.StatusCode); t != "" {
		b.WriteString(" ")
		b.WriteString(t)
	}
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Description != "" {
		b.WriteString(" (")
		b.WriteString(e.Description)
		b.WriteString(")")
	}
	return b.String()
}

// statusError is a retryable HTTP failure of the token endpoint (5xx, 408,
// 429). It is unexported: callers branch on OAuthError (permanent) versus
// everything else (transient), not on status codes.
type statusError struct {
	statusCode  int
	code, descr string
}

func (e *statusError) Error() string {
	s := "token endpoint answered HTTP " + strconv.Itoa(e.statusCode)
	if t := http.StatusText(e.statusCode); t != "" {
		s += " " + t
	}
	if e.code != "" {
		s += ": " + e.code
	}
	if e.descr != "" {
		s += " (" + e.descr + ")"
	}
	return s
}

// isPermanent reports whether retrying err right away is pointless.
func isPermanent(err error) bool {
	var oe *OAuthError
	return errors.As(err, &oe)
}
