// Package certgen writes a private CA's certificate, a server certificate
// and a client certificate with their keys, for TLS between the services
// (see README, "TLS between the services"). Standard library only, so that
// a scratch image's binary can run it as an init step (`protected-data
// certgen`). The CA's private key is never written: once the two leaf
// certificates are signed, nobody can issue more.
package certgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// File names in each output directory.
const (
	CAFile   = "ca.crt"
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// Options says what to write.
type Options struct {
	ServerDir   string   // ca.crt, tls.crt, tls.key of the server
	ServerNames []string // DNS names and IPs the server certificate is valid for
	ClientDir   string   // ca.crt, tls.crt, tls.key of the client; empty: no client certificate
	ClientName  string   // the client certificate's common name
	Validity    time.Duration
	// Keep leaves valid files alone (same CA, the names covered, more than
	// a tenth of Validity left), so that restarting the init step does not
	// replace certificates under running services.
	Keep bool
	// UID and GID own the written files when >= 0 (the
	// services run as 65532 while the init step may need root to write
	// into a fresh volume).
	UID, GID int
}

// Command runs `certgen` with its flags; it writes one line saying what it
// did to out.
func Command(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("certgen", flag.ContinueOnError)
	fs.SetOutput(out)
	var o Options
	var names, owner string
	fs.StringVar(&o.ServerDir, "server-dir", "", "directory for the server's ca.crt, tls.crt, tls.key (required)")
	fs.StringVar(&names, "server-names", "localhost,127.0.0.1", "comma-separated DNS names and IPs of the server")
	fs.StringVar(&o.ClientDir, "client-dir", "", "directory for the client's ca.crt, tls.crt, tls.key (empty: no client certificate)")
	fs.StringVar(&o.ClientName, "client-name", "public-gateway", "common name of the client certificate")
	fs.DurationVar(&o.Validity, "validity", 365*24*time.Hour, "validity of the CA and the certificates")
	fs.BoolVar(&o.Keep, "keep", true, "keep existing certificates that are still good")
	fs.StringVar(&owner, "owner", "", "uid:gid to own the files (e.g. 65532:65532); empty: the current user")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for n := range strings.SplitSeq(names, ",") {
		if n = strings.TrimSpace(n); n != "" {
			o.ServerNames = append(o.ServerNames, n)
		}
	}
	o.UID, o.GID = -1, -1
	if owner != "" {
		u, g, ok := strings.Cut(owner, ":")
		uid, err1 := strconv.Atoi(u)
		gid, err2 := strconv.Atoi(g)
		if !ok || err1 != nil || err2 != nil || uid < 0 || gid < 0 {
			return errors.New("certgen: -owner: want uid:gid (e.g. 65532:65532)")
		}
		o.UID, o.GID = uid, gid
	}
	kept, err := Generate(o)
	if err != nil {
		return err
	}
	if kept {
		fmt.Fprintln(out, "certgen: existing certificates are still good; kept them")
	} else {
		fmt.Fprintf(out, "certgen: wrote a new CA and certificates (server names %s) valid for %s\n", strings.Join(o.ServerNames, ","), o.Validity)
	}
	return nil
}

// Generate writes the files; kept says the existing ones were still good.
func Generate(o Options) (kept bool, err error) {
	if o.ServerDir == "" {
		return false, errors.New("certgen: the server directory is required (-server-dir)")
	}
	if len(o.ServerNames) == 0 {
		return false, errors.New("certgen: at least one server name is required (-server-names)")
	}
	if o.Validity <= 0 {
		return false, errors.New("certgen: the validity must be positive (e.g. 8760h)")
	}
	if o.Keep && stillGood(o) {
		return true, nil
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, fmt.Errorf("certgen: %w", err)
	}
	// A name of its own: clients pick the certificate to send by the CA
	// name the server asks for, so two CAs must never share one.
	tag := make([]byte, 6)
	if _, err := rand.Read(tag); err != nil {
		return false, fmt.Errorf("certgen: %w", err)
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: fmt.Sprintf("wristband-m2m-go private CA %s %x", now.UTC().Format("2006-01-02"), tag)},
		NotBefore:             now.Add(-time.Hour), // clock skew between containers
		NotAfter:              now.Add(o.Validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := sign(caTmpl, caTmpl, caKey, caKey)
	if err != nil {
		return false, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	srv := &x509.Certificate{
		Subject:     pkix.Name{CommonName: o.ServerNames[0]},
		NotBefore:   caTmpl.NotBefore,
		NotAfter:    caTmpl.NotAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range o.ServerNames {
		if ip := net.ParseIP(n); ip != nil {
			srv.IPAddresses = append(srv.IPAddresses, ip)
		} else {
			srv.DNSNames = append(srv.DNSNames, n)
		}
	}
	if err := writeLeaf(o.ServerDir, srv, ca, caDER, caKey, o); err != nil {
		return false, err
	}
	if o.ClientDir != "" {
		cli := &x509.Certificate{
			Subject:     pkix.Name{CommonName: o.ClientName},
			NotBefore:   caTmpl.NotBefore,
			NotAfter:    caTmpl.NotAfter,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if err := writeLeaf(o.ClientDir, cli, ca, caDER, caKey, o); err != nil {
			return false, err
		}
	}
	return false, nil
}

func sign(tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certgen: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("certgen: signing %s: %w", tmpl.Subject.CommonName, err)
	}
	return der, nil
}

func writeLeaf(dir string, tmpl, ca *x509.Certificate, caDER []byte, caKey *ecdsa.PrivateKey, o Options) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("certgen: %w", err)
	}
	der, err := sign(tmpl, ca, key, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("certgen: %w", err)
	}
	// The directory keeps its owner: the files are chowned, and a root
	// init step without CAP_DAC_OVERRIDE can still write here next time.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("certgen: %w", err)
	}
	// The key before the certificate: a service re-reading the pair on a
	// change sees a mismatch for a moment at worst, and keeps its old pair.
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
		{CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644},
		{CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644},
	}
	for _, f := range files {
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.mode, o); err != nil {
			return err
		}
	}
	return nil
}

// writeAtomic writes via a temporary file and a rename, so that a reader
// never sees half a file.
func writeAtomic(path string, data []byte, mode os.FileMode, o Options) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".certgen-*")
	if err != nil {
		return fmt.Errorf("certgen: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing to remove
	err = tmp.Chmod(mode)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = chown(tmp.Name(), o)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("certgen: writing %s: %w", filepath.Base(path), err)
	}
	return nil
}

func chown(path string, o Options) error {
	if o.UID < 0 {
		return nil
	}
	if err := os.Chown(path, o.UID, o.GID); err != nil {
		return fmt.Errorf("certgen: %w", err)
	}
	return nil
}

// stillGood: every file exists, the leaves chain to the CA written beside
// them, cover the server names, and have more than a tenth of Validity left.
func stillGood(o Options) bool {
	dirs := []string{o.ServerDir}
	if o.ClientDir != "" {
		dirs = append(dirs, o.ClientDir)
	}
	var caPEM []byte
	for i, dir := range dirs {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
		if err != nil || pair.Leaf == nil {
			return false
		}
		ca, err := os.ReadFile(filepath.Join(dir, CAFile))
		if err != nil || caPEM != nil && string(ca) != string(caPEM) {
			return false
		}
		caPEM = ca
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(ca) {
			return false
		}
		usage := x509.ExtKeyUsageServerAuth
		if i == 1 {
			usage = x509.ExtKeyUsageClientAuth
		}
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return false
		}
		if time.Until(pair.Leaf.NotAfter) < o.Validity/10 {
			return false
		}
		if i == 0 {
			for _, n := range o.ServerNames {
				if pair.Leaf.VerifyHostname(n) != nil {
					return false
				}
			}
		}
	}
	return true
}
