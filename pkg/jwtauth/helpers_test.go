package jwtauth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"go.uber.org/goleak"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/internal/wait"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth/jwtauthtest"
)

// mustNotHang is how long anything may take before a test calls it a hang.
// Generous on purpose: the machine may be small and busy.
const mustNotHang = 60 * time.Second

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		// httprc's goroutines end asynchronously after Close; give them time.
		if err := eventuallyNoLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak after all tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func eventuallyNoLeaks(opts ...goleak.Option) error {
	deadline := time.Now().Add(mustNotHang)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newValidator starts a Validator on idp, closed at the end of the test.
func newValidator(t testing.TB, idp *jwtauthtest.IdP, mutate func(*jwtauth.Config)) *jwtauth.Validator {
	t.Helper()
	cfg := jwtauth.Config{
		JWKSURL:            idp.JWKSURL(),
		Issuer:             idp.Issuer(),
		TokenType:          "at+JWT",
		UnknownKIDCooldown: time.Hour,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	v, err := jwtauth.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

func waitReady(t testing.TB, v *jwtauth.Validator) {
	t.Helper()
	eventually(t, "validator ready", func() bool { return v.Ready() == nil })
}

// eventually polls cond until it holds (the one helper all of pkg's tests share).
var eventually = wait.For

// newServer is an Echo app with GET /data behind the middleware; the handler
// echoes the claims it got.
func newServer(v *jwtauth.Validator, opts ...jwtauth.Option) *echo.Echo {
	e := echo.New()
	e.GET("/data", func(c echo.Context) error {
		cl, ok := jwtauth.ClaimsFrom(c)
		if !ok {
			return c.String(http.StatusInternalServerError, "no claims")
		}
		return c.JSON(http.StatusOK, cl)
	}, v.Middleware(opts...))
	return e
}

type response struct {
	status    int
	challenge string
	body      map[string]string
	raw       *httptest.ResponseRecorder
}

// do sends GET /data with the given Authorization values.
func do(t testing.TB, e *echo.Echo, auth ...string) response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/data", nil)
	for _, a := range auth {
		req.Header.Add("Authorization", a)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	r := response{status: rec.Code, challenge: rec.Header().Get("WWW-Authenticate"), raw: rec}
	if rec.Code != http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &r.body); err != nil {
			t.Fatalf("status %d: body is not a JSON object: %q", rec.Code, rec.Body.String())
		}
	}
	return r
}

func bearer(tok string) string { return "Bearer " + tok }

func itoa(n int64) string { return fmt.Sprint(n) }

// fakeClock is a manual clock (like pkg/m2m's): time moves only on Advance,
// and timers fire then. It starts at the real time, because jwtauthtest
// mints tokens relative to time.Now.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

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
		c.timers = slices.DeleteFunc(c.timers, func(x *fakeTimer) bool { return x == t })
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

// armed is how many timers wait to fire.
func (c *fakeClock) armed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// newFakeClockValidator starts a Validator on idp that runs on a fake
// clock, and waits for its first key set.
func newFakeClockValidator(t testing.TB, idp *jwtauthtest.IdP, mutate func(*jwtauth.Config)) (*jwtauth.Validator, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	v := newValidator(t, idp, func(c *jwtauth.Config) {
		jwtauth.SetClock(c, clk)
		if mutate != nil {
			mutate(c)
		}
	})
	waitReady(t, v)
	// The refresh timer is armed once the first fetch is done.
	eventually(t, "the refresh timer", func() bool { return clk.armed() > 0 })
	return v, clk
}
