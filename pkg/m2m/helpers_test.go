package m2m

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/internal/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testClientID     = "gateway client"   // a space: must be url-encoded in Basic auth
	testClientSecret = "s3cr3t:p@ss/word" // reserved characters, likewise
)

// fakeClock is a manual clock: time moves only on Advance, and timers fire
// then. Tests use it to reach expiry, renewal and backoff instants without
// sleeping.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

func (c *fakeClock) After(d time.Duration) (<-chan time.Time, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		return t.ch, func() {}
	}
	c.timers = append(c.timers, t)
	return t.ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, x := range c.timers {
			if x == t {
				c.timers = append(c.timers[:i], c.timers[i+1:]...)
				return
			}
		}
	}
}

// Advance moves time forward and fires every timer that is due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			t.ch <- c.now
		} else {
			kept = append(kept, t)
		}
	}
	c.timers = kept
}

// armed counts the armed timers.
func (c *fakeClock) armed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// pending returns how far ahead each armed timer is, shortest first.
func (c *fakeClock) pending() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ds []time.Duration
	for _, t := range c.timers {
		ds = append(ds, t.at.Sub(c.now))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds
}

// waitTimers waits until n timers are armed and returns their delays.
func (c *fakeClock) waitTimers(t *testing.T, n int) []time.Duration {
	t.Helper()
	var ds []time.Duration
	eventually(t, fmt.Sprintf("%d armed timer(s)", n), func() bool {
		ds = c.pending()
		return len(ds) >= n
	})
	return ds
}

// eventually polls cond until it holds (the one helper all of pkg's tests share).
var eventually = wait.For

// idp is a fake token endpoint. Each call is answered by reply (the default
// is a fresh token "tok-<n>" valid for lifetime); it counts calls, checks the
// request is a proper client-credentials request, and can be held at a gate.
type idp struct {
	t        *testing.T
	srv      *httptest.Server
	calls    atomic.Int64
	lifetime atomic.Int64 // seconds, for the default reply

	mu    sync.Mutex
	reply func(n int, w http.ResponseWriter)
	gate  chan struct{} // when non-nil, requests wait for it to close
}

func newIDP(t *testing.T) *idp {
	p := &idp{t: t}
	p.lifetime.Store(3600)
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(func() {
		p.open()
		p.srv.Close()
	})
	return p
}

func (p *idp) serve(w http.ResponseWriter, r *http.Request) {
	n := int(p.calls.Add(1))
	if err := checkTokenRequest(r); err != nil {
		p.t.Errorf("call %d: %v", n, err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	gate, reply := p.gate, p.reply
	p.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	if reply != nil {
		reply(n, w)
		return
	}
	writeToken(w, fmt.Sprintf("tok-%d", n), p.lifetime.Load())
}

func checkTokenRequest(r *http.Request) error {
	id, secret, ok := r.BasicAuth()
	switch {
	case r.Method != http.MethodPost:
		return fmt.Errorf("method %s, want POST", r.Method)
	case !ok:
		return fmt.Errorf("no Basic auth")
	case id != url.QueryEscape(testClientID) || secret != url.QueryEscape(testClientSecret):
		return fmt.Errorf("basic auth %q:<secret>, want url-encoded client credentials", id)
	case r.Header.Get("Content-Type") != "application/x-www-form-urlencoded":
		return fmt.Errorf("content type %q", r.Header.Get("Content-Type"))
	case r.Header.Get("Accept") != "application/json":
		return fmt.Errorf("accept %q", r.Header.Get("Accept"))
	}
	if err := r.ParseForm(); err != nil {
		return err
	}
	if r.PostForm.Get("grant_type") != "client_credentials" || len(r.PostForm) != 1 {
		return fmt.Errorf("form %v, want only grant_type=client_credentials", r.PostForm)
	}
	return nil
}

func writeToken(w http.ResponseWriter, tok string, lifetime int64) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": lifetime})
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func (p *idp) setReply(f func(n int, w http.ResponseWriter)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reply = f
}

// hold makes requests wait until open is called.
func (p *idp) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gate = make(chan struct{})
}

func (p *idp) open() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type option func(*Config)

func withClock(c *fakeClock) option     { return func(cfg *Config) { cfg.clock = c } }
func withMargin(d time.Duration) option { return func(cfg *Config) { cfg.Margin = d } }
func withLogger(l *slog.Logger) option  { return func(cfg *Config) { cfg.Logger = l } }
func withBackoff(lo, hi time.Duration) option {
	return func(cfg *Config) { cfg.MinBackoff, cfg.MaxBackoff = lo, hi }
}
func withRetryInterval(d time.Duration) option { return func(cfg *Config) { cfg.RetryInterval = d } }
func withMaxWait(d time.Duration) option       { return func(cfg *Config) { cfg.MaxWait = d } }

// newRand is a seeded source: tests of jitter give the same numbers each run.
func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)) }

// newSource builds a TokenSource against p and closes it at cleanup. MaxWait
// defaults to a minute here: tests on the real clock must not depend on how
// fast a loaded machine gets a waiting caller to the point it checks.
func newSource(t *testing.T, p *idp, opts ...option) *TokenSource {
	t.Helper()
	cfg := Config{TokenURL: p.srv.URL + "/oauth2/token", ClientID: testClientID, ClientSecret: testClientSecret, HTTPClient: p.srv.Client(),
		MaxWait: time.Minute}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
