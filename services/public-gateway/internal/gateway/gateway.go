// Package gateway holds the public gateway's routes and its client for
// protected-data.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-resty/resty/v2"
	"github.com/labstack/echo/v4"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/lb"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/m2m"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
)

// Paths.
const (
	PublicPath    = "/api/public/data"
	ProtectedPath = "/api/protected/data"
)

// maxDownstreamBody bounds what the gateway reads from protected-data: its
// answers are tens of bytes.
const maxDownstreamBody = 1 << 20

// PublicResponse is the public route's body; field order is the reference
// demo's.
type PublicResponse struct {
	PublicData    string `json:"publicData"`
	ProtectedData string `json:"protectedData"`
}

// Config of the gateway's downstream side.
type Config struct {
	ProtectedDataURL string
	Timeout          time.Duration // whole downstream call, retries included
	ExposeServedBy   bool          // pass X-Served-By on to callers
	Transport        http.RoundTripper
	Tokens           *m2m.TokenSource
	Log              *slog.Logger
}

// Gateway serves the public routes.
type Gateway struct {
	api     *resty.Client // carries the gateway's own M2M token
	forward *resty.Client // carries the caller's Authorization, never ours
	timeout time.Duration
	exposed []string // response headers passed on by the forwarding route
	served  bool
	log     *slog.Logger

	refusedLog, timeoutLog, unreachableLog logEvery
}

// New builds the two downstream clients once; they are safe for concurrent
// use because nothing is set on them per request.
func New(cfg Config) *Gateway {
	mk := func() *resty.Client {
		c := resty.NewWithClient(&http.Client{Transport: cfg.Transport})
		c.SetBaseURL(cfg.ProtectedDataURL).
			SetLogger(discardLogger{}).
			SetDisableWarn(true).
			SetResponseBodyLimit(maxDownstreamBody).
			// A redirect is answered, never followed: Go would resend the
			// Authorization header (our token, or the caller's) to any port
			// of the same host and to its subdomains, and every new host
			// would get a pool in pkg/lb, re-resolved for ever.
			SetRedirectPolicy(resty.RedirectPolicyFunc(func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse })).
			SetHeader("Accept", "application/json").
			SetHeader("User-Agent", "wristband-m2m-go/public-gateway")
		return c
	}
	api := mk()
	// A 401 from protected-data means our token was refused (revoked, key
	// rotated): the hook drops exactly that token and the request is retried
	// once with a fresh one.
	api.SetRetryWaitTime(10 * time.Millisecond).SetRetryMaxWaitTime(100 * time.Millisecond)
	cfg.Tokens.Attach(api)
	exposed := []string{echo.HeaderWWWAuthenticate, "Retry-After", "Cache-Control"}
	if cfg.ExposeServedBy {
		exposed = append(exposed, service.HeaderServedBy)
	}
	return &Gateway{api: api, forward: mk(), timeout: cfg.Timeout, exposed: exposed, served: cfg.ExposeServedBy, log: cfg.Log}
}

// Register mounts the routes.
func (g *Gateway) Register(e *echo.Echo) {
	e.GET(PublicPath, g.public)
	e.GET(ProtectedPath, g.protected)
}

type protectedBody struct {
	ProtectedData *string `json:"protectedData"`
}

func (g *Gateway) public(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), g.timeout)
	defer cancel()
	resp, err := g.api.R().
		SetContext(ctx).
		SetHeader(service.HeaderRequestID, c.Response().Header().Get(service.HeaderRequestID)).
		Get(ProtectedPath)
	if err != nil {
		return g.downstreamError(c, err)
	}
	if sb := resp.Header().Get(service.HeaderServedBy); sb != "" && g.served {
		c.Response().Header().Set(service.HeaderServedBy, sb)
	}
	switch resp.StatusCode() {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		// Already retried once with a fresh token: our credentials are not
		// good enough for protected-data. The caller can do nothing about it.
		g.logCause(&g.refusedLog, "protected-data refused the gateway's token",
			errors.New(http.StatusText(resp.StatusCode())), c.Response().Header().Get(service.HeaderRequestID))
		return service.JSONError(c, http.StatusBadGateway, "bad_gateway", "protected-data refused the gateway's credentials")
	case http.StatusServiceUnavailable:
		// protected-data's Retry-After says when its next JWKS fetch is due;
		// "1" would have callers come back dozens of times before it.
		c.Response().Header().Set("Retry-After", strconv.Itoa(downstreamRetryAfter(resp.Header().Get("Retry-After"))))
		return service.JSONError(c, http.StatusServiceUnavailable, "temporarily_unavailable", "protected-data is not ready")
	default:
		return service.JSONError(c, http.StatusBadGateway, "bad_gateway", "protected-data answered "+http.StatusText(resp.StatusCode()))
	}
	var body protectedBody
	if err := json.Unmarshal(resp.Body(), &body); err != nil || body.ProtectedData == nil {
		return service.JSONError(c, http.StatusBadGateway, "bad_gateway", "protected-data answered an unexpected body")
	}
	return c.JSON(http.StatusOK, PublicResponse{PublicData: "hello world", ProtectedData: *body.ProtectedData})
}

// downstreamRetryAfter is protected-data's Retry-After in whole seconds,
// within [1, 30] (the longest the gateway itself asks for); 1 when absent
// or not delay-seconds.
func downstreamRetryAfter(v string) int {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 1
	}
	return min(n, 30)
}

// protected forwards the caller's own credentials so that the reference
// demo's curl examples against port 6001 behave as they did there.
func (g *Gateway) protected(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), g.timeout)
	defer cancel()
	req := g.forward.R().SetContext(ctx).
		SetHeader(service.HeaderRequestID, c.Response().Header().Get(service.HeaderRequestID))
	// All values, so that a request with two Authorization headers is
	// rejected downstream as it would be if sent there directly.
	for _, v := range c.Request().Header.Values(echo.HeaderAuthorization) {
		req.Header.Add(echo.HeaderAuthorization, v)
	}
	resp, err := req.Get(ProtectedPath)
	if err != nil {
		return g.downstreamError(c, err)
	}
	h := c.Response().Header()
	for _, name := range g.exposed {
		if v := resp.Header().Get(name); v != "" {
			h.Set(name, v)
		}
	}
	ct := resp.Header().Get(echo.HeaderContentType)
	if ct == "" {
		ct = echo.MIMEApplicationJSON
	}
	return c.Blob(resp.StatusCode(), ct, resp.Body())
}

// downstreamError maps a failed call to 503 (no token), 504 (protected-data
// timed out) or 502 (anything else, an unresolvable name included). The error is logged; the caller gets no internals.
func (g *Gateway) downstreamError(c echo.Context, err error) error {
	rid := c.Response().Header().Get(service.HeaderRequestID)
	var ne net.Error
	switch {
	case c.Request().Context().Err() != nil:
		// The caller went away: nothing is wrong downstream and nobody reads
		// the answer. 499 (nginx's "client closed request") marks it in logs.
		g.log.Debug("caller went away during the downstream call", "request_id", rid)
		return c.NoContent(499)
	case errors.Is(err, m2m.ErrTokenUnavailable):
		// The token source logs the cause itself, once per change and then
		// once a minute: a WARN here per request would bury it (issue 8.5).
		g.log.Debug("no M2M token for the downstream call", "err", err, "request_id", rid)
		// When the token source's next attempt is due: a caller that comes
		// back then finds a token if the IdP has recovered.
		c.Response().Header().Set("Retry-After", strconv.Itoa(int(m2m.RetryAfter(err)/time.Second)))
		return service.JSONError(c, http.StatusServiceUnavailable, "temporarily_unavailable", "the gateway holds no valid access token; try again shortly")
	case errors.As(err, new(*lb.ResolveError)):
		// Checked before timeouts: a resolver that timed out says nothing
		// about protected-data's speed, and 504 would send an operator to
		// the wrong place.
		g.logCause(&g.unreachableLog, "protected-data's name does not resolve", err, rid)
		return service.JSONError(c, http.StatusBadGateway, "bad_gateway", "protected-data is unreachable")
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		g.logCause(&g.timeoutLog, "protected-data timed out", err, rid)
		return service.JSONError(c, http.StatusGatewayTimeout, "gateway_timeout", "protected-data did not answer in time")
	default:
		g.logCause(&g.unreachableLog, "protected-data unreachable", err, rid)
		return service.JSONError(c, http.StatusBadGateway, "bad_gateway", "protected-data is unreachable")
	}
}

// logEvery limits one cause to one WARN a minute; the requests in between
// are logged at Debug, and each of them keeps its access-log line with the
// status. The next WARN says how many were folded into it.
type logEvery struct {
	last       atomic.Int64 // unix nanoseconds of the last WARN
	suppressed atomic.Int64
}

func (g *Gateway) logCause(l *logEvery, msg string, err error, rid string) {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last < int64(time.Minute) || !l.last.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		g.log.Debug(msg, "err", err, "request_id", rid)
		return
	}
	g.log.Warn(msg, "err", err, "request_id", rid, "similar_since_last_warning", l.suppressed.Swap(0))
}

// discardLogger silences resty: its messages can carry request details we
// choose to log ourselves, once, without secrets.
type discardLogger struct{}

func (discardLogger) Errorf(string, ...any) {}
func (discardLogger) Warnf(string, ...any)  {}
func (discardLogger) Debugf(string, ...any) {}
