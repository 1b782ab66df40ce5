package m2m

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// captured is one token request as the server received it.
type captured struct {
	method, path string
	header       http.Header
	body         string
}

// recorder is a token endpoint that records every request verbatim and
// answers with reply (a fresh token by default).
type recorder struct {
	srv   *httptest.Server
	mu    sync.Mutex
	reqs  []captured
	reply func(w http.ResponseWriter, r *http.Request)
}

func newRecorder(t *testing.T) *recorder {
	rc := &recorder{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, captured{r.Method, r.URL.Path, r.Header.Clone(), string(b)})
		reply := rc.reply
		n := len(rc.reqs)
		rc.mu.Unlock()
		if reply != nil {
			reply(w, r)
			return
		}
		writeToken(w, fmt.Sprintf("tok-%d", n), 3600)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *recorder) last(t *testing.T) captured {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.reqs) == 0 {
		t.Fatal("no token request reached the endpoint")
	}
	return rc.reqs[len(rc.reqs)-1]
}

func (rc *recorder) source(t *testing.T, cfg Config) *TokenSource {
	t.Helper()
	cfg.TokenURL = cmpOr(cfg.TokenURL, rc.srv.URL+"/oauth2/token")
	cfg.ClientID = cmpOr(cfg.ClientID, testClientID)
	cfg.HTTPClient = rc.srv.Client()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// With none of the new settings the request is byte for byte what Wristband
// expects and what this package sent before: POST, Basic credentials each
// form-url-encoded first, and only grant_type in the body.
func TestDefaultRequestIsUnchanged(t *testing.T) {
	rc := newRecorder(t)
	s := rc.source(t, Config{ClientSecret: testClientSecret})
	if _, err := s.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := rc.last(t)
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("gateway+client:s3cr3t%3Ap%40ss%2Fword"))
	if got.method != http.MethodPost || got.path != "/oauth2/token" || got.body != "grant_type=client_credentials" {
		t.Errorf("request %s %s %q, want POST /oauth2/token grant_type=client_credentials", got.method, got.path, got.body)
	}
	for k, want := range map[string]string{
		"Authorization":  wantAuth,
		"Content-Type":   "application/x-www-form-urlencoded",
		"Accept":         "application/json",
		"Content-Length": "29",
	} {
		if v := got.header.Values(k); len(v) != 1 || v[0] != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	for k := range got.header {
		switch k {
		case "Authorization", "Content-Type", "Accept", "Content-Length", "User-Agent", "Accept-Encoding":
		default:
			t.Errorf("unexpected header %s: %q", k, got.header.Values(k))
		}
	}
}

func TestScopesParamsAndClientSecretPost(t *testing.T) {
	params := url.Values{"audience": {"https://api.example.com"}, "resource": {"https://a.example/", "https://b.example/"}, "organization": {"acme & co"}}
	cases := []struct {
		name     string
		cfg      Config
		wantBody string
		basic    bool
	}{
		{"scopes", Config{ClientSecret: testClientSecret, Scopes: []string{"read:data", "write:data"}},
			"grant_type=client_credentials&scope=read%3Adata+write%3Adata", true},
		{"params", Config{ClientSecret: testClientSecret, EndpointParams: params},
			"grant_type=client_credentials&audience=https%3A%2F%2Fapi.example.com&organization=acme+%26+co&resource=https%3A%2F%2Fa.example%2F&resource=https%3A%2F%2Fb.example%2F", true},
		{"client_secret_post", Config{ClientSecret: testClientSecret, AuthMethod: ClientSecretPost, Scopes: []string{"s"}},
			"grant_type=client_credentials&scope=s&client_id=gateway+client&client_secret=s3cr3t%3Ap%40ss%2Fword", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := newRecorder(t)
			s := rc.source(t, tc.cfg)
			if _, err := s.Token(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := rc.last(t)
			if got.body != tc.wantBody {
				t.Errorf("body\n%s\nwant\n%s", got.body, tc.wantBody)
			}
			form, err := url.ParseQuery(got.body)
			if err != nil || form.Get("grant_type") != "client_credentials" {
				t.Errorf("body does not parse as a form: %v", err)
			}
			if tc.basic != (got.header.Get("Authorization") != "") {
				t.Errorf("Authorization %q with basic=%v", got.header.Get("Authorization"), tc.basic)
			}
			if !tc.basic && (form.Get("client_id") != testClientID || form.Get("client_secret") != testClientSecret) {
				t.Errorf("client_secret_post form %v lacks the credentials", form)
			}
		})
	}
}

func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPrivateKeyJWT(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		key     crypto.Signer
		kid     string
		alg     string
		wantAlg string
	}{
		{"RSA default RS256, thumbprint kid", rsaKey(t), "", "", "RS256"},
		{"RSA PS256", rsaKey(t), "gw-2026", "PS256", "PS256"},
		{"P-256 default ES256", ec, "", "", "ES256"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			rc := newRecorder(t)
			tokenURL := rc.srv.URL + "/oauth2/token"
			s := rc.source(t, Config{AuthMethod: PrivateKeyJWT, PrivateKey: tc.key, KeyID: tc.kid, SigningAlg: tc.alg,
				ClientSecret: "left-over-secret", clock: clk})

			// What an operator registers at the IdP.
			raw, err := PublicJWKS(tc.key, tc.kid, tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			set, err := jwk.Parse(raw)
			if err != nil || set.Len() != 1 {
				t.Fatalf("PublicJWKS: %v\n%s", err, raw)
			}
			pub, _ := set.Key(0)
			if _, isPrivate := pub.(interface{ D() []byte }); isPrivate || bytes.Contains(raw, []byte(`"d"`)) {
				t.Fatalf("PublicJWKS leaks the private key:\n%s", raw)
			}
			if pub.KeyUsage() != "sig" || pub.Algorithm().String() != tc.wantAlg {
				t.Errorf("JWK use %q alg %q, want sig %s", pub.KeyUsage(), pub.Algorithm(), tc.wantAlg)
			}
			if tc.kid != "" && pub.KeyID() != tc.kid {
				t.Errorf("kid %q, want %q", pub.KeyID(), tc.kid)
			}

			jtis := map[string]bool{}
			for i := range 3 {
				if i > 0 {
					// Each token request carries a fresh assertion. (The token
					// is a minute old: older than the invalidation guard.)
					clk.Advance(time.Minute)
					tok, _ := s.Token(context.Background())
					s.Invalidate(tok)
				}
				if _, err := s.Token(context.Background()); err != nil {
					t.Fatal(err)
				}
				got := rc.last(t)
				if a := got.header.Get("Authorization"); a != "" {
					t.Errorf("Authorization %q sent with private_key_jwt", a)
				}
				form, _ := url.ParseQuery(got.body)
				if form.Get("client_assertion_type") != ClientAssertionType || form.Get("client_id") != testClientID ||
					form.Get("client_secret") != "" || form.Get("grant_type") != "client_credentials" {
					t.Fatalf("form %v", form)
				}
				assertion := form.Get("client_assertion")
				msg, err := jws.Parse([]byte(assertion))
				if err != nil {
					t.Fatal(err)
				}
				h := msg.Signatures()[0].ProtectedHeaders()
				if h.Algorithm().String() != tc.wantAlg || h.KeyID() != pub.KeyID() {
					t.Errorf("header alg %s kid %q, want %s %q", h.Algorithm(), h.KeyID(), tc.wantAlg, pub.KeyID())
				}
				// Verified with the registered public key only, as the IdP does.
				claims, err := jwt.ParseString(assertion, jwt.WithKeySet(set), jwt.WithValidate(true), jwt.WithClock(jwt.ClockFunc(clk.Now)),
					jwt.WithIssuer(testClientID), jwt.WithSubject(testClientID), jwt.WithAudience(tokenURL))
				if err != nil {
					t.Fatalf("assertion %d does not verify: %v (now %s)", i, err, clk.Now())
				}
				if !claims.IssuedAt().Equal(clk.Now().Truncate(time.Second)) || claims.Expiration().Sub(claims.IssuedAt()) != time.Minute {
					t.Errorf("iat %s exp %s, want now and now+60s", claims.IssuedAt(), claims.Expiration())
				}
				if claims.JwtID() == "" || jtis[claims.JwtID()] {
					t.Errorf("jti %q empty or reused", claims.JwtID())
				}
				jtis[claims.JwtID()] = true
			}
		})
	}
}

func TestAssertionAudienceOverride(t *testing.T) {
	rc := newRecorder(t)
	s := rc.source(t, Config{AuthMethod: PrivateKeyJWT, PrivateKey: rsaKey(t), AssertionAudience: "https://tenant.example.com/"})
	if _, err := s.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	form, _ := url.ParseQuery(rc.last(t).body)
	tok, err := jwt.ParseString(form.Get("client_assertion"), jwt.WithVerify(false))
	if err != nil || len(tok.Audience()) != 1 || tok.Audience()[0] != "https://tenant.example.com/" {
		t.Errorf("aud %v (%v), want the override", tok.Audience(), err)
	}
}

func TestNewValidatesAuthSettings(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	base := Config{TokenURL: "https://idp/token", ClientID: "a"}
	with := func(f func(*Config)) Config { c := base; f(&c); return c }
	cases := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"no secret", base, []string{"ClientSecret is required"}},
		{"unknown method", with(func(c *Config) { c.ClientSecret = "x"; c.AuthMethod = "client_secret_jwt" }), []string{"is not supported"}},
		{"reserved params", with(func(c *Config) {
			c.ClientSecret = "x"
			c.EndpointParams = url.Values{"client_secret": {"topsecret"}, "Client_Assertion": {"topsecret"}, "grant_type": {"password"}, "scope": {"a"}}
		}), []string{`must not set "client_secret"`, `must not set "Client_Assertion"`, `must not set "grant_type"`, "use Scopes"}},
		{"bad scope", with(func(c *Config) { c.ClientSecret = "x"; c.Scopes = []string{"a b"} }), []string{"not a valid scope token"}},
		{"key without method", with(func(c *Config) { c.ClientSecret = "x"; c.PrivateKey = rsaKey(t) }), []string{"set AuthMethod to private_key_jwt"}},
		{"method without key", with(func(c *Config) { c.AuthMethod = PrivateKeyJWT }), []string{"PrivateKey is required"}},
		{"short RSA key", with(func(c *Config) { c.AuthMethod = PrivateKeyJWT; c.PrivateKey = small }), []string{"1024 bits"}},
		{"alg mismatch", with(func(c *Config) { c.AuthMethod = PrivateKeyJWT; c.PrivateKey = rsaKey(t); c.SigningAlg = "ES256" }), []string{"does not fit a RSA key"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if err == nil {
				_ = s.Close()
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "topsecret") {
				t.Errorf("error echoes a value: %q", err)
			}
		})
	}
}

func TestParsePrivateKeyPEM(t *testing.T) {
	rk := rsaKey(t)
	ek, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(rk)
	sec1, _ := x509.MarshalECPrivateKey(ek)
	enc := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	good := map[string][]byte{
		"PKCS #8":              enc("PRIVATE KEY", pkcs8),
		"PKCS #1":              enc("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)),
		"SEC 1 after params":   append(enc("EC PARAMETERS", []byte{6, 5, 43, 129, 4, 0, 34}), enc("EC PRIVATE KEY", sec1)...),
		"after a certificate":  append(enc("CERTIFICATE", []byte{1, 2, 3}), enc("PRIVATE KEY", pkcs8)...),
		"trailing whitespace ": append(enc("PRIVATE KEY", pkcs8), "\n\n"...),
	}
	for name, data := range good {
		if _, err := ParsePrivateKeyPEM(data); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string][]byte{
		"empty":        nil,
		"public key":   enc("PUBLIC KEY", []byte{1}),
		"encrypted":    enc("ENCRYPTED PRIVATE KEY", []byte("topsecret")),
		"garbage body": enc("PRIVATE KEY", []byte("topsecret")),
	}
	for name, data := range bad {
		_, err := ParsePrivateKeyPEM(data)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("%s: error quotes the input: %v", name, err)
		}
	}
}

// Issue 11.3: the secret in every form the wire carries, and the client
// assertion, are masked in errors and logs even when the IdP echoes the
// whole request back.
func TestEverySecretFormMasked(t *testing.T) {
	for _, method := range []AuthMethod{ClientSecretBasic, ClientSecretPost, PrivateKeyJWT} {
		t.Run(string(method), func(t *testing.T) {
			var seen []string // every credential form the server received
			var mu sync.Mutex
			var n atomic.Int64
			rc := newRecorder(t)
			rc.reply = func(w http.ResponseWriter, r *http.Request) {
				rc.mu.Lock()
				c := rc.reqs[len(rc.reqs)-1]
				rc.mu.Unlock()
				auth := c.header.Get("Authorization")
				form, _ := url.ParseQuery(c.body)
				mu.Lock()
				for _, v := range []string{auth, strings.TrimPrefix(auth, "Basic "), form.Get("client_secret"), form.Get("client_assertion"),
					url.QueryEscape(form.Get("client_secret"))} {
					if v != "" {
						seen = append(seen, v)
					}
				}
				mu.Unlock()
				echo := fmt.Sprintf("auth=%s body=%s", auth, c.body)
				desc, _ := json.Marshal(echo)
				switch n.Add(1) {
				case 1:
					writeJSON(w, http.StatusInternalServerError, `{"error":"server_error","error_description":`+string(desc)+`}`)
				case 2:
					writeJSON(w, http.StatusBadRequest, `{"error":`+string(desc)+`,"error_description":`+string(desc)+`}`)
				default:
					http.Redirect(w, r, "http://127.0.0.1:1/steal?"+url.QueryEscape(echo), http.StatusTemporaryRedirect)
				}
			}
			var logs syncBuffer
			clk := newFakeClock()
			cfg := Config{ClientSecret: testClientSecret, AuthMethod: method, clock: clk, MinBackoff: time.Millisecond,
				Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			if method == PrivateKeyJWT {
				cfg.ClientSecret, cfg.PrivateKey = "", rsaKey(t)
			}
			s := rc.source(t, cfg)
			var errs []string
			for range 3 {
				_, err := s.Token(context.Background())
				if err == nil {
					t.Fatal("a token from an endpoint that only fails")
				}
				errs = append(errs, err.Error(), s.Ready().Error())
				clk.Advance(time.Minute)
			}
			all := strings.Join(errs, "\n") + "\n" + logs.String()
			if !strings.Contains(all, "[REDACTED]") || !strings.Contains(all, "redirect") {
				t.Fatalf("scenarios did not run as planned:\n%s", all)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) < 3 {
				t.Fatalf("the server saw no credentials: %v", seen)
			}
			leaks := append(seen, testClientSecret, url.QueryEscape(testClientSecret), url.PathEscape(testClientSecret),
				base64.StdEncoding.EncodeToString([]byte(testClientID+":"+testClientSecret)))
			for _, leak := range leaks {
				if method == PrivateKeyJWT && leak == testClientSecret {
					continue // not configured: nothing to leak
				}
				// Shorter fragments than this would be masked as part of a whole.
				if strings.Contains(all, leak) {
					t.Errorf("%.40q... appears in errors or logs:\n%s", leak, all)
				}
			}
		})
	}
}

// Issue 11.3: a redirect from the token endpoint is refused, with a clear
// error, and the credentials never reach the redirect's target.
func TestRedirectRefused(t *testing.T) {
	var stolen atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stolen.Add(1)
		writeToken(w, "tok-stolen", 3600)
	}))
	t.Cleanup(target.Close)
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			rc := newRecorder(t)
			rc.reply = func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target.URL+"/token?x=1", code)
			}
			// The caller's client follows redirects; the source's copy must not,
			// and the caller's client must keep its own policy.
			client := &http.Client{}
			s, err := New(Config{TokenURL: rc.srv.URL, ClientID: testClientID, ClientSecret: testClientSecret, HTTPClient: client})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = s.Token(context.Background())
			var re *redirectError
			if !errors.As(err, &re) || !strings.Contains(err.Error(), "redirects are refused") || strings.Contains(err.Error(), "x=1") {
				t.Fatalf("err %v, want a clear redirect refusal without the query", err)
			}
			if !isPermanent(err) {
				t.Error("a refused redirect should be retried slowly, as a configuration error")
			}
			if client.CheckRedirect != nil {
				t.Error("New changed the caller's http.Client")
			}
		})
	}
	if n := stolen.Load(); n != 0 {
		t.Errorf("the redirect target received %d requests", n)
	}
}
