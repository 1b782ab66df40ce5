package m2m

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	// maxBodyBytes bounds what is read from the token endpoint. A Wristband
	// token response is well under 4 KiB; 64 KiB leaves room for large JWTs
	// while a misdirected URL (an HTML page, a log stream) cannot make the
	// gateway buffer megabytes.
	maxBodyBytes = 64 << 10

	// maxLifetime caps expires_in. Wristband lifetimes are set per
	// application (1800 s in the sample); longer than a day is either a
	// unit bug on the server (milliseconds sent as seconds) or a token we
	// should not trust that long anyway (revocation, key rotation). Longer
	// values are clamped, not rejected: the token is simply renewed sooner.
	maxLifetime = 24 * time.Hour

	// maxRetryAfter bounds a Retry-After so that a bogus header cannot park
	// token renewal for hours.
	maxRetryAfter = 5 * time.Minute

	// maxDescription bounds the error_description kept in errors and logs.
	maxDescription = 200
)

const formBody = "grant_type=client_credentials"

// token is one cached access token with the instants derived from it. All
// instants come from the clock reading taken when the request was sent, so
// time spent in flight is counted as time already used.
type token struct {
	value   string
	expiry  time.Time // sent + expires_in: the latest the IdP can mean
	useBy   time.Time // expiry - margin: never handed out at or after this
	renewAt time.Time // the refresher renews from here on
	arrived time.Time // when the token response was received

	// useBy and renewAt as offsets from TokenSource.epoch, for the cached
	// path's cheaper clock read.
	useByOff, renewAtOff time.Duration
}

// fetchResult is the outcome of one token request.
type fetchResult struct {
	tok        *token
	err        error
	retryAfter time.Duration // from a 429/503 Retry-After header, 0 if none
	clamped    time.Duration // non-zero: the margin had to be shrunk to this
}

// fetch makes one token request. It never retries: retry policy lives in the
// single-flight machinery so that every caller shares it.
func (s *TokenSource) fetch() fetchResult {
	s.fetches.Add(1)
	ctx, cancel := context.WithTimeout(s.ctx, s.requestTimeout)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.tokenURL, strings.NewReader(formBody))
	if err != nil {
		return fetchResult{err: fmt.Errorf("building token request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 2.3.1: both parts are form-url-encoded before Basic encoding.
	req.SetBasicAuth(url.QueryEscape(s.clientID), url.QueryEscape(s.clientSecret))

	// Expiry counts from the moment the request leaves: the IdP stamps iat
	// somewhere after this, so sent+expires_in is never later than exp
	// (up to the one-second truncation of exp covered by the margin).
	sent := s.clock.Now()
	resp, err := s.httpClient.Do(req)
	if err != nil {
		// *url.Error carries method, URL (password redacted) and cause, never
		// headers: the Basic credentials cannot leak through it.
		return fetchResult{err: fmt.Errorf("requesting token: %w", err)}
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	if err != nil {
		return fetchResult{err: fmt.Errorf("reading token response (HTTP %d): %w", resp.StatusCode, err)}
	}
	if len(body) > maxBodyBytes {
		return fetchResult{err: fmt.Errorf("token response (HTTP %d) is larger than %d KiB", resp.StatusCode, maxBodyBytes>>10)}
	}

	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		arrived := s.clock.Now()
		return s.parseToken(body, resp.Header.Get("Content-Type"), sent, arrived)
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
		// 408 is a timeout, not a verdict on the credentials.
		ec, ed := s.parseOAuthError(body)
		return fetchResult{
			err:        &statusError{statusCode: code, code: ec, descr: ed},
			retryAfter: s.retryAfter(resp.Header.Get("Retry-After")),
		}
	default:
		ec, ed := s.parseOAuthError(body)
		return fetchResult{err: &OAuthError{StatusCode: code, Code: ec, Description: ed}}
	}
}

type tokenResponse struct {
	AccessToken string          `json:"access_token"`
	TokenType   string          `json:"token_type"`
	ExpiresIn   json.RawMessage `json:"expires_in"`
}

func (s *TokenSource) parseToken(body []byte, contentType string, sent, arrived time.Time) fetchResult {
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		// The body is not quoted: on a half-broken server it could hold a token.
		return fetchResult{err: fmt.Errorf("token response is not a JSON object (Content-Type %.64q, %d bytes)", contentType, len(body))}
	}
	var errs []error
	if tr.AccessToken == "" {
		errs = append(errs, errors.New("access_token is missing"))
	} else if !headerSafe(tr.AccessToken) {
		errs = append(errs, errors.New("access_token holds characters not allowed in an Authorization header"))
	}
	if !strings.EqualFold(tr.TokenType, "Bearer") {
		errs = append(errs, fmt.Errorf("token_type is %.32q, want Bearer", tr.TokenType))
	}
	lifetime, err := parseExpiresIn(tr.ExpiresIn)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fetchResult{err: fmt.Errorf("invalid token response: %w", errors.Join(errs...))}
	}
	if lifetime > maxLifetime {
		lifetime = maxLifetime
	}

	margin := s.margin
	var clamped time.Duration
	if margin > lifetime/2 {
		// A token living less than twice the margin would be unusable. Half
		// its life is the best we can do; the operator is told once.
		margin = lifetime / 2
		clamped = margin
	}
	t := &token{value: tr.AccessToken, expiry: sent.Add(lifetime), arrived: arrived}
	t.useBy = t.expiry.Add(-margin)
	if !arrived.Before(t.useBy) {
		return fetchResult{err: fmt.Errorf("token arrived with less than the %s margin left (expires_in %s, response took %s)",
			margin, lifetime, arrived.Sub(sent).Round(time.Millisecond))}
	}
	// Renew after 80% of the usable life still ahead: early enough that a
	// failing IdP leaves a fifth of it for retries, late enough that a
	// steady state costs barely more fetches than the lifetime dictates.
	t.renewAt = arrived.Add(t.useBy.Sub(arrived) * 4 / 5)
	t.useByOff, t.renewAtOff = t.useBy.Sub(s.epoch), t.renewAt.Sub(s.epoch)
	return fetchResult{tok: t, clamped: clamped}
}

// parseExpiresIn accepts a JSON number or a numeric string (some servers
// quote it), in seconds.
func parseExpiresIn(raw json.RawMessage) (time.Duration, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, errors.New("expires_in is missing")
	}
	str := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &str); err != nil {
			return 0, errors.New("expires_in is not a number")
		}
	}
	secs, err := strconv.ParseFloat(strings.TrimSpace(str), 64)
	if err != nil || math.IsNaN(secs) || math.IsInf(secs, 0) {
		return 0, fmt.Errorf("expires_in %.32q is not a number", str)
	}
	if secs <= 0 {
		return 0, fmt.Errorf("expires_in %v is not positive", secs)
	}
	if secs > maxLifetime.Seconds() {
		return maxLifetime + time.Second, nil // clamped by the caller
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// headerSafe reports whether v can go into an Authorization header as is:
// visible ASCII only, so a hostile response cannot inject header lines.
func headerSafe(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x21 || v[i] > 0x7e {
			return false
		}
	}
	return true
}

// parseOAuthError extracts RFC 6749 5.2 fields from an error body, if it is
// one. Anything else yields empty strings: the status code speaks then.
func (s *TokenSource) parseOAuthError(body []byte) (code, description string) {
	var e struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if json.Unmarshal(body, &e) != nil {
		return "", ""
	}
	return s.clean(e.Error, 64), s.clean(e.ErrorDescription, maxDescription)
}

// clean makes server-provided text fit for errors and logs: short, printable,
// and without the client secret should a server ever echo it.
func (s *TokenSource) clean(v string, limit int) string {
	if s.clientSecret != "" {
		v = strings.ReplaceAll(v, s.clientSecret, "[REDACTED]")
	}
	v = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return -1
		}
		return r
	}, v)
	if len(v) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(v[cut]) {
			cut--
		}
		v = v[:cut] + "..."
	}
	return v
}

// retryAfter parses a Retry-After value (delay-seconds or HTTP-date).
func (s *TokenSource) retryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(s.clock.Now())
	}
	return min(max(d, 0), maxRetryAfter)
}
