package m2m

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-resty/resty/v2"
)

// downstream is a resource server that accepts only the tokens in ok and
// records the Authorization header of each request.
type downstream struct {
	srv      *httptest.Server
	mu       sync.Mutex
	ok       map[string]bool
	seen     []string
	status   func(n int) int // optional override by attempt number (1-based)
	requests atomic.Int64
}

func newDownstream(t *testing.T, okTokens ...string) *downstream {
	d := &downstream{ok: map[string]bool{}}
	for _, tok := range okTokens {
		d.ok[tok] = true
	}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(d.requests.Add(1))
		auth := r.Header.Get("Authorization")
		d.mu.Lock()
		d.seen = append(d.seen, auth)
		ok := d.ok[strings.TrimPrefix(auth, "Bearer ")]
		status := d.status
		d.mu.Unlock()
		if status != nil {
			if code := status(n); code != 0 {
				w.WriteHeader(code)
				return
			}
		}
		if !strings.HasPrefix(auth, "Bearer ") || !ok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte(`{"protectedData":"here I am"}`))
	}))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *downstream) allow(tok string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ok[tok] = true
}

func newResty(d *downstream) *resty.Client {
	c := resty.NewWithClient(d.srv.Client()).SetBaseURL(d.srv.URL).SetDisableWarn(true).SetLogger(quietLogger{})
	// Short waits keep the tests quick; the behaviour does not depend on them.
	c.SetRetryWaitTime(time.Millisecond).SetRetryMaxWaitTime(5 * time.Millisecond)
	return c
}

func TestRestyHookSetsTokenPerRequest(t *testing.T) {
	p := newIDP(t)
	s := newSource(t, p)
	d := newDownstream(t, "tok-1")
	c := newResty(d)
	s.Attach(c)

	for range 3 {
		resp, err := c.R().Get("/api/protected/data")
		if err != nil || resp.StatusCode() != http.StatusOK {
			t.Fatalf("resp %v, err %v", resp, err)
		}
	}
	if c.Token != "" || c.Header.Get("Authorization") != "" {
		t.Error("the token was set on the client; it must go on each request")
	}
	for _, h := range d.seen {
		if h != "Bearer tok-1" {
			t.Errorf("Authorization %q, want Bearer tok-1", h)
		}
	}
	if c.RetryCount != 1 {
		t.Errorf("RetryCount %d, want 1 after Attach", c.RetryCount)
	}
	c2 := resty.New().SetRetryCount(3)
	s.Attach(c2)
	if c2.RetryCount != 3 {
		t.Errorf("Attach lowered RetryCount to %d", c2.RetryCount)
	}
}

func TestRestyHookErrorIsTokenUnavailable(t *testing.T) {
	p := newIDP(t)
	p.setReply(func(_ int, w http.ResponseWriter) {
		writeJSON(w, http.StatusUnauthorized, `{"error":"invalid_client"}`)
	})
	s := newSource(t, p)
	d := newDownstream(t)
	c := newResty(d)
	// A caller's own condition that retries every error must not turn one
	// refused client into a flood: permanent errors are answered from cache.
	c.AddRetryCondition(func(_ *resty.Response, err error) bool { return err != nil })
	s.Attach(c)
	c.SetRetryCount(3)

	_, err := c.R().SetContext(context.Background()).Get("/api/protected/data")
	if !errors.Is(err, ErrTokenUnavailable) {
		t.Fatalf("err %v, want errors.Is ErrTokenUnavailable", err)
	}
	var oe *OAuthError
	if !errors.As(err, &oe) || oe.Code != "invalid_client" {
		t.Errorf("err %v, want an *OAuthError invalid_client", err)
	}
	if n := d.requests.Load(); n != 0 {
		t.Errorf("%d requests reached downstream without a token", n)
	}
	if n := p.calls.Load(); n != 1 {
		t.Errorf("token endpoint called %d times, want 1", n)
	}
}

func TestRestyConcurrent401sCauseOneRefetch(t *testing.T) {
	p := newIDP(t)
	s := newSource(t, p)
	if _, err := s.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := newDownstream(t, "tok-2") // tok-1 was revoked
	c := newResty(d)
	s.Attach(c)

	const requests = 20
	// All 20 send tok-1 before any of them sees its 401.
	var start sync.WaitGroup
	start.Add(requests)
	d.mu.Lock()
	d.status = func(n int) int {
		if n <= requests {
			start.Done()
			start.Wait()
		}
		return 0
	}
	d.mu.Unlock()

	var wg sync.WaitGroup
	codes := make([]int, requests)
	errs := make([]error, requests)
	for i := range requests {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			resp, err := c.R().SetContext(ctx).Get("/api/protected/data")
			errs[i] = err
			if resp != nil {
				codes[i] = resp.StatusCode()
			}
		})
	}
	wg.Wait()
	for i := range requests {
		if errs[i] != nil || codes[i] != http.StatusOK {
			t.Errorf("request %d: status %d, err %v", i, codes[i], errs[i])
		}
	}
	if n := p.calls.Load(); n != 2 {
		t.Errorf("token endpoint called %d times, want 2 (one refetch for 20 concurrent 401s)", n)
	}
	if n := d.requests.Load(); n != 2*requests {
		t.Errorf("downstream saw %d requests, want %d (each retried once)", n, 2*requests)
	}
}

func TestResty401RetriedAtMostOnce(t *testing.T) {
	tests := []struct {
		name       string
		retryCount int
		extra      resty.RetryConditionFunc // the caller's own condition
		statuses   []int                    // forced statuses by attempt; 0: token decides
		wantCalls  int64                    // downstream requests
		wantStatus int
	}{
		{"always 401", 1, nil, nil, 2, http.StatusUnauthorized},
		{"always 401, more retries", 5, nil, nil, 2, http.StatusUnauthorized},
		{"503 then 401s, shared count", 5,
			func(r *resty.Response, _ error) bool {
				return r != nil && r.StatusCode() == http.StatusServiceUnavailable
			},
			[]int{http.StatusServiceUnavailable}, 3, http.StatusUnauthorized},
		{"401 then 200", 3, nil, nil, 2, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newIDP(t)
			s := newSource(t, p)
			d := newDownstream(t)
			if tt.wantStatus == http.StatusOK {
				d.allow("tok-2")
			}
			d.mu.Lock()
			d.status = func(n int) int {
				if n <= len(tt.statuses) {
					return tt.statuses[n-1]
				}
				return 0
			}
			d.mu.Unlock()
			c := newResty(d)
			if tt.extra != nil {
				c.AddRetryCondition(tt.extra)
			}
			s.Attach(c)
			c.SetRetryCount(tt.retryCount)

			resp, err := c.R().Get("/api/protected/data")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != tt.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode(), tt.wantStatus)
			}
			if n := d.requests.Load(); n != tt.wantCalls {
				t.Errorf("downstream saw %d requests, want %d", n, tt.wantCalls)
			}
			// One token per 401 retry: the first, and one after the 401.
			if n := p.calls.Load(); n != 2 {
				t.Errorf("token endpoint called %d times, want 2", n)
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			if last := d.seen[len(d.seen)-1]; last != "Bearer tok-2" {
				t.Errorf("retry carried %q, want the fresh token", last)
			}
		})
	}
}

func TestRetryOn401IgnoresOtherOutcomes(t *testing.T) {
	p := newIDP(t)
	s := newSource(t, p)
	if s.RetryOn401(nil, errors.New("dial error")) {
		t.Error("retry on a transport error")
	}
	d := newDownstream(t)
	d.mu.Lock()
	d.status = func(int) int { return http.StatusForbidden }
	d.mu.Unlock()
	c := newResty(d)
	s.Attach(c)
	resp, err := c.R().Get("/")
	if err != nil || resp.StatusCode() != http.StatusForbidden || d.requests.Load() != 1 {
		t.Errorf("403: status %v err %v after %d requests; want no retry", resp.StatusCode(), err, d.requests.Load())
	}
}

type quietLogger struct{}

func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Warnf(string, ...any)  {}
func (quietLogger) Debugf(string, ...any) {}
