// Package lb is a client-side load-balancing http.RoundTripper for calling a
// service that DNS resolves to several replicas (docker compose --scale,
// a Swarm service with endpoint_mode dnsrr, a Kubernetes headless Service).
//
// A plain http.Transport resolves a name once per new connection and then
// keeps that connection alive, so every request of a busy client lands on the
// replica it happened to connect to first, and replicas added later never see
// traffic. Transport instead keeps one connection pool per resolved address,
// re-resolves every host it has seen on a timer, spreads requests over the
// addresses (round-robin, the less busy of two neighbours), takes an address
// out of rotation for a short cool-off after a connection error (passive
// health), and retries idempotent, body-less requests on another address when
// the attempt failed before any response arrived.
//
// The request is never rewritten: the URL keeps the host name, so the Host
// header and the TLS ServerName stay the name; only the dial goes to the
// chosen IP.
package lb

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Resolver looks up a host's addresses. *net.Resolver satisfies it; tests
// inject a fake.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Config configures a Transport. The zero value is usable: every field has a
// default.
type Config struct {
	// Resolver defaults to net.DefaultResolver.
	Resolver Resolver
	// ResolveEvery is how often every known host is re-resolved, so that
	// replicas added or removed while the client runs are picked up.
	// Default 2s.
	ResolveEvery time.Duration
	// ResolveTimeout bounds one lookup. Default 1s.
	ResolveTimeout time.Duration
	// DialTimeout bounds one TCP connect. Short by default (1s) because a
	// replica that has just been killed often never answers the SYN, and
	// another replica is waiting.
	DialTimeout time.Duration
	// AttemptTimeout bounds the wait for response headers of one attempt.
	// A request in flight on a connection to a killed container gets no RST,
	// only silence; this turns the silence into an error that can be retried
	// elsewhere. Default 5s; negative disables it (the caller's context is
	// then the only bound).
	AttemptTimeout time.Duration
	// EjectFor is the cool-off of an address after a connection error.
	// Default 3s. When every address is ejected, all are used anyway: a
	// guess beats certain failure.
	EjectFor time.Duration
	// MaxAttempts is the number of addresses an idempotent request may try.
	// Default 3.
	MaxAttempts int
	// MaxIdleConnsPerAddr is the keep-alive pool size per address. Default 64.
	MaxIdleConnsPerAddr int
	// IdleConnTimeout closes unused keep-alive connections. Default 30s.
	IdleConnTimeout time.Duration
	// TLSClientConfig is used for https targets; ServerName defaults to the
	// URL's host name, as with http.Transport.
	TLSClientConfig *tls.Config
	// Logger receives address changes and ejections (debug/info). Nil: none.
	Logger *slog.Logger
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.Resolver == nil {
		out.Resolver = net.DefaultResolver
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&out.ResolveEvery, 2*time.Second)
	def(&out.ResolveTimeout, time.Second)
	def(&out.DialTimeout, time.Second)
	def(&out.AttemptTimeout, 5*time.Second)
	def(&out.EjectFor, 3*time.Second)
	def(&out.IdleConnTimeout, 30*time.Second)
	if out.MaxAttempts <= 0 {
		out.MaxAttempts = 3
	}
	if out.MaxIdleConnsPerAddr <= 0 {
		out.MaxIdleConnsPerAddr = 64
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return out
}

// ErrClosed is returned by RoundTrip after Close.
var ErrClosed = errors.New("lb: transport closed")

// ResolveError is a failure to turn the host's name into addresses. A
// resolver timeout is one too, but it says nothing about the upstream's
// speed: callers should not report it as the upstream timing out.
type ResolveError struct {
	Host string
	Err  error // nil: the name resolved to no address
}

func (e *ResolveError) Error() string {
	if e.Err == nil {
		return "lb: resolving " + e.Host + ": no addresses"
	}
	return "lb: resolving " + e.Host + ": " + e.Err.Error()
}

func (e *ResolveError) Unwrap() error { return e.Err }

// Transport is an http.RoundTripper; build it with NewTransport and Close it
// when done. It is safe for concurrent use.
type Transport struct {
	cfg Config

	mu     sync.Mutex
	pools  map[string]*pool // by host name (no port)
	closed bool

	stop chan struct{}
	done chan struct{}
}

// NewTransport validates cfg, applies defaults and starts the re-resolver
// goroutine, which Close stops.
func NewTransport(cfg Config) (*Transport, error) {
	if cfg.ResolveEvery < 0 || cfg.ResolveTimeout < 0 || cfg.DialTimeout < 0 || cfg.EjectFor < 0 || cfg.IdleConnTimeout < 0 {
		return nil, errors.New("lb: durations must not be negative (except AttemptTimeout)")
	}
	t := &Transport{
		cfg:   cfg.withDefaults(),
		pools: make(map[string]*pool),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go t.resolveLoop()
	return t, nil
}

// Close stops the re-resolver and closes idle connections. In-flight
// requests finish; later ones fail with ErrClosed. Close is idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	pools := t.poolsLocked()
	t.mu.Unlock()
	close(t.stop)
	<-t.done
	for _, p := range pools {
		for _, b := range p.snapshot() {
			b.rt.CloseIdleConnections()
		}
	}
	return nil
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach every
// per-address pool.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	pools := t.poolsLocked()
	t.mu.Unlock()
	for _, p := range pools {
		for _, b := range p.snapshot() {
			b.rt.CloseIdleConnections()
		}
	}
}

func (t *Transport) poolsLocked() []*pool {
	out := make([]*pool, 0, len(t.pools))
	for _, p := range t.pools {
		out = append(out, p)
	}
	return out
}

// AddrStats describes one resolved address of a host.
type AddrStats struct {
	Host      string
	Addr      netip.Addr
	Requests  uint64 // attempts sent to this address
	Failures  uint64 // attempts that failed before a response
	Retries   uint64 // of Requests, those retrying an attempt that failed on another address
	Ejections uint64 // times the address was taken out of rotation (not counting extensions of a running cool-off)
	InFlight  int64
	Ejected   bool
}

// Stats returns the current addresses of every host the transport has seen,
// sorted by host then address.
func (t *Transport) Stats() []AddrStats {
	t.mu.Lock()
	pools := t.poolsLocked()
	t.mu.Unlock()
	now := time.Now().UnixNano()
	var out []AddrStats
	for _, p := range pools {
		for _, b := range p.snapshot() {
			out = append(out, AddrStats{
				Host:      p.host,
				Addr:      b.addr,
				Requests:  b.requests.Load(),
				Failures:  b.failures.Load(),
				Retries:   b.retries.Load(),
				Ejections: b.ejections.Load(),
				InFlight:  b.inflight.Load(),
				Ejected:   b.ejectedUntil.Load() > now,
			})
		}
	}
	slices.SortFunc(out, func(a, b AddrStats) int {
		if a.Host != b.Host {
			if a.Host < b.Host {
				return -1
			}
			return 1
		}
		return a.Addr.Compare(b.Addr)
	})
	return out
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || req.URL.Host == "" {
		closeBody(req)
		return nil, errors.New("lb: request has no host")
	}
	p, err := t.poolFor(req.Context(), req.URL.Hostname())
	if err != nil {
		closeBody(req)
		return nil, err
	}
	attempts := 1
	if retryable(req) {
		attempts = t.cfg.MaxAttempts
	}
	var tried []*backend
	var lastErr error
	for i := 0; i < attempts; i++ {
		if err := req.Context().Err(); err != nil {
			if lastErr != nil {
				return nil, fmt.Errorf("%w (after: %w)", err, lastErr)
			}
			return nil, err
		}
		b := p.pick(tried)
		if b == nil {
			break // every address tried
		}
		tried = append(tried, b)
		if i > 0 {
			b.retries.Add(1)
		}
		resp, err := t.attempt(req, b)
		if err == nil {
			return resp, nil
		}
		lastErr = fmt.Errorf("lb: %s via %s: %w", p.host, b.addr, err)
		if req.Context().Err() != nil {
			// The caller gave up; that says nothing about the replica.
			return nil, lastErr
		}
		b.failures.Add(1)
		t.eject(p, b, err)
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("lb: %s: no address", p.host)
	}
	return nil, lastErr
}

func (t *Transport) attempt(req *http.Request, b *backend) (*http.Response, error) {
	b.requests.Add(1)
	b.inflight.Add(1)
	resp, err := b.rt.RoundTrip(req)
	if err != nil {
		b.inflight.Add(-1)
		return nil, err
	}
	// In flight until the caller has read or closed the body: that is when
	// the connection becomes free again.
	resp.Body = &trackedBody{ReadCloser: resp.Body, b: b}
	return resp, nil
}

func (t *Transport) eject(p *pool, b *backend, err error) {
	until := time.Now().Add(t.cfg.EjectFor).UnixNano()
	if b.ejectedUntil.Swap(until) < time.Now().UnixNano() {
		b.ejections.Add(1)
		t.cfg.Logger.Info("lb: address ejected", "host", p.host, "addr", b.addr.String(), "for", t.cfg.EjectFor.String(), "err", err.Error())
	}
	// Idle connections to a replica that just failed are unlikely to be
	// better than a fresh dial later.
	b.rt.CloseIdleConnections()
}

// retryable: idempotent methods without a body can be sent again on another
// address when the first attempt got no response.
func retryable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	return req.Body == nil || req.Body == http.NoBody
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

func (t *Transport) poolFor(ctx context.Context, host string) (*pool, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	p, ok := t.pools[host]
	if !ok {
		p = &pool{host: host, ready: make(chan struct{})}
		t.pools[host] = p
	}
	t.mu.Unlock()
	if !ok {
		// First use: resolve now, so the first request need not wait for the
		// loop. Concurrent first requests wait on ready instead of piling
		// lookups onto the resolver.
		err := t.resolve(p)
		if err != nil {
			t.mu.Lock()
			delete(t.pools, host)
			t.mu.Unlock()
		}
		p.initErr = err
		close(p.ready)
	}
	select {
	case <-p.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if p.initErr != nil {
		return nil, p.initErr
	}
	return p, nil
}

func (t *Transport) resolveLoop() {
	defer close(t.done)
	tick := time.NewTicker(t.cfg.ResolveEvery)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		t.mu.Lock()
		pools := t.poolsLocked()
		t.mu.Unlock()
		for _, p := range pools {
			select {
			case <-p.ready:
			default:
				continue // its first lookup is still running
			}
			if p.initErr != nil {
				continue
			}
			if err := t.resolve(p); err != nil {
				// Keep the last known addresses: a DNS blip must not take a
				// healthy service out of rotation.
				t.cfg.Logger.Debug("lb: re-resolve failed, keeping addresses", "host", p.host, "err", err.Error())
			}
		}
	}
}

func (t *Transport) resolve(p *pool) error {
	addrs, err := t.lookup(p.host)
	if err != nil {
		return err
	}
	old := p.snapshot()
	keep := make(map[netip.Addr]*backend, len(old))
	for _, b := range old {
		keep[b.addr] = b
	}
	next := make([]*backend, 0, len(addrs))
	for _, a := range addrs {
		if b, ok := keep[a]; ok {
			next = append(next, b)
			delete(keep, a)
			continue
		}
		next = append(next, t.newBackend(a))
	}
	if len(keep) > 0 || len(next) != len(old) {
		t.cfg.Logger.Info("lb: addresses changed", "host", p.host, "addrs", fmt.Sprint(addrs))
	}
	p.mu.Lock()
	p.backends = next
	p.mu.Unlock()
	for _, gone := range keep {
		// In-flight requests finish on their connections; idle ones go.
		gone.rt.CloseIdleConnections()
	}
	return nil
}

func (t *Transport) lookup(host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.ResolveTimeout)
	defer cancel()
	ips, err := t.cfg.Resolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, &ResolveError{Host: host, Err: err}
	}
	seen := make(map[netip.Addr]bool, len(ips))
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		a, ok := netip.AddrFromSlice(ip.IP)
		if !ok {
			continue
		}
		a = a.Unmap()
		if ip.Zone != "" {
			a = a.WithZone(ip.Zone)
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, &ResolveError{Host: host}
	}
	// A stable order keeps round-robin fair across re-resolves even when DNS
	// rotates its answers.
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

func (t *Transport) newBackend(a netip.Addr) *backend {
	dialer := &net.Dialer{Timeout: t.cfg.DialTimeout, KeepAlive: 15 * time.Second}
	rt := &http.Transport{
		// Dial the chosen address, whatever host the URL names: the
		// transport still uses the URL's host for Host and TLS ServerName.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return dialer.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		},
		Proxy:               nil, // balancing through a proxy would balance nothing
		TLSClientConfig:     t.cfg.TLSClientConfig,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConns:        t.cfg.MaxIdleConnsPerAddr,
		MaxIdleConnsPerHost: t.cfg.MaxIdleConnsPerAddr,
		IdleConnTimeout:     t.cfg.IdleConnTimeout,
		ForceAttemptHTTP2:   t.cfg.TLSClientConfig != nil,
	}
	if t.cfg.AttemptTimeout > 0 {
		rt.ResponseHeaderTimeout = t.cfg.AttemptTimeout
	}
	return &backend{addr: a, rt: rt}
}

type pool struct {
	host    string
	ready   chan struct{} // closed after the first lookup
	initErr error         // set before ready is closed

	next atomic.Uint64

	mu       sync.RWMutex
	backends []*backend
}

func (p *pool) snapshot() []*backend {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.backends
}

// pick returns an address not in tried: round-robin over the healthy ones,
// taking the less busy of the round-robin choice and its neighbour (with
// sequential traffic both are idle and this is plain round-robin; under
// concurrency a slow replica gets fewer requests). If every untried address
// is ejected, one of those is used rather than failing outright.
func (p *pool) pick(tried []*backend) *backend {
	all := p.snapshot()
	now := time.Now().UnixNano()
	cands := make([]*backend, 0, len(all))
	for _, b := range all {
		if !slices.Contains(tried, b) && b.ejectedUntil.Load() <= now {
			cands = append(cands, b)
		}
	}
	if len(cands) == 0 {
		for _, b := range all {
			if !slices.Contains(tried, b) {
				cands = append(cands, b)
			}
		}
	}
	switch len(cands) {
	case 0:
		return nil
	case 1:
		return cands[0]
	}
	i := int(p.next.Add(1) % uint64(len(cands)))
	a, b := cands[i], cands[(i+1)%len(cands)]
	if b.inflight.Load() < a.inflight.Load() {
		return b
	}
	return a
}

type backend struct {
	addr netip.Addr
	rt   *http.Transport

	requests     atomic.Uint64
	failures     atomic.Uint64
	retries      atomic.Uint64
	ejections    atomic.Uint64
	inflight     atomic.Int64
	ejectedUntil atomic.Int64 // unix nanoseconds
}

type trackedBody struct {
	io.ReadCloser
	b    *backend
	once sync.Once
}

func (r *trackedBody) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil {
		r.done()
	}
	return n, err
}

func (r *trackedBody) Close() error {
	r.done()
	return r.ReadCloser.Close()
}

func (r *trackedBody) done() { r.once.Do(func() { r.b.inflight.Add(-1) }) }
