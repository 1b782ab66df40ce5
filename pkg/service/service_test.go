package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

func newTestEcho(t *testing.T) (*echo.Echo, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	return NewEcho(log), &buf
}

func do(e *echo.Echo, method, path string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func TestReadiness(t *testing.T) {
	e, _ := newTestEcho(t)
	var tokenErr error = errors.New("secret detail")
	Health(e, NewDiscardLogger(), Check{Name: "token", Fn: func(context.Context) error { return tokenErr }})

	if rec := do(e, "GET", "/healthz"); rec.Code != 200 {
		t.Fatalf("healthz %d", rec.Code)
	}
	rec := do(e, "GET", "/readyz")
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"token"`) || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("readyz while failing: %d %s", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), "secret detail") {
		t.Fatal("readiness must not expose check errors to callers")
	}
	tokenErr = nil
	if rec := do(e, "GET", "/readyz"); rec.Code != 200 {
		t.Fatalf("readyz when ready: %d %s", rec.Code, rec.Body)
	}
}

func TestRequestIDs(t *testing.T) {
	e, logs := newTestEcho(t)
	e.GET("/x", func(c echo.Context) error { return c.String(200, c.Request().Header.Get(HeaderRequestID)) })
	cases := []struct {
		name, in string
		keep     bool
	}{
		{"kept", "abc-123_x.y", true},
		{"missing", "", false},
		{"too long", strings.Repeat("a", 65), false},
		{"log injection", "a\" level=ERROR msg=forged", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := do(e, "GET", "/x", HeaderRequestID, tc.in)
			got := rec.Header().Get(HeaderRequestID)
			if got == "" || got != rec.Body.String() {
				t.Fatalf("response ID %q, handler saw %q", got, rec.Body)
			}
			if (got == tc.in) != tc.keep {
				t.Fatalf("in %q, out %q, keep=%v", tc.in, got, tc.keep)
			}
		})
	}
	if !strings.Contains(logs.String(), `"request_id":"abc-123_x.y"`) {
		t.Errorf("access log lacks the request ID: %s", logs)
	}
}

func TestErrorsAreJSONAndPanicsRecovered(t *testing.T) {
	e, logs := newTestEcho(t)
	e.GET("/boom", func(c echo.Context) error { panic("kaboom") })
	rec := do(e, "GET", "/boom")
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"error":"server_error"`) {
		t.Fatalf("panic: %d %s", rec.Code, rec.Body)
	}
	if !strings.Contains(logs.String(), "panic recovered") {
		t.Error("the panic was not logged")
	}
	rec = do(e, "GET", "/nope")
	if rec.Code != 404 || !strings.Contains(rec.Body.String(), `"error":"not_found"`) {
		t.Fatalf("404: %d %s", rec.Code, rec.Body)
	}
	rec = do(e, "POST", "/boom")
	if rec.Code != 405 {
		t.Fatalf("405: %d %s", rec.Code, rec.Body)
	}
}

func TestServeShutsDownGracefully(t *testing.T) {
	e, _ := newTestEcho(t)
	started := make(chan struct{})
	e.GET("/slow", func(c echo.Context) error {
		close(started)
		time.Sleep(300 * time.Millisecond)
		return c.String(200, "done")
	})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, NewDiscardLogger(), e, Base{ListenAddr: addr}) }()

	var resp *http.Response
	var err error
	got := make(chan struct{})
	go func() {
		defer close(got)
		for i := 0; i < 100; i++ {
			resp, err = http.Get("http://" + addr + "/slow")
			if err == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("server never served")
	}
	cancel() // shutdown while a request is in flight
	<-got
	if err != nil {
		t.Fatalf("in-flight request failed during shutdown: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "done" {
		t.Fatalf("body %q", b)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

func TestServeReportsListenErrors(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	e, _ := newTestEcho(t)
	err := Serve(context.Background(), NewDiscardLogger(), e, Base{ListenAddr: ln.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "listening") {
		t.Fatalf("got %v", err)
	}
}

func TestNewLoggerRejectsUnknownSettings(t *testing.T) {
	if _, err := NewLogger(io.Discard, "xml", "info"); err == nil {
		t.Error("format xml accepted")
	}
	if _, err := NewLogger(io.Discard, "json", "loud"); err == nil {
		t.Error("level loud accepted")
	}
}

func TestHealthcheck(t *testing.T) {
	e, _ := newTestEcho(t)
	Health(e, NewDiscardLogger())
	srv := httptest.NewServer(e)
	defer srv.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	if err := Healthcheck(":" + port); err != nil {
		t.Fatalf("healthy server: %v", err)
	}
	srv.Close()
	if err := Healthcheck(":" + port); err == nil {
		t.Fatal("closed server reported healthy")
	}
}

func TestRemoteIPIgnoresForwardingHeadersUnlessFromATrustedProxy(t *testing.T) {
	cases := []struct {
		name    string
		trusted []string
		peer    string
		want    string
	}{
		{"no trusted proxies: the peer", nil, "192.0.2.1:1234", "192.0.2.1"},
		{"no trusted proxies: a private peer too", nil, "10.1.2.3:1234", "10.1.2.3"},
		{"a trusted proxy's header", []string{"192.0.2.0/24"}, "192.0.2.1:1234", "203.0.113.9"},
		{"a single trusted IP", []string{"192.0.2.1"}, "192.0.2.1:1234", "203.0.113.9"},
		{"an untrusted peer's header", []string{"10.0.0.0/8"}, "192.0.2.1:1234", "192.0.2.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, logs := newTestEcho(t)
			b := Base{ListenAddr: ":1", TrustedProxies: tc.trusted}
			if errs := b.check(); len(errs) > 0 {
				t.Fatal(errs)
			}
			TrustProxies(e, b)
			e.GET("/x", func(c echo.Context) error { return c.String(200, c.RealIP()) })
			req := httptest.NewRequest("GET", "/x", nil)
			req.RemoteAddr = tc.peer
			req.Header.Set("X-Forwarded-For", "203.0.113.9")
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			if rec.Body.String() != tc.want {
				t.Errorf("RealIP %q, want %q", rec.Body, tc.want)
			}
			if !strings.Contains(logs.String(), `"remote_ip":"`+tc.want+`"`) {
				t.Errorf("log line lacks remote_ip %s: %s", tc.want, logs)
			}
		})
	}
}

func TestAccessLogIsOneLineWithLatencyInMilliseconds(t *testing.T) {
	e, logs := newTestEcho(t)
	e.GET("/x", func(c echo.Context) error {
		AddLogAttrs(c, slog.String("client_id", "c1"))
		return c.NoContent(204)
	})
	do(e, "GET", "/x")
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want 1: %s", len(lines), logs)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
		t.Fatal(err)
	}
	if ms, ok := line["latency_ms"].(float64); !ok || ms < 0 {
		t.Errorf("latency_ms %v (%T), want a number of milliseconds", line["latency_ms"], line["latency_ms"])
	}
	if _, ok := line["latency"]; ok {
		t.Error("the unit-less latency is still logged")
	}
	if line["status"] != float64(204) || line["client_id"] != "c1" || line["msg"] != "request" {
		t.Errorf("line %v", line)
	}
}

// Settings are environment variables: --help prints the usage, any argument
// that is not a subcommand is refused instead of ignored.
func TestCheckArgs(t *testing.T) {
	sub := []string{"certgen"}
	for _, tc := range []struct {
		args      []string
		help, bad bool
	}{
		{nil, false, false},
		{[]string{"healthcheck"}, false, false},
		{[]string{"certgen", "-server-dir", "/x"}, false, false},
		{[]string{"--help"}, true, false},
		{[]string{"-h"}, true, false},
		{[]string{"help"}, true, false},
		{[]string{"--port", "8080"}, false, true},
		{[]string{"jwks"}, false, true}, // another service's subcommand
	} {
		help, err := checkArgs(tc.args, sub)
		if help != tc.help || (err != nil) != tc.bad {
			t.Errorf("checkArgs(%q) = %v, %v; want help %v, error %v", tc.args, help, err, tc.help, tc.bad)
		}
		if err != nil && strings.Contains(err.Error(), "8080") {
			t.Errorf("error %q echoes the argument", err)
		}
	}
	if u := usage("protected-data", sub); !strings.Contains(u, "usage: protected-data [healthcheck | certgen]") || !strings.Contains(u, "environment variables") {
		t.Errorf("usage = %q", u)
	}
}
