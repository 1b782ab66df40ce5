package jwtauth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults. Each is chosen for the M2M case this package serves: a handful of
// clients holding one token each for its whole lifetime (Wristband's sample
// lifetime is 1800 s), verified by a service with a few replicas.
const (
	// DefaultLeeway absorbs clock skew between the IdP and this host, mostly
	// for iat/nbf on a token minted a moment ago by an IdP whose clock runs
	// ahead. NTP keeps hosts within milliseconds, but a VM resumed from
	// suspend or a host without NTP drifts by seconds. 30 s covers that while
	// extending a stolen token's life by under 2% of a 1800 s lifetime. Envoy
	// uses 60 s; we take half because exp is the only revocation an M2M token
	// has. Set Config.Leeway < 0 for none (Wristband's TS/Python libraries).
	DefaultLeeway = 30 * time.Second
	// MaxLeeway is the most Config.Leeway may be: beyond a minute, leeway stops
	// being clock skew and becomes a longer token lifetime.
	MaxLeeway = 60 * time.Second
	// DefaultMaxTokenBytes is 8 KiB: Wristband tokens are ~1 KB and Hydra's
	// (4096-bit RS256) ~1.3 KB, so this is 6x headroom, and it matches the
	// common 8 KiB header-line limit of proxies (nginx) in front of us. Anything
	// larger is refused before a byte of it is decoded.
	DefaultMaxTokenBytes = 8 << 10
	// DefaultRefreshInterval bounds how long a key removed from the JWKS (say,
	// after a compromise) keeps validating. New keys do not wait for it: an
	// unknown kid triggers a refetch. One small GET per 5 min per replica is
	// nothing for the IdP. (auth0: 1 min, Envoy: 10 min, keyfunc: 1 h.)
	DefaultRefreshInterval = 5 * time.Minute
	// DefaultUnknownKIDCooldown is the least time between two unknown-kid
	// refetches. A flood of random kids then costs the IdP at most 12 GETs a
	// minute per replica (jwks-rsa allows 10 a minute), while a token from a
	// key rotated in during a flood is refused for at most 5 s: with the old
	// fixed minute, two key changes 5 s apart cost 54 s of 401s (issue 8.3).
	DefaultUnknownKIDCooldown = 5 * time.Second
	// DefaultCacheSize bounds the verified-token cache. Only tokens that
	// passed every check get in, so attackers cannot fill it; 10,000 entries
	// (~5 MB at most) cover 10,000 M2M clients active at once, and an
	// eviction costs only one extra signature check.
	DefaultCacheSize = 10_000
	// DefaultRealm is the realm in WWW-Authenticate challenges.
	DefaultRealm = "api"
	// DefaultHTTPTimeout bounds each JWKS fetch when Config.HTTPClient is nil.
	DefaultHTTPTimeout = 10 * time.Second

	// maxJWKSBytes bounds a JWKS response body: real ones are a few KB.
	maxJWKSBytes = 1 << 20
	// coldRetryMin/Max pace JWKS retries while no key set was ever loaded
	// (the background refresh would otherwise wait a whole RefreshInterval).
	// 50 ms first: at start-up the IdP is usually only a moment from
	// listening, and every retry before it does is a 503 for our callers.
	coldRetryMin = 50 * time.Millisecond
	coldRetryMax = 30 * time.Second
	// startupQuiet is how long after New a failing first fetch logs at debug
	// rather than warn: services started together wait for each other for a
	// second or two, and that is not worth a WARN. A failure that lasts is.
	startupQuiet = 2 * time.Second
	// warmRetryMin paces retries after a failed refresh of a loaded set;
	// they double up to RefreshInterval.
	warmRetryMin = time.Second
	// maxRedirects bounds the https same-host redirects a JWKS fetch follows.
	maxRedirects = 3
)

// Config configures a Validator. Zero values take the defaults above.
type Config struct {
	JWKSURL            string        // required, http(s)
	Issuer             string        // required, exact match with "iss"
	Audience           []string      // optional; if set, "aud" must contain one of them
	Algorithms         []string      // default ["RS256"]; asymmetric JWS algorithms only
	Leeway             time.Duration // default DefaultLeeway; < 0 means none; at most MaxLeeway
	TokenType          string        // optional, e.g. "at+JWT" (RFC 9068); checked case-insensitively, "application/" prefix allowed
	MaxTokenBytes      int           // default DefaultMaxTokenBytes
	HTTPClient         *http.Client  // nil: a client with DefaultHTTPTimeout and no keep-alive; a given one is copied, gets DefaultHTTPTimeout if it has none, and its CheckRedirect is replaced (see jwksRedirectPolicy)
	RefreshInterval    time.Duration // JWKS background refresh; default DefaultRefreshInterval; >= 1 s
	UnknownKIDCooldown time.Duration // least time between unknown-kid refetches; default DefaultUnknownKIDCooldown
	CacheSize          int           // verified-token cache entries; default DefaultCacheSize; < 0 disables the cache
	Realm              string        // default DefaultRealm
	Logger             *slog.Logger  // nil: discard

	clock clock // nil: real time; tests inject a fake
}

// supportedAlgs are the JWS algorithms this package can verify. Symmetric
// (HS*) and "none" are absent on purpose: keys come from a public JWKS, and
// accepting HS* is how the RSA-public-key-as-HMAC-secret attack works.
var supportedAlgs = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

// normalize fills defaults and reports every problem at once.
func (c Config) normalize() (Config, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.JWKSURL == "" {
		bad("jwks url is required")
	} else if u, err := url.Parse(c.JWKSURL); err != nil {
		bad("jwks url: %w", err)
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("jwks url %q: want an absolute http or https url", u.Redacted())
	}
	if c.Issuer == "" {
		bad("issuer is required")
	}
	for i, a := range c.Audience {
		if a == "" {
			bad("audience[%d] is empty", i)
		}
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = []string{"RS256"}
	}
	for _, a := range c.Algorithms {
		if !supportedAlgs[a] {
			bad("algorithm %q is not supported (want asymmetric: RS256..512, PS256..512, ES256..512, EdDSA)", a)
		}
	}
	switch {
	case c.Leeway == 0:
		c.Leeway = DefaultLeeway
	case c.Leeway < 0:
		c.Leeway = 0
	case c.Leeway > MaxLeeway:
		bad("leeway %s is more than %s", c.Leeway, MaxLeeway)
	}
	if strings.ContainsFunc(c.TokenType, isCtl) || strings.ContainsAny(c.TokenType, `"\`) {
		bad("token type: has a quote, backslash or control character (e.g. at+jwt)")
	}
	switch {
	case c.MaxTokenBytes == 0:
		c.MaxTokenBytes = DefaultMaxTokenBytes
	case c.MaxTokenBytes < 0:
		bad("max token bytes %d is negative", c.MaxTokenBytes)
	}
	if c.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// One GET every few minutes gains nothing from keep-alive, and an idle
		// connection is a goroutine that would outlive Close.
		t.DisableKeepAlives = true
		c.HTTPClient = &http.Client{Timeout: DefaultHTTPTimeout, Transport: t}
	} else {
		hc := *c.HTTPClient // never mutate the caller's client
		if hc.Timeout <= 0 {
			hc.Timeout = DefaultHTTPTimeout // a hung JWKS would stall every refetch behind it
		}
		c.HTTPClient = &hc
	}
	c.HTTPClient.CheckRedirect = jwksRedirectPolicy
	switch {
	case c.RefreshInterval == 0:
		c.RefreshInterval = DefaultRefreshInterval
	case c.RefreshInterval < time.Second:
		bad("refresh interval %s is under 1s", c.RefreshInterval)
	}
	switch {
	case c.UnknownKIDCooldown == 0:
		c.UnknownKIDCooldown = DefaultUnknownKIDCooldown
	case c.UnknownKIDCooldown < 0:
		bad("unknown kid cooldown %s is negative", c.UnknownKIDCooldown)
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.Realm == "" {
		c.Realm = DefaultRealm
	}
	if strings.ContainsFunc(c.Realm, isCtl) {
		bad("realm %q has a control character", c.Realm)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.clock == nil {
		c.clock = realClock{}
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("jwtauth config: %w", err)
	}
	return c, nil
}

func isCtl(r rune) bool { return r < 0x20 || r == 0x7f }

// jwksRedirectPolicy lets a JWKS fetch follow a redirect only to https on
// the same host name as the request it answers (any port: the certificate
// must still be valid for that name), at most maxRedirects times. The JWKS decides which keys we trust: a redirect to
// another host would hand that decision to whoever controls it, and one to
// plain http to anyone on the path. An http JWKS URL may still be upgraded to
// https on its own host.
func jwksRedirectPolicy(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("jwks: more than %d redirects", maxRedirects)
	}
	prev := via[len(via)-1].URL
	if req.URL.Scheme != "https" || !strings.EqualFold(req.URL.Hostname(), prev.Hostname()) {
		return fmt.Errorf("jwks: refusing a redirect from %s://%s to %s://%s (only https on the same host is followed)",
			prev.Scheme, prev.Host, req.URL.Scheme, req.URL.Host)
	}
	return nil
}
