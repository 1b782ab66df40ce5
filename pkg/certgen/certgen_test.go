package certgen

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func verify(t *testing.T, dir string, usage x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		t.Fatal("no CA certificate")
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		t.Fatalf("%s does not chain to its ca.crt: %v", dir, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", fi.Mode(), err)
	}
	return pair.Leaf
}

func TestCommandWritesAServerAndAClientChainingToOneCA(t *testing.T) {
	root := t.TempDir()
	srv, cli := filepath.Join(root, "server"), filepath.Join(root, "client")
	var out bytes.Buffer
	if err := Command([]string{"-server-dir", srv, "-client-dir", cli, "-server-names", "protected-data, localhost,127.0.0.1", "-client-name", "public-gateway", "-validity", "48h"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "wrote a new CA") {
		t.Errorf("output %q", out.String())
	}
	s := verify(t, srv, x509.ExtKeyUsageServerAuth)
	for _, n := range []string{"protected-data", "localhost", "127.0.0.1"} {
		if err := s.VerifyHostname(n); err != nil {
			t.Errorf("server certificate: %v", err)
		}
	}
	if s.VerifyHostname("other") == nil {
		t.Error("server certificate valid for a name not asked for")
	}
	c := verify(t, cli, x509.ExtKeyUsageClientAuth)
	if c.Subject.CommonName != "public-gateway" {
		t.Errorf("client CN %q", c.Subject.CommonName)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("client certificate usable as a server certificate")
	}
	if d := time.Until(s.NotAfter); d < 47*time.Hour || d > 49*time.Hour {
		t.Errorf("validity %s", d)
	}
	entries, _ := os.ReadDir(srv)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".certgen") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}

	// A restart keeps good files, so running services keep their CA.
	before, _ := os.ReadFile(filepath.Join(srv, CAFile))
	out.Reset()
	if err := Command([]string{"-server-dir", srv, "-client-dir", cli, "-server-names", "localhost,protected-data", "-validity", "48h"}, &out); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(srv, CAFile))
	if !strings.Contains(out.String(), "kept") || !bytes.Equal(before, after) {
		t.Errorf("good certificates replaced: %q", out.String())
	}
	// A name not covered: everything is issued again.
	out.Reset()
	if err := Command([]string{"-server-dir", srv, "-client-dir", cli, "-server-names", "new-name", "-validity", "48h"}, &out); err != nil {
		t.Fatal(err)
	}
	after, _ = os.ReadFile(filepath.Join(srv, CAFile))
	if bytes.Equal(before, after) || verify(t, srv, x509.ExtKeyUsageServerAuth).VerifyHostname("new-name") != nil {
		t.Error("not reissued for a new server name")
	}
	verify(t, cli, x509.ExtKeyUsageClientAuth)
}

func TestCommandRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-server-dir", t.TempDir(), "-server-names", " , "},
		{"-server-dir", t.TempDir(), "-validity", "-1h"},
		{"-server-dir", t.TempDir(), "-owner", "app"},
		{"-server-dir", t.TempDir(), "-no-such-flag"},
	} {
		if err := Command(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
