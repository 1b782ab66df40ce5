// Package e2e starts the three services as real processes on loopback ports,
// the way a user would, and checks what a user would notice.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binDir string

// logLevel of the services: debug for tests (the output is shown when one
// fails); benchmarks use the production default.
var logLevel, logFormat = "debug", "text"

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "m2m-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	for _, pkg := range []string{"services/public-gateway", "services/protected-data", "services/wristband-emulator", "e2e/hello", "e2e/twohop"} {
		svc := filepath.Base(pkg)
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, svc), "./"+pkg)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: building %s: %v\n%s", svc, err, out)
			return 1
		}
	}
	return m.Run()
}

// syncBuffer collects a process's output for diagnostics and for the
// no-secrets-in-logs check.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// maxLog bounds what is kept of one process's output: benchmarks log
// millions of lines.
const maxLog = 32 << 20

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

// start runs a service binary with exactly env (plus PATH) and stops it when
// the test ends.
func start(t testing.TB, svc string, env ...string) *proc {
	t.Helper()
	p := &proc{name: svc, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, svc))
	// Metrics on, as shipped, on a port of their own (the default :9090
	// would collide between processes); env may override it.
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LOG_FORMAT=" + logFormat, "LOG_LEVEL=" + logLevel, "METRICS_ADDR=127.0.0.1:0"}, env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", svc, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", svc, p.out.String())
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

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

var client = &http.Client{Timeout: 10 * time.Second}

type reply struct {
	status int
	header http.Header
	body   string
}

func get(t testing.TB, url string, header ...string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// waitStatus polls url until it answers want, or fails the test after
// timeout. Used for readiness, never to measure speed.
func waitStatus(t testing.TB, url string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
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
	t.Fatalf("%s did not answer %d within %s; last: %s", url, want, timeout, last)
}

// writeKey writes a fresh RSA key as PEM, so that the emulator keeps its key
// across restarts and the test can forge tokens with the real key.
func writeKey(t testing.TB) (string, *rsa.PrivateKey) {
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
	return path, k
}

const (
	clientID     = "e2e-client"
	clientSecret = "e2e-secret-must-never-be-logged"
	testKID      = "e2e-key-1"
)

// system is the three services started like `make run` starts them.
type system struct {
	emuAddr, pdAddr, gwAddr string
	keyPath                 string
	key                     *rsa.PrivateKey
	emu, pd, gw             *proc
	emuEnv                  []string
}

func (s *system) emuURL() string { return "http://" + s.emuAddr }
func (s *system) gwURL() string  { return "http://" + s.gwAddr }
func (s *system) pdURL() string  { return "http://" + s.pdAddr }

func (s *system) startEmulator(t testing.TB) {
	s.emu = start(t, "wristband-emulator", s.emuEnv...)
	waitStatus(t, s.emuURL()+"/healthz", 200, 30*time.Second)
}

// startSystem starts emulator, protected-data and gateway; extra gateway
// env entries override the defaults.
func startSystem(t testing.TB, lifetime time.Duration, gwExtra ...string) *system {
	t.Helper()
	s := &system{emuAddr: freeAddr(t), pdAddr: freeAddr(t), gwAddr: freeAddr(t)}
	s.keyPath, s.key = writeKey(t)
	s.emuEnv = []string{
		"LISTEN_ADDR=" + s.emuAddr, "ISSUER=" + "http://" + s.emuAddr,
		"CLIENTS=" + clientID + ":" + clientSecret, "TOKEN_LIFETIME=" + lifetime.String(),
		"SIGNING_KEY_FILE=" + s.keyPath, "KEY_ID=" + testKID,
	}
	s.startEmulator(t)
	s.pd = start(t, "protected-data", "LISTEN_ADDR="+s.pdAddr, "WRISTBAND_EMULATOR_URL="+s.emuURL())
	gwEnv := append([]string{
		"LISTEN_ADDR=" + s.gwAddr, "WRISTBAND_EMULATOR_URL=" + s.emuURL(),
		"CLIENT_ID=" + clientID, "CLIENT_SECRET=" + clientSecret,
		"PROTECTED_DATA_URL=" + s.pdURL(),
	}, gwExtra...)
	s.gw = start(t, "public-gateway", gwEnv...)
	waitStatus(t, s.pdURL()+"/readyz", 200, 30*time.Second)
	waitStatus(t, s.gwURL()+"/readyz", 200, 30*time.Second)
	return s
}
