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
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
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
	maxDescription = 400
)

// tracer names spans after this package, as every package of the project
// does; it is a no-op until a TracerProvider is installed.
var tracer = otel.Tracer("github.com/wristband-m2m-go/wristband-m2m-go/pkg/m2m")

// token is one cached access token with the instants derived from it. All
// instants come from the clock reading taken when the request was sent, so
// time spent in flight is counted as time already used.
type token struct {
	value   string
	expiry  time.Time // sent + expires_in: the latest the IdP can mean
	useBy   time.Time // expiry - margin: never handed out at or after this
	renewAt time.Time // the refresher renews from here on (set by runFetch)
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

// fetch makes one token request inside an m2m.fetch_token span. It never
// retries: retry policy lives in the single-flight machinery so that every
// caller shares it.
func (s *TokenSource) fetch() fetchResult {
	ctx, span := tracer.Start(s.ctx, "m2m.fetch_token", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("oauth.auth_method", string(s.method))))
	defer span.End()
	res, status := s.request(ctx)
	outcome := "ok"
	if res.err != nil {
		outcome = "transient"
		if isPermanent(res.err) {
			outcome = "permanent"
		}
		// Already masked: no secret, assertion or token in it.
		span.SetStatus(codes.Error, res.err.Error())
	}
	span.SetAttributes(attribute.String("m2m.outcome", outcome))
	if status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", status))
	}
	return res
}

func (s *TokenSource) request(ctx context.Context) (fetchResult, int) {
	s.fetches.Add(1)
	ctx, cancel := context.WithTimeout(ctx, s.requestTimeout)
	defer cancel()

	// Expiry counts from the moment the request leaves: the IdP stamps iat
	// somewhere after this, so sent+expires_in is never later than exp
	// (up to the one-second truncation of exp covered by the margin).
	sent := s.clock.Now()
	body, assertion := s.form, ""
	if s.method == PrivateKeyJWT {
		var err error
		if assertion, err = s.assertion(sent); err != nil {
			return fetchResult{err: err}, 0
		}
		body += "&client_assertion=" + assertion // base64url and dots: nothing to escape
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.tokenURL, strings.NewReader(body))
	if err != nil {
		return fetchResult{err: fmt.Errorf("building token request: %w", err)}, 0
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if s.basicAuth != "" {
		req.Header.Set("Authorization", s.basicAuth)
	}

	resp, err := s.httpClient.Do(req)
	if err != nil {
		var re *redirectError
		if errors.As(err, &re) {
			return fetchResult{err: re}, re.status
		}
		// *url.Error carries method, URL (password stripped) and cause, never
		// headers or body; masked all the same in case a server put a
		// credential in a URL we were sent to.
		return fetchResult{err: &maskedError{msg: s.redact("requesting token: "+err.Error(), assertion), err: err}}, 0
	}
	defer resp.Body.Close()

	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	if err != nil {
		return fetchResult{err: fmt.Errorf("reading token response (HTTP %d): %w", resp.StatusCode, err)}, resp.StatusCode
	}
	if len(raw) > maxBodyBytes {
		return fetchResult{err: fmt.Errorf("token response (HTTP %d) is larger than %d KiB", resp.StatusCode, maxBodyBytes>>10)}, resp.StatusCode
	}

	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		arrived := s.clock.Now()
		return s.parseToken(raw, resp.Header.Get("Content-Type"), sent, arrived), code
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500 || code < 400:
		// 408 is a timeout, not a verdict on the credentials; nor is an
		// unexpected 2xx/3xx (a 204, a 304 from a cache in between).
		ec, ed := s.parseOAuthError(raw, assertion)
		return fetchResult{
			err:        &statusError{statusCode: code, code: ec, descr: ed},
			retryAfter: s.retryAfter(resp.Header.Get("Retry-After")),
		}, code
	default:
		ec, ed := s.parseOAuthError(raw, assertion)
		return fetchResult{err: &OAuthError{StatusCode: code, Code: ec, Description: ed}}, code
	}
}

// maskedError keeps the cause reachable for errors.Is/As (connection
// refused, timeouts) while its text has every credential masked.
type maskedError struct {
	msg string
	err error
}

func (e *maskedError) Error() string { return e.msg }
func (e *maskedError) Unwrap() error { return e.err }

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
func (s *TokenSource) parseOAuthError(body []byte, assertion string) (code, description string) {
	var e struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if json.Unmarshal(body, &e) != nil {
		return "", ""
	}
	return s.clean(e.Error, 64, assertion), s.clean(e.ErrorDescription, maxDescription, assertion)
}

// clean makes server-provided text fit for errors and logs: short, printable,
// and without the client secret (in any form) or the client assertion should
// a server ever echo them. Masking comes first, so that shortening cannot
// cut a secret in half and leave a recognisable part.
func (s *TokenSource) clean(v string, limit int, assertion string) string {
	v = s.redact(v, assertion)
	v = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return -1
		}
		return r
	}, v)
	v = s.redact(v, assertion) // again: a control character could have split a secret
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
