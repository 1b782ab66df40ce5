package m2m

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
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

// UnavailableError is what Token returns when it has no token to give and
// knows when the next token request will be: a server can put RetryIn in a
// Retry-After header. It matches errors.Is(err, ErrTokenUnavailable), and
// errors.As reaches the cause (an *OAuthError for a rejected client).
type UnavailableError struct {
	Err error // why: the last fetch error, or a request still in flight
	// RetryIn is how long until the next token request is due, counted from
	// the Token call; 0 when one is in flight or due now.
	RetryIn time.Duration
}

func (e *UnavailableError) Error() string {
	msg := ErrTokenUnavailable.Error() + ": " + e.Err.Error()
	if e.RetryIn > 0 {
		msg += " (next token request in " + e.RetryIn.Round(time.Millisecond).String() + ")"
	}
	return msg
}

// Unwrap exposes both identities: ErrTokenUnavailable and the cause.
func (e *UnavailableError) Unwrap() []error { return []error{ErrTokenUnavailable, e.Err} }

// RetryAfter returns how long a caller refused by Token should wait before
// trying again: the time until the source's next token request, at least
// one second (the granularity of an HTTP Retry-After), rounded up. Errors
// without that information give one second.
func RetryAfter(err error) time.Duration {
	var ue *UnavailableError
	if errors.As(err, &ue) && ue.RetryIn > time.Second {
		return (ue.RetryIn + time.Second - 1).Truncate(time.Second)
	}
	return time.Second
}

// redirectError is a refused redirect from the token endpoint. Following it
// would send the client credentials (Basic header, form secret, assertion)
// to wherever the redirect points, so the token URL must be the final one.
type redirectError struct {
	status int
	to     string // scheme://host/path of the target, no query
}

func (e *redirectError) Error() string {
	return "token endpoint answered a redirect (HTTP " + strconv.Itoa(e.status) + ") to " + e.to +
		"; redirects are refused so that the client credentials go nowhere else: set the token URL to the final address"
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

// isPermanent reports whether retrying err soon is pointless: a rejected
// client or a refused redirect stays so until someone changes a setting.
func isPermanent(err error) bool {
	var oe *OAuthError
	var re *redirectError
	return errors.As(err, &oe) || errors.As(err, &re)
}
