package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/lb"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/m2m"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
)

// tokenEndpoint answers client-credentials requests with a fixed token, or
// 503 when down is set.
func tokenEndpoint(t *testing.T, down bool) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down {
			http.Error(w, `{"error":"temporarily_unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}`))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type seen struct {
	mu   sync.Mutex
	auth [][]string
}

func (s *seen) add(v []string) { s.mu.Lock(); s.auth = append(s.auth, v); s.mu.Unlock() }

// newGateway serves the gateway's routes in front of a fake protected-data.
func newGateway(t *testing.T, downstream http.HandlerFunc, tokenDown, expose bool) (*echo.Echo, *seen) {
	t.Helper()
	sn := &seen{}
	pd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sn.add(r.Header.Values("Authorization"))
		downstream(w, r)
	}))
	t.Cleanup(pd.Close)
	ts, err := m2m.New(m2m.Config{TokenURL: tokenEndpoint(t, tokenDown), ClientID: "c", ClientSecret: "s",
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	e := service.NewEcho(service.NewDiscardLogger())
	New(Config{ProtectedDataURL: pd.URL, Timeout: 2 * time.Second, Transport: http.DefaultTransport,
		Tokens: ts, Log: service.NewDiscardLogger(), ExposeServedBy: expose}).Register(e)
	return e, sn
}

func call(e *echo.Echo, path string, auth ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for _, a := range auth {
		req.Header.Add("Authorization", a)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func answer(status int, body string, hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

func TestPublicRoute(t *testing.T) {
	ok := answer(200, `{"protectedData":"here I am"}`, service.HeaderServedBy, "replica-7")
	cases := []struct {
		name       string
		downstream http.HandlerFunc
		tokenDown  bool
		status     int
		body       string // substring
		retryAfter bool
		ra         string // the Retry-After value, when it is known
	}{
		{"success", ok, false, 200, `{"publicData":"hello world","protectedData":"here I am"}`, false, ""},
		{"no token obtainable", ok, true, 503, `"error":"temporarily_unavailable"`, true, ""},
		{"downstream 500", answer(500, `{}`), false, 502, `"error":"bad_gateway"`, false, ""},
		{"downstream not ready", answer(503, `{}`), false, 503, `"error":"temporarily_unavailable"`, true, "1"},
		{"downstream not ready, its Retry-After passed on", answer(503, `{}`, "Retry-After", "7"), false, 503, `"error":"temporarily_unavailable"`, true, "7"},
		{"downstream not ready, a bogus Retry-After bounded", answer(503, `{}`, "Retry-After", "86400"), false, 503, `"error":"temporarily_unavailable"`, true, "30"},
		{"downstream 403", answer(403, `{}`), false, 502, `refused the gateway's credentials`, false, ""},
		{"downstream body not JSON", answer(200, `here I am`), false, 502, `unexpected body`, false, ""},
		{"downstream body lacks the field", answer(200, `{"other":1}`), false, 502, `unexpected body`, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, sn := newGateway(t, tc.downstream, tc.tokenDown, false)
			rec := call(e, PublicPath, "Bearer caller-token-must-not-travel")
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.body) {
				t.Fatalf("got %d %s, want %d with %s", rec.Code, rec.Body, tc.status, tc.body)
			}
			if tc.retryAfter != (rec.Header().Get("Retry-After") != "") {
				t.Errorf("Retry-After %q", rec.Header().Get("Retry-After"))
			}
			if got := rec.Header().Get("Retry-After"); tc.ra != "" && got != tc.ra {
				t.Errorf("Retry-After %q, want %q", got, tc.ra)
			}
			if sb := rec.Header().Get(service.HeaderServedBy); sb != "" {
				t.Errorf("X-Served-By %q leaked without ExposeServedBy", sb)
			}
			sn.mu.Lock()
			defer sn.mu.Unlock()
			for _, a := range sn.auth {
				if len(a) != 1 || a[0] != "Bearer tok-1" {
					t.Errorf("downstream saw Authorization %q, want the gateway's own token only", a)
				}
			}
		})
	}
}

func TestPublicRouteExposesServedByWhenAsked(t *testing.T) {
	e, _ := newGateway(t, answer(200, `{"protectedData":"here I am"}`, service.HeaderServedBy, "replica-7"), false, true)
	if rec := call(e, PublicPath); rec.Header().Get(service.HeaderServedBy) != "replica-7" {
		t.Fatalf("X-Served-By %q", rec.Header().Get(service.HeaderServedBy))
	}
}

func TestProtectedRouteForwardsTheCallersCredentials(t *testing.T) {
	challenge := `Bearer realm="protected-data", error="invalid_token"`
	e, sn := newGateway(t, answer(401, `{"error":"invalid_token"}`, "WWW-Authenticate", challenge, service.HeaderServedBy, "replica-7"), false, false)

	rec := call(e, ProtectedPath, "Bearer a", "Bearer b")
	if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != challenge || !strings.Contains(rec.Body.String(), "invalid_token") {
		t.Fatalf("got %d %q %s", rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body)
	}
	if rec.Header().Get(service.HeaderServedBy) != "" {
		t.Error("X-Served-By passed on without ExposeServedBy")
	}
	rec = call(e, ProtectedPath)
	if rec.Code != 401 {
		t.Fatalf("no credentials: %d", rec.Code)
	}
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if len(sn.auth) != 2 || len(sn.auth[0]) != 2 || sn.auth[0][0] != "Bearer a" || sn.auth[0][1] != "Bearer b" {
		t.Fatalf("first call forwarded %q, want both of the caller's headers", sn.auth)
	}
	if len(sn.auth[1]) != 0 {
		t.Fatalf("second call forwarded %q: the gateway must never lend its own token", sn.auth[1])
	}
}

// countingTokenEndpoint hands out tok-1, tok-2, ... and counts requests.
func countingTokenEndpoint(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"access_token":"tok-%d","token_type":"Bearer","expires_in":3600}`, i)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &n
}

// gatewayAt serves the gateway's routes in front of protected-data at url.
func gatewayAt(t *testing.T, url, tokenURL string, timeout time.Duration) *echo.Echo {
	t.Helper()
	ts, err := m2m.New(m2m.Config{TokenURL: tokenURL, ClientID: "c", ClientSecret: "s",
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	e := service.NewEcho(service.NewDiscardLogger())
	New(Config{ProtectedDataURL: url, Timeout: timeout, Transport: http.DefaultTransport,
		Tokens: ts, Log: service.NewDiscardLogger()}).Register(e)
	return e
}

func TestPublicRouteDownstream401IsRetriedOnceWithAFreshTokenThen502(t *testing.T) {
	var mu sync.Mutex
	var got []string
	pd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(pd.Close)
	tokenURL, fetches := countingTokenEndpoint(t)
	e := gatewayAt(t, pd.URL, tokenURL, 2*time.Second)

	rec := call(e, PublicPath)
	if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), `"error":"bad_gateway"`) {
		t.Fatalf("got %d %s, want 502 JSON", rec.Code, rec.Body)
	}
	if rec.Header().Get("WWW-Authenticate") != "" {
		t.Error("protected-data's challenge to the gateway reached the caller")
	}
	mu.Lock()
	calls := slices.Clone(got)
	mu.Unlock()
	if want := []string{"Bearer tok-1", "Bearer tok-2"}; !slices.Equal(calls, want) {
		t.Errorf("protected-data saw %q, want %q (one retry with a fresh token)", calls, want)
	}
	if n := fetches.Load(); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
}

func TestPublicRouteSlowDownstreamIs504(t *testing.T) {
	release := make(chan struct{})
	pd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(pd.Close)
	t.Cleanup(func() { close(release) })
	tokenURL, _ := countingTokenEndpoint(t)
	e := gatewayAt(t, pd.URL, tokenURL, 200*time.Millisecond)
	rec := call(e, PublicPath)
	if rec.Code != http.StatusGatewayTimeout || !strings.Contains(rec.Body.String(), `"error":"gateway_timeout"`) {
		t.Fatalf("got %d %s, want 504 JSON", rec.Code, rec.Body)
	}
}

func TestDownstreamConnectionRefusedIs502(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused
	tokenURL, _ := countingTokenEndpoint(t)
	e := gatewayAt(t, url, tokenURL, 2*time.Second)
	for _, path := range []string{PublicPath, ProtectedPath} {
		rec := call(e, path, "Bearer x")
		if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "protected-data is unreachable") {
			t.Errorf("%s: got %d %s, want 502 JSON", path, rec.Code, rec.Body)
		}
	}
}

func TestCallerHangingUpIs499(t *testing.T) {
	entered := make(chan struct{}, 1)
	pd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-r.Context().Done() // answers only when the gateway gives up
	}))
	t.Cleanup(pd.Close)
	tokenURL, _ := countingTokenEndpoint(t)
	e := gatewayAt(t, pd.URL, tokenURL, 30*time.Second)
	for _, path := range []string{PublicPath, ProtectedPath} {
		ctx, cancel := context.WithCancel(context.Background())
		req := httptest.NewRequest(http.MethodGet, path, nil).WithContext(ctx)
		rec := httptest.NewRecorder()
		done := make(chan struct{})
		go func() { defer close(done); e.ServeHTTP(rec, req) }()
		<-entered
		cancel()
		<-done
		if rec.Code != 499 || rec.Body.Len() != 0 {
			t.Errorf("%s: got %d %q, want 499 with no body", path, rec.Code, rec.Body)
		}
	}
}

// A redirect from protected-data is not followed: the gateway's token (or
// the caller's, on the forwarding route) would otherwise go to wherever it
// points on the same host.
func TestDownstreamRedirectIsNotFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"protectedData":"from elsewhere"}`))
	}))
	t.Cleanup(other.Close)
	pd := httptest.NewServer(http.RedirectHandler(other.URL+ProtectedPath, http.StatusTemporaryRedirect))
	t.Cleanup(pd.Close)
	tokenURL, _ := countingTokenEndpoint(t)
	e := gatewayAt(t, pd.URL, tokenURL, 2*time.Second)
	if rec := call(e, PublicPath); rec.Code != http.StatusBadGateway {
		t.Errorf("public: got %d %s, want 502", rec.Code, rec.Body)
	}
	if rec := call(e, ProtectedPath, "Bearer caller-token"); rec.Code != http.StatusTemporaryRedirect || rec.Header().Get("Location") != "" {
		t.Errorf("protected: got %d Location %q, want protected-data's 307 passed on without its Location", rec.Code, rec.Header().Get("Location"))
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect target got %d request(s), with a bearer token", n)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A resolver that timed out says nothing about protected-data's speed: 502,
// not 504 (seen after a gateway restart under load in compose).
func TestUnresolvableDownstreamIs502EvenOnAResolverTimeout(t *testing.T) {
	tokenURL, _ := countingTokenEndpoint(t)
	ts, err := m2m.New(m2m.Config{TokenURL: tokenURL, ClientID: "c", ClientSecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	dnsTimeout := &lb.ResolveError{Host: "protected-data", Err: &net.DNSError{Err: "i/o timeout", Name: "protected-data", IsTimeout: true}}
	e := service.NewEcho(service.NewDiscardLogger())
	New(Config{ProtectedDataURL: "http://protected-data:6002", Timeout: 2 * time.Second,
		Transport: roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, dnsTimeout }),
		Tokens:    ts, Log: service.NewDiscardLogger()}).Register(e)
	for _, path := range []string{PublicPath, ProtectedPath} {
		rec := call(e, path, "Bearer x")
		if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "protected-data is unreachable") {
			t.Errorf("%s: got %d %s, want 502 JSON", path, rec.Code, rec.Body)
		}
	}
}
