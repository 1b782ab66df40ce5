package lb_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/internal/wait"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/lb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeResolver answers from a map the test changes while the transport runs.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][]string
	err     error
	lookups atomic.Int64
}

func (f *fakeResolver) set(host string, ips ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.answers == nil {
		f.answers = map[string][]string{}
	}
	f.answers[host] = ips
}

func (f *fakeResolver) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	f.lookups.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	ips, ok := f.answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]net.IPAddr, len(ips))
	for i, s := range ips {
		out[i] = net.IPAddr{IP: net.ParseIP(s)}
	}
	return out, nil
}

// replica is one backend on its own loopback address; all replicas of a set
// share one port, as containers of a scaled service do.
type replica struct {
	ip       string
	srv      *httptest.Server
	hits     atomic.Int64
	newConns atomic.Int64
	hosts    sync.Map // Host headers seen
}

// startReplicas listens on 127.0.0.2.. 127.0.0.(n+1) with one common port.
func startReplicas(t *testing.T, n int, handler func(*replica) http.HandlerFunc) ([]*replica, int) {
	t.Helper()
	for try := 0; try < 20; try++ {
		first, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for i := 1; i < n; i++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", i+2, port))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) < n {
			for _, ln := range lns {
				ln.Close()
			}
			continue // the port was taken on another address; try another
		}
		reps := make([]*replica, n)
		for i, ln := range lns {
			r := &replica{ip: fmt.Sprintf("127.0.0.%d", i+2)}
			h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				r.hits.Add(1)
				r.hosts.Store(req.Host, true)
				w.Header().Set("X-Served-By", r.ip)
				io.WriteString(w, r.ip)
			})
			if handler != nil {
				h = handler(r)
			}
			srv := httptest.NewUnstartedServer(h)
			srv.Listener.Close()
			srv.Listener = ln
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					r.newConns.Add(1)
				}
			}
			srv.Start()
			r.srv = srv
			t.Cleanup(srv.Close)
			reps[i] = r
		}
		return reps, port
	}
	t.Fatal("no common free port on 127.0.0.x")
	return nil, 0
}

func ips(reps []*replica) []string {
	out := make([]string, len(reps))
	for i, r := range reps {
		out[i] = r.ip
	}
	return out
}

func newTransport(t *testing.T, cfg lb.Config) *lb.Transport {
	t.Helper()
	tr, err := lb.NewTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func get(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Served-By") + "|" + string(b), nil
}

// run sends total GETs from workers goroutines and returns the errors.
func run(t *testing.T, c *http.Client, url string, workers, total int, after func(done int64)) []error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var (
		next, done atomic.Int64
		mu         sync.Mutex
		errs       []error
		wg         sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) {
				if _, err := get(ctx, c, url); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
				if after != nil {
					after(done.Add(1))
				}
			}
		}()
	}
	wg.Wait()
	return errs
}

func TestSpreadsRequestsFairlyOverKeepAliveConnections(t *testing.T) {
	for _, tc := range []struct {
		name    string
		workers int
		total   int
	}{
		{"sequential", 1, 300},
		{"concurrent", 8, 600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reps, port := startReplicas(t, 3, nil)
			res := &fakeResolver{}
			res.set("protected-data", ips(reps)...)
			tr := newTransport(t, lb.Config{Resolver: res})
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			url := fmt.Sprintf("http://protected-data:%d/api/protected/data", port)

			if errs := run(t, c, url, tc.workers, tc.total, nil); len(errs) > 0 {
				t.Fatalf("%d failed requests, first: %v", len(errs), errs[0])
			}
			for _, r := range reps {
				share := float64(r.hits.Load()) / float64(tc.total)
				if share < 0.25 {
					t.Errorf("replica %s served %.0f%% of %d requests, want a fair third", r.ip, share*100, tc.total)
				}
				// Keep-alive: a handful of connections per replica, not one per request.
				if nc := r.newConns.Load(); nc > int64(tc.workers)+2 {
					t.Errorf("replica %s saw %d new connections for %d requests: keep-alive not used", r.ip, nc, r.hits.Load())
				}
				want := fmt.Sprintf("protected-data:%d", port)
				if _, ok := r.hosts.Load(want); !ok {
					t.Errorf("replica %s did not see Host %q", r.ip, want)
				}
			}
		})
	}
}

func addrsOf(tr *lb.Transport) []string {
	var out []string
	for _, s := range tr.Stats() {
		out = append(out, s.Addr.String())
	}
	return out
}

func TestPicksUpReplicasAddedAndRemoved(t *testing.T) {
	reps, port := startReplicas(t, 3, nil)
	res := &fakeResolver{}
	res.set("svc", reps[0].ip, reps[1].ip)
	tr := newTransport(t, lb.Config{Resolver: res, ResolveEvery: 20 * time.Millisecond})
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := fmt.Sprintf("http://svc:%d/", port)

	if errs := run(t, c, url, 4, 100, nil); len(errs) > 0 {
		t.Fatalf("%d failed, first: %v", len(errs), errs[0])
	}
	if reps[2].hits.Load() != 0 {
		t.Fatalf("replica not yet in DNS got %d requests", reps[2].hits.Load())
	}

	t.Run("added", func(t *testing.T) {
		res.set("svc", ips(reps)...)
		wait.For(t, "3 addresses", func() bool { return len(addrsOf(tr)) == 3 })
		before := reps[2].hits.Load()
		if errs := run(t, c, url, 4, 300, nil); len(errs) > 0 {
			t.Fatalf("%d failed, first: %v", len(errs), errs[0])
		}
		if got := reps[2].hits.Load() - before; got < 60 {
			t.Errorf("added replica served %d of 300, want at least 20%%", got)
		}
	})

	t.Run("removed", func(t *testing.T) {
		res.set("svc", reps[1].ip, reps[2].ip)
		wait.For(t, "2 addresses", func() bool { return len(addrsOf(tr)) == 2 })
		before := reps[0].hits.Load()
		if errs := run(t, c, url, 4, 200, nil); len(errs) > 0 {
			t.Fatalf("%d failed, first: %v", len(errs), errs[0])
		}
		if got := reps[0].hits.Load() - before; got != 0 {
			t.Errorf("removed replica still got %d requests", got)
		}
	})
}

func TestKilledReplicaUnderLoadCausesNoFailures(t *testing.T) {
	reps, port := startReplicas(t, 3, nil)
	res := &fakeResolver{}
	res.set("svc", ips(reps)...) // DNS keeps naming the dead replica: the worst case
	tr := newTransport(t, lb.Config{Resolver: res, ResolveEvery: time.Hour, EjectFor: time.Minute})
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := fmt.Sprintf("http://svc:%d/", port)

	victim := reps[1]
	var killOnce sync.Once
	var hitsAtKill int64
	errs := run(t, c, url, 8, 1500, func(done int64) {
		if done >= 300 {
			killOnce.Do(func() {
				// Stop accepting and reset every open connection, in flight or idle.
				victim.srv.Listener.Close()
				victim.srv.CloseClientConnections()
				hitsAtKill = victim.hits.Load()
			})
		}
	})
	if len(errs) > 0 {
		t.Fatalf("%d of 1500 requests failed after a replica was killed, first: %v", len(errs), errs[0])
	}
	// A request or two may have been inside the handler at the kill.
	if late := victim.hits.Load() - hitsAtKill; late > 8 {
		t.Errorf("killed replica served %d requests after the kill", late)
	}
	var ejected bool
	for _, s := range tr.Stats() {
		if s.Addr.String() == victim.ip {
			ejected = s.Ejected
			if s.Failures == 0 {
				t.Errorf("no failure recorded for the killed replica: %+v", s)
			}
		}
	}
	if !ejected {
		t.Errorf("killed replica not ejected: %+v", tr.Stats())
	}
}

// A replica that accepts connections and never answers (a container killed
// without RST) is left after AttemptTimeout, and GETs are retried elsewhere.
func TestSilentReplicaIsLeftAfterAttemptTimeout(t *testing.T) {
	reps, port := startReplicas(t, 2, nil)
	silent, err := net.Listen("tcp", fmt.Sprintf("127.0.0.9:%d", port))
	if err != nil {
		// All of 127.0.0.0/8 is loopback on Linux; never skip silently.
		t.Fatalf("cannot listen on 127.0.0.9:%d: %v", port, err)
	}
	var conns sync.WaitGroup
	var held []net.Conn
	var heldMu sync.Mutex
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			cn, err := silent.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, cn)
			heldMu.Unlock()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		conns.Wait()
		heldMu.Lock()
		for _, cn := range held {
			cn.Close()
		}
		heldMu.Unlock()
	})

	res := &fakeResolver{}
	res.set("svc", append(ips(reps), "127.0.0.9")...)
	tr := newTransport(t, lb.Config{Resolver: res, AttemptTimeout: 200 * time.Millisecond, EjectFor: time.Minute})
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := fmt.Sprintf("http://svc:%d/", port)
	if errs := run(t, c, url, 4, 100, nil); len(errs) > 0 {
		t.Fatalf("%d failed, first: %v", len(errs), errs[0])
	}
	if got := reps[0].hits.Load() + reps[1].hits.Load(); got != 100 {
		t.Errorf("live replicas served %d, want 100", got)
	}
	// Every attempt lost to the silent replica was retried on a live one,
	// and the silent one was ejected once (the cool-off outlasts the test).
	var silentFailures, silentEjections, liveRetries, silentRetries uint64
	for _, s := range tr.Stats() {
		if s.Addr.String() == "127.0.0.9" {
			silentFailures, silentEjections, silentRetries = s.Failures, s.Ejections, s.Retries
		} else {
			liveRetries += s.Retries
		}
	}
	if silentFailures == 0 || liveRetries != silentFailures || silentRetries != 0 {
		t.Errorf("silent replica failures %d, retries on live replicas %d, retries on the silent one %d: want failures = live retries > 0, 0", silentFailures, liveRetries, silentRetries)
	}
	if silentEjections != 1 {
		t.Errorf("silent replica ejected %d times, want 1", silentEjections)
	}
}

// Requests that may have side effects are sent once: a failure is the
// caller's to handle.
func TestDoesNotRetryNonIdempotentRequests(t *testing.T) {
	reps, port := startReplicas(t, 2, func(r *replica) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			r.hits.Add(1)
			if r.ip == "127.0.0.2" {
				// Drop the connection after reading the request: EOF before a response.
				cn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					cn.Close()
				}
				return
			}
			io.WriteString(w, "ok")
		}
	})
	res := &fakeResolver{}
	res.set("svc", ips(reps)...)
	tr := newTransport(t, lb.Config{Resolver: res, EjectFor: time.Nanosecond})
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := fmt.Sprintf("http://svc:%d/", port)

	var failed int64
	for i := 0; i < 20; i++ {
		resp, err := c.Post(url, "text/plain", strings.NewReader("x"))
		if err != nil {
			failed++
			continue
		}
		resp.Body.Close()
	}
	if failed == 0 || failed != reps[0].hits.Load() {
		t.Errorf("POST: %d failed, dropping replica saw %d: want every POST it got to fail, and no retries", failed, reps[0].hits.Load())
	}

	if errs := run(t, c, url, 1, 20, nil); len(errs) > 0 {
		t.Errorf("GET: %d failed, want retries on the other replica; first: %v", len(errs), errs[0])
	}
}

func TestTLSKeepsHostNameForVerification(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	var sni, host atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sni.Store(r.TLS.ServerName)
		host.Store(r.Host)
		io.WriteString(w, "ok")
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	res := &fakeResolver{}
	res.set("example.com", "127.0.0.2") // httptest's certificate is for example.com
	tr := newTransport(t, lb.Config{Resolver: res, TLSClientConfig: &tls.Config{RootCAs: roots}})
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	if _, err := get(context.Background(), c, "https://example.com:"+port+"/"); err != nil {
		t.Fatal(err)
	}
	if sni.Load() != "example.com" || host.Load() != "example.com:"+port {
		t.Errorf("server saw SNI %v, Host %v; want example.com", sni.Load(), host.Load())
	}
}

func TestResolverFailures(t *testing.T) {
	reps, port := startReplicas(t, 2, nil)
	res := &fakeResolver{}
	tr := newTransport(t, lb.Config{Resolver: res, ResolveEvery: 10 * time.Millisecond})
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := fmt.Sprintf("http://svc:%d/", port)

	t.Run("unknown host fails, and is looked up again next time", func(t *testing.T) {
		if _, err := get(context.Background(), c, url); err == nil {
			t.Fatal("want an error for an unresolvable host")
		}
		res.set("svc", ips(reps)...)
		if _, err := get(context.Background(), c, url); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a failing re-resolve keeps the last addresses", func(t *testing.T) {
		res.fail(errors.New("dns down"))
		n := res.lookups.Load()
		wait.For(t, "failed re-resolves", func() bool { return res.lookups.Load() > n+3 })
		if errs := run(t, c, url, 2, 50, nil); len(errs) > 0 {
			t.Fatalf("%d failed while DNS was down, first: %v", len(errs), errs[0])
		}
		if got := len(addrsOf(tr)); got != 2 {
			t.Errorf("%d addresses, want the last 2", got)
		}
	})
}

func TestCloseStopsTheTransport(t *testing.T) {
	reps, port := startReplicas(t, 1, nil)
	res := &fakeResolver{}
	res.set("svc", reps[0].ip)
	tr, err := lb.NewTransport(lb.Config{Resolver: res, ResolveEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := fmt.Sprintf("http://svc:%d/", port)
	if _, err := get(context.Background(), c, url); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	// Close has waited for the re-resolving goroutine to end (goleak in
	// TestMain checks that none outlives the tests), so from here on only
	// a request could resolve, and a closed transport must not.
	n := res.lookups.Load()
	tr.Close() // idempotent
	if _, err := get(context.Background(), c, url); !errors.Is(err, lb.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
	if got := res.lookups.Load(); got != n {
		t.Errorf("%d lookups after Close", got-n)
	}
}

func TestCallerCancellationIsNotRetried(t *testing.T) {
	release := make(chan struct{})
	reps, port := startReplicas(t, 2, func(r *replica) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			r.hits.Add(1)
			select {
			case <-release:
			case <-req.Context().Done():
			}
		}
	})
	defer close(release)
	res := &fakeResolver{}
	res.set("svc", ips(reps)...)
	tr := newTransport(t, lb.Config{Resolver: res})
	c := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := get(ctx, c, fmt.Sprintf("http://svc:%d/", port)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
	if got := reps[0].hits.Load() + reps[1].hits.Load(); got != 1 {
		t.Errorf("%d attempts, want 1", got)
	}
	for _, s := range tr.Stats() {
		if s.Ejected {
			t.Errorf("%s ejected because the caller gave up", s.Addr)
		}
	}
}
