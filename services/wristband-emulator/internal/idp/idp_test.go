package idp

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/wristband"
)

var testKey = func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}()

func newServer(t *testing.T, now time.Time) (*IdP, *echo.Echo) {
	t.Helper()
	p, err := New(Config{
		Issuer: "https://acme.us.wristband.dev", Clients: map[string]string{"cid": "s3cr:et"},
		Lifetime: 30 * time.Minute, AppID: "app", TenantID: "tnt", Key: testKey,
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	p.Register(e)
	return p, e
}

func tokenRequest(e *echo.Echo, body string, mutate func(*http.Request)) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, wristband.TokenPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// RFC 6749 2.3.1: form-encode, then Basic.
	req.SetBasicAuth(url.QueryEscape("cid"), url.QueryEscape("s3cr:et"))
	if mutate != nil {
		mutate(req)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func TestTokenEndpointIssuesWristbandShapedTokens(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	p, e := newServer(t, now)
	rec := tokenRequest(e, "grant_type=client_credentials", nil)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", rec.Header().Get("Cache-Control"))
	}
	var resp struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.TokenType != "Bearer" || resp.ExpiresIn != 1800 {
		t.Fatalf("token_type %q expires_in %d", resp.TokenType, resp.ExpiresIn)
	}

	// Verify against the published JWKS, as a resource server would.
	jr := httptest.NewRecorder()
	e.ServeHTTP(jr, httptest.NewRequest(http.MethodGet, wristband.JWKSPath, nil))
	set, err := jwk.Parse(jr.Body.Bytes())
	if err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	if set.Len() != 1 {
		t.Fatalf("JWKS has %d keys", set.Len())
	}
	k, _ := set.Key(0)
	if _, isPrivate := k.(jwk.RSAPrivateKey); isPrivate {
		t.Fatal("JWKS publishes a private key")
	}
	tok, err := jwt.Parse([]byte(resp.AccessToken), jwt.WithKeySet(set), jwt.WithValidate(true),
		jwt.WithIssuer("https://acme.us.wristband.dev"), jwt.WithClock(jwt.ClockFunc(func() time.Time { return now })))
	if err != nil {
		t.Fatalf("token does not verify against the JWKS: %v", err)
	}
	msg, _ := jws.Parse([]byte(resp.AccessToken))
	h := msg.Signatures()[0].ProtectedHeaders()
	if h.Type() != "at+JWT" || h.KeyID() != p.KeyID() || h.Algorithm().String() != "RS256" {
		t.Errorf("header typ=%q kid=%q alg=%q", h.Type(), h.KeyID(), h.Algorithm())
	}
	if tok.Subject() != "cid" || !tok.Expiration().Equal(now.Add(30*time.Minute)) || !tok.IssuedAt().Equal(now) {
		t.Errorf("sub=%q exp=%v iat=%v", tok.Subject(), tok.Expiration(), tok.IssuedAt())
	}
	if len(tok.Audience()) != 0 {
		t.Errorf("Wristband tokens carry no aud, got %v", tok.Audience())
	}
	for _, c := range []string{"client_id", "app_id", "tnt_id", "sub_kind"} {
		if _, ok := tok.Get(c); !ok {
			t.Errorf("claim %s missing", c)
		}
	}
	// jti is unique per token.
	rec2 := tokenRequest(e, "grant_type=client_credentials", nil)
	var resp2 struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.Unmarshal(rec2.Body.Bytes(), &resp2)
	tok2, err := jwt.Parse([]byte(resp2.AccessToken), jwt.WithVerify(false))
	if err != nil || tok2.JwtID() == "" || tok2.JwtID() == tok.JwtID() {
		t.Errorf("jti not unique: %q vs %q (%v)", tok.JwtID(), tok2.JwtID(), err)
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	_, e := newServer(t, time.Now())
	cases := []struct {
		name   string
		body   string
		mutate func(*http.Request)
		status int
		code   string
	}{
		{"no client auth", "grant_type=client_credentials", func(r *http.Request) { r.Header.Del("Authorization") }, 401, "invalid_client"},
		{"wrong secret", "grant_type=client_credentials", func(r *http.Request) { r.SetBasicAuth("cid", "nope") }, 401, "invalid_client"},
		{"unknown client", "grant_type=client_credentials", func(r *http.Request) { r.SetBasicAuth("who", "s3cr:et") }, 401, "invalid_client"},
		{"missing grant_type", "", nil, 400, "invalid_request"},
		{"password grant", "grant_type=password", nil, 400, "unsupported_grant_type"},
		{"repeated grant_type", "grant_type=client_credentials&grant_type=client_credentials", nil, 400, "invalid_request"},
		{"JSON body", `{"grant_type":"client_credentials"}`, func(r *http.Request) { r.Header.Set("Content-Type", "application/json") }, 400, "invalid_request"},
		{"no content type", "grant_type=client_credentials", func(r *http.Request) { r.Header.Del("Content-Type") }, 400, "invalid_request"},
		{"oversized body", "grant_type=client_credentials&pad=" + strings.Repeat("a", 20000), nil, 400, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := tokenRequest(e, tc.body, tc.mutate)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			var body struct{ Error, ErrorDescription string }
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error != tc.code {
				t.Fatalf("body %s, want error %q", rec.Body, tc.code)
			}
			if rec.Header().Get("Cache-Control") != "no-store" {
				t.Error("error responses must not be cached")
			}
			if tc.status == 401 && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Basic") {
				t.Errorf("WWW-Authenticate %q, want Basic", rec.Header().Get("WWW-Authenticate"))
			}
			if strings.Contains(rec.Body.String(), "s3cr:et") {
				t.Error("the secret appears in the answer")
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, err := New(Config{Key: small})
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"issuer", "clients", "lifetime", "2048"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestParseClients(t *testing.T) {
	got, err := ParseClients("a:1, b:2:with-colon")
	if err != nil || got["a"] != "1" || got["b"] != "2:with-colon" {
		t.Fatalf("got %v %v", got, err)
	}
	for _, bad := range []string{"", ",", "lonely-id", ":secret-value", "id-only:"} {
		_, err := ParseClients(bad)
		if err == nil {
			t.Errorf("%q: want an error", bad)
			continue
		}
		if word := strings.Trim(bad, ":,"); word != "" && strings.Contains(err.Error(), word) {
			t.Errorf("%q: the error echoes the input, which may be a secret", bad)
		}
	}
}

func TestLoadOrGenerateKeyCreatesMissingFileOnceAndReusesIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.pem")
	k1, err := LoadOrGenerateKey(path)
	if err != nil {
		t.Fatalf("first load: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("key file not created: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	k2, err := LoadOrGenerateKey(path)
	if err != nil {
		t.Fatalf("second load: %v", err)
	}
	if !k1.Equal(k2) {
		t.Fatal("second load returned a different key: a restart would change the kid")
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*"))
	if len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestLoadOrGenerateKeyErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrGenerateKey(bad); err == nil || !strings.Contains(err.Error(), "no PEM block") {
		t.Errorf("garbage file: err = %v, want no PEM block", err)
	}
	if _, err := LoadOrGenerateKey(filepath.Join(dir, "missing-dir", "k.pem")); err == nil {
		t.Error("missing directory: want an error, got none")
	}
}

func TestLoadOrGenerateKeyRefusesShortRSAKeys(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "short.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrGenerateKey(path); err == nil || !strings.Contains(err.Error(), "at least 2048") {
		t.Fatalf("err = %v, want a refusal of the 1024-bit key", err)
	}
}
