package m2m

import (
	"cmp"
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Defaults for the zero values of Config. See the package documentation for
// why these numbers.
const (
	DefaultMargin         = 30 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	DefaultMinBackoff     = 250 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
	DefaultRetryInterval  = 2 * time.Second
	DefaultMaxWait        = 2 * time.Second
)

// permanentFirstRetry is the first background retry after a permanent
// rejection (doubling from there to MaxBackoff): an IdP that refuses a client
// because it is still being created (a fresh Hydra, a deploy) is retried
// within seconds, a client that stays wrong costs a request per MaxBackoff.
const permanentFirstRetry = 2 * time.Second

// startupGrace is how long after New a refused connection or unknown host
// is taken for an IdP that is still starting: logged at Info, not Warn.
const startupGrace = 10 * time.Second

// Config configures a TokenSource. TokenURL, ClientID and either
// ClientSecret or (with private_key_jwt) PrivateKey are required.
type Config struct {
	TokenURL     string        // required: the OAuth 2.0 token endpoint
	ClientID     string        // required
	ClientSecret string        // client_secret_basic/post; never logged or put in errors
	HTTPClient   *http.Client  // nil: a client of the source's own, timing out after RequestTimeout; redirects are refused either way
	Margin       time.Duration // 0: DefaultMargin (30 s); see the package doc
	Logger       *slog.Logger  // nil: discard

	// Scopes are sent space-separated as "scope"; none: no scope parameter.
	Scopes []string
	// EndpointParams are extra form parameters: "audience" (Auth0, Hydra),
	// "resource" (RFC 8707, repeatable), anything a server wants. Fields the
	// source sets itself, and credentials, are refused.
	EndpointParams url.Values
	// AuthMethod: "" is ClientSecretBasic.
	AuthMethod AuthMethod

	// PrivateKeyJWT: the client's private key (*rsa.PrivateKey of at least
	// 2048 bits or *ecdsa.PrivateKey; see ParsePrivateKeyPEM), the "kid" of
	// its public half as registered at the IdP ("": the RFC 7638 thumbprint,
	// as PublicJWKS prints it), the algorithm ("": RS256 for RSA, ES256,
	// ES384 or ES512 by curve), and the assertion's "aud" ("": TokenURL;
	// some servers want their issuer instead).
	PrivateKey        crypto.Signer
	KeyID             string
	SigningAlg        string
	AssertionAudience string

	// RequestTimeout bounds each token request, on top of any HTTPClient
	// timeout (a caller's client may have none). 0: 10 s.
	RequestTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential delay between
	// failed attempts in the background; after a permanent rejection the
	// delay starts at 2 s. 0: 250 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// RetryInterval: while token requests fail and callers ask for a token
	// (Token, Ready), one more attempt is made at most this often, so that
	// a fixed IdP is noticed within this interval rather than at the next
	// background retry. It never overrides a server's Retry-After. 0: 2 s.
	RetryInterval time.Duration
	// MaxWait bounds how long Token waits for a token request in flight,
	// which it does only when no failure is known (the first token, after
	// Invalidate) or for the attempt it triggered itself. 0: 2 s.
	MaxWait time.Duration

	clock clock      // nil: real time; tests inject a fake
	rnd   *rand.Rand // nil: the global source; tests inject a seeded one
}

// String masks the secret so that printing a Config (%v, %+v) is safe.
func (c Config) String() string {
	return fmt.Sprintf("m2m.Config{TokenURL:%q ClientID:%q ClientSecret:%s AuthMethod:%q Scopes:%q PrivateKey:%s Margin:%s}",
		c.TokenURL, c.ClientID, mask(c.ClientSecret), c.AuthMethod, c.Scopes, maskKey(c.PrivateKey), c.Margin)
}

// GoString masks the secret for %#v too.
func (c Config) GoString() string { return c.String() }

// LogValue masks the secret when a Config is logged with slog.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("token_url", c.TokenURL),
		slog.String("client_id", c.ClientID),
		slog.String("client_secret", mask(c.ClientSecret)),
		slog.String("auth_method", string(c.AuthMethod)),
		slog.Any("scopes", c.Scopes),
		slog.String("private_key", maskKey(c.PrivateKey)),
		slog.Duration("margin", c.Margin),
	)
}

func mask(secret string) string {
	if secret == "" {
		return `""`
	}
	return "[REDACTED]"
}

func maskKey(k crypto.Signer) string {
	if k == nil {
		return "<nil>"
	}
	return "[REDACTED]"
}

// TokenSource fetches, caches and renews one client-credentials access token.
// It is safe for concurrent use. Build it once with New; call Start to renew
// in the background and Close to stop.
type TokenSource struct {
	// Immutable after New.
	tokenURL, clientID     string
	method                 AuthMethod
	form                   string // the static request body
	basicAuth              string // Authorization header value for client_secret_basic
	signKey                jwk.Key
	signAlg                jwa.SignatureAlgorithm
	assertionAud           string
	secretForms            []string // masked in every error and log line
	httpClient             *http.Client
	ownClient              bool // httpClient was built here: Close releases its connections
	margin, requestTimeout time.Duration
	minBackoff, maxBackoff time.Duration
	permBackoff            time.Duration // first retry after a permanent error
	retryInterval, maxWait time.Duration
	log                    *slog.Logger
	clock                  clock
	epoch                  time.Time       // origin of token.useByOff and renewAtOff; start of the start-up grace
	ctx                    context.Context // cancelled by Close: aborts in-flight requests
	cancel                 context.CancelFunc

	// The fast path reads only these.
	cur     atomic.Pointer[token]
	closedF atomic.Bool
	startF  atomic.Bool

	fetches, waits                       atomic.Uint64
	fetchesOK, fetchesTrans, fetchesPerm atomic.Uint64
	renewals, invalidations              atomic.Uint64
	clampWarned                          atomic.Bool

	wg   sync.WaitGroup // the refresher and any in-flight fetch
	wake chan struct{}  // nudges the refresher after Invalidate

	mu           sync.Mutex
	rnd          *rand.Rand    // nil: global source
	inFlight     bool          // a fetch goroutine is running
	changed      chan struct{} // closed (and replaced) when a fetch ends or on Close
	started      bool
	closed       bool
	lastErr      error     // of the latest fetch; nil after a success
	permanent    bool      // lastErr is permanent (see isPermanent)
	failStreak   int       // consecutive failed fetches
	failingSince time.Time // end of the first fetch of the streak
	nextAttempt  time.Time // the background schedule: no retry before this (backoff, Retry-After)
	probeAt      time.Time // a caller may trigger an attempt from here on (RetryInterval, Retry-After)
	logKey       string    // the failure cause last logged above Debug
	logAt        time.Time // and when

	// Invalidation guard (see Invalidate).
	invStreak int       // consecutive invalidations, each within 2*MaxBackoff of the last
	lastInv   time.Time // when the last invalidation took effect
}

// New validates cfg, reporting every problem at once, and returns a
// TokenSource. It starts no goroutine and makes no request.
func New(cfg Config) (*TokenSource, error) {
	var errs []error
	if cfg.TokenURL == "" {
		errs = append(errs, errors.New("m2m: TokenURL is required"))
	} else if u, err := url.Parse(cfg.TokenURL); err != nil {
		errs = append(errs, errors.New("m2m: TokenURL is not a valid URL"))
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("m2m: TokenURL %q is not an absolute http(s) URL", u.Redacted()))
	}
	if cfg.ClientID == "" {
		errs = append(errs, errors.New("m2m: ClientID is required"))
	}
	method, authErrs := checkAuthConfig(&cfg)
	errs = append(errs, authErrs...)
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Margin", cfg.Margin}, {"RequestTimeout", cfg.RequestTimeout}, {"MinBackoff", cfg.MinBackoff}, {"MaxBackoff", cfg.MaxBackoff},
		{"RetryInterval", cfg.RetryInterval}, {"MaxWait", cfg.MaxWait}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("m2m: %s must not be negative (got %s)", d.name, d.v))
		}
	}
	if cfg.MinBackoff > 0 && cfg.MaxBackoff > 0 && cfg.MinBackoff > cfg.MaxBackoff {
		errs = append(errs, fmt.Errorf("m2m: MinBackoff %s exceeds MaxBackoff %s", cfg.MinBackoff, cfg.MaxBackoff))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	s := &TokenSource{
		tokenURL: cfg.TokenURL, clientID: cfg.ClientID, method: method,
		form:           staticForm(&cfg, method),
		margin:         or(cfg.Margin, DefaultMargin),
		requestTimeout: or(cfg.RequestTimeout, DefaultRequestTimeout),
		minBackoff:     or(cfg.MinBackoff, DefaultMinBackoff),
		maxBackoff:     or(cfg.MaxBackoff, DefaultMaxBackoff),
		retryInterval:  or(cfg.RetryInterval, DefaultRetryInterval),
		maxWait:        or(cfg.MaxWait, DefaultMaxWait),
		log:            cfg.Logger,
		clock:          cfg.clock,
		rnd:            cfg.rnd,
		wake:           make(chan struct{}, 1),
		changed:        make(chan struct{}),
	}
	s.minBackoff = min(s.minBackoff, s.maxBackoff)
	s.permBackoff = min(max(s.minBackoff, permanentFirstRetry), s.maxBackoff)
	switch method {
	case ClientSecretBasic:
		// RFC 6749 2.3.1: both parts are form-url-encoded before Basic encoding.
		s.basicAuth = "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(cfg.ClientID)+":"+url.QueryEscape(cfg.ClientSecret)))
		s.secretForms = secretForms(cfg.ClientID, cfg.ClientSecret)
	case ClientSecretPost:
		s.secretForms = secretForms(cfg.ClientID, cfg.ClientSecret)
	case PrivateKeyJWT:
		s.signKey, s.signAlg, _ = signingKey(cfg.PrivateKey, cfg.KeyID, cfg.SigningAlg) // checked above
		s.assertionAud = cmp.Or(cfg.AssertionAudience, cfg.TokenURL)
	}
	if cfg.HTTPClient == nil {
		// Its own transport, so Close can drop its idle connections without
		// touching anyone else's.
		// Its timeout is RequestTimeout's: a fixed one would cut a longer
		// RequestTimeout short.
		s.httpClient = &http.Client{Timeout: s.requestTimeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
		s.ownClient = true
	} else {
		// A copy: the caller's client keeps its own redirect policy.
		c := *cfg.HTTPClient
		s.httpClient = &c
	}
	s.httpClient.CheckRedirect = refuseRedirect
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	s.epoch = s.clock.Now()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// refuseRedirect is the token client's CheckRedirect: Go would resend the
// Basic header to the same host (even https -> http) and the form body on
// 307/308 to any host.
func refuseRedirect(req *http.Request, _ []*http.Request) error {
	status := 0
	if req.Response != nil {
		status = req.Response.StatusCode
	}
	u := url.URL{Scheme: req.URL.Scheme, Host: req.URL.Host, Path: req.URL.Path}
	return &redirectError{status: status, to: u.String()}
}

func or(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// Token returns an access token with more than the margin of life left.
//
// The cached path is lock-free and allocation-free. Without a usable token,
// Token waits (at most MaxWait, and honouring ctx) only when no failure is
// known: for the first token, or after Invalidate. Concurrent callers then
// share that one request and its outcome. Once a token request has failed
// and no usable token is left, Token answers at once with an
// *UnavailableError saying when the next request is due; at most once per
// RetryInterval it triggers that request itself and waits for it, briefly.
// Every error satisfies errors.Is(err, ErrTokenUnavailable).
func (s *TokenSource) Token(ctx context.Context) (string, error) {
	if t := s.cur.Load(); t != nil {
		el := s.clock.Since(s.epoch)
		if el < t.useByOff && !s.closedF.Load() {
			if el >= t.renewAtOff && !s.startF.Load() {
				s.renewAhead(t)
			}
			return t.value, nil
		}
	}
	return s.slowToken(ctx)
}

// renewAhead starts a background renewal when the source is used without
// Start and the token is past its renewal point: callers keep getting the
// current token meanwhile. TryLock keeps the fast path from ever queueing
// on the mutex; a caller that loses the race leaves the work to the winner.
func (s *TokenSource) renewAhead(t *token) {
	if !s.mu.TryLock() {
		return
	}
	if !s.closed && !s.inFlight && s.cur.Load() == t && !s.clock.Now().Before(s.nextAttempt) {
		s.startFetchLocked()
	}
	s.mu.Unlock()
}

func (s *TokenSource) slowToken(ctx context.Context) (string, error) {
	s.waits.Add(1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return "", errClosed
	}
	now := s.clock.Now()
	if t := s.cur.Load(); t != nil && now.Before(t.useBy) {
		s.mu.Unlock()
		return t.value, nil
	}
	wait := false
	switch {
	case s.inFlight:
		// Join it only while nothing is known to fail: a failing IdP must not
		// hold every request for the length of a token request.
		wait = s.lastErr == nil
	case s.lastErr == nil || !now.Before(s.dueLocked()):
		// The first fetch, a fetch after Invalidate, or a retry that is due:
		// this caller starts it and waits for it.
		s.startFetchLocked()
		wait = true
	}
	if !wait {
		err := s.unavailableLocked(now)
		s.mu.Unlock()
		return "", err
	}
	changed := s.changed
	s.mu.Unlock()

	bound, stop := s.clock.After(s.maxWait)
	defer stop()
	select {
	case <-changed:
	case <-bound:
	case <-ctx.Done():
		return "", s.waitError(ctx)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", errClosed
	}
	now = s.clock.Now()
	if t := s.cur.Load(); t != nil && now.Before(t.useBy) {
		return t.value, nil
	}
	return "", s.unavailableLocked(now)
}

// dueLocked is when the next attempt may start: the background schedule, or
// earlier on demand once RetryInterval (and any Retry-After) has passed.
func (s *TokenSource) dueLocked() time.Time {
	if s.probeAt.Before(s.nextAttempt) {
		return s.probeAt
	}
	return s.nextAttempt
}

// unavailableLocked builds Token's answer when there is no token to give.
func (s *TokenSource) unavailableLocked(now time.Time) error {
	e := &UnavailableError{Err: s.lastErr}
	switch {
	case e.Err == nil:
		e.Err = fmt.Errorf("the token request has been in flight for over %s", s.maxWait)
	case !s.inFlight:
		e.RetryIn = max(s.dueLocked().Sub(now), 0)
	}
	return e
}

func (s *TokenSource) waitError(ctx context.Context) error {
	s.mu.Lock()
	last := s.lastErr
	s.mu.Unlock()
	if last != nil {
		return unavailable(fmt.Errorf("waiting for a token: %w (last attempt: %w)", ctx.Err(), last))
	}
	return unavailable(fmt.Errorf("waiting for a token: %w", ctx.Err()))
}

// startFetchLocked starts the one fetch goroutine. s.mu must be held and
// s.closed false: Close waits on s.wg only after setting closed under s.mu,
// so no Add can race with that Wait.
func (s *TokenSource) startFetchLocked() {
	s.inFlight = true
	s.wg.Add(1)
	go s.runFetch()
}

// Renewal points, as fractions of a token's usable life (arrival to
// expiry minus margin). A routine renewal lands uniformly in [70%, 85%]:
// never after the margin, and with a fifth of the life or more left for
// retries. A token fetched after anything else (the first one, a failure,
// Invalidate) renews uniformly in [7.5%, 85%], a spread as wide as one mean
// renewal period: a fleet started (or recovering) at the same instant gets
// its phases spread evenly around the period at once, and the narrow jitter
// of later renewals keeps them spread. That costs one early renewal per
// such event, not a shorter period for ever.
const (
	renewLo     = 0.70
	renewHi     = 0.85
	renewWideLo = renewHi - (renewLo+renewHi)/2
)

// runFetch makes one request and publishes its outcome to every waiter.
func (s *TokenSource) runFetch() {
	defer s.wg.Done()
	res := s.fetch()

	s.mu.Lock()
	closed := s.closed
	now := s.clock.Now()
	var (
		delay     time.Duration
		streak    int
		failedFor time.Duration
		level     slog.Level
		logIt     bool
	)
	if !closed {
		if res.err == nil {
			prev := s.cur.Load()
			renewal := prev != nil && s.failStreak == 0 && now.Before(prev.useBy)
			lo := renewWideLo
			if renewal {
				lo = renewLo
				s.renewals.Add(1)
			}
			t := res.tok
			usable := t.useBy.Sub(t.arrived)
			t.renewAt = t.arrived.Add(time.Duration(float64(usable) * (lo + (renewHi-lo)*s.float64Locked())))
			t.useByOff, t.renewAtOff = t.useBy.Sub(s.epoch), t.renewAt.Sub(s.epoch)
			s.cur.Store(t)
			s.fetchesOK.Add(1)
			streak = s.failStreak
			if streak > 0 {
				failedFor = now.Sub(s.failingSince)
			}
			s.lastErr, s.permanent, s.failStreak = nil, false, 0
			s.nextAttempt, s.probeAt, s.logKey = time.Time{}, time.Time{}, ""
		} else {
			s.permanent = isPermanent(res.err)
			if s.permanent {
				s.fetchesPerm.Add(1)
			} else {
				s.fetchesTrans.Add(1)
			}
			if s.failStreak == 0 {
				s.failingSince = now
			}
			s.failStreak++
			streak = s.failStreak
			failedFor = now.Sub(s.failingSince)
			s.lastErr = res.err
			base := s.minBackoff
			if s.permanent {
				base = s.permBackoff
			}
			delay = max(s.backoffLocked(base, s.failStreak), res.retryAfter)
			s.nextAttempt = now.Add(delay)
			s.probeAt = now.Add(max(s.retryInterval, res.retryAfter))
			// The current token, if any, stays in place: it keeps serving
			// until its margin while the retries go on.

			// The cause is logged once per change (of cause or level) and
			// then at most once a minute while it lasts.
			level = slog.LevelWarn
			switch {
			case s.permanent:
				level = slog.LevelError
			case now.Sub(s.epoch) < startupGrace && notUpYet(res.err):
				level = slog.LevelInfo
			}
			key := level.String() + " " + causeKey(res.err)
			if key != s.logKey || now.Sub(s.logAt) >= time.Minute {
				s.logKey, s.logAt, logIt = key, now, true
			}
		}
	}
	s.inFlight = false
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()

	switch {
	case closed:
	case res.err == nil:
		if res.clamped > 0 && s.clampWarned.CompareAndSwap(false, true) {
			s.log.Warn("m2m: token lifetime is under twice the margin; using half the lifetime as margin",
				"margin", s.margin.String(), "effective_margin", res.clamped.String(), "expires_in", res.tok.expiry.Sub(now).Round(time.Second).String())
		}
		// Durations as text ("1m30s"): JSON handlers would print nanoseconds.
		attrs := []any{"renew_in", res.tok.renewAt.Sub(now).Round(time.Millisecond).String(), "valid_for", res.tok.expiry.Sub(now).Round(time.Second).String()}
		if streak > 0 {
			s.log.Info("m2m: token fetched again after failures", append(attrs, "failures", streak, "failing_for", failedFor.Round(time.Millisecond).String())...)
		} else {
			s.log.Debug("m2m: token fetched", attrs...)
		}
	default:
		msg := "m2m: token request failed; retrying"
		switch {
		case level == slog.LevelError:
			msg = "m2m: token endpoint rejected the client; fix the client (or the token URL) at the IdP; retrying slowly"
		case level == slog.LevelInfo:
			msg = "m2m: token endpoint not reachable yet (starting?); retrying"
		}
		if !logIt {
			level, msg = slog.LevelDebug, "m2m: token request failed again (cause logged already)"
		}
		s.log.Log(context.Background(), level, msg,
			"client_id", s.clientID, "token_url", s.tokenURL, "err", res.err,
			"failures", streak, "failing_for", failedFor.Round(time.Millisecond).String(), "retry_in", delay.Round(time.Millisecond).String())
	}
}

// float64Locked is a uniform number in [0, 1). s.mu must be held (a
// seeded test source is not safe for concurrent use).
func (s *TokenSource) float64Locked() float64 {
	if s.rnd != nil {
		return s.rnd.Float64()
	}
	return rand.Float64()
}

// backoffLocked is the delay after the n-th consecutive failure: exponential
// from base, capped at MaxBackoff, with "equal jitter" (half fixed, half
// random) so that retries spread out yet never collapse to zero.
func (s *TokenSource) backoffLocked(base time.Duration, n int) time.Duration {
	d := s.maxBackoff
	if n < 32 {
		if e := base << (n - 1); e > 0 && e < d {
			d = e
		}
	}
	half := d / 2
	return half + time.Duration(float64(d-half)*s.float64Locked())
}

// Start starts the background refresher: it fetches at once, retries with
// backoff, and renews the token at a jittered 70-85% of its usable life so that, in
// steady state, no Token call ever waits. Start is idempotent and a no-op
// after Close.
func (s *TokenSource) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return
	}
	s.started = true
	s.startF.Store(true)
	s.wg.Add(1)
	go s.refresh()
}

func (s *TokenSource) refresh() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		now := s.clock.Now()
		t := s.cur.Load()
		wait := time.Duration(-1)
		switch {
		case s.inFlight:
		case now.Before(s.nextAttempt):
			wait = s.nextAttempt.Sub(now)
		case t != nil && now.Before(t.renewAt):
			wait = t.renewAt.Sub(now)
		default:
			s.startFetchLocked()
		}
		changed := s.changed
		s.mu.Unlock()

		var timer <-chan time.Time
		stop := func() {}
		if wait >= 0 {
			timer, stop = s.clock.After(wait)
		}
		select {
		case <-changed:
		case <-timer:
		case <-s.wake:
		case <-s.ctx.Done():
			stop()
			return
		}
		stop()
	}
}

// Close stops the refresher, aborts a fetch in flight and waits for both to
// end. Token then fails with ErrClosed. Close is idempotent; it returns nil.
func (s *TokenSource) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.closedF.Store(true)
		s.cur.Store(nil)
		s.cancel()
		close(s.changed) // wakes waiters in backoff
		s.changed = make(chan struct{})
	}
	s.mu.Unlock()
	s.wg.Wait()
	if s.ownClient {
		s.httpClient.CloseIdleConnections()
	}
	return nil
}

// Invalidate drops token from the cache if it is still the cached one; call
// it when a server answered 401 to it. Comparing first means N concurrent
// 401s for one token cause one new fetch, and a 401 for an older token does
// not throw away a newer one.
func (s *TokenSource) Invalidate(token string) {
	t := s.cur.Load()
	if t == nil || t.value != token {
		return
	}
	// A resource server that refuses every token (wrong issuer or audience
	// configured there, clock far off) must not turn each request into a
	// token request. The first invalidation drops the token at once (a lone
	// 401: revocation, key rotation); after that, a token is dropped only once
	// it is older than a guard that starts at MinBackoff and doubles with each
	// invalidation in a row, up to MaxBackoff. The streak ends after 2*MaxBackoff
	// without an invalidation.
	now := s.clock.Now()
	s.mu.Lock()
	if !s.lastInv.IsZero() && now.Sub(s.lastInv) > 2*s.maxBackoff {
		s.invStreak = 0
	}
	var guard time.Duration
	if s.invStreak > 0 {
		guard = s.minBackoff << min(s.invStreak-1, 30)
		if guard > s.maxBackoff || guard <= 0 {
			guard = s.maxBackoff
		}
	}
	if now.Sub(t.arrived) < guard {
		s.mu.Unlock()
		s.log.Debug("m2m: refused token kept: it is younger than the invalidation guard", "guard", guard.String())
		return
	}
	if !s.cur.CompareAndSwap(t, nil) {
		s.mu.Unlock()
		return
	}
	s.invalidations.Add(1)
	s.invStreak++
	s.lastInv = now
	streak := s.invStreak
	s.mu.Unlock()
	if streak >= 3 {
		s.log.Warn("m2m: fresh tokens keep being refused downstream; check the resource server's issuer, audience and clock", "in_a_row", streak)
	} else {
		s.log.Debug("m2m: token invalidated after it was refused")
	}
	select {
	case s.wake <- struct{}{}: // the refresher fetches while the caller backs off
	default:
	}
}

// Ready reports nil if and only if a token with more than the margin of life
// left is held. Otherwise it says why: the last fetch error (an *OAuthError
// for a rejected client), ErrClosed, or ErrNoToken. Use it for readiness.
// While token requests fail, a call to Ready counts as demand: it starts
// the next attempt (without waiting for it) once RetryInterval has passed,
// so that an instance kept out of traffic by its readiness probe recovers
// as fast as one in traffic.
func (s *TokenSource) Ready() error {
	if t := s.cur.Load(); t != nil && s.clock.Now().Before(t.useBy) && !s.closedF.Load() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.lastErr != nil:
		if !s.inFlight && !s.clock.Now().Before(s.dueLocked()) {
			s.startFetchLocked()
		}
		return s.lastErr
	default:
		return ErrNoToken
	}
}

// Stats are counters since New, for metrics. Fetches = FetchesOK +
// FetchesTransient + FetchesPermanent once no request is in flight.
type Stats struct {
	Fetches          uint64        // token requests sent
	Failures         uint64        // token requests that failed (transient + permanent)
	FetchesOK        uint64        // token requests that brought a token
	FetchesTransient uint64        // failed and retried with backoff: network, 5xx, 408, 429, bad response
	FetchesPermanent uint64        // refused: invalid_client and other 4xx, refused redirects
	Renewals         uint64        // tokens that replaced one still usable (routine background renewal)
	Invalidations    uint64        // tokens dropped by Invalidate
	Waits            uint64        // Token calls that found no usable token and had to wait or fail
	Remaining        time.Duration // life left of the cached token (to its expiry, margin included); 0 if none
}

// Stats returns the counters and the remaining life of the current token.
// It takes no lock.
func (s *TokenSource) Stats() Stats {
	st := Stats{
		Fetches: s.fetches.Load(), Waits: s.waits.Load(),
		FetchesOK: s.fetchesOK.Load(), FetchesTransient: s.fetchesTrans.Load(), FetchesPermanent: s.fetchesPerm.Load(),
		Renewals: s.renewals.Load(), Invalidations: s.invalidations.Load(),
	}
	st.Failures = st.FetchesTransient + st.FetchesPermanent
	if t := s.cur.Load(); t != nil {
		st.Remaining = max(t.expiry.Sub(s.clock.Now()), 0)
	}
	return st
}

// notUpYet reports an error that an IdP still starting gives: connection
// refused, or a name not yet in DNS (compose, Kubernetes).
func notUpYet(err error) bool {
	var de *net.DNSError
	return errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &de) && de.IsNotFound)
}

// causeKey groups failures that an operator would call the same cause, so
// that a varying detail (a request ID in an error_description) does not
// count as a new cause in the logs.
func causeKey(err error) string {
	var oe *OAuthError
	var se *statusError
	switch {
	case errors.As(err, &oe):
		return "oauth " + strconv.Itoa(oe.StatusCode) + " " + oe.Code
	case errors.As(err, &se):
		return "status " + strconv.Itoa(se.statusCode) + " " + se.code
	case notUpYet(err):
		return "not up"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return err.Error()
	}
}
