//go:build composetest

package composetest

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestComposeTLS runs docker-compose.yml with the deploy/compose/tls.yml
// overlay: certgen makes a private CA, protected-data serves mTLS, the
// gateway presents its client certificate. Callers on the backend network
// are then refused without a certificate from that CA.
func TestComposeTLS(t *testing.T) {
	e := setup(t)
	e.project += "tls"
	args := func(a ...string) (string, []string) {
		name, full := e.composeArgs()
		full = slices.Insert(full, slices.Index(full, "--env-file"), "-f", filepath.Join(e.root, "deploy", "compose", "tls.yml"))
		return name, append(full, a...)
	}
	compose := func(timeout time.Duration, a ...string) (string, error) {
		name, full := args(a...)
		return e.run(t, timeout, nil, name, full...)
	}
	other := e.project + "_otherca"
	t.Cleanup(func() {
		if out, err := compose(2*time.Minute, "down", "-v", "--remove-orphans", "--timeout", "5"); err != nil {
			t.Logf("compose down: %v\n%s", err, out)
		}
		_, _ = e.run(t, time.Minute, nil, "docker", "volume", "rm", "-f", other)
	})
	if out, err := compose(3*time.Minute, "up", "-d", "--no-build"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	if a := e.waitOK(t, 2*time.Minute); !strings.Contains(a.body, "here I am") {
		t.Fatalf("public call over mTLS: %d %s", a.status, a.body)
	}
	// Its own healthcheck, over mTLS, keeps protected-data healthy.
	e.waitHealthy(t, "protected-data", 1, time.Minute)
	out, _ := compose(time.Minute, "logs", "protected-data")
	if !strings.Contains(out, `"tls":"mutual"`) {
		t.Errorf("protected-data does not say it serves mTLS:\n%s", out)
	}

	img := e.prefix + "/protected-data:" + e.tag
	probe := func(extra ...string) (string, error) {
		a := append([]string{"run", "--rm", "--network", e.project + "_backend", "-e", "LISTEN_ADDR=protected-data:6002"}, extra...)
		return e.run(t, time.Minute, nil, "docker", append(a, img, "healthcheck")...)
	}
	if out, err := probe(); err == nil || !strings.Contains(out, "answered 400") {
		t.Errorf("plain HTTP on the backend network: %v\n%s", err, out)
	}
	if out, err := probe("-v", e.project+"_tls-client:/tls:ro", "-e", "TLS_CERT_FILE=/tls/tls.crt", "-e", "TLS_KEY_FILE=/tls/tls.key"); err != nil {
		t.Errorf("with the gateway's client certificate: %v\n%s", err, out)
	}
	e.mustRun(t, time.Minute, "docker", "run", "--rm", "--user", "0:0", "-v", other+":/o", img,
		"certgen", "-server-dir", "/o/s", "-client-dir", "/o/c")
	if out, err := probe("--user", "0:0", "-v", other+":/o:ro", "-e", "TLS_CERT_FILE=/o/c/tls.crt", "-e", "TLS_KEY_FILE=/o/c/tls.key"); err == nil || !strings.Contains(out, "bad certificate") {
		t.Errorf("with another CA's client certificate: %v\n%s", err, out)
	}

	// A second start of the init step keeps the CA the services use.
	if out, err := compose(2*time.Minute, "up", "--no-build", "certgen"); err != nil || !strings.Contains(out, "kept them") {
		t.Errorf("certgen again: %v\n%s", err, out)
	}
	if a := e.waitOK(t, 30*time.Second); a.status != 200 {
		t.Errorf("after certgen again: %d", a.status)
	}
}
