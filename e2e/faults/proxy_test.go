//go:build faults

package faults

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fault is what the proxy does to the requests that reach it.
type fault int32

const (
	pass          fault = iota // forward unchanged
	down                       // listener closed, live connections cut: connection refused
	reset                      // accept, then a TCP RST instead of an answer
	slow                       // wait delay, then forward
	serverError                // 500 with a JSON body
	garbage                    // 200 with a body that is not what was asked for
	invalidClient              // 401 invalid_client, echoing the Authorization header back
	halfBody                   // forward, but send half the body and drop the connection
)

func (f fault) String() string {
	return [...]string{"pass", "down", "reset", "slow", "500", "garbage", "invalid_client", "half body"}[f]
}

// faultProxy is a small HTTP proxy with switchable faults, between a
// service and what it calls. It listens on a fixed address for its whole
// life, so "down" and back "up" is what a restarted dependency looks like.
type faultProxy struct {
	t     testing.TB
	addr  string
	rp    *httputil.ReverseProxy
	tr    *http.Transport
	f     atomic.Int32
	delay atomic.Int64
	// upstream is host:port of what the proxy stands in front of.
	upstream atomic.Pointer[string]
	counts   sync.Map // path -> *atomic.Int64, requests that reached the proxy

	mu  sync.Mutex
	srv *http.Server
}

// newFaultProxy listens at once; target says where it forwards to.
func newFaultProxy(t testing.TB) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{t: t, addr: ln.Addr().String()}
	p.tr = &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		ResponseHeaderTimeout: 20 * time.Second,
		MaxIdleConnsPerHost:   128,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: *p.upstream.Load()})
			r.Out.Host = r.In.Host
		},
		Transport: p.tr,
		ErrorLog:  log.New(io.Discard, "", 0),
		// What a proxy in front of a dead upstream answers.
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { w.WriteHeader(http.StatusBadGateway) },
	}
	p.serve(ln)
	t.Cleanup(func() {
		p.mu.Lock()
		if p.srv != nil {
			p.srv.Close()
		}
		p.mu.Unlock()
		p.tr.CloseIdleConnections()
	})
	return p
}

func (p *faultProxy) target(hostport string) { p.upstream.Store(&hostport) }

func (p *faultProxy) url() string { return "http://" + p.addr }

func (p *faultProxy) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(p.handle), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)}
	p.srv = srv
	go func() { _ = srv.Serve(ln) }()
}

// set switches the fault; delay is used by slow.
func (p *faultProxy) set(f fault, delay ...time.Duration) {
	p.t.Helper()
	if len(delay) > 0 {
		p.delay.Store(int64(delay[0]))
	}
	prev := fault(p.f.Swap(int32(f)))
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case f == down && prev != down:
		// Close cuts the live keep-alive connections too, like a crash.
		p.srv.Close()
		p.srv = nil
	case f != down && prev == down:
		// Go listeners set SO_REUSEADDR: the port can be taken again at once.
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			p.t.Fatalf("proxy back up on %s: %v", p.addr, err)
		}
		p.serve(ln)
	}
}

// count is how many requests for path reached the proxy since the last
// reset (answered or faulted).
func (p *faultProxy) count(path string) int64 {
	if c, ok := p.counts.Load(path); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

func (p *faultProxy) resetCounts() { p.counts.Clear() }

func (p *faultProxy) handle(w http.ResponseWriter, r *http.Request) {
	c, _ := p.counts.LoadOrStore(r.URL.Path, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
	switch fault(p.f.Load()) {
	case reset:
		_, _ = io.Copy(io.Discard, r.Body)
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic(http.ErrAbortHandler)
		}
		conn, _, err := hj.Hijack()
		if err != nil {
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close sends RST, not FIN
		}
		conn.Close()
		return
	case slow:
		select {
		case <-time.After(time.Duration(p.delay.Load())):
		case <-r.Context().Done():
			return
		}
	case serverError:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":"server_error","error_description":"injected fault"}`)
		return
	case garbage:
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "<html><body>Welcome to nginx!</body></html>\x00\xff")
		return
	case invalidClient:
		// Like the token endpoint of the security review, which echoed the
		// Authorization header into its error: the client must mask it.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":"invalid_client","error_description":"client authentication failed for `+
			r.Header.Get("Authorization")+`"}`)
		return
	case halfBody:
		rec := &recorder{h: http.Header{}}
		p.rp.ServeHTTP(rec, r.WithContext(context.WithoutCancel(r.Context())))
		body := rec.buf.Bytes()
		for k, v := range rec.h {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(body[:len(body)/2])
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		// Content-Length promised the whole body: the caller sees it cut.
		panic(http.ErrAbortHandler)
	}
	p.rp.ServeHTTP(w, r)
}

// recorder buffers an upstream answer so that halfBody can cut it.
type recorder struct {
	h      http.Header
	status int
	buf    bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) WriteHeader(s int) {
	if r.status == 0 {
		r.status = s
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.buf.Write(b)
}
