package jwtauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
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

func mustJSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return bytes.TrimSpace(b.Bytes())
}

func itoa(n int64) string { return fmt.Sprint(n) }
