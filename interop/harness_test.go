//go:build interop

package interop

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binDir   string // the project's binaries, built by TestMain
	hydraBin string // Ory Hydra v2.3.0, built by tools/build.sh
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

// runMain builds the two services the way a user would and finds Hydra.
// Any failure fails the run: these tests never skip.
func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "m2m-interop-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	for _, svc := range []string{"public-gateway", "protected-data"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, svc), "./services/"+svc)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "interop: building %s: %v\n%s", svc, err, out)
			return 1
		}
	}
	if hydraBin, err = findHydra(); err != nil {
		fmt.Fprintf(os.Stderr, "interop: FAIL: Ory Hydra is required and could not be built: %v\n", err)
		return 1
	}
	return m.Run()
}

// findHydra takes HYDRA_BIN (set by make test-interop) or builds Hydra with
// tools/build.sh, which returns at once when the binary is cached.
func findHydra() (string, error) {
	if p := os.Getenv("HYDRA_BIN"); p != "" {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("HYDRA_BIN is not an executable file (example: HYDRA_BIN=$(tools/build.sh hydra))")
		}
		return p, nil
	}
	cmd := exec.Command("./tools/build.sh", "hydra")
	cmd.Dir = ".."
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("tools/build.sh hydra: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// syncBuffer keeps a process's output for diagnostics and for the
// no-secrets-in-logs checks.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

const maxLog = 16 << 20

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len()+len(p) > maxLog {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// start runs path with exactly env (plus PATH) and stops it when the test
// ends; its output is shown if the test failed.
func start(t testing.TB, name, path string, args []string, env ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("--- %s output (last %d lines) ---\n%s", name, tailLines, tail(p.out.String(), tailLines))
		}
	})
	return p
}

const tailLines = 120

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop sends SIGTERM and waits for the exit.
func (p *proc) stop(t testing.TB) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within 20s of SIGTERM", p.name)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

var client = &http.Client{Timeout: 15 * time.Second}

type reply struct {
	status int
	header http.Header
	body   string
	sent   time.Time // when the request was sent
	got    time.Time // when the answer arrived
}

func do(t testing.TB, method, u string, body io.Reader, header ...string) reply {
	t.Helper()
	r, err := try(method, u, body, header...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// try is do for goroutines other than the test's, which must not call
// t.Fatal.
func try(method, u string, body io.Reader, header ...string) (reply, error) {
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return reply{}, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	sent := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: reading the body: %w", method, u, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b), sent: sent, got: time.Now()}, nil
}

func get(t testing.TB, u string, header ...string) reply {
	t.Helper()
	return do(t, http.MethodGet, u, nil, header...)
}

// waitStatus polls u, served by p, until it answers want, or fails the
// test, at once if p exits. Readiness only, never a measurement.
func waitStatus(t testing.TB, p *proc, u string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before %s answered %d", p.name, p.err, u, want)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				cancel()
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not answer %d within %s; last: %s", u, want, timeout, last)
}

// ---- Hydra ----

// hydra is one Ory Hydra process (in-memory store) behind a counting
// reverse proxy. The proxy is Hydra's public face: issuer, token endpoint
// and JWKS URL all name it, so every token request and JWKS fetch the
// services make is seen and timed; the test's own token requests go
// straight to Hydra and are not counted.
type hydra struct {
	url    string // the proxy: issuer, token endpoint, JWKS
	direct string // Hydra's public listener
	admin  string // Hydra's admin listener
	proc   *proc
	log    *events
}

func (h *hydra) tokenURL() string { return h.url + "/oauth2/token" }
func (h *hydra) jwksURL() string  { return h.url + "/.well-known/jwks.json" }

// event is one request that went through the proxy. Only non-secret form
// fields are kept.
type event struct {
	at        time.Time
	path      string
	status    int
	clientID  string // from Basic auth, the form, or the assertion's iss
	basicAuth bool   // an Authorization: Basic header was sent
	form      url.Values
	errBody   string // the OAuth error answer, if any (never holds a secret)
}

type events struct {
	mu  sync.Mutex
	all []event
	// assertions seen, kept only to check that no log holds one
	assertions []string
}

func (e *events) add(ev event, assertion string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
	if assertion != "" {
		e.assertions = append(e.assertions, assertion)
	}
}

// list returns the events on path since t (zero: all).
func (e *events) list(path string, since time.Time) []event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []event
	for _, ev := range e.all {
		if ev.path == path && !ev.at.Before(since) {
			out = append(out, ev)
		}
	}
	return out
}

func (e *events) tokens(since time.Time) []event { return e.list("/oauth2/token", since) }
func (e *events) jwks(since time.Time) []event   { return e.list("/.well-known/jwks.json", since) }

func (e *events) seenAssertions() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.assertions...)
}

// safeFields are the token-request form fields the proxy records.
var safeFields = []string{"grant_type", "scope", "audience", "resource", "client_id", "client_assertion_type"}

func (e *events) proxy(target *url.URL) http.Handler {
	rp := httputil.NewSingleHostReverseProxy(target)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev := event{at: time.Now(), path: r.URL.Path, form: url.Values{}}
		var assertion string
		if r.Method == http.MethodPost && r.URL.Path == "/oauth2/token" {
			body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			form, _ := url.ParseQuery(string(body))
			for _, k := range safeFields {
				if vs, ok := form[k]; ok {
					ev.form[k] = vs
				}
			}
			if _, has := form["client_secret"]; has {
				ev.form.Set("client_secret", "(present)")
			}
			if user, _, ok := r.BasicAuth(); ok {
				ev.basicAuth = true
				ev.clientID, _ = url.QueryUnescape(user)
			} else if id := form.Get("client_id"); id != "" {
				ev.clientID = id
			}
			if a := form.Get("client_assertion"); a != "" {
				assertion = a
				if _, claims, err := decodeJWT(a); err == nil {
					if iss, _ := claims["iss"].(string); iss != "" {
						ev.clientID = iss
					}
				}
			}
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		rp.ServeHTTP(sw, r)
		ev.status = sw.status
		ev.errBody = sw.errBody.String()
		e.add(ev, assertion)
	})
}

// statusWriter records the status and, for error answers, the start of
// the body.
type statusWriter struct {
	http.ResponseWriter
	status  int
	errBody bytes.Buffer
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status >= 400 && s.errBody.Len() < 2048 {
		s.errBody.Write(p[:min(len(p), 2048-s.errBody.Len())])
	}
	return s.ResponseWriter.Write(p)
}

// startHydra runs `hydra serve all --dev` with the in-memory store and JWT
// access tokens, and waits for /health/ready.
func startHydra(t testing.TB) *hydra {
	t.Helper()
	pub, adm := freeAddr(t), freeAddr(t)
	h := &hydra{direct: "http://" + pub, admin: "http://" + adm, log: &events{}}
	target, _ := url.Parse(h.direct)
	srv := httptest.NewServer(h.log.proxy(target))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	pubHost, pubPort, _ := net.SplitHostPort(pub)
	admHost, admPort, _ := net.SplitHostPort(adm)
	h.proc = start(t, "hydra", hydraBin, []string{"serve", "all", "--dev", "--sqa-opt-out"},
		"DSN=memory",
		"STRATEGIES_ACCESS_TOKEN=jwt",
		"URLS_SELF_ISSUER="+h.url,
		// Token endpoint as clients see it: private_key_jwt assertions name
		// it in "aud", and Hydra checks that against this URL.
		"URLS_SELF_PUBLIC="+h.url,
		"SECRETS_SYSTEM="+randomHex(t, 32),
		"OAUTH2_HASHERS_PBKDF2_ITERATIONS=1",
		"SERVE_PUBLIC_HOST="+pubHost, "SERVE_PUBLIC_PORT="+pubPort,
		"SERVE_ADMIN_HOST="+admHost, "SERVE_ADMIN_PORT="+admPort,
		"LOG_LEVEL=warn",
	)
	waitStatus(t, h.proc, h.direct+"/health/ready", 200, 60*time.Second)
	waitStatus(t, h.proc, h.admin+"/health/ready", 200, 30*time.Second)
	// Hydra makes its RSA-4096 signing keys on first use; on a busy
	// machine that can outlast its 10 s write timeout and cut the first
	// request short. Make them now, so that no test depends on it.
	warm := &http.Client{Timeout: 60 * time.Second}
	for deadline := time.Now().Add(90 * time.Second); ; {
		resp, err := warm.Get(h.direct + "/.well-known/jwks.json")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("hydra's key set: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return h
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// adminJSON calls Hydra's admin API and fails the test unless it answers want.
func (h *hydra) adminJSON(t testing.TB, method, path string, in any, want int) map[string]any {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	r := do(t, method, h.admin+path, body, "Content-Type", "application/json")
	if r.status != want {
		t.Fatalf("hydra admin %s %s: %d %s (want %d)", method, path, r.status, r.body, want)
	}
	var out map[string]any
	if strings.TrimSpace(r.body) != "" {
		_ = json.Unmarshal([]byte(r.body), &out)
	}
	return out
}

// clientSpec is an OAuth2 client as Hydra's admin API takes it.
type clientSpec map[string]any

// m2mClient is a client_credentials client allowed the given scopes and
// audiences; extra fields override.
func m2mClient(id, secret, method string, scopes []string, audience []string) clientSpec {
	c := clientSpec{
		"client_id":                  id,
		"grant_types":                []string{"client_credentials"},
		"token_endpoint_auth_method": method,
		"scope":                      strings.Join(scopes, " "),
		"audience":                   audience,
	}
	if secret != "" {
		c["client_secret"] = secret
	}
	return c
}

func (h *hydra) createClient(t testing.TB, c clientSpec) {
	t.Helper()
	h.adminJSON(t, http.MethodPost, "/admin/clients", c, http.StatusCreated)
}

func (h *hydra) deleteClient(t testing.TB, id string) {
	t.Helper()
	h.adminJSON(t, http.MethodDelete, "/admin/clients/"+url.PathEscape(id), nil, http.StatusNoContent)
}

// accessTokenKeys is the key set Hydra signs JWT access tokens with; a new
// key in it becomes the signing key at once.
const accessTokenKeys = "hydra.jwt.access-token"

// createKey adds a signing key, as `hydra create jwk` does.
func (h *hydra) createKey(t testing.TB, alg, kid string) {
	t.Helper()
	h.adminJSON(t, http.MethodPost, "/admin/keys/"+accessTokenKeys,
		map[string]string{"alg": alg, "kid": kid, "use": "sig"}, http.StatusCreated)
}

// importRSAKey puts an RSA-2048 signing key made here into Hydra's access
// token key set (PUT /admin/keys/{set}/{kid}); Hydra signs with it next.
func (h *hydra) importRSAKey(t testing.TB, kid string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k.Precompute()
	b := func(i *big.Int) string { return base64.RawURLEncoding.EncodeToString(i.Bytes()) }
	jwk := map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": b(k.N), "e": b(big.NewInt(int64(k.E))), "d": b(k.D), "p": b(k.Primes[0]), "q": b(k.Primes[1]),
		"dp": b(k.Precomputed.Dp), "dq": b(k.Precomputed.Dq), "qi": b(k.Precomputed.Qinv)}
	h.adminJSON(t, http.MethodPut, "/admin/keys/"+accessTokenKeys+"/"+url.PathEscape(kid), jwk, http.StatusOK)
}

// token asks Hydra directly (uncounted) for a token with client_secret_basic.
func (h *hydra) token(t testing.TB, id, secret string, form url.Values) string {
	t.Helper()
	f := url.Values{"grant_type": {"client_credentials"}}
	for k, v := range form {
		f[k] = v
	}
	req, _ := http.NewRequest(http.MethodPost, h.direct+"/oauth2/token", strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &body); err != nil || resp.StatusCode != 200 || body.AccessToken == "" {
		t.Fatalf("hydra token request: %d %s", resp.StatusCode, b)
	}
	return body.AccessToken
}

// decodeJWT returns a compact JWS's header and claims, unverified.
func decodeJWT(tok string) (header, claims map[string]any, err error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, nil, errors.New("not a compact JWS")
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return nil, nil, err
		}
		if err := json.Unmarshal(b, dst); err != nil {
			return nil, nil, err
		}
	}
	return header, claims, nil
}

func tokenHeader(t testing.TB, tok string) map[string]any {
	t.Helper()
	h, _, err := decodeJWT(tok)
	if err != nil {
		t.Fatalf("hydra's token is not a JWT: %v", err)
	}
	return h
}

// ---- the project's services ----

// commonEnv: JSON logs at debug (the strictest for the no-secret checks),
// no admin listener (several processes share the host).
var commonEnv = []string{"LOG_FORMAT=json", "LOG_LEVEL=debug", "METRICS_ADDR=", "LOG_FLUSH_INTERVAL=0"}

type service struct {
	*proc
	url string
}

// startPD runs protected-data trusting h; extra entries override.
func startPD(t testing.TB, h *hydra, extra ...string) *service {
	t.Helper()
	addr := freeAddr(t)
	env := append(append([]string{}, commonEnv...),
		"LISTEN_ADDR="+addr, "JWKS_URL="+h.jwksURL(), "ISSUER="+h.url)
	s := &service{proc: start(t, "protected-data", filepath.Join(binDir, "protected-data"), nil, append(env, extra...)...), url: "http://" + addr}
	waitStatus(t, s.proc, s.url+"/readyz", 200, 30*time.Second)
	return s
}

// startGW runs public-gateway against h and pd; it is not waited for,
// since some tests start it with a client Hydra refuses.
func startGW(t testing.TB, h *hydra, pd *service, extra ...string) *service {
	t.Helper()
	addr := freeAddr(t)
	env := append(append([]string{}, commonEnv...),
		"LISTEN_ADDR="+addr, "TOKEN_URL="+h.tokenURL(), "PROTECTED_DATA_URL="+pd.url)
	s := &service{proc: start(t, "public-gateway", filepath.Join(binDir, "public-gateway"), nil, append(env, extra...)...), url: "http://" + addr}
	waitStatus(t, s.proc, s.url+"/healthz", 200, 30*time.Second)
	return s
}

func (s *service) ready(t testing.TB) {
	t.Helper()
	waitStatus(t, s.proc, s.url+"/readyz", 200, 30*time.Second)
}

// noSecrets fails if any of the secrets appears in the process's output.
func noSecrets(t testing.TB, p *proc, secrets ...string) {
	t.Helper()
	out := p.out.String()
	for _, s := range secrets {
		if s != "" && strings.Contains(out, s) {
			t.Errorf("%s's output holds a secret (%d chars starting %q)", p.name, len(s), s[:min(4, len(s))])
		}
	}
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
