package jwtauth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwt"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"
)

// tracerName is this package's import path, as otel.Tracer wants.
const tracerName = "github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth"

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
	clock  clock
	tracer trace.Tracer
	keys   atomic.Pointer[keySet]
	cache  *tokenCache // nil when disabled

	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{} // closed when run returns
	started time.Time

	pubMu sync.Mutex // serializes publish

	// Unknown-kid refetch: at most one in flight (single flight), at most one
	// per UnknownKIDCooldown (the limiter, keyfunc's approach).
	refetchMu  sync.Mutex
	inflight   chan struct{} // closed when the in-flight refetch ends
	limiter    *rate.Limiter
	refetchReq chan chan struct{}

	registeredOpts []jwt.ValidateOption // jwt.Validate's, built once in New

	nextRetry atomic.Int64 // unix nanos of the next scheduled fetch, for Retry-After
	lastErr   atomic.Pointer[error]
	closeOnce sync.Once
	stats     counters
}

type counters struct {
	fetches, fetchErrors, loads, refetches, verifications, hits, misses atomic.Uint64
	failures                                                            [16]atomic.Uint64 // by reasonIndex
	outcomes                                                            [5]atomic.Uint64  // by outcomeIndex
}

// Stats are counters for metrics and tests. Every field is cheap to read.
type Stats struct {
	JWKSFetches         uint64            // HTTP requests for the JWKS, every cause
	JWKSFetchErrors     uint64            // of which failed (every outcome but "ok")
	JWKSFetchOutcomes   map[string]uint64 // fetches by outcome; keys: JWKSFetchOutcomes, all present
	JWKSLoads           uint64            // key sets installed
	UnknownKIDRefetches uint64            // refetches triggered by an unknown kid
	Verifications       uint64            // signature verifications performed
	CacheHits           uint64            // tokens answered from the verified-token cache
	CacheMisses         uint64            // tokens that went through full validation
	CacheEntries        int               // entries in the verified-token cache now
	Keys                int               // usable keys in the current key set
	KeysLoadedAt        time.Time         // when the current key set was installed; zero if never
	Failures            map[string]uint64 // rejections by reason; keys: FailureReasons, all present
}

// New validates cfg (reporting every problem at once), and starts the
// background JWKS work, kicking off the first fetch without waiting for it:
// until it succeeds, Ready and Validate return ErrNotReady. The background
// work ends with Close or when ctx is cancelled.
func New(ctx context.Context, cfg Config) (*Validator, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	v := &Validator{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "jwtauth"),
		clock:      cfg.clock,
		tracer:     otel.Tracer(tracerName),
		done:       make(chan struct{}),
		refetchReq: make(chan chan struct{}, 1),
		limiter:    rate.NewLimiter(rate.Every(cfg.UnknownKIDCooldown), 1),
	}
	v.registeredOpts = v.registeredOptions()
	if cfg.CacheSize > 0 {
		v.cache = newTokenCache(cfg.CacheSize)
	}
	v.ctx, v.cancel = context.WithCancel(ctx)
	v.started = v.clock.Now()
	v.nextRetry.Store(v.started.UnixNano())
	go v.run()
	return v, nil
}

// run owns every JWKS fetch: the first one, retries, the periodic refresh
// and unknown-kid refetches. It ends when v.ctx does.
func (v *Validator) run() {
	defer close(v.done)
	err := v.fetch(v.ctx, "start")
	backoff := coldRetryMin
	var due time.Time
	schedule := func(err error, cause string) {
		now := v.clock.Now()
		if err == nil {
			backoff = warmRetryMin
			due = now.Add(v.cfg.RefreshInterval)
			v.nextRetry.Store(due.UnixNano())
			return
		}
		if v.ctx.Err() != nil {
			return
		}
		cold := v.keys.Load() == nil
		limit := v.cfg.RefreshInterval
		if cold {
			limit = coldRetryMax
		}
		wait := min(backoff, limit)
		backoff = min(2*backoff, limit)
		due = now.Add(wait)
		v.nextRetry.Store(due.UnixNano())
		switch {
		case cold && now.Sub(v.started) < startupQuiet:
			// The IdP is likely just starting with us.
			v.log.Debug("jwks not reachable yet, retrying", errAttr(err), "retry_in", wait.String())
		case cold:
			v.log.Warn("jwks fetch failed, no key set yet", errAttr(err), "retry_in", wait.String())
		default:
			v.log.Warn("jwks "+cause+" failed, keeping the last good key set", errAttr(err), "retry_in", wait.String())
		}
	}
	schedule(err, "start")
	for {
		if v.ctx.Err() != nil {
			return
		}
		timer, stop := v.clock.After(due.Sub(v.clock.Now()))
		select {
		case <-v.ctx.Done():
			stop()
			return
		case <-timer:
			schedule(v.fetch(v.ctx, "refresh"), "refresh")
		case done := <-v.refetchReq:
			stop()
			err := v.fetch(v.ctx, "unknown_kid")
			if err != nil && v.ctx.Err() == nil {
				v.log.Warn("jwks refetch for an unknown kid failed, keeping the last good key set", errAttr(err))
			} else if err == nil {
				schedule(nil, "")
			}
			v.refetchMu.Lock()
			v.inflight = nil
			v.refetchMu.Unlock()
			close(done)
		}
	}
}

// Close stops the background work and waits for it. Safe to call more than
// once.
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

// retryAfter is the Retry-After for a 503: seconds until the next fetch.
func (v *Validator) retryAfter() int {
	d := time.Unix(0, v.nextRetry.Load()).Sub(v.clock.Now())
	return min(max(int((d+time.Second-1)/time.Second), 1), int(coldRetryMax/time.Second))
}

// Stats returns a snapshot of the counters.
func (v *Validator) Stats() Stats {
	s := Stats{
		JWKSFetches:         v.stats.fetches.Load(),
		JWKSFetchErrors:     v.stats.fetchErrors.Load(),
		JWKSFetchOutcomes:   make(map[string]uint64, len(JWKSFetchOutcomes)),
		JWKSLoads:           v.stats.loads.Load(),
		UnknownKIDRefetches: v.stats.refetches.Load(),
		Verifications:       v.stats.verifications.Load(),
		CacheHits:           v.stats.hits.Load(),
		CacheMisses:         v.stats.misses.Load(),
		Failures:            make(map[string]uint64, len(FailureReasons)),
	}
	for i, o := range JWKSFetchOutcomes {
		s.JWKSFetchOutcomes[o] = v.stats.outcomes[i].Load()
	}
	for i, r := range FailureReasons {
		s.Failures[r] = v.stats.failures[i].Load()
	}
	if v.cache != nil {
		s.CacheEntries = v.cache.len()
	}
	if ks := v.keys.Load(); ks != nil {
		s.Keys, s.KeysLoadedAt = ks.size(), ks.loadedAt
	}
	return s
}

// countFailure counts a rejection under its reason.
func (v *Validator) countFailure(reason string) {
	i, ok := reasonIndex[reason]
	if !ok {
		i = reasonIndex[ReasonOther]
	}
	v.stats.failures[i].Add(1)
}

// tokenSum is the cache key: the token's SHA-256. Tokens up to 2 KiB (all
// we have met: Wristband ~1 KB, Hydra with 4096-bit RSA ~1.3 KB) are copied
// to the stack first, which keeps the cached path free of allocations
// without unsafe; a larger token costs one allocation.
func tokenSum(tok string) [32]byte {
	var buf [2 << 10]byte
	if len(tok) <= len(buf) {
		n := copy(buf[:], tok)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(tok))
}

// Validate checks token (the compact JWS, without "Bearer ") and returns
// its claims. Errors wrap ErrInvalidToken (as *TokenError) or are
// ErrNotReady. A token seen before and still valid is answered from the
// cache without signature verification.
func (v *Validator) Validate(ctx context.Context, token string) (*Claims, error) {
	if token == "" {
		v.countFailure(ReasonMissing)
		return nil, errMissingToken
	}
	if len(token) > v.cfg.MaxTokenBytes {
		v.countFailure(ReasonMalformed)
		return nil, errTooLarge
	}
	now := v.clock.Now()
	var sum [32]byte
	if v.cache != nil {
		sum = tokenSum(token)
		if e := v.cache.get(&sum); e != nil {
			ks := v.keys.Load()
			switch {
			case !now.Before(e.until):
				v.cache.remove(&sum)
				v.stats.hits.Add(1)
				v.countFailure(ReasonExpired)
				return nil, errExpiredCached
			case ks != nil && ks.has(e.key):
				v.stats.hits.Add(1)
				return e.claims, nil
			default: // its key left the set: validate afresh
				v.cache.remove(&sum)
			}
		}
	}
	v.stats.misses.Add(1)
	claims, key, err := v.validateCold(ctx, token, now)
	if err != nil {
		reason := ReasonNotReady
		if te, ok := err.(*TokenError); ok {
			reason = te.Reason
		}
		v.countFailure(reason)
		return nil, err
	}
	if v.cache != nil {
		v.cache.put(&sum, &cacheEntry{claims: claims, until: claims.ExpiresAt.Add(v.cfg.Leeway), key: key}, now)
	}
	return claims, nil
}

// refetch asks run to fetch the JWKS now, unless a refetch is in flight
// (then it waits for that one) or the limiter has no token (then it returns
// nil at once: the cooldown since the last refetch has not passed). Only
// unknown kids get here, so tokens with known kids never wait on it.
func (v *Validator) refetch(ctx context.Context) *keySet {
	v.refetchMu.Lock()
	ch := v.inflight
	if ch == nil {
		if !v.limiter.AllowN(v.clock.Now(), 1) {
			v.refetchMu.Unlock()
			return nil
		}
		ch = make(chan struct{})
		v.inflight = ch
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
