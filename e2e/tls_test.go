package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// certgen runs `protected-data certgen`, the compose init step, into a
// fresh directory: server/{ca.crt,tls.crt,tls.key}, client/{...}.
func certgen(t *testing.T, serverNames string) (server, client string) {
	t.Helper()
	root := t.TempDir()
	server, client = filepath.Join(root, "server"), filepath.Join(root, "client")
	out, err := exec.Command(filepath.Join(binDir, "protected-data"), "certgen",
		"-server-dir", server, "-client-dir", client, "-server-names", serverNames, "-client-name", "public-gateway").CombinedOutput()
	if err != nil {
		t.Fatalf("certgen: %v\n%s", err, out)
	}
	return server, client
}

// mtlsClient trusts caFile and presents the pair in dir when dir is set.
func mtlsClient(t *testing.T, caFile, dir string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	b, err := os.ReadFile(caFile)
	if err != nil || !pool.AppendCertsFromPEM(b) {
		t.Fatalf("CA file: %v", err)
	}
	cfg := &tls.Config{RootCAs: pool}
	if dir != "" {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// healthcheck runs the `healthcheck` subcommand as the container's
// HEALTHCHECK does: same binary, same environment as the service.
func healthcheck(env []string) error {
	cmd := exec.Command(filepath.Join(binDir, "protected-data"), "healthcheck")
	cmd.Env = env
	return cmd.Run()
}

// TestMutualTLSBetweenGatewayAndProtectedData runs the pair over mTLS with
// certificates from `protected-data certgen`, as the compose TLS overlay
// does. The server certificate names localhost only, while the gateway's
// balancer dials 127.0.0.1: the call working shows the name is verified,
// not the IP.
func TestMutualTLSBetweenGatewayAndProtectedData(t *testing.T) {
	srvDir, cliDir := certgen(t, "localhost")
	_, strangerDir := certgen(t, "localhost") // another CA
	s := &system{emuAddr: freeAddr(t), pdAddr: freeAddr(t), gwAddr: freeAddr(t)}
	s.keyPath, s.key = writeKey(t)
	s.emuEnv = []string{
		"LISTEN_ADDR=" + s.emuAddr, "ISSUER=" + s.emuURL(),
		"CLIENTS=" + clientID + ":" + clientSecret, "SIGNING_KEY_FILE=" + s.keyPath, "KEY_ID=" + testKID,
	}
	s.startEmulator(t)

	pdEnv := []string{
		"LISTEN_ADDR=" + s.pdAddr, "WRISTBAND_EMULATOR_URL=" + s.emuURL(),
		"TLS_CERT_FILE=" + filepath.Join(srvDir, "tls.crt"), "TLS_KEY_FILE=" + filepath.Join(srvDir, "tls.key"),
		"TLS_CLIENT_CA_FILE=" + filepath.Join(srvDir, "ca.crt"),
	}
	s.pd = start(t, "protected-data", pdEnv...)
	deadline := time.Now().Add(30 * time.Second)
	for err := healthcheck(pdEnv); err != nil; err = healthcheck(pdEnv) {
		if time.Now().After(deadline) || !s.pd.alive() {
			t.Fatalf("protected-data healthcheck over mTLS never passed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	_, port, _ := net.SplitHostPort(s.pdAddr)
	pdURL := "https://localhost:" + port
	gwEnv := func(addr string, withCert bool) []string {
		env := []string{
			"LISTEN_ADDR=" + addr, "WRISTBAND_EMULATOR_URL=" + s.emuURL(),
			"CLIENT_ID=" + clientID, "CLIENT_SECRET=" + clientSecret,
			"PROTECTED_DATA_URL=" + pdURL, "PROTECTED_DATA_CA_FILE=" + filepath.Join(cliDir, "ca.crt"),
		}
		if withCert {
			env = append(env, "PROTECTED_DATA_CLIENT_CERT_FILE="+filepath.Join(cliDir, "tls.crt"),
				"PROTECTED_DATA_CLIENT_KEY_FILE="+filepath.Join(cliDir, "tls.key"))
		}
		return env
	}
	s.gw = start(t, "public-gateway", gwEnv(s.gwAddr, true)...)
	waitStatus(t, s.gwURL()+"/readyz", 200, 30*time.Second)

	t.Run("the public call works over mTLS", func(t *testing.T) {
		r := get(t, s.gwURL()+"/api/public/data")
		if r.status != 200 || !strings.Contains(r.body, `"protectedData":"here I am"`) {
			t.Fatalf("public call: %d %s", r.status, r.body)
		}
	})

	token := emulatorToken(t, s)
	call := func(c *http.Client, url string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	t.Run("a client with the CA's certificate is served", func(t *testing.T) {
		status, body, err := call(mtlsClient(t, filepath.Join(cliDir, "ca.crt"), cliDir), pdURL+"/api/protected/data")
		if err != nil || status != 200 {
			t.Fatalf("%d %s %v", status, body, err)
		}
	})
	t.Run("a client without a certificate is refused, token or not", func(t *testing.T) {
		status, body, err := call(mtlsClient(t, filepath.Join(cliDir, "ca.crt"), ""), pdURL+"/api/protected/data")
		if err == nil {
			t.Fatalf("served: %d %s", status, body)
		}
		if !strings.Contains(err.Error(), "certificate required") {
			t.Errorf("refusal: %v", err)
		}
	})
	t.Run("a client with another CA's certificate is refused", func(t *testing.T) {
		status, body, err := call(mtlsClient(t, filepath.Join(cliDir, "ca.crt"), strangerDir), pdURL+"/api/protected/data")
		if err == nil {
			t.Fatalf("served: %d %s", status, body)
		}
	})
	t.Run("plain HTTP to the TLS port gets nothing", func(t *testing.T) {
		status, body, err := call(client, "http://"+s.pdAddr+"/api/protected/data")
		if err == nil && (status == 200 || strings.Contains(body, "here I am")) {
			t.Fatalf("plain HTTP served: %d %s", status, body)
		}
	})
	t.Run("a gateway without a client certificate gets 502, not data", func(t *testing.T) {
		addr := freeAddr(t)
		start(t, "public-gateway", gwEnv(addr, false)...)
		waitStatus(t, "http://"+addr+"/readyz", 200, 30*time.Second)
		r := get(t, "http://"+addr+"/api/public/data")
		if r.status != http.StatusBadGateway || strings.Contains(r.body, "here I am") {
			t.Fatalf("public call: %d %s", r.status, r.body)
		}
	})
	t.Run("a rotated CA and certificates take effect without a restart", func(t *testing.T) {
		oldCA, oldCert := t.TempDir(), t.TempDir()
		for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
			b, err := os.ReadFile(filepath.Join(cliDir, f))
			if err != nil {
				t.Fatal(err)
			}
			_ = os.WriteFile(filepath.Join(oldCA, f), b, 0o600)
			_ = os.WriteFile(filepath.Join(oldCert, f), b, 0o600)
		}
		out, err := exec.Command(filepath.Join(binDir, "protected-data"), "certgen", "-keep=false",
			"-server-dir", srvDir, "-client-dir", cliDir, "-server-names", "localhost").CombinedOutput()
		if err != nil {
			t.Fatalf("certgen: %v\n%s", err, out)
		}
		// protected-data looks at its files at most once a second, on a
		// handshake: poll with fresh connections until the new pair is served.
		deadline := time.Now().Add(15 * time.Second)
		for {
			status, _, err := call(mtlsClient(t, filepath.Join(cliDir, "ca.crt"), cliDir), pdURL+"/api/protected/data")
			if err == nil && status == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the new CA's client is still not served: %d %v", status, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if status, body, err := call(mtlsClient(t, filepath.Join(oldCA, "ca.crt"), oldCert), pdURL+"/api/protected/data"); err == nil {
			t.Errorf("a client of the replaced CA is still served: %d %s", status, body)
		}
		// The gateway, not restarted, holds keep-alive connections made
		// with the old certificates; a protected-data restart makes it
		// connect afresh, with the CA and the client certificate it must
		// have re-read.
		oldPD := s.pd
		oldPD.stop(t)
		s.pd = start(t, "protected-data", pdEnv...)
		deadline = time.Now().Add(30 * time.Second)
		for {
			r := get(t, s.gwURL()+"/api/public/data")
			if r.status == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the gateway did not pick up the rotated CA and client certificate: %d %s\n%s", r.status, r.body, s.gw.out.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
		for _, line := range []string{"tls: reloaded the CA", "tls: reloaded the client certificate"} {
			if !logShows(s.gw, line) {
				t.Errorf("the gateway did not log %q", line)
			}
		}
		s.pd, oldPD = oldPD, s.pd // the log checks below read the first one
		t.Cleanup(func() { oldPD.stop(t) })
		for _, line := range []string{"tls: reloaded the certificate", "tls: reloaded the client CA"} {
			if !logShows(s.pd, line) {
				t.Errorf("protected-data did not log %q", line)
			}
		}
	})
	if !logShows(s.pd, "tls=mutual") || !logShows(s.pd, "client didn't provide a certificate") {
		t.Errorf("protected-data's log does not show mTLS and the refusals:\n%s", s.pd.out.String())
	}
	for _, p := range []*proc{s.pd, s.gw} {
		if strings.Contains(p.out.String(), clientSecret) || strings.Contains(p.out.String(), "PRIVATE KEY") {
			t.Errorf("%s logged a secret", p.name)
		}
	}
}

// logShows waits a little for a line: a process's output reaches the test
// through a pipe, after the answer that the line is about.
func logShows(p *proc, substr string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.out.String(), substr) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// TestTLSConfigErrorsAreReportedAtOnce: a service with bad TLS files exits
// at start with one line per variable, never the files' content.
func TestTLSConfigErrorsAreReportedAtOnce(t *testing.T) {
	srvDir, cliDir := certgen(t, "localhost")
	notPEM := filepath.Join(t.TempDir(), "xyzzy.pem")
	if err := os.WriteFile(notPEM, []byte("xyzzy\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "protected-data"))
	cmd.Env = []string{"LISTEN_ADDR=" + freeAddr(t), "WRISTBAND_EMULATOR_URL=http://127.0.0.1:1",
		"TLS_CERT_FILE=" + filepath.Join(srvDir, "tls.crt"), "TLS_KEY_FILE=" + filepath.Join(cliDir, "tls.key"),
		"TLS_CLIENT_CA_FILE=" + notPEM}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("protected-data started with bad TLS files")
	}
	for _, want := range []string{
		"TLS_CERT_FILE and TLS_KEY_FILE: the private key does not belong",
		"TLS_CLIENT_CA_FILE: no PEM certificate in the file",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "xyzzy") || strings.Contains(string(out), "PRIVATE KEY-----") {
		t.Errorf("a path or content was echoed:\n%s", out)
	}
}
