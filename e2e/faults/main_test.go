//go:build faults

package faults

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "m2m-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	for _, pkg := range []string{"services/public-gateway", "services/protected-data", "services/wristband-emulator"} {
		svc := filepath.Base(pkg)
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, svc), "./"+pkg)
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "faults: building %s: %v\n%s", svc, err, out)
			return 1
		}
	}
	return m.Run()
}

// logBuffer keeps a process's output (stdout and stderr) for diagnostics and
// for the no-secret-in-any-log-line checks.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

const maxLog = 64 << 20

func (s *logBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len()+len(p) <= maxLog {
		s.b.Write(p)
	}
	return len(p), nil
}

func (s *logBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type proc struct {
	name string
	cmd  *exec.Cmd
	out  *logBuffer
	done chan struct{}
	err  error
}

// start runs a service binary with exactly env (plus PATH and logging).
func start(t testing.TB, svc string, env ...string) *proc {
	t.Helper()
	p := &proc{name: svc, out: &logBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, svc))
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LOG_FORMAT=text", "LOG_LEVEL=debug", "METRICS_ADDR=", "LOG_FLUSH_INTERVAL=0"}, env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", svc, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			out := p.out.String()
			if len(out) > 64<<10 {
				out = "...\n" + out[len(out)-64<<10:]
			}
			t.Logf("--- %s output (tail) ---\n%s", svc, out)
		}
	})
	return p
}

// stop sends SIGTERM and waits for a graceful exit.
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
		if p.err != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM: %v", p.name, p.err)
		}
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within 20s of SIGTERM", p.name)
	}
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// rssKiB reads the process's resident set size from /proc.
func (p *proc) rssKiB(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("reading %s's RSS: %v", p.name, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS for %s", p.name)
	return 0
}

// freeAddrs returns n distinct free loopback addresses. The listeners are
// held until all are chosen: closing each at once lets the kernel hand the
// same port out twice.
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// callTimeout bounds every call a test makes. The gateway's
// DOWNSTREAM_TIMEOUT is set above it in the cases that check "no hang": a
// gateway that waited for its own deadline would make the call fail.
const callTimeout = 4 * time.Second

var client = &http.Client{
	Timeout:   callTimeout,
	Transport: &http.Transport{MaxIdleConnsPerHost: 128, IdleConnTimeout: 30 * time.Second},
}

type reply struct {
	status int
	header http.Header
	body   string
	err    error
}

func (r reply) String() string {
	if r.err != nil {
		return r.err.Error()
	}
	return fmt.Sprintf("%d %s", r.status, strings.TrimSpace(r.body))
}

func get(url string, header ...string) reply {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return reply{err: err}
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
}

// eventually polls url until it answers want. For readiness and recovery
// only; it measures nothing.
func eventually(t testing.TB, url string, want int, timeout time.Duration) reply {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last reply
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
			if resp.StatusCode == want {
				cancel()
				return last
			}
		} else {
			last = reply{err: err}
		}
		cancel()
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer %d within %s; last: %s", url, want, timeout, last)
	return last
}

func writeKey(t testing.TB) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "signing-key.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const (
	clientID     = "faults-client"
	clientSecret = "faults-secret-never-in-a-log"
)

// secretForms are the ways the secret could leak: as is, form-encoded, and
// inside a Basic header (base64 of id:secret, with and without padding).
func secretForms() []string {
	basic := base64.StdEncoding.EncodeToString([]byte(clientID + ":" + clientSecret))
	return []string{clientSecret, url.QueryEscape(clientSecret), basic, strings.TrimRight(basic, "="),
		base64.RawURLEncoding.EncodeToString([]byte(clientID + ":" + clientSecret))}
}

// system is emulator, protected-data and gateway, with a fault proxy on
// each of the three links: gateway -> token endpoint, protected-data ->
// JWKS, gateway -> protected-data.
type system struct {
	emuAddr, pdAddr, gwAddr string
	emuEnv                  []string
	emu, pd, gw             *proc
	idp, jwks, pdp          *faultProxy
}

func (s *system) gwURL() string  { return "http://" + s.gwAddr }
func (s *system) pdURL() string  { return "http://" + s.pdAddr }
func (s *system) emuURL() string { return "http://" + s.emuAddr }
func (s *system) public() string { return s.gwURL() + "/api/public/data" }

// opts shape one system. Zero values are the services' defaults.
type opts struct {
	lifetime  time.Duration // emulator TOKEN_LIFETIME; default 30m
	gwEnv     []string      // extra gateway env
	pdEnv     []string      // extra protected-data env
	emuEnv    []string      // extra emulator env
	idpFault  fault         // fault on the token link before the gateway starts
	jwksFault fault         // fault on the JWKS link before protected-data starts
}

func newSystem(t testing.TB, o opts) *system {
	t.Helper()
	if o.lifetime == 0 {
		o.lifetime = 30 * time.Minute
	}
	s := &system{}
	// Proxies first: they hold their ports, so the services' addresses
	// chosen next cannot be one of theirs.
	s.idp, s.jwks, s.pdp = newFaultProxy(t), newFaultProxy(t), newFaultProxy(t)
	a := freeAddrs(t, 3)
	s.emuAddr, s.pdAddr, s.gwAddr = a[0], a[1], a[2]
	s.idp.target(s.emuAddr)
	s.jwks.target(s.emuAddr)
	s.pdp.target(s.pdAddr)
	s.emuEnv = append([]string{
		"LISTEN_ADDR=" + s.emuAddr, "ISSUER=" + s.emuURL(),
		"CLIENTS=" + clientID + ":" + clientSecret, "TOKEN_LIFETIME=" + o.lifetime.String(),
		"SIGNING_KEY_FILE=" + writeKey(t), "KEY_ID=faults-key-1",
	}, o.emuEnv...)
	s.idp.set(o.idpFault)
	s.jwks.set(o.jwksFault)
	s.startEmulator(t)
	s.pd = start(t, "protected-data", append([]string{
		"LISTEN_ADDR=" + s.pdAddr, "JWKS_URL=" + s.jwks.url() + "/api/v1/oauth2/jwks", "ISSUER=" + s.emuURL(),
		// The jwtauth helper's short unknown-kid cooldown (issue 8.3).
		"JWKS_REFRESH_COOLDOWN=1s",
	}, o.pdEnv...)...)
	s.gw = start(t, "public-gateway", append([]string{
		"LISTEN_ADDR=" + s.gwAddr, "TOKEN_URL=" + s.idp.url() + "/api/v1/oauth2/token",
		"CLIENT_ID=" + clientID, "CLIENT_SECRET=" + clientSecret,
		"PROTECTED_DATA_URL=" + s.pdp.url(),
		// Above callTimeout, so that a gateway that waits for its own
		// deadline instead of answering at once fails the call.
		"DOWNSTREAM_TIMEOUT=8s",
	}, o.gwEnv...)...)
	eventually(t, s.gwURL()+"/healthz", 200, 30*time.Second)
	if o.jwksFault == pass {
		eventually(t, s.pdURL()+"/readyz", 200, 30*time.Second)
	}
	if o.idpFault == pass {
		eventually(t, s.gwURL()+"/readyz", 200, 30*time.Second)
	}
	for _, p := range []*proc{s.emu, s.pd, s.gw} {
		if !p.alive() {
			t.Fatalf("%s exited at start: %v\n%s", p.name, p.err, p.out.String())
		}
	}
	return s
}

func (s *system) startEmulator(t testing.TB, extra ...string) {
	t.Helper()
	s.emu = start(t, "wristband-emulator", append(append([]string{}, s.emuEnv...), extra...)...)
	eventually(t, s.emuURL()+"/healthz", 200, 30*time.Second)
}

// logs is every process's output so far, emulator restarts included.
func (s *system) logs(extra ...*proc) string {
	var b strings.Builder
	for _, p := range append([]*proc{s.emu, s.pd, s.gw}, extra...) {
		if p != nil {
			b.WriteString(p.out.String())
		}
	}
	return b.String()
}

// noSecretInLogs fails if any form of the client secret is in any line
// any process wrote; it shows the first few such lines and the count.
func noSecretInLogs(t testing.TB, logs string) {
	t.Helper()
	forms := secretForms()
	var hits []string
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		for _, form := range forms {
			if strings.Contains(line, form) {
				n++
				if len(hits) < 3 {
					hits = append(hits, fmt.Sprintf("%.400s", line))
				}
				break
			}
		}
	}
	if n > 0 {
		t.Errorf("%d log lines carry a form of the client secret, e.g.:\n%s", n, strings.Join(hits, "\n"))
	}
}
