package idp

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits of the token endpoint, like a real IdP's (Wristband, Auth0 and
// Okta all rate-limit token requests per client and per tenant). A zero
// rate turns that limit off.
type Limits struct {
	// PerClient limits authenticated requests per client_id. Failed
	// authentications are not charged to the client, so that someone who
	// knows a client_id cannot lock the real client out; they count against
	// their source instead.
	PerClient      rate.Limit
	PerClientBurst int
	// PerSource limits every token request per source IP (the TCP peer, or
	// what the Echo's IPExtractor says when trusted proxies are configured).
	PerSource      rate.Limit
	PerSourceBurst int
}

// Defaults: far above what a gateway needs (one request per renewal, a few
// more after an outage), so tests and benchmarks never meet them, and low
// enough that a client stuck in a retry loop is noticed.
const (
	DefaultPerClient      = 20
	DefaultPerClientBurst = 40
	DefaultPerSource      = 50
	DefaultPerSourceBurst = 100
)

// maxSources bounds the per-source table: a flood from many addresses
// (IPv6 makes them cheap) must not grow memory without bound.
const maxSources = 65536

// sweepEvery bounds how often a full table is swept for refilled buckets.
const sweepEvery = time.Second

// limiter is a set of token buckets keyed by a string.
type limiter struct {
	limit rate.Limit
	burst int
	// fixed: keys are known up front (client IDs); unknown keys pass.
	fixed bool

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	// overflow is shared by new keys while the table is full of active ones.
	overflow *rate.Limiter
	// swept is when the table was last swept, sweeps how often (tests): a
	// full table of active sources is swept at most once a second, not on
	// every request from a new one (a full pass under the lock).
	swept  time.Time
	sweeps int
}

func newLimiter(limit rate.Limit, burst int, keys []string) *limiter {
	if limit <= 0 {
		return nil
	}
	burst = max(burst, 1)
	l := &limiter{limit: limit, burst: burst, buckets: map[string]*rate.Limiter{}, overflow: rate.NewLimiter(limit, burst)}
	if keys != nil {
		l.fixed = true
		for _, k := range keys {
			l.buckets[k] = rate.NewLimiter(limit, burst)
		}
	}
	return l
}

// wait reports how long key must wait before its next request is allowed:
// 0 means allowed now (and a token has been taken).
func (l *limiter) wait(key string, now time.Time) time.Duration {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if l.fixed {
			return 0
		}
		if len(l.buckets) >= maxSources && now.Sub(l.swept) >= sweepEvery {
			l.sweep(now)
		}
		if len(l.buckets) >= maxSources {
			b = l.overflow
		} else {
			b = rate.NewLimiter(l.limit, l.burst)
			l.buckets[key] = b
		}
	}
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// sweep drops buckets that have refilled completely: a full bucket is the
// same as a new one, so this forgets nothing.
func (l *limiter) sweep(now time.Time) {
	l.swept = now
	l.sweeps++
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, k)
		}
	}
}

// retryAfter renders d as Retry-After delay-seconds, rounded up: a client
// that obeys it must find a token in the bucket.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10)
}

// sourceIP is the address the per-source limit is keyed on. Forwarding
// headers are believed only when the Echo was configured to trust them (an
// IPExtractor); otherwise any caller could pick its own bucket.
func sourceIP(r *http.Request, extract func(*http.Request) string) string {
	if extract != nil {
		return extract(r)
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
