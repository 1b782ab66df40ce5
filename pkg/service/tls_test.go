package service

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/certgen"
)

// pki is a CA with a server and a client certificate, written by certgen
// as the compose init step writes them.
type pki struct{ server, client string }

func (p pki) file(dir, name string) string { return filepath.Join(dir, name) }

func newPKI(t *testing.T, names ...string) pki {
	t.Helper()
	if len(names) == 0 {
		names = []string{"localhost", "127.0.0.1"}
	}
	root := t.TempDir()
	p := pki{server: filepath.Join(root, "server"), client: filepath.Join(root, "client")}
	if _, err := certgen.Generate(certgen.Options{ServerDir: p.server, ClientDir: p.client, ServerNames: names,
		ClientName: "test-client", Validity: time.Hour, UID: -1, GID: -1}); err != nil {
		t.Fatal(err)
	}
	return p
}

func setTLSEnv(t *testing.T, cert, key, ca string) {
	t.Helper()
	for k, v := range map[string]string{"TLS_CERT_FILE": cert, "TLS_KEY_FILE": key, "TLS_CLIENT_CA_FILE": ca} {
		t.Setenv(k, v)
	}
}

func TestTLSSettingsErrorsNameTheVariableOnly(t *testing.T) {
	p := newPKI(t)
	// Paths and contents carry "hush": no message may.
	dir := filepath.Join(t.TempDir(), "hush-dir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("hush-not-pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	srvCert, srvKey := p.file(p.server, "tls.crt"), p.file(p.server, "tls.key")
	cliKey := p.file(p.client, "tls.key")
	cases := []struct {
		name          string
		cert, key, ca string
		want          []string
	}{
		{"off", "", "", "", nil},
		{"ok", srvCert, srvKey, p.file(p.server, "ca.crt"), nil},
		{"cert without key", srvCert, "", "", []string{"TLS_KEY_FILE: required when TLS_CERT_FILE is set (e.g. /tls/tls.key)"}},
		{"key without cert", "", srvKey, "", []string{"TLS_CERT_FILE: required when TLS_KEY_FILE is set (e.g. /tls/tls.crt)"}},
		{"client CA without TLS", "", "", p.file(p.server, "ca.crt"), []string{"TLS_CLIENT_CA_FILE: set, but TLS_CERT_FILE and TLS_KEY_FILE are not; client certificates need TLS (e.g. TLS_CERT_FILE=/tls/tls.crt TLS_KEY_FILE=/tls/tls.key)"}},
		{"missing cert file", missing, srvKey, "", []string{"TLS_CERT_FILE: the file does not exist (e.g. /tls/tls.crt)"}},
		{"missing key file", srvCert, missing, "", []string{"TLS_KEY_FILE: the file does not exist (e.g. /tls/tls.key)"}},
		{"cert not PEM", garbage, srvKey, "", []string{"TLS_CERT_FILE: no PEM certificate in the file (e.g. a file starting with -----BEGIN CERTIFICATE-----)"}},
		{"key file holds a certificate", srvCert, srvCert, "", []string{"TLS_KEY_FILE: no PEM private key in the file (e.g. a file starting with -----BEGIN PRIVATE KEY-----)"}},
		{"key of another certificate", srvCert, cliKey, "", []string{"TLS_CERT_FILE and TLS_KEY_FILE: the private key does not belong to the first certificate in the file (e.g. the key written together with that certificate)"}},
		{"CA file not PEM", srvCert, srvKey, garbage, []string{"TLS_CLIENT_CA_FILE: no PEM certificate in the file (e.g. the CA's ca.crt, starting with -----BEGIN CERTIFICATE-----)"}},
		{"CA file holds a key", srvCert, srvKey, srvKey, []string{"TLS_CLIENT_CA_FILE: no PEM certificate in the file (e.g. the CA's ca.crt, starting with -----BEGIN CERTIFICATE-----)"}},
		{"missing CA file", srvCert, srvKey, missing, []string{"TLS_CLIENT_CA_FILE: the file does not exist (e.g. /tls/ca.crt)"}},
		{"two mistakes at once", garbage, srvKey, missing, []string{
			"TLS_CERT_FILE: no PEM certificate in the file (e.g. a file starting with -----BEGIN CERTIFICATE-----)",
			"TLS_CLIENT_CA_FILE: the file does not exist (e.g. /tls/ca.crt)",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			setTLSEnv(t, c.cert, c.key, c.ca)
			var spec baseSpec
			_, errs := Load(&spec, ":0")
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("errors\n%q\nwant\n%q", got, c.want)
			}
			if strings.Contains(strings.Join(got, "\n"), "hush") {
				t.Error("a path or file content was echoed")
			}
			on, mutual := spec.TLS()
			if wantOn := c.want == nil && c.cert != ""; on != wantOn || mutual != (wantOn && c.ca != "") {
				t.Errorf("TLS() = %v, %v", on, mutual)
			}
		})
	}
}

// serveTLS runs Serve with the TLS settings given, as a service does.
func serveTLS(t *testing.T, cert, key, ca string) (addr string, logs *syncBuf) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	setTLSEnv(t, cert, key, ca)
	t.Setenv("LISTEN_ADDR", addr)
	var spec baseSpec
	if _, errs := Load(&spec, ":0"); len(errs) > 0 {
		t.Fatal(errs)
	}
	logs = &syncBuf{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	e := NewEcho(log)
	Health(e, log)
	e.GET("/whoami", func(c echo.Context) error {
		cs := c.Request().TLS
		if cs == nil || len(cs.PeerCertificates) == 0 {
			return c.String(200, "no client certificate")
		}
		if c.Request().ProtoMajor != 2 { // ALPN must offer h2 with mTLS too
			return c.String(200, "not HTTP/2")
		}
		return c.String(200, cs.PeerCertificates[0].Subject.CommonName+" "+tls.VersionName(cs.Version))
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, log, e, spec.Base) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Serve did not return")
		}
	})
	// Wait for the listener; Healthcheck is the very thing under test
	// elsewhere, so dial only.
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr, logs
		}
		if i == 200 {
			t.Fatalf("no listener: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tlsClient trusts the CA in caFile and presents the pair in dir if any.
func tlsClient(t *testing.T, caFile, dir string, maxVersion uint16) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: pool, MaxVersion: maxVersion}
	if dir != "" {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func body(t *testing.T, c *http.Client, url string) (string, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), errors.New(resp.Status)
	}
	return string(b), err
}

func TestServeMutualTLS(t *testing.T) {
	p, other := newPKI(t), newPKI(t)
	srvCert, srvKey, ca := p.file(p.server, "tls.crt"), p.file(p.server, "tls.key"), p.file(p.server, "ca.crt")
	addr, logs := serveTLS(t, srvCert, srvKey, ca)
	_, port, _ := net.SplitHostPort(addr)
	url := "https://localhost:" + port + "/whoami"

	got, err := body(t, tlsClient(t, ca, p.client, 0), url)
	if err != nil || got != "test-client TLS 1.3" {
		t.Fatalf("client with the CA's certificate: %q, %v", got, err)
	}
	if got, err := body(t, tlsClient(t, ca, p.client, tls.VersionTLS12), url); err != nil || got != "test-client TLS 1.2" {
		t.Errorf("TLS 1.2 client: %q, %v", got, err)
	}
	h1 := tlsClient(t, ca, p.client, 0)
	h1tr := h1.Transport.(*http.Transport)
	h1tr.ForceAttemptHTTP2 = false
	h1tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // no h2
	h1tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	if got, err := body(t, h1, url); err != nil || got != "not HTTP/2" {
		t.Errorf("an HTTP/1.1-only client: %q, %v", got, err)
	}
	if _, err := body(t, tlsClient(t, ca, p.client, tls.VersionTLS11), url); err == nil {
		t.Error("a TLS 1.1 client was served")
	}
	if got, err := body(t, tlsClient(t, ca, "", 0), url); err == nil {
		t.Errorf("a client without a certificate was served: %q", got)
	}
	if got, err := body(t, tlsClient(t, ca, other.client, 0), url); err == nil {
		t.Errorf("a client with another CA's certificate was served: %q", got)
	}
	// A server certificate is not a client certificate (extended key usage).
	if got, err := body(t, tlsClient(t, ca, other.server, 0), url); err == nil {
		t.Errorf("a client presenting another server's certificate was served: %q", got)
	}
	resp, err := http.Get("http://" + addr + "/whoami")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 || strings.Contains(string(b), "test-client") {
			t.Errorf("plain HTTP to the TLS port answered %d %q", resp.StatusCode, b)
		}
	}
	if err := HealthcheckTLS(addr, srvCert, srvKey); err != nil {
		t.Errorf("healthcheck subcommand over mTLS: %v", err)
	}
	if err := Healthcheck(addr); err == nil {
		t.Error("plain healthcheck against the TLS port passed")
	}
	if !strings.Contains(logs.String(), "tls=mutual") {
		t.Errorf("the listening line does not say tls=mutual:\n%s", logs)
	}
}

func TestServeTLSWithoutClientCertificates(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey, ca := p.file(p.server, "tls.crt"), p.file(p.server, "tls.key"), p.file(p.server, "ca.crt")
	addr, _ := serveTLS(t, srvCert, srvKey, "")
	_, port, _ := net.SplitHostPort(addr)
	if got, err := body(t, tlsClient(t, ca, "", 0), "https://localhost:"+port+"/whoami"); err != nil || got != "no client certificate" {
		t.Errorf("server-only TLS: %q, %v", got, err)
	}
	if err := HealthcheckTLS(addr, srvCert, srvKey); err != nil {
		t.Errorf("healthcheck subcommand over TLS: %v", err)
	}
}

func TestCertificateIsReloadedWhenItsFilesChange(t *testing.T) {
	p := newPKI(t)
	cert, key := FileVar{"TLS_CERT_FILE", p.file(p.server, "tls.crt")}, FileVar{"TLS_KEY_FILE", p.file(p.server, "tls.key")}
	r, err := newReloading("certificate", func() (*tls.Certificate, error) { return loadKeyPair(cert, key) }, cert.Path, key.Path)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	r.log = slog.New(slog.NewTextHandler(&logs, nil))
	now := time.Now()
	r.now = func() time.Time { return now }
	first := r.get().Certificate[0]

	// Rotation: new files, a later mtime.
	if _, err := certgen.Generate(certgen.Options{ServerDir: p.server, ServerNames: []string{"localhost"}, Validity: time.Hour, UID: -1, GID: -1}); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	for _, f := range []string{cert.Path, key.Path} {
		if err := os.Chtimes(f, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(r.get().Certificate[0], first) {
		t.Fatal("files looked at again within reloadEvery")
	}
	now = now.Add(reloadEvery)
	second := r.get().Certificate[0]
	if bytes.Equal(second, first) {
		t.Fatal("certificate not reloaded after its files changed")
	}

	// Half a rotation (a key that does not match): the last good pair stays.
	if err := os.WriteFile(key.Path, mustRead(t, p.file(p.client, "tls.key")), 0o600); err != nil {
		t.Fatal(err)
	}
	later = later.Add(time.Minute)
	if err := os.Chtimes(key.Path, later, later); err != nil {
		t.Fatal(err)
	}
	now = now.Add(reloadEvery)
	if !bytes.Equal(r.get().Certificate[0], second) {
		t.Fatal("a broken pair replaced the good one")
	}
	if l := logs.String(); !strings.Contains(l, "TLS_CERT_FILE and TLS_KEY_FILE: the private key does not belong") || strings.Contains(l, "PRIVATE KEY-----") {
		t.Errorf("reload warning:\n%s", l)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestClientTLSConfigErrors(t *testing.T) {
	p := newPKI(t)
	missing := filepath.Join(t.TempDir(), "hush")
	v := func(name, path string) FileVar { return FileVar{name, path} }
	_, errs := ClientTLSConfig(NewDiscardLogger(), "localhost", v("X_CA_FILE", missing), v("X_CERT_FILE", p.file(p.client, "tls.crt")), v("X_KEY_FILE", ""))
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	want := []string{"X_CA_FILE: the file does not exist (e.g. /tls/ca.crt)", "X_KEY_FILE: required when X_CERT_FILE is set (e.g. /tls/tls.key)"}
	if !slices.Equal(got, want) {
		t.Errorf("errors\n%q\nwant\n%q", got, want)
	}
	cfg, errs := ClientTLSConfig(NewDiscardLogger(), "localhost", v("X_CA_FILE", p.file(p.client, "ca.crt")), v("X_CERT_FILE", p.file(p.client, "tls.crt")), v("X_KEY_FILE", p.file(p.client, "tls.key")))
	if len(errs) > 0 || cfg.VerifyConnection == nil || cfg.GetClientCertificate == nil || cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("good settings: %v %+v", errs, cfg)
	}
}

// ClientTLSConfig verifies the server itself (to re-read a rotated CA):
// the chain, the host name and the key usage must all be checked.
func TestClientTLSConfigVerifiesTheServer(t *testing.T) {
	p, other := newPKI(t, "localhost"), newPKI(t, "localhost")
	addr, _ := serveTLS(t, p.file(p.server, "tls.crt"), p.file(p.server, "tls.key"), p.file(p.server, "ca.crt"))
	_, port, _ := net.SplitHostPort(addr)
	client := func(host, caDir, certDir string) *http.Client {
		cfg, errs := ClientTLSConfig(NewDiscardLogger(), host, FileVar{"CA", filepath.Join(caDir, "ca.crt")},
			FileVar{"CERT", filepath.Join(certDir, "tls.crt")}, FileVar{"KEY", filepath.Join(certDir, "tls.key")})
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	if got, err := body(t, client("localhost", p.client, p.client), "https://localhost:"+port+"/whoami"); err != nil || got != "test-client TLS 1.3" {
		t.Fatalf("the right CA and name: %q, %v", got, err)
	}
	// 127.0.0.1 is not in this certificate (localhost only).
	if _, err := body(t, client("127.0.0.1", p.client, p.client), "https://127.0.0.1:"+port+"/whoami"); err == nil || !strings.Contains(err.Error(), "IP SANs") {
		t.Errorf("a name the certificate does not cover: %v", err)
	}
	if _, err := body(t, client("localhost", other.client, p.client), "https://localhost:"+port+"/whoami"); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("a server certificate from another CA: %v", err)
	}
	// A client certificate from the right CA is not a server certificate.
	srv2 := serveWith(t, p.file(p.client, "tls.crt"), p.file(p.client, "tls.key"))
	_, port2, _ := net.SplitHostPort(srv2)
	if _, err := body(t, client("localhost", p.client, p.client), "https://localhost:"+port2+"/whoami"); err == nil || !strings.Contains(err.Error(), "not accepted") {
		t.Errorf("a server presenting a client certificate: %v", err)
	}
}

// serveWith serves TLS with any pair, through crypto/tls alone.
func serveWith(t *testing.T, cert, key string) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}
