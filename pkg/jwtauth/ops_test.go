package jwtauth_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth/jwtauthtest"
)

// TestSubKindsAndTokenType: ALLOWED_SUB_KINDS and REQUIRE_TOKEN_TYPE as
// protected-data uses them. A user token where only client tokens may pass
// is valid but not admitted: 403 insufficient_scope. A token of another
// type (typ JWT: an ID token, say) is not an access token for us: 401
// invalid_token.
func TestSubKindsAndTokenType(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, nil) // TokenType at+JWT
	waitReady(t, v)
	e := newServer(v, jwtauth.AllowSubKinds("client"))
	if r := do(t, e, bearer(idp.Mint(nil))); r.status != http.StatusOK {
		t.Fatalf("client token: %d %v", r.status, r.body)
	}
	for name, kind := range map[string]any{"user": "user", "none": nil} {
		r := do(t, e, bearer(idp.Mint(map[string]any{"sub_kind": kind})))
		if r.status != http.StatusForbidden || !strings.Contains(r.challenge, `error="insufficient_scope"`) || r.body["error_description"] != "token kind not allowed" {
			t.Errorf("sub_kind %s: %d %q %v, want 403 insufficient_scope", name, r.status, r.challenge, r.body)
		}
	}
	k := idp.SigningKey()
	r := do(t, e, bearer(jwtauthtest.Sign(k, map[string]any{"alg": "RS256", "kid": k.KID, "typ": "JWT"}, idp.Claims())))
	if r.status != http.StatusUnauthorized || r.body["error"] != "invalid_token" || r.body["error_description"] != "wrong token type" {
		t.Fatalf("typ JWT: %d %v, want 401 invalid_token", r.status, r.body)
	}
	if s := v.Stats(); s.Failures[jwtauth.ReasonForbidden] != 2 || s.Failures[jwtauth.ReasonType] != 1 {
		t.Fatalf("failures = %v, want 2 forbidden and 1 type", s.Failures)
	}
}

// TestStatsFailures: every reason is present, zeros included, and each
// rejection counts under its reason once, whether it came through Validate
// or the middleware.
func TestStatsFailures(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, func(c *jwtauth.Config) { c.Audience = []string{"api"} })
	waitReady(t, v)
	e := newServer(v, jwtauth.RequireScopes("read"))
	s := v.Stats()
	if len(s.Failures) != len(jwtauth.FailureReasons) || len(s.JWKSFetchOutcomes) != len(jwtauth.JWKSFetchOutcomes) {
		t.Fatalf("stats maps = %v / %v, want every reason and outcome", s.Failures, s.JWKSFetchOutcomes)
	}
	for _, r := range jwtauth.FailureReasons {
		if n, ok := s.Failures[r]; !ok || n != 0 {
			t.Fatalf("reason %q: %d, %v; want present and 0", r, n, ok)
		}
	}
	ok := map[string]any{"aud": "api", "scope": "read"}
	with := func(kv ...any) map[string]any {
		m := map[string]any{}
		for k, x := range ok {
			m[k] = x
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	do(t, e)                                                                   // missing
	do(t, e, "Bearer a b")                                                     // malformed (400)
	do(t, e, bearer("abc"))                                                    // malformed
	do(t, e, bearer(idp.Mint(with("exp", time.Now().Add(-time.Hour).Unix())))) // expired
	do(t, e, bearer(idp.Mint(with("nbf", time.Now().Add(time.Hour).Unix()))))  // not_yet_valid
	do(t, e, bearer(idp.Mint(with("iss", "https://other.example"))))           // issuer
	do(t, e, bearer(idp.Mint(with("aud", "other"))))                           // audience
	do(t, e, bearer(idp.Mint(with("scope", "write"))))                         // forbidden
	do(t, e, bearer(idp.Mint(with("exp", "soon"))))                            // claims
	_, _ = v.Validate(context.Background(), "")                                // missing
	if r := do(t, e, bearer(idp.Mint(ok))); r.status != http.StatusOK {        // no failure
		t.Fatalf("valid token: %d %v", r.status, r.body)
	}
	want := map[string]uint64{
		jwtauth.ReasonMissing: 2, jwtauth.ReasonMalformed: 2, jwtauth.ReasonExpired: 1, jwtauth.ReasonNotYetValid: 1,
		jwtauth.ReasonIssuer: 1, jwtauth.ReasonAudience: 1, jwtauth.ReasonForbidden: 1, jwtauth.ReasonClaims: 1,
	}
	got := v.Stats()
	for _, r := range jwtauth.FailureReasons {
		if got.Failures[r] != want[r] {
			t.Errorf("Failures[%s] = %d, want %d (all: %v)", r, got.Failures[r], want[r], got.Failures)
		}
	}
	if got.JWKSFetchOutcomes[jwtauth.FetchOK] != 1 || got.JWKSFetches != 1 || got.Keys != 1 || got.KeysLoadedAt.IsZero() {
		t.Errorf("jwks stats = %+v, want one ok fetch and one key", got)
	}
}

// TestWrongIssuerIsLogged: the log line says which issuer was expected and
// which came (issue 8.6); the answer stays short.
func TestWrongIssuerIsLogged(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	var buf syncBuffer
	v := newValidator(t, idp, func(c *jwtauth.Config) { c.Logger = slog.New(slog.NewJSONHandler(&buf, nil)) })
	waitReady(t, v)
	r := do(t, newServer(v), bearer(idp.Mint(map[string]any{"iss": idp.Issuer() + "/"})))
	if r.status != http.StatusUnauthorized || r.body["error_description"] != "wrong issuer" {
		t.Fatalf("%d %v, want 401 wrong issuer", r.status, r.body)
	}
	want := `expected \"` + idp.Issuer() + `\", got \"` + idp.Issuer() + `/\"`
	if !strings.Contains(buf.String(), want) {
		t.Fatalf("log lacks %s:\n%s", want, buf.String())
	}
}

// TestJWKSRedirects: a JWKS fetch follows a redirect only to https on the
// same host name; to plain http, or to another host, it is refused (and the
// validator stays not ready, saying why).
func TestJWKSRedirects(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	res, err := http.Get(idp.JWKSURL())
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := io.ReadAll(res.Body)
	res.Body.Close()
	tlsIdP := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(jwks) }))
	t.Cleanup(tlsIdP.Close)
	redirectTo := func(target string) *httptest.Server {
		s := httptest.NewServer(http.RedirectHandler(target, http.StatusFound))
		t.Cleanup(s.Close)
		return s
	}
	tlsRedirectTo := func(target string) *httptest.Server {
		s := httptest.NewTLSServer(http.RedirectHandler(target, http.StatusFound))
		t.Cleanup(s.Close)
		return s
	}
	localhost := strings.Replace(tlsIdP.URL, "127.0.0.1", "localhost", 1)
	for _, tc := range []struct {
		name   string
		url    string
		follow bool
	}{
		{"http to https, same host", redirectTo(tlsIdP.URL + "/jwks").URL, true},
		{"https to http, same host", tlsRedirectTo(idp.JWKSURL()).URL, false},
		{"http to http, same host", redirectTo(idp.JWKSURL()).URL, false},
		{"http to https, other host", redirectTo(localhost + "/jwks").URL, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := tlsIdP.Client() // trusts the test CA; its CheckRedirect is replaced by ours
			client.Timeout = mustNotHang
			v := newValidator(t, idp, func(c *jwtauth.Config) { c.JWKSURL, c.HTTPClient = tc.url, client })
			if tc.follow {
				waitReady(t, v)
				if _, err := v.Validate(context.Background(), idp.Mint(nil)); err != nil {
					t.Fatalf("after a followed redirect: %v", err)
				}
				return
			}
			eventually(t, "the refused fetch", func() bool { return v.Stats().JWKSFetchErrors > 0 })
			if err := v.Ready(); !errors.Is(err, jwtauth.ErrNotReady) || !strings.Contains(err.Error(), "refusing a redirect") {
				t.Fatalf("Ready = %v, want not ready because of the redirect", err)
			}
			if n := v.Stats().JWKSFetchOutcomes[jwtauth.FetchTransport]; n == 0 {
				t.Fatalf("outcomes = %v, want a transport failure", v.Stats().JWKSFetchOutcomes)
			}
		})
	}
}

// TestStartupIsQuiet (issue 12.3): while the IdP is not up yet, the first
// fetch is retried at 50 ms, doubling, and logged at debug only during the
// first 2 s; a failure that lasts longer warns.
func TestStartupIsQuiet(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	idp.SetDown(true)
	var buf syncBuffer
	clk := newFakeClock()
	v := newValidator(t, idp, func(c *jwtauth.Config) {
		jwtauth.SetClock(c, clk)
		c.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	var waited time.Duration
	for _, d := range []time.Duration{50, 100, 200, 400, 800} {
		d *= time.Millisecond
		n := idp.Fetches()
		eventually(t, "the retry timer", func() bool { return clk.armed() > 0 })
		clk.Advance(d)
		waited += d
		eventually(t, "the retry", func() bool { return idp.Fetches() > n })
	}
	eventually(t, "the retry timer", func() bool { return clk.armed() > 0 })
	logs := buf.String()
	if strings.Contains(logs, `"level":"WARN"`) || !strings.Contains(logs, `"level":"DEBUG"`) {
		t.Fatalf("within %s of start-up, logs:\n%s\nwant debug lines only", waited, logs)
	}
	if idp.Fetches() != 6 {
		t.Fatalf("%d fetches in %s, want 6 (start + retries at 50 ms doubling)", idp.Fetches(), waited)
	}
	clk.Advance(1600 * time.Millisecond) // past 2 s: the next failure warns
	eventually(t, "a warning", func() bool { return strings.Contains(buf.String(), `"level":"WARN"`) })
	idp.SetDown(false)
	eventually(t, "the retry timer", func() bool { return clk.armed() > 0 })
	clk.Advance(coldRetryCap)
	waitReady(t, v)
}

const coldRetryCap = 30 * time.Second
