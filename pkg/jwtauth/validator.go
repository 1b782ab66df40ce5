package jwtauth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Claims are the verified claims of a token. A Claims value may be shared
// by every request that presents the same token: treat it as read-only.
type Claims struct {
	Issuer, Subject, ClientID, AppID, TenantID, SubKind, ID string
	Scopes, Audience                                        []string
	IssuedAt, NotBefore, ExpiresAt                          time.Time
}

// HasScope reports whether the token was granted scope s.
func (c *Claims) HasScope(s string) bool { return slices.Contains(c.Scopes, s) }

// Validator validates bearer JWTs against a JWKS. It is safe for concurrent
// use; build one per issuer at start-up and Close it on shutdown.
type Validator struct {
	cfg    Config
	log    *slog.Logger
	keys   atomic.Pointer[keySet]
	cache  *tokenCache // nil when disabled
	jwks   *jwk.Cache
	getter *jwksGetter

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	pubMu sync.Mutex // serializes publish (jwk.Cache's refresh vs our own fetches)

	// Unknown-kid refetch: at most one in flight, at most one per cooldown.
	refetchMu   sync.Mutex
	inflight    chan struct{} // closed when the in-flight refetch ends
	lastRefetch time.Time
	refetchReq  chan chan struct{}

	nextRetry atomic.Int64 // unix nanos of the next cold-start fetch, for Retry-After
	lastErr   atomic.Pointer[error]
	closeOnce sync.Once
	stats     counters
}

type counters struct {
	fetches, fetchErrors, loads, refetches, verifications, hits, misses atomic.Uint64
}

// Stats are counters for metrics and tests.
type Stats struct {
	JWKSFetches         uint64    // HTTP requests for the JWKS, every cause
	JWKSFetchErrors     uint64    // of which failed (transport, status, parse, no usable key)
	JWKSLoads           uint64    // key sets installed
	UnknownKIDRefetches uint64    // refetches triggered by an unknown kid
	Verifications       uint64    // signature verifications performed
	CacheHits           uint64    // tokens answered from the verified-token cache
	CacheMisses         uint64    // tokens that went through full validation
	CacheEntries        int       // entries in the verified-token cache now
	Keys                int       // usable keys in the current key set
	KeysLoadedAt        time.Time // when the current key set was installed; zero if never
}

// New validates cfg (reporting every problem at once), starts the JWKS
// cache and its background work, and kicks off the first fetch without
// waiting for it: until it succeeds, Ready and Validate return ErrNotReady.
// The background work ends with Close or when ctx is cancelled.
func New(ctx context.Context, cfg Config) (*Validator, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	v := &Validator{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "jwtauth"),
		done:       make(chan struct{}),
		refetchReq: make(chan chan struct{}, 1),
	}
	if cfg.CacheSize > 0 {
		v.cache = newTokenCache(cfg.CacheSize)
	}
	v.ctx, v.cancel = context.WithCancel(ctx)
	v.getter = &jwksGetter{ctx: v.ctx, client: cfg.HTTPClient, v: v}

	// httprc checks for due refreshes once per "refresh window"; a quarter
	// of the interval keeps a refresh at most 25% late.
	window := min(max(cfg.RefreshInterval/4, time.Second), time.Minute)
	v.jwks = jwk.NewCache(v.ctx,
		jwk.WithRefreshWindow(window),
		jwk.WithErrSink(jwk.ErrSink(errSinkFunc(func(err error) {
			v.log.Warn("jwks background refresh failed, keeping the last good key set", errAttr(err))
		}))),
	)
	err = v.jwks.Register(cfg.JWKSURL,
		jwk.WithHTTPClient(v.getter),
		jwk.WithRefreshInterval(cfg.RefreshInterval),
		jwk.WithIgnoreParseError(true),
		jwk.WithPostFetcher(jwk.PostFetchFunc(func(_ string, set jwk.Set) (jwk.Set, error) {
			return set, v.publish(set)
		})),
	)
	if err != nil {
		v.cancel()
		return nil, fmt.Errorf("registering jwks url: %w", err)
	}
	v.nextRetry.Store(time.Now().Add(coldRetryMin).UnixNano())
	go v.run()
	return v, nil
}

type errSinkFunc func(error)

func (f errSinkFunc) Error(err error) { f(err) }

// run owns every fetch this package starts itself: the first one, cold-start
// retries and unknown-kid refetches. It ends when v.ctx does.
func (v *Validator) run() {
	defer close(v.done)
	// One jwk.Cache.Refresh starts exactly one background refresh chain
	// (httprc schedules the next refresh whether or not this one succeeds).
	if _, err := v.jwks.Refresh(v.ctx, v.cfg.JWKSURL); err != nil && v.ctx.Err() == nil {
		v.noteFetchError(err)
		v.log.Warn("first jwks fetch failed, retrying", errAttr(err))
	}
	backoff := coldRetryMin
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var retry <-chan time.Time
		if v.keys.Load() == nil {
			timer.Reset(backoff)
			v.nextRetry.Store(time.Now().Add(backoff).UnixNano())
			retry = timer.C
		}
		select {
		case <-v.ctx.Done():
			return
		case <-retry:
			if err := v.fetchDirect(); err != nil && v.ctx.Err() == nil {
				v.log.Warn("jwks fetch failed, no key set yet", errAttr(err), "retry_in", min(2*backoff, coldRetryMax).String())
			}
			backoff = min(2*backoff, coldRetryMax)
		case done := <-v.refetchReq:
			timer.Stop()
			if err := v.fetchDirect(); err != nil && v.ctx.Err() == nil {
				v.log.Warn("jwks refetch for unknown kid failed, keeping the last good key set", errAttr(err))
			}
			v.refetchMu.Lock()
			v.inflight = nil
			v.refetchMu.Unlock()
			close(done)
		}
	}
}

// Close stops the background refresh and waits for this package's own
// goroutine. Safe to call more than once.
func (v *Validator) Close() {
	v.closeOnce.Do(func() {
		v.cancel()
		<-v.done
	})
}

// Ready returns nil once a key set has been loaded (it stays nil while the
// JWKS endpoint is down afterwards: the last good set keeps serving).
func (v *Validator) Ready() error {
	if v.keys.Load() != nil {
		return nil
	}
	if p := v.lastErr.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, *p)
	}
	return ErrNotReady
}

func (v *Validator) noteFetchError(err error) { v.lastErr.Store(&err) }

// retryAfter is the Retry-After for a 503: seconds until the next fetch.
func (v *Validator) retryAfter() int {
	d := time.Until(time.Unix(0, v.nextRetry.Load()))
	return min(max(int((d+time.Second-1)/time.Second), 1), int(coldRetryMax/time.Second))
}

// Stats returns a snapshot of the counters.
func (v *Validator) Stats() Stats {
	s := Stats{
		JWKSFetches:         v.stats.fetches.Load(),
		JWKSFetchErrors:     v.stats.fetchErrors.Load(),
		JWKSLoads:           v.stats.loads.Load(),
		UnknownKIDRefetches: v.stats.refetches.Load(),
		Verifications:       v.stats.verifications.Load(),
		CacheHits:           v.stats.hits.Load(),
		CacheMisses:         v.stats.misses.Load(),
	}
	if v.cache != nil {
		s.CacheEntries = v.cache.len()
	}
	if ks := v.keys.Load(); ks != nil {
		s.Keys, s.KeysLoadedAt = ks.size(), ks.loadedAt
	}
	return s
}

// Validate checks token (the compact JWS, without "Bearer ") and returns
// its claims. Errors wrap ErrInvalidToken (as *TokenError) or are
// ErrNotReady. A token seen before and still valid is answered from the
// cache without signature verification.
func (v *Validator) Validate(ctx context.Context, token string) (*Claims, error) {
	if token == "" {
		return nil, invalid("missing token", nil)
	}
	if len(token) > v.cfg.MaxTokenBytes {
		return nil, invalid("token too large", nil)
	}
	now := time.Now()
	var sum [32]byte
	if v.cache != nil {
		sum = sha256.Sum256(unsafeBytes(token))
		if e := v.cache.get(&sum); e != nil {
			ks := v.keys.Load()
			switch {
			case !now.Before(e.until):
				v.cache.remove(&sum)
				v.stats.hits.Add(1)
				return nil, invalid("token expired", nil)
			case ks != nil && ks.has(e.key):
				v.stats.hits.Add(1)
				return e.claims, nil
			default: // its key left the set: validate afresh
				v.cache.remove(&sum)
			}
		}
	}
	v.stats.misses.Add(1)

	hseg, pseg, sseg, err := splitCompact(token)
	if err != nil {
		return nil, err
	}
	h, err := parseHeader(hseg)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(v.cfg.Algorithms, h.alg) {
		return nil, invalid("algorithm not allowed", nil)
	}
	if tt := v.cfg.TokenType; tt != "" {
		typ := h.typ
		if len(typ) > len("application/") && strings.EqualFold(typ[:len("application/")], "application/") {
			typ = typ[len("application/"):]
		}
		if !strings.EqualFold(typ, tt) {
			return nil, invalid("wrong token type", nil)
		}
	}
	sig, err := decodeSegment(sseg, "signature")
	if err != nil {
		return nil, err
	}
	key, err := v.keyFor(ctx, h)
	if err != nil {
		return nil, err
	}
	v.stats.verifications.Add(1)
	if err := verifySignature(key, h.alg, token[:len(hseg)+1+len(pseg)], sig); err != nil {
		return nil, invalid("invalid signature", err)
	}
	rc, err := parseClaims(pseg)
	if err != nil {
		return nil, err
	}
	if err := v.checkClaims(rc, now); err != nil {
		return nil, err
	}
	if v.cache != nil {
		v.cache.put(&sum, &cacheEntry{claims: &rc.Claims, until: rc.ExpiresAt.Add(v.cfg.Leeway), key: key}, now)
	}
	return &rc.Claims, nil
}

// keyFor finds the key for the token's kid and alg, refetching the JWKS
// once (per cooldown) for a kid we have never seen.
func (v *Validator) keyFor(ctx context.Context, h header) (*verifyKey, error) {
	ks := v.keys.Load()
	if ks == nil {
		return nil, ErrNotReady
	}
	cands, ok := ks.keys[h.kid]
	if !ok {
		if why, refused := ks.refused[h.kid]; refused {
			return nil, invalid("key not usable", errors.New(why))
		}
		if ks = v.refetch(ctx); ks != nil {
			cands, ok = ks.keys[h.kid]
		}
		if !ok {
			if ks != nil {
				if why, refused := ks.refused[h.kid]; refused {
					return nil, invalid("key not usable", errors.New(why))
				}
			}
			return nil, invalid("unknown kid", nil)
		}
	}
	for _, k := range cands {
		if slices.Contains(k.algs, h.alg) {
			return k, nil
		}
	}
	return nil, invalid("key does not match algorithm", nil)
}

// refetch asks run to fetch the JWKS now, unless a refetch is in flight
// (then it waits for that one) or the cooldown since the last one has not
// passed (then it returns nil at once). Only unknown kids get here, so
// tokens with known kids never wait on it.
func (v *Validator) refetch(ctx context.Context) *keySet {
	v.refetchMu.Lock()
	ch := v.inflight
	if ch == nil {
		if !v.lastRefetch.IsZero() && time.Since(v.lastRefetch) < v.cfg.UnknownKIDCooldown {
			v.refetchMu.Unlock()
			return nil
		}
		ch = make(chan struct{})
		v.inflight, v.lastRefetch = ch, time.Now()
		v.stats.refetches.Add(1)
		v.refetchReq <- ch // buffered, and only one refetch is in flight
	}
	v.refetchMu.Unlock()
	select {
	case <-ch:
		return v.keys.Load()
	case <-ctx.Done():
	case <-v.ctx.Done():
	}
	return nil
}

func (v *Validator) checkClaims(rc *rawClaims, now time.Time) error {
	c := &rc.Claims
	lw := v.cfg.Leeway
	if !rc.hasIss || c.Issuer != v.cfg.Issuer {
		return invalid("wrong issuer", nil)
	}
	if !rc.hasExp {
		return invalid("missing exp claim", nil)
	}
	if !now.Before(c.ExpiresAt.Add(lw)) {
		return invalid("token expired", nil)
	}
	if rc.hasNbf && now.Add(lw).Before(c.NotBefore) {
		return invalid("token not yet valid", nil)
	}
	if rc.hasIat && now.Add(lw).Before(c.IssuedAt) {
		return invalid("token issued in the future", nil)
	}
	if len(v.cfg.Audience) > 0 && !slices.ContainsFunc(c.Audience, func(a string) bool {
		return slices.Contains(v.cfg.Audience, a)
	}) {
		return invalid("wrong audience", nil)
	}
	return nil
}
