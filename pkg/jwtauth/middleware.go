package jwtauth

import (
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
)

// Option adds an authorization rule to one Middleware.
type Option func(*rules)

type rules struct {
	scopes   []string
	clients  []string
	subKinds []string
}

// RequireScopes makes the route demand every one of scopes; a valid token
// without them gets 403 insufficient_scope with scope="..." (RFC 6750 §3.1).
func RequireScopes(scopes ...string) Option {
	return func(r *rules) { r.scopes = append(r.scopes, scopes...) }
}

// AllowClients restricts the route to tokens whose client_id is one of
// clientIDs; others get 403 insufficient_scope. May be given more than once;
// the lists add up.
func AllowClients(clientIDs ...string) Option {
	return func(r *rules) { r.clients = append(r.clients, clientIDs...) }
}

// AllowSubKinds restricts the route to tokens whose sub_kind claim is one
// of kinds (Wristband: "client" for M2M client tokens, "user" for user
// tokens); others, and tokens without sub_kind, get 403 insufficient_scope.
// May be given more than once; the lists add up.
func AllowSubKinds(kinds ...string) Option {
	return func(r *rules) { r.subKinds = append(r.subKinds, kinds...) }
}

const claimsKey = "github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth.claims"

// ClaimsFrom returns the claims the Middleware stored for this request.
func ClaimsFrom(c echo.Context) (*Claims, bool) {
	cl, ok := c.Get(claimsKey).(*Claims)
	return cl, ok && cl != nil
}

// Middleware authenticates requests by their bearer token and applies the
// route's authorization rules. Answers (RFC 6750 §3 and §3.1):
//
//   - no Authorization header, or a scheme other than Bearer: 401 with
//     `WWW-Authenticate: Bearer realm="..."` and no error code (RFC 6750 §3.1:
//     a request without Bearer credentials gets a bare challenge, which also
//     tells a client using another scheme which one we take);
//   - malformed request: two Authorization headers, "Bearer" with no token,
//     or a token with characters outside b64token: 400 error="invalid_request";
//   - the token fails validation, including a "typ" other than
//     Config.TokenType (it is not an access token for us): 401 error="invalid_token";
//   - valid token lacking the route's scopes, client or sub_kind: 403 error="insufficient_scope";
//   - no JWKS ever loaded: 503 with Retry-After (we cannot judge the token;
//     a 401 would make the client drop a good token).
//
// The scheme is matched case-insensitively ("bearer" works): RFC 7235 §2.1.
// Every answer has a JSON body {"error": ..., "error_description": ...}.
// The reason is logged once per rejected request at info (503 at warn);
// the token never is.
func (v *Validator) Middleware(opts ...Option) echo.MiddlewareFunc {
	var r rules
	for _, o := range opts {
		o(&r)
	}
	realm := `Bearer realm="` + quoteEscape(v.cfg.Realm) + `"`
	scopeAttr := ""
	if len(r.scopes) > 0 {
		scopeAttr = `, scope="` + quoteEscape(strings.Join(r.scopes, " ")) + `"`
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			vals := req.Header.Values(echo.HeaderAuthorization)
			if len(vals) == 0 {
				v.countFailure(ReasonMissing)
				return v.reject(c, http.StatusUnauthorized, realm, "", "missing bearer token", nil)
			}
			if len(vals) > 1 {
				v.countFailure(ReasonMalformed)
				return v.reject(c, http.StatusBadRequest, realm, "invalid_request", "more than one Authorization header", nil)
			}
			token, status, desc := bearerToken(vals[0])
			if status != 0 {
				code, reason := "invalid_request", ReasonMalformed
				if status == http.StatusUnauthorized {
					code, reason = "", ReasonMissing
				}
				v.countFailure(reason)
				return v.reject(c, status, realm, code, desc, nil)
			}
			claims, err := v.Validate(req.Context(), token)
			if err != nil {
				if errors.Is(err, ErrNotReady) {
					return v.unavailable(c, err)
				}
				desc := "invalid token"
				var te *TokenError
				if errors.As(err, &te) {
					desc = te.Description
				}
				return v.reject(c, http.StatusUnauthorized, realm, "invalid_token", desc, err)
			}
			// A valid token that this route does not admit: 403
			// insufficient_scope (RFC 6750 §3.1: the token is fine, its
			// privileges are not enough), never 401, which would tell the
			// client to get a new token that would fare no better.
			for _, s := range r.scopes {
				if !claims.HasScope(s) {
					v.countFailure(ReasonForbidden)
					return v.reject(c, http.StatusForbidden, realm, "insufficient_scope", "token lacks a required scope", scopeAttr)
				}
			}
			if len(r.clients) > 0 && !slices.Contains(r.clients, claims.ClientID) {
				v.countFailure(ReasonForbidden)
				return v.reject(c, http.StatusForbidden, realm, "insufficient_scope", "client not allowed", scopeAttr)
			}
			if len(r.subKinds) > 0 && !slices.Contains(r.subKinds, claims.SubKind) {
				v.countFailure(ReasonForbidden)
				return v.reject(c, http.StatusForbidden, realm, "insufficient_scope", "token kind not allowed", scopeAttr)
			}
			c.Set(claimsKey, claims)
			return next(c)
		}
	}
}

// bearerToken extracts the token from an Authorization value. status is 0
// on success, 401 for another scheme, 400 for a malformed Bearer value.
func bearerToken(h string) (token string, status int, desc string) {
	const scheme = "Bearer"
	if len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) ||
		(len(h) > len(scheme) && h[len(scheme)] != ' ') {
		return "", http.StatusUnauthorized, "authorization scheme must be Bearer"
	}
	rest := strings.TrimLeft(h[len(scheme):], " ")
	if rest == "" {
		return "", http.StatusBadRequest, "bearer token is empty"
	}
	// RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
	i := 0
	for ; i < len(rest); i++ {
		c := rest[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	j := i
	for j < len(rest) && rest[j] == '=' {
		j++
	}
	if i == 0 || j != len(rest) {
		return "", http.StatusBadRequest, "malformed Authorization header"
	}
	return rest, 0, ""
}

// reject answers a 4xx. With err a token error (logged) or, for 403, the
// scope attribute to append to the challenge.
func (v *Validator) reject(c echo.Context, status int, challenge, code, desc string, detail any) error {
	h := c.Response().Header()
	if code != "" {
		challenge += `, error="` + code + `", error_description="` + quoteEscape(desc) + `"`
	}
	var err error
	switch d := detail.(type) {
	case string:
		challenge += d
	case error:
		err = d
	}
	h.Set(echo.HeaderWWWAuthenticate, challenge)
	h.Set(echo.HeaderCacheControl, "no-store")
	v.logReject(c, slog.LevelInfo, status, desc, err)
	body := service.ErrorBody{Error: code, Description: desc}
	if code == "" {
		body.Error = "unauthorized"
	}
	return c.JSON(status, body)
}

func (v *Validator) unavailable(c echo.Context, err error) error {
	h := c.Response().Header()
	h.Set(echo.HeaderRetryAfter, strconv.Itoa(v.retryAfter()))
	h.Set(echo.HeaderCacheControl, "no-store")
	v.logReject(c, slog.LevelWarn, http.StatusServiceUnavailable, "signing keys not loaded yet", err)
	return c.JSON(http.StatusServiceUnavailable, service.ErrorBody{Error: "temporarily_unavailable", Description: "signing keys not loaded yet"})
}

func (v *Validator) logReject(c echo.Context, level slog.Level, status int, desc string, err error) {
	req := c.Request()
	if !v.log.Enabled(req.Context(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.Int("status", status),
		slog.String("reason", desc),
		slog.String("method", req.Method),
		slog.String("path", req.URL.Path),
	}
	if id := req.Header.Get(echo.HeaderXRequestID); id != "" {
		attrs = append(attrs, slog.String("request_id", id))
	} else if id := c.Response().Header().Get(echo.HeaderXRequestID); id != "" {
		attrs = append(attrs, slog.String("request_id", id))
	}
	if err != nil {
		attrs = append(attrs, errAttr(err))
	}
	v.log.LogAttrs(req.Context(), level, "request rejected", attrs...)
}

// quoteEscape makes s safe inside an RFC 7230 quoted-string.
func quoteEscape(s string) string {
	if !strings.ContainsAny(s, `"\`) {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
}
