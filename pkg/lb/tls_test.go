package lb

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type staticResolver map[string]string

func (r staticResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	ip, ok := r[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return []net.IPAddr{{IP: net.ParseIP(ip)}}, nil
}

// The transport dials the resolved IP but verifies the certificate against
// the URL's host name: httptest's certificate is valid for example.com and
// 127.0.0.1, and a name it does not cover fails even though the IP dialled
// is in the certificate.
func TestTLSVerifiesTheURLHostNotTheDialledIP(t *testing.T) {
	var serverName string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serverName = r.TLS.ServerName
		io.WriteString(w, "ok")
	}))
	srv.StartTLS()
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	tr, err := NewTransport(Config{
		Resolver:        staticResolver{"example.com": "127.0.0.1", "other.test": "127.0.0.1"},
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		MaxAttempts:     1,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	c := &http.Client{Transport: tr}

	resp, err := c.Get("https://example.com:" + port + "/")
	if err != nil {
		t.Fatalf("name in the certificate: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" || serverName != "example.com" {
		t.Errorf("body %q, SNI %q", b, serverName)
	}

	_, err = c.Get("https://other.test:" + port + "/")
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a name the certificate does not cover: %v", err)
	}
}
