package service

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// maxTLSFileBytes bounds a certificate, key or CA file: a CA bundle such as
// the system's is a few hundred KiB.
const maxTLSFileBytes = 1 << 20

// reloadEvery is the least gap between two looks at a TLS file's mtime:
// a handshake costs at most one stat per file per second.
const reloadEvery = time.Second

// FileVar is a file named by a variable: the variable for messages, the
// path to read. Messages name the variable and never carry the path or the
// file's content.
type FileVar struct {
	Name string // e.g. TLS_CERT_FILE
	Path string
}

// readTLSFile reads a PEM file named by v.
func readTLSFile(v FileVar, example string) ([]byte, error) {
	f, err := os.Open(v.Path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: the file does not exist (e.g. %s)", v.Name, example)
		}
		return nil, fmt.Errorf("%s: %w", v.Name, fileProblem(err, v.Name))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTLSFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", v.Name, fileProblem(err, v.Name))
	}
	if len(b) > maxTLSFileBytes {
		return nil, fmt.Errorf("%s: the file is larger than %d KiB (e.g. a certificate chain of a few KiB)", v.Name, maxTLSFileBytes>>10)
	}
	return b, nil
}

// loadKeyPair reads a certificate chain and its private key. Errors name
// the variable and say what is wrong, never what the files hold (the key
// file is a secret; crypto/tls's own messages are not relied on for that).
func loadKeyPair(cert, key FileVar) (*tls.Certificate, error) {
	certPEM, err := readTLSFile(cert, "/tls/tls.crt")
	if err != nil {
		return nil, err
	}
	keyPEM, err := readTLSFile(key, "/tls/tls.key")
	if err != nil {
		return nil, err
	}
	var chain [][]byte
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return nil, fmt.Errorf("%s: a certificate in the file cannot be parsed (e.g. a PEM X.509 certificate from openssl or certgen)", cert.Name)
		}
		chain = append(chain, b.Bytes)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate in the file (e.g. a file starting with -----BEGIN CERTIFICATE-----)", cert.Name)
	}
	var der []byte
	for rest := keyPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "PRIVATE KEY" || strings.HasSuffix(b.Type, " PRIVATE KEY") {
			der = b.Bytes
			break
		}
	}
	if der == nil {
		return nil, fmt.Errorf("%s: no PEM private key in the file (e.g. a file starting with -----BEGIN PRIVATE KEY-----)", key.Name)
	}
	if _, err := parsePrivateKey(der); err != nil {
		return nil, fmt.Errorf("%s: the private key cannot be parsed (e.g. a PEM PKCS#8, PKCS#1 or SEC 1 key; RSA, ECDSA or Ed25519)", key.Name)
	}
	// The key parsed: X509KeyPair can now only fail on a mismatch.
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s and %s: the private key does not belong to the first certificate in the file (e.g. the key written together with that certificate)", cert.Name, key.Name)
	}
	if pair.Leaf != nil && time.Now().After(pair.Leaf.NotAfter) {
		return nil, fmt.Errorf("%s: the certificate expired (e.g. renew it; certgen writes a fresh one)", cert.Name)
	}
	return &pair, nil
}

func parsePrivateKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		switch k := k.(type) {
		case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		}
		return nil, errors.New("unsupported key type")
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	return x509.ParseECPrivateKey(der)
}

// loadCAPool reads PEM CA certificates.
func loadCAPool(v FileVar) (*x509.CertPool, error) {
	b, err := readTLSFile(v, "/tls/ca.crt")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate in the file (e.g. the CA's ca.crt, starting with -----BEGIN CERTIFICATE-----)", v.Name)
	}
	return pool, nil
}

// reloading holds what was loaded from files and loads it again when a
// file's modification time or size changes (certificate rotation, a
// Kubernetes Secret update), so that no restart is needed. A reload that
// fails (say, the certificate is written but the key not yet) keeps the
// previous value and is tried again later.
type reloading[T any] struct {
	what  string // for the log: "certificate", "client CA"
	files []string
	load  func() (T, error)
	log   *slog.Logger
	now   func() time.Time

	mu      sync.Mutex
	val     T
	stamps  []fileStamp
	checked time.Time
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func newReloading[T any](what string, load func() (T, error), files ...string) (*reloading[T], error) {
	r := &reloading[T]{what: what, files: files, load: load, log: NewDiscardLogger(), now: time.Now}
	r.stamps = r.stat()
	v, err := load()
	if err != nil {
		return nil, err
	}
	r.val, r.checked = v, r.now()
	return r, nil
}

func (r *reloading[T]) stat() []fileStamp {
	out := make([]fileStamp, len(r.files))
	for i, f := range r.files {
		if fi, err := os.Stat(f); err == nil {
			out[i] = fileStamp{fi.ModTime(), fi.Size()}
		}
	}
	return out
}

func (r *reloading[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) < reloadEvery {
		return r.val
	}
	r.checked = now
	st := r.stat()
	changed := false
	for i := range st {
		if !st[i].mod.Equal(r.stamps[i].mod) || st[i].size != r.stamps[i].size {
			changed = true
		}
	}
	if !changed {
		return r.val
	}
	v, err := r.load()
	if err != nil {
		// The message names the variable only (see loadKeyPair).
		r.log.Warn("tls: reloading failed, keeping the previous "+r.what, "err", err.Error())
		return r.val
	}
	r.val, r.stamps = v, st
	r.log.Info("tls: reloaded the " + r.what)
	return r.val
}

// serverTLS is the TLS a service serves when TLS_CERT_FILE is set.
type serverTLS struct {
	cert     *reloading[*tls.Certificate]
	clientCA *reloading[*x509.CertPool] // nil: no client certificates asked for
}

// loadServerTLS checks the TLS settings of Base; nil, nil when TLS is off.
func (b *Base) loadServerTLS() (*serverTLS, []error) {
	cert, key, ca := FileVar{"TLS_CERT_FILE", b.TLSCertFile}, FileVar{"TLS_KEY_FILE", b.TLSKeyFile}, FileVar{"TLS_CLIENT_CA_FILE", b.TLSClientCAFile}
	switch {
	case cert.Path == "" && key.Path == "":
		if ca.Path != "" {
			return nil, []error{errors.New("TLS_CLIENT_CA_FILE: set, but TLS_CERT_FILE and TLS_KEY_FILE are not; client certificates need TLS (e.g. TLS_CERT_FILE=/tls/tls.crt TLS_KEY_FILE=/tls/tls.key)")}
		}
		return nil, nil
	case key.Path == "":
		return nil, []error{errors.New("TLS_KEY_FILE: required when TLS_CERT_FILE is set (e.g. /tls/tls.key)")}
	case cert.Path == "":
		return nil, []error{errors.New("TLS_CERT_FILE: required when TLS_KEY_FILE is set (e.g. /tls/tls.crt)")}
	}
	var errs []error
	s := &serverTLS{}
	r, err := newReloading("certificate", func() (*tls.Certificate, error) { return loadKeyPair(cert, key) }, cert.Path, key.Path)
	if err != nil {
		errs = append(errs, err)
	}
	s.cert = r
	if ca.Path != "" {
		p, err := newReloading("client CA", func() (*x509.CertPool, error) { return loadCAPool(ca) }, ca.Path)
		if err != nil {
			errs = append(errs, err)
		}
		s.clientCA = p
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

// config is the server's tls.Config: TLS 1.2 or later (1.3 is chosen
// whenever the client offers it), the certificate re-read on rotation, and
// with a client CA every client must present a certificate it signed.
//
// Client certificates are asked for with RequireAnyClientCert and checked
// by verifyClient rather than by RequireAndVerifyClientCert, for two
// reasons: the CA file is re-read on rotation too, and the service's own
// certificate is accepted as a client certificate, so that the
// `healthcheck` subcommand (same container, same files) can reach /healthz.
// Presenting a certificate takes its private key (the handshake signs with
// it), so this admits only who already holds the server's key.
func (s *serverTLS) config(log *slog.Logger, h2 func() bool) *tls.Config {
	s.cert.log = log
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cert.get(), nil },
	}
	if s.clientCA == nil {
		return cfg
	}
	s.clientCA.log = log
	cfg.ClientAuth = tls.RequireAnyClientCert
	cfg.VerifyConnection = s.verifyClient
	// The CA's name in the certificate request tells clients which of their
	// certificates to send (Go's client sends none that does not match), so
	// it must follow a rotated CA file: one config per CA pool, rebuilt
	// only when the pool changes.
	var cur struct {
		sync.Mutex
		pool *x509.CertPool
		cfg  *tls.Config
	}
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool := s.clientCA.get()
		cur.Lock()
		defer cur.Unlock()
		if cur.pool != pool {
			c := cfg.Clone()
			c.GetConfigForClient = nil
			c.ClientCAs = pool
			// What ServeTLS offers in its own copy of cfg, which this
			// config replaces: h2 unless the server has it off
			// (GODEBUG=http2server=0), and HTTP/1.1.
			c.NextProtos = []string{"http/1.1"}
			if h2() {
				c.NextProtos = []string{"h2", "http/1.1"}
			}
			cur.pool, cur.cfg = pool, c
		}
		return cur.cfg, nil
	}
	return cfg
}

// verifyClient runs in VerifyConnection, which crypto/tls calls on resumed
// sessions too: a client whose CA was rotated out cannot come back on an
// old session ticket.
func (s *serverTLS) verifyClient(cs tls.ConnectionState) error {
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return errors.New("tls: a client certificate is required")
	}
	if own := s.cert.get(); bytes.Equal(certs[0].Raw, own.Certificate[0]) {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         s.clientCA.get(),
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("tls: client certificate not accepted: %w", err)
	}
	return nil
}

// ClientTLSConfig is the tls.Config of a client calling one service that
// serves TLS at host (the URL's host name, or IP): ca (optional; empty
// Path: the system roots) is trusted for the server's certificate, which
// must be valid for host whichever address is dialled; cert and key
// (optional, both or neither) are presented when the server asks (mTLS) and
// re-read when the files change. It returns every problem at once, each
// naming its variable. log receives reload warnings.
func ClientTLSConfig(log *slog.Logger, host string, ca, cert, key FileVar) (*tls.Config, []error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	var errs []error
	if ca.Path != "" {
		roots, err := newReloading("CA", func() (*x509.CertPool, error) { return loadCAPool(ca) }, ca.Path)
		if err != nil {
			errs = append(errs, err)
		} else {
			roots.log = log
			// crypto/tls reads RootCAs once per config; verifying here
			// instead lets a rotated CA file take effect without a
			// restart. Nothing is skipped: verifyServer checks the chain,
			// the name and the key usage, as crypto/tls would.
			cfg.InsecureSkipVerify = true
			cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifyServer(cs, host, roots.get()) }
		}
	}
	switch {
	case cert.Path == "" && key.Path == "":
	case key.Path == "":
		errs = append(errs, fmt.Errorf("%s: required when %s is set (e.g. /tls/tls.key)", key.Name, cert.Name))
	case cert.Path == "":
		errs = append(errs, fmt.Errorf("%s: required when %s is set (e.g. /tls/tls.crt)", cert.Name, key.Name))
	default:
		r, err := newReloading("client certificate", func() (*tls.Certificate, error) { return loadKeyPair(cert, key) }, cert.Path, key.Path)
		if err != nil {
			errs = append(errs, err)
			break
		}
		r.log = log
		// Always the one certificate, whichever CAs the server names: a
		// refusal is then the server's, and says so in its log.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return r.get(), nil }
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return cfg, nil
}

// verifyServer checks the server's chain against roots and its certificate
// against host, as crypto/tls does with RootCAs and ServerName.
func verifyServer(cs tls.ConnectionState, host string, roots *x509.CertPool) error {
	if host == "" {
		return errors.New("tls: no server name to verify the certificate against")
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the server presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		DNSName:       host,
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("tls: server certificate not accepted: %w", err)
	}
	return nil
}

// healthcheckTLSConfig is what the `healthcheck` subcommand uses when the
// service serves TLS: it presents the service's own certificate (see
// serverTLS.config) and does not verify the server's, which is itself on
// loopback; certificate problems are the service's to report at start.
func healthcheckTLSConfig(certFile, keyFile string) (*tls.Config, error) {
	pair, err := loadKeyPair(FileVar{"TLS_CERT_FILE", certFile}, FileVar{"TLS_KEY_FILE", keyFile})
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		InsecureSkipVerify:   true, //nolint:gosec // loopback liveness check of our own listener
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return pair, nil },
	}, nil
}
