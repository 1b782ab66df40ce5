package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

const publicJSON = `{"publicData":"hello world","protectedData":"here I am"}`

// forge signs claims with key under kid, the way the emulator would.
func forge(t *testing.T, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	tok := jwt.New()
	for k, v := range claims {
		if err := tok.Set(k, v); err != nil {
			t.Fatalf("claim %s: %v", k, err)
		}
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, kid)
	_ = hdr.Set(jws.TypeKey, "at+JWT")
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.RS256, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// emulatorToken asks the emulator for a token as any client would.
func emulatorToken(t testing.TB, s *system) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.emuURL()+"/api/v1/oauth2/token",
		strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, clientSecret)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("token request: %d %v", resp.StatusCode, err)
	}
	return body.AccessToken
}

func TestEndToEnd(t *testing.T) {
	s := startSystem(t, 30*time.Minute)

	t.Run("public call answers the demo's JSON", func(t *testing.T) {
		r := get(t, s.gwURL()+"/api/public/data")
		if r.status != 200 || strings.TrimSpace(r.body) != publicJSON {
			t.Fatalf("got %d %s, want 200 %s", r.status, r.body, publicJSON)
		}
		if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Errorf("Content-Type %q", r.header.Get("Content-Type"))
		}
		if sb := r.header.Get("X-Served-By"); sb != "" {
			t.Errorf("X-Served-By %q exposed without EXPOSE_SERVED_BY", sb)
		}
	})

	t.Run("audit trail: real peer address, the calling client, never the token", func(t *testing.T) {
		const rid = "audit-trail-1"
		r := get(t, s.gwURL()+"/api/public/data", "X-Forwarded-For", "203.0.113.66", "X-Request-Id", rid)
		if r.status != 200 {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		gwLine := logLine(t, s.gw, "request_id="+rid)
		if !strings.Contains(gwLine, "remote_ip=127.0.0.1") || strings.Contains(gwLine, "203.0.113.66") {
			t.Errorf("gateway believed a forwarding header from an untrusted peer: %s", gwLine)
		}
		pdLine := logLine(t, s.pd, "request_id="+rid)
		for _, want := range []string{"client_id=" + clientID, "sub=" + clientID, "jti=", "latency_ms="} {
			if !strings.Contains(pdLine, want) {
				t.Errorf("protected-data's line lacks %s: %s", want, pdLine)
			}
		}
		if strings.Contains(s.pd.out.String(), "eyJ") {
			t.Error("a token reached protected-data's log")
		}
	})

	t.Run("many public calls reuse one token", func(t *testing.T) {
		var wg sync.WaitGroup
		var bad atomic.Int32
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 25; j++ {
					resp, err := client.Get(s.gwURL() + "/api/public/data")
					if err != nil {
						bad.Add(1)
						continue
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						bad.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if bad.Load() != 0 {
			t.Fatalf("%d of 200 public calls failed", bad.Load())
		}
		if n := strings.Count(s.emu.out.String(), "path=/api/v1/oauth2/token status=200"); n != 1 {
			t.Errorf("emulator issued %d tokens for 201 public calls, want 1", n)
		}
	})

	now := time.Now()
	valid := func() map[string]any {
		return map[string]any{"iss": s.emuURL(), "sub": clientID, "client_id": clientID,
			"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(), "jti": "x"}
	}
	with := func(k string, v any) map[string]any { c := valid(); c[k] = v; return c }
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good := forge(t, s.key, testKID, valid())
	parts := strings.Split(good, ".")

	cases := []struct {
		name   string
		header []string
		status int
		errStr string // expected in WWW-Authenticate; "" means no error attribute
	}{
		{"no token", nil, 401, ""},
		{"garbage", []string{"Authorization", "Bearer garbage"}, 401, `error="invalid_token"`},
		{"expired", []string{"Authorization", "Bearer " + forge(t, s.key, testKID, with("exp", now.Add(-10*time.Minute).Unix()))}, 401, `error="invalid_token"`},
		{"wrong issuer", []string{"Authorization", "Bearer " + forge(t, s.key, testKID, with("iss", "https://evil.example"))}, 401, `error="invalid_token"`},
		{"wrong signature", []string{"Authorization", "Bearer " + forge(t, otherKey, testKID, valid())}, 401, `error="invalid_token"`},
		{"alg none", []string{"Authorization", "Bearer " + b64(`{"alg":"none","kid":"`+testKID+`","typ":"at+JWT"}`) + "." + parts[1] + "."}, 401, `error="invalid_token"`},
		{"signature stripped", []string{"Authorization", "Bearer " + parts[0] + "." + parts[1] + "."}, 401, `error="invalid_token"`},
	}
	for _, tc := range cases {
		t.Run("protected-data rejects "+tc.name, func(t *testing.T) {
			r := get(t, s.pdURL()+"/api/protected/data", tc.header...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d (body %s)", r.status, tc.status, r.body)
			}
			wa := r.header.Get("WWW-Authenticate")
			if !strings.HasPrefix(wa, "Bearer") {
				t.Fatalf("WWW-Authenticate %q, want a Bearer challenge", wa)
			}
			if tc.errStr == "" && strings.Contains(wa, "error=") {
				t.Errorf("WWW-Authenticate %q: a missing token must not carry an error (RFC 6750 3.1)", wa)
			}
			if tc.errStr != "" && !strings.Contains(wa, tc.errStr) {
				t.Errorf("WWW-Authenticate %q, want %s", wa, tc.errStr)
			}
			var body map[string]any
			if err := json.Unmarshal([]byte(r.body), &body); err != nil {
				t.Errorf("body %q is not JSON", r.body)
			}
		})
	}

	t.Run("protected-data accepts a forged-but-valid token", func(t *testing.T) {
		// Guards the table above: the rejections must come from the flaw each
		// case introduces, not from the harness minting bad tokens.
		r := get(t, s.pdURL()+"/api/protected/data", "Authorization", "Bearer "+good)
		if r.status != 200 || strings.TrimSpace(r.body) != `{"protectedData":"here I am"}` {
			t.Fatalf("got %d %s", r.status, r.body)
		}
	})

	t.Run("gateway forwards the caller's own token", func(t *testing.T) {
		tok := emulatorToken(t, s)
		r := get(t, s.gwURL()+"/api/protected/data", "Authorization", "Bearer "+tok)
		if r.status != 200 || strings.TrimSpace(r.body) != `{"protectedData":"here I am"}` {
			t.Fatalf("with token: %d %s", r.status, r.body)
		}
		r = get(t, s.gwURL()+"/api/protected/data")
		if r.status != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("without token: %d %q %s; the gateway must not lend its own token", r.status, r.header.Get("WWW-Authenticate"), r.body)
		}
	})

	t.Run("request ID travels from gateway to protected-data", func(t *testing.T) {
		r := get(t, s.gwURL()+"/api/public/data", "X-Request-Id", "trace-e2e-42")
		if r.status != 200 || r.header.Get("X-Request-Id") != "trace-e2e-42" {
			t.Fatalf("got %d, X-Request-Id %q", r.status, r.header.Get("X-Request-Id"))
		}
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(s.pd.out.String(), "request_id=trace-e2e-42") {
			if time.Now().After(deadline) {
				t.Fatal("protected-data never logged the gateway's request ID")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("unknown route is a JSON 404", func(t *testing.T) {
		r := get(t, s.gwURL()+"/nope")
		if r.status != 404 || !strings.Contains(r.body, `"error"`) {
			t.Fatalf("got %d %s", r.status, r.body)
		}
	})

	t.Run("no secret or token in any log", func(t *testing.T) {
		for _, p := range []*proc{s.emu, s.pd, s.gw} {
			out := p.out.String()
			if strings.Contains(out, clientSecret) {
				t.Errorf("%s logged the client secret", p.name)
			}
			if strings.Contains(out, "eyJ") {
				t.Errorf("%s logged something that looks like a JWT", p.name)
			}
		}
	})
}

// The identity provider goes away long enough for the token to expire: the
// gateway answers 503 (never crashes, never hangs) and recovers by itself.
func TestGatewaySurvivesEmulatorRestart(t *testing.T) {
	s := startSystem(t, 4*time.Second, "TOKEN_MARGIN=1s")
	if r := get(t, s.gwURL()+"/api/public/data"); r.status != 200 {
		t.Fatalf("before outage: %d %s", r.status, r.body)
	}
	s.emu.stop(t)
	waitStatus(t, s.gwURL()+"/readyz", 503, 30*time.Second)
	r := get(t, s.gwURL()+"/api/public/data")
	if r.status != 503 || !strings.Contains(r.body, `"error"`) {
		t.Fatalf("during outage: %d %s, want 503 JSON", r.status, r.body)
	}
	if !s.gw.alive() {
		t.Fatal("gateway exited during the outage")
	}
	s.startEmulator(t)
	waitStatus(t, s.gwURL()+"/api/public/data", 200, 60*time.Second)
	if r := get(t, s.gwURL()+"/api/public/data"); strings.TrimSpace(r.body) != publicJSON {
		t.Fatalf("after recovery: %s", r.body)
	}
}

func TestGatewayStartsWithEmulatorDown(t *testing.T) {
	dead := freeAddr(t) // nothing listens here
	pd := freeAddr(t)
	gw := freeAddr(t)
	g := start(t, "public-gateway", "LISTEN_ADDR="+gw, "WRISTBAND_EMULATOR_URL=http://"+dead,
		"CLIENT_ID="+clientID, "CLIENT_SECRET="+clientSecret, "PROTECTED_DATA_URL=http://"+pd)
	waitStatus(t, "http://"+gw+"/healthz", 200, 30*time.Second)
	if r := get(t, "http://"+gw+"/readyz"); r.status != 503 {
		t.Fatalf("readyz %d %s, want 503", r.status, r.body)
	}
	r := get(t, "http://"+gw+"/api/public/data")
	if r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("public %d %q %s, want 503 with Retry-After", r.status, r.header.Get("Retry-After"), r.body)
	}
	if !g.alive() {
		t.Fatal("gateway exited with its IdP down")
	}
	if strings.Contains(g.out.String(), clientSecret) {
		t.Error("gateway logged the client secret")
	}
}

// A faked protected-data (the one neighbour we stand in for here) shows how
// the gateway maps downstream failures.
func TestGatewayDownstreamFailures(t *testing.T) {
	s := startSystem(t, 30*time.Minute)

	t.Run("401 drops the token, retries once with a new one, then 502", func(t *testing.T) {
		var mu sync.Mutex
		var tokens []string
		fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			tokens = append(tokens, r.Header.Get("Authorization"))
			mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			w.WriteHeader(401)
		}))
		defer fake.Close()
		gw := freeAddr(t)
		start(t, "public-gateway", "LISTEN_ADDR="+gw, "WRISTBAND_EMULATOR_URL="+s.emuURL(),
			"CLIENT_ID="+clientID, "CLIENT_SECRET="+clientSecret, "PROTECTED_DATA_URL="+fake.URL)
		waitStatus(t, "http://"+gw+"/readyz", 200, 30*time.Second)
		r := get(t, "http://"+gw+"/api/public/data")
		if r.status != 502 || !strings.Contains(r.body, `"error"`) {
			t.Fatalf("got %d %s, want 502 JSON", r.status, r.body)
		}
		// Copied under the lock, checked outside it: a Fatalf never runs
		// with the lock held, nor leaves a deferred Unlock to unlock twice.
		seen := func() []string {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(tokens)
		}()
		if len(seen) != 2 {
			t.Fatalf("protected-data saw %d calls, want 2 (one retry)", len(seen))
		}
		if seen[0] == seen[1] || !strings.HasPrefix(seen[1], "Bearer ey") {
			t.Fatalf("the retry must carry a fresh token")
		}
		// A protected-data that refuses every token (say, a wrong ISSUER there)
		// must not turn each public call into a token request.
		issuedBefore := strings.Count(s.emu.out.String(), "path=/api/v1/oauth2/token status=200")
		for range 20 {
			if r := get(t, "http://"+gw+"/api/public/data"); r.status != 502 {
				t.Fatalf("got %d %s, want 502", r.status, r.body)
			}
		}
		issued := strings.Count(s.emu.out.String(), "path=/api/v1/oauth2/token status=200") - issuedBefore
		if issued > 5 {
			t.Errorf("20 refused public calls caused %d token requests; want a handful at most", issued)
		}
	})

	t.Run("a slow protected-data within DOWNSTREAM_TIMEOUT is served", func(t *testing.T) {
		fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"protectedData":"here I am"}`))
		}))
		defer fake.Close()
		gw := freeAddr(t)
		start(t, "public-gateway", "LISTEN_ADDR="+gw, "WRISTBAND_EMULATOR_URL="+s.emuURL(),
			"CLIENT_ID="+clientID, "CLIENT_SECRET="+clientSecret, "PROTECTED_DATA_URL="+fake.URL,
			"DOWNSTREAM_TIMEOUT=10s")
		waitStatus(t, "http://"+gw+"/readyz", 200, 30*time.Second)
		if r := get(t, "http://"+gw+"/api/public/data"); r.status != 200 || strings.TrimSpace(r.body) != publicJSON {
			t.Fatalf("got %d %s, want 200: a per-attempt timeout must not undercut DOWNSTREAM_TIMEOUT", r.status, r.body)
		}
	})

	t.Run("slow protected-data is a 504", func(t *testing.T) {
		release := make(chan struct{})
		fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer fake.Close()
		defer close(release)
		gw := freeAddr(t)
		start(t, "public-gateway", "LISTEN_ADDR="+gw, "WRISTBAND_EMULATOR_URL="+s.emuURL(),
			"CLIENT_ID="+clientID, "CLIENT_SECRET="+clientSecret, "PROTECTED_DATA_URL="+fake.URL,
			"DOWNSTREAM_TIMEOUT=500ms")
		waitStatus(t, "http://"+gw+"/readyz", 200, 30*time.Second)
		if r := get(t, "http://"+gw+"/api/public/data"); r.status != 504 || !strings.Contains(r.body, `"error"`) {
			t.Fatalf("got %d %s, want 504 JSON", r.status, r.body)
		}
	})

	t.Run("protected-data down is a 502", func(t *testing.T) {
		s.pd.stop(t)
		if r := get(t, s.gwURL()+"/api/public/data"); r.status != 502 || !strings.Contains(r.body, `"error"`) {
			t.Fatalf("got %d %s, want 502 JSON", r.status, r.body)
		}
	})
}

// logLine waits for p's access-log line containing marker (output reaches
// the buffer through a pipe, a moment after the answer) and returns it.
func logLine(t *testing.T, p *proc, marker string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for l := range strings.SplitSeq(p.out.String(), "\n") {
			if strings.Contains(l, marker) && strings.Contains(l, "msg=request") {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s logged no request line with %s", p.name, marker)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The secret may come from a file (Docker/Kubernetes secrets) instead of
// the environment; an empty CLIENT_SECRET, as compose passes it, gives way.
func TestGatewayReadsItsSecretFromAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client_secret")
	if err := os.WriteFile(path, []byte(clientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startSystem(t, 30*time.Minute, "CLIENT_SECRET=", "CLIENT_SECRET_FILE="+path)
	if r := get(t, s.gwURL()+"/api/public/data"); r.status != 200 || strings.TrimSpace(r.body) != publicJSON {
		t.Fatalf("got %d %s", r.status, r.body)
	}
}

// Every mistake is reported in one run, once each, naming the variable and
// an example of a valid value, never the value itself.
func TestConfigErrorsAreReportedAtOnce(t *testing.T) {
	cases := []struct {
		svc  string
		env  []string
		want []string // each error line starts with one of these, in any order
	}{
		{"public-gateway", []string{"CLIENT_SECRET=" + clientSecret, "PROTECTED_DATA_URL=ftp://x-xyzzy",
			"DOWNSTREAM_TIMEOUT=-1s", "TOKEN_TIMEOUT=soon-xyzzy", "TOKEN_MARGIN=later-xyzzy", "LOG_LEVEL=loud-xyzzy",
			"MAX_CONNECTIONS=-5", "TRUSTED_PROXIES=proxy-xyzzy"},
			[]string{"TOKEN_TIMEOUT:", "TOKEN_MARGIN:", "LOG_LEVEL:", "MAX_CONNECTIONS:", "TRUSTED_PROXIES:",
				"TOKEN_URL: no token endpoint", "CLIENT_ID:", "PROTECTED_DATA_URL:", "DOWNSTREAM_TIMEOUT:"}},
		{"public-gateway", []string{"CLIENT_ID=c", "CLIENT_SECRET=" + clientSecret, "CLIENT_SECRET_FILE=/nonexistent/xyzzy",
			"WRISTBAND_EMULATOR_URL=http://127.0.0.1:1"},
			[]string{"CLIENT_SECRET and CLIENT_SECRET_FILE:"}},
		{"public-gateway", []string{"CLIENT_ID=c", "CLIENT_SECRET_FILE=/nonexistent/xyzzy", "WRISTBAND_EMULATOR_URL=http://127.0.0.1:1"},
			[]string{"CLIENT_SECRET_FILE: the file does not exist"}},
		{"protected-data", []string{"JWKS_URL=notaurl-xyzzy", "ISSUER=", "CLOCK_LEEWAY=5m", "ALGORITHMS=HS256"},
			[]string{"JWKS_URL:", "ISSUER:", "CLOCK_LEEWAY:", "ALGORITHMS:"}},
		{"protected-data", []string{"APPLICATION_VANITY_DOMAIN=https://vanity-xyzzy.example", "LISTEN_ADDR=nowhere-xyzzy"},
			[]string{"APPLICATION_VANITY_DOMAIN:", "LISTEN_ADDR:"}},
		{"wristband-emulator", []string{"TOKEN_LIFETIME=soon-xyzzy", "LOG_FORMAT=xml-xyzzy"},
			[]string{"TOKEN_LIFETIME:", "LOG_FORMAT:"}},
		{"wristband-emulator", []string{"CLIENTS=no-pair-xyzzy"},
			[]string{"CLIENTS (or CLIENTS_FILE):"}},
	}
	for _, tc := range cases {
		t.Run(tc.svc+" "+strings.Join(tc.want, " "), func(t *testing.T) {
			p := start(t, tc.svc, tc.env...)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				t.Fatal("a service with a bad configuration did not exit")
			}
			if code := p.cmd.ProcessState.ExitCode(); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			out := p.out.String()
			_, report, ok := strings.Cut(out, "invalid configuration:\n")
			if !ok {
				t.Fatalf("no configuration report:\n%s", out)
			}
			lines := strings.Split(strings.TrimSpace(report), "\n")
			if len(lines) != len(tc.want) {
				t.Errorf("%d messages, want %d (one per mistake):\n%s", len(lines), len(tc.want), report)
			}
			for _, w := range tc.want {
				if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, w) }) {
					t.Errorf("no message starting with %q:\n%s", w, report)
				}
			}
			for _, l := range lines {
				if !strings.Contains(l, "e.g.") {
					t.Errorf("message without an example of a valid value: %s", l)
				}
			}
			if strings.Contains(out, "xyzzy") {
				t.Errorf("a value was echoed:\n%s", out)
			}
			if strings.Contains(out, clientSecret) {
				t.Error("the client secret was printed")
			}
		})
	}
}
