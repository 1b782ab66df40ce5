package m2m

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Config. See the package documentation for
// why these numbers.
const (
	DefaultMargin         = 30 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	DefaultMinBackoff     = 250 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
)

// Config configures a TokenSource. Only the first three fields are required.
type Config struct {
	TokenURL     string        // required: the OAuth 2.0 token endpoint
	ClientID     string        // required
	ClientSecret string        // required; never logged or put in errors
	HTTPClient   *http.Client  // nil: a client with a 10 s timeout
	Margin       time.Duration // 0: DefaultMargin (30 s); see the package doc
	Logger       *slog.Logger  // nil: discard

	// RequestTimeout bounds each token request, on top of any HTTPClient
	// timeout (a caller's client may have none). 0: 10 s.
	RequestTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential delay between
	// failed attempts. MaxBackoff is also the pace of retries after a
	// permanent rejection. 0: 250 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration

	clock clock // nil: real time; tests inject a fake
}

// String masks the secret so that printing a Config (%v, %+v) is safe.
func (c Config) String() string {
	return fmt.Sprintf("m2m.Config{TokenURL:%q ClientID:%q ClientSecret:%s Margin:%s}",
		c.TokenURL, c.ClientID, mask(c.ClientSecret), c.Margin)
}

// GoString masks the secret for %#v too.
func (c Config) GoString() string { return c.String() }

// LogValue masks the secret when a Config is logged with slog.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("token_url", c.TokenURL),
		slog.String("client_id", c.ClientID),
		slog.String("client_secret", mask(c.ClientSecret)),
		slog.Duration("margin", c.Margin),
	)
}

func mask(secret string) string {
	if secret == "" {
		return `""`
	}
	return "[REDACTED]"
}

// TokenSource fetches, caches and renews one client-credentials access token.
// It is safe for concurrent use. Build it once with New; call Start to renew
// in the background and Close to stop.
type TokenSource struct {
	// Immutable after New.
	tokenURL, clientID, clientSecret string
	httpClient                       *http.Client
	ownClient                        bool // httpClient was built here: Close releases its connections
	margin, requestTimeout           time.Duration
	minBackoff, maxBackoff           time.Duration
	log                              *slog.Logger
	clock                            clock
	epoch                            time.Time       // origin of token.useByOff and renewAtOff
	ctx                              context.Context // cancelled by Close: aborts in-flight requests
	cancel                           context.CancelFunc

	// The fast path reads only these.
	cur     atomic.Pointer[token]
	closedF atomic.Bool
	startF  atomic.Bool

	fetches, failures, waits atomic.Uint64
	clampWarned              atomic.Bool

	wg   sync.WaitGroup // the refresher and any in-flight fetch
	wake chan struct{}  // nudges the refresher after Invalidate

	mu          sync.Mutex
	inFlight    bool          // a fetch goroutine is running
	changed     chan struct{} // closed (and replaced) when a fetch ends or on Close
	started     bool
	closed      bool
	lastErr     error     // of the latest fetch; nil after a success
	permanent   bool      // lastErr is an OAuthError
	failStreak  int       // consecutive failed fetches
	nextAttempt time.Time // no fetch before this (backoff, Retry-After)
	lastLogged  string    // the permanent error last logged at Error level

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
	if cfg.ClientSecret == "" {
		errs = append(errs, errors.New("m2m: ClientSecret is required"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Margin", cfg.Margin}, {"RequestTimeout", cfg.RequestTimeout}, {"MinBackoff", cfg.MinBackoff}, {"MaxBackoff", cfg.MaxBackoff}} {
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
		tokenURL: cfg.TokenURL, clientID: cfg.ClientID, clientSecret: cfg.ClientSecret,
		httpClient:     cfg.HTTPClient,
		margin:         or(cfg.Margin, DefaultMargin),
		requestTimeout: or(cfg.RequestTimeout, DefaultRequestTimeout),
		minBackoff:     or(cfg.MinBackoff, DefaultMinBackoff),
		maxBackoff:     or(cfg.MaxBackoff, DefaultMaxBackoff),
		log:            cfg.Logger,
		clock:          cfg.clock,
		wake:           make(chan struct{}, 1),
		changed:        make(chan struct{}),
	}
	s.minBackoff = min(s.minBackoff, s.maxBackoff)
	if s.httpClient == nil {
		// Its own transport, so Close can drop its idle connections without
		// touching anyone else's.
		s.httpClient = &http.Client{Timeout: DefaultRequestTimeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
		s.ownClient = true
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	s.epoch = s.clock.Now()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func or(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// Token returns an access token with more than the margin of life left.
//
// The cached path is lock-free and allocation-free. Without a usable token it
// waits for the single fetch in flight (starting one if none is), honouring
// ctx; concurrent callers share that fetch and its outcome. It fails at once
// when the endpoint rejected the client (an *OAuthError) or when the next
// retry is due after ctx's deadline. Every error satisfies
// errors.Is(err, ErrTokenUnavailable).
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
	counted := false
	for {
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
		var timer <-chan time.Time
		stop := func() {}
		switch {
		case s.inFlight:
			// Join it: woken through s.changed.
		case now.Before(s.nextAttempt):
			if s.permanent {
				err := s.lastErr
				s.mu.Unlock()
				return "", unavailable(err)
			}
			wait := s.nextAttempt.Sub(now)
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
				// Waiting could only end in a timeout: say why now instead.
				err := s.lastErr
				s.mu.Unlock()
				return "", unavailable(fmt.Errorf("next token request in %s, after the caller's deadline: %w", wait.Round(time.Millisecond), err))
			}
			timer, stop = s.clock.After(wait)
		default:
			s.startFetchLocked()
		}
		changed := s.changed
		s.mu.Unlock()

		if !counted {
			counted = true
			s.waits.Add(1)
		}
		select {
		case <-changed:
		case <-timer:
		case <-ctx.Done():
			stop()
			return "", s.waitError(ctx)
		}
		stop()
	}
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

// runFetch makes one request and publishes its outcome to every waiter.
func (s *TokenSource) runFetch() {
	defer s.wg.Done()
	res := s.fetch()

	s.mu.Lock()
	closed := s.closed
	now := s.clock.Now()
	var delay time.Duration
	var logPermanent bool
	var streak int
	if !closed {
		if res.err == nil {
			streak = s.failStreak
			s.cur.Store(res.tok)
			s.lastErr, s.permanent, s.failStreak, s.nextAttempt, s.lastLogged = nil, false, 0, time.Time{}, ""
		} else {
			s.failures.Add(1)
			s.failStreak++
			streak = s.failStreak
			s.lastErr = res.err
			s.permanent = isPermanent(res.err)
			if s.permanent {
				delay = s.maxBackoff
				if msg := res.err.Error(); msg != s.lastLogged {
					s.lastLogged, logPermanent = msg, true
				}
			} else {
				delay = s.backoff(s.failStreak)
			}
			if res.retryAfter > delay {
				delay = res.retryAfter
			}
			s.nextAttempt = now.Add(delay)
			// The current token, if any, stays in place: it keeps serving
			// until its margin while the retries go on.
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
				"margin", s.margin, "effective_margin", res.clamped, "expires_in", res.tok.expiry.Sub(now).Round(time.Second))
		}
		attrs := []any{"renew_in", res.tok.renewAt.Sub(now).Round(time.Millisecond), "valid_for", res.tok.expiry.Sub(now).Round(time.Second)}
		if streak > 0 {
			s.log.Info("m2m: token fetched after failures", append(attrs, "failures", streak)...)
		} else {
			s.log.Debug("m2m: token fetched", attrs...)
		}
	case logPermanent:
		s.log.Error("m2m: token endpoint rejected the client credentials; fix the client in the IdP, retrying slowly",
			"client_id", s.clientID, "token_url", s.tokenURL, "err", res.err, "retry_in", delay)
	case isPermanent(res.err):
		s.log.Debug("m2m: token endpoint still rejects the client", "err", res.err, "retry_in", delay)
	default:
		s.log.Warn("m2m: token request failed; retrying", "err", res.err, "failures", streak, "retry_in", delay.Round(time.Millisecond))
	}
}

// backoff is the delay after the n-th consecutive failure: exponential from
// MinBackoff, capped at MaxBackoff, with "equal jitter" (half fixed, half
// random) so retries spread out yet never collapse to zero.
func (s *TokenSource) backoff(n int) time.Duration {
	d := s.maxBackoff
	if n < 32 {
		if e := s.minBackoff << (n - 1); e > 0 && e < d {
			d = e
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Start starts the background refresher: it fetches at once, retries with
// backoff, and renews the token at about 80% of its usable life so that, in
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
		return s.lastErr
	default:
		return ErrNoToken
	}
}

// Stats are counters since New, for metrics.
type Stats struct {
	Fetches   uint64        // token requests sent
	Failures  uint64        // token requests that failed
	Waits     uint64        // Token calls that found no usable token and had to wait or fail
	Remaining time.Duration // life left of the cached token (to its expiry, margin included); 0 if none
}

// Stats returns the counters and the remaining life of the current token.
func (s *TokenSource) Stats() Stats {
	st := Stats{Fetches: s.fetches.Load(), Failures: s.failures.Load(), Waits: s.waits.Load()}
	if t := s.cur.Load(); t != nil {
		st.Remaining = max(t.expiry.Sub(s.clock.Now()), 0)
	}
	return st
}
