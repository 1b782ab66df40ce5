package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/lb"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/m2m"
)

// Each collector reads its source's Stats() once per scrape and turns the
// counters into const metrics: the packages keep plain atomics on their hot
// paths and know nothing of Prometheus.

func counter(d *prometheus.Desc, v uint64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// TokenStatser is what TokenSourceCollector reads; *m2m.TokenSource is one.
type TokenStatser interface{ Stats() m2m.Stats }

type tokenCollector struct {
	src                                             TokenStatser
	fetches, renewals, invalidations, waits, expiry *prometheus.Desc
}

// TokenSourceCollector exports an M2M token source: token requests by
// outcome (ok, transient: retried with backoff, permanent: refused),
// renewals, invalidations, callers that had to wait, and the seconds until
// the current token expires.
func TokenSourceCollector(src TokenStatser) prometheus.Collector {
	return &tokenCollector{
		src: src,
		fetches: prometheus.NewDesc("m2m_token_fetches_total",
			"Token requests sent to the token endpoint, by outcome: ok, transient (network, 5xx, 429: retried with backoff), permanent (refused, e.g. invalid_client).", []string{"outcome"}, nil),
		renewals: prometheus.NewDesc("m2m_token_renewals_total",
			"Tokens that replaced one still usable (routine background renewal).", nil, nil),
		invalidations: prometheus.NewDesc("m2m_token_invalidations_total",
			"Tokens dropped because the resource server refused them (401).", nil, nil),
		waits: prometheus.NewDesc("m2m_token_waits_total",
			"Token calls that found no usable token and had to wait for a fetch (or fail).", nil, nil),
		expiry: prometheus.NewDesc("m2m_token_expiry_seconds",
			"Seconds until the current token expires; 0 when none is held.", nil, nil),
	}
}

func (c *tokenCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.fetches
	ch <- c.renewals
	ch <- c.invalidations
	ch <- c.waits
	ch <- c.expiry
}

func (c *tokenCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	ch <- counter(c.fetches, s.FetchesOK, "ok")
	ch <- counter(c.fetches, s.FetchesTransient, "transient")
	ch <- counter(c.fetches, s.FetchesPermanent, "permanent")
	ch <- counter(c.renewals, s.Renewals)
	ch <- counter(c.invalidations, s.Invalidations)
	ch <- counter(c.waits, s.Waits)
	ch <- gauge(c.expiry, s.Remaining.Seconds())
}

// ValidatorStatser is what ValidatorCollector reads; *jwtauth.Validator is one.
type ValidatorStatser interface{ Stats() jwtauth.Stats }

type validatorCollector struct {
	src ValidatorStatser

	jwksFetches, jwksLoads, keys, loadedAt, refetches *prometheus.Desc
	verifications, cacheHits, cacheMisses, cacheSize  *prometheus.Desc
	failures                                          *prometheus.Desc
}

// ValidatorCollector exports a JWT validator: JWKS fetches by outcome, keys
// loaded and when, unknown-kid refetches, validation failures by reason,
// signature verifications and the verified-token cache. Outcomes and
// reasons come from jwtauth's fixed lists, never from a token.
func ValidatorCollector(src ValidatorStatser) prometheus.Collector {
	return &validatorCollector{
		src: src,
		jwksFetches: prometheus.NewDesc("jwtauth_jwks_fetches_total",
			"HTTP requests for the JWKS, every cause, by outcome (ok, transport, status, body, no_keys).", []string{"outcome"}, nil),
		jwksLoads: prometheus.NewDesc("jwtauth_jwks_loads_total",
			"Key sets installed.", nil, nil),
		keys: prometheus.NewDesc("jwtauth_jwks_keys",
			"Usable keys in the current key set.", nil, nil),
		loadedAt: prometheus.NewDesc("jwtauth_jwks_last_load_timestamp_seconds",
			"Unix time the current key set was installed; 0 if never.", nil, nil),
		refetches: prometheus.NewDesc("jwtauth_jwks_unknown_kid_refetches_total",
			"JWKS refetches triggered by a token with an unknown key ID.", nil, nil),
		verifications: prometheus.NewDesc("jwtauth_signature_verifications_total",
			"Token signatures verified (cache misses that got that far).", nil, nil),
		cacheHits: prometheus.NewDesc("jwtauth_cache_hits_total",
			"Tokens answered from the verified-token cache.", nil, nil),
		cacheMisses: prometheus.NewDesc("jwtauth_cache_misses_total",
			"Tokens that went through full validation.", nil, nil),
		cacheSize: prometheus.NewDesc("jwtauth_cache_entries",
			"Entries in the verified-token cache.", nil, nil),
		failures: prometheus.NewDesc("jwtauth_validation_failures_total",
			"Requests refused by the bearer-token check, by reason (missing, malformed, signature, unknown_kid, expired, forbidden, ...).", []string{"reason"}, nil),
	}
}

func (c *validatorCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.jwksFetches, c.jwksLoads, c.keys, c.loadedAt, c.refetches,
		c.verifications, c.cacheHits, c.cacheMisses, c.cacheSize, c.failures} {
		ch <- d
	}
}

func (c *validatorCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	for _, o := range jwtauth.JWKSFetchOutcomes {
		ch <- counter(c.jwksFetches, s.JWKSFetchOutcomes[o], o)
	}
	for _, r := range jwtauth.FailureReasons {
		ch <- counter(c.failures, s.Failures[r], r)
	}
	ch <- counter(c.jwksLoads, s.JWKSLoads)
	ch <- gauge(c.keys, float64(s.Keys))
	var at float64
	if !s.KeysLoadedAt.IsZero() {
		at = float64(s.KeysLoadedAt.UnixNano()) / 1e9
	}
	ch <- gauge(c.loadedAt, at)
	ch <- counter(c.refetches, s.UnknownKIDRefetches)
	ch <- counter(c.verifications, s.Verifications)
	ch <- counter(c.cacheHits, s.CacheHits)
	ch <- counter(c.cacheMisses, s.CacheMisses)
	ch <- gauge(c.cacheSize, float64(s.CacheEntries))
}

// LBStatser is what DownstreamCollector reads; *lb.Transport is one.
type LBStatser interface{ Stats() []lb.AddrStats }

type lbCollector struct {
	src LBStatser

	requests, failures, retries, ejections, inFlight, ejected *prometheus.Desc
}

// DownstreamCollector exports a load-balancing transport per replica. The
// replica label is the resolved IP address and host the configured host
// name: neither comes from a caller.
func DownstreamCollector(src LBStatser) prometheus.Collector {
	l := []string{"host", "replica"}
	return &lbCollector{
		src: src,
		requests: prometheus.NewDesc("lb_requests_total",
			"Attempts sent to a replica.", l, nil),
		failures: prometheus.NewDesc("lb_failures_total",
			"Attempts that failed before a response arrived.", l, nil),
		retries: prometheus.NewDesc("lb_retries_total",
			"Attempts on a replica that retried an attempt failed on another.", l, nil),
		ejections: prometheus.NewDesc("lb_ejections_total",
			"Times a replica was taken out of rotation after a connection error.", l, nil),
		inFlight: prometheus.NewDesc("lb_in_flight",
			"Requests in flight on a replica.", l, nil),
		ejected: prometheus.NewDesc("lb_ejected",
			"1 while a replica is out of rotation.", l, nil),
	}
}

func (c *lbCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.requests, c.failures, c.retries, c.ejections, c.inFlight, c.ejected} {
		ch <- d
	}
}

func (c *lbCollector) Collect(ch chan<- prometheus.Metric) {
	for _, a := range c.src.Stats() {
		host, ip := a.Host, a.Addr.String()
		ch <- counter(c.requests, a.Requests, host, ip)
		ch <- counter(c.failures, a.Failures, host, ip)
		ch <- counter(c.retries, a.Retries, host, ip)
		ch <- counter(c.ejections, a.Ejections, host, ip)
		ch <- gauge(c.inFlight, float64(a.InFlight), host, ip)
		var ej float64
		if a.Ejected {
			ej = 1
		}
		ch <- gauge(c.ejected, ej, host, ip)
	}
}
