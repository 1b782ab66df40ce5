package service

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/internal/wait"
)

// serveLimited serves h on loopback with at most max connections and
// records which connections the server closed.
func serveLimited(t *testing.T, max int, h http.HandlerFunc) (*limitListener, string, func() []string) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newLimitListener(inner, max)
	var mu sync.Mutex
	var closed []string
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ConnState: func(c net.Conn, st http.ConnState) {
		ln.connState(c, st)
		if st == http.StateClosed {
			mu.Lock()
			closed = append(closed, c.RemoteAddr().String())
			mu.Unlock()
		}
	}}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close() // also ends an Accept waiting for a slot
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln, "http://" + inner.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), closed...)
	}
}

// getVia makes one request on its own keep-alive client and returns the
// client's local address (the server's view of the connection).
func getVia(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	var local string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { local = i.Conn.LocalAddr().String() },
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	return local
}

func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func TestConnectionCapReplacesTheOldestIdleConnection(t *testing.T) {
	ln, url, closed := serveLimited(t, 2, func(w http.ResponseWriter, r *http.Request) {})
	a := getVia(t, newClient(t), url)
	wait.For(t, "a idle", func() bool { ln.mu.Lock(); defer ln.mu.Unlock(); return len(ln.idle) == 1 })
	getVia(t, newClient(t), url)
	wait.For(t, "a and b idle", func() bool { ln.mu.Lock(); defer ln.mu.Unlock(); return len(ln.idle) == 2 })
	if got := closed(); len(got) != 0 {
		t.Fatalf("closed %v under the cap", got)
	}
	// A third client (a health check, say) is served at once: the
	// connection idle longest makes room.
	getVia(t, newClient(t), url)
	wait.For(t, "one connection closed", func() bool { return len(closed()) == 1 })
	if got := closed(); got[0] != a {
		t.Errorf("closed %s, want the oldest idle one %s", got[0], a)
	}
	if n := len(ln.slots); n > 2 {
		t.Errorf("%d connections open, cap 2", n)
	}
}

func TestConnectionCapQueuesWhileAllAreBusy(t *testing.T) {
	var entered atomic.Int32
	release := make(chan struct{})
	ln, url, _ := serveLimited(t, 2, func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	errc := make(chan error, 3)
	get := func() {
		resp, err := newClient(t).Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = errors.New(resp.Status)
			}
		}
		errc <- err
	}
	go get()
	go get()
	wait.For(t, "two busy requests", func() bool { return entered.Load() == 2 })
	go get()
	wait.For(t, "the third connection to wait for a slot", func() bool { return ln.waiting.Load() == 1 })
	if n := entered.Load(); n != 2 {
		t.Fatalf("%d requests in handlers with a cap of 2", n)
	}
	// One busy request finishes; its connection goes idle and gives its
	// slot to the waiting one.
	release <- struct{}{}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the third request to be served", func() bool { return entered.Load() == 3 })
	close(release)
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

func TestCloseEndsAnAcceptWaitingForASlot(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newLimitListener(inner, 1)
	c1, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	first, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	c2, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	done := make(chan error, 1)
	go func() { _, err := ln.Accept(); done <- err }()
	wait.For(t, "Accept waiting", func() bool { return ln.waiting.Load() == 1 })
	ln.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	// The slot comes back when the connection closes, once.
	first.Close()
	first.Close()
	if n := len(ln.slots); n != 0 {
		t.Errorf("%d slots held after every connection closed", n)
	}
}

// Connections that never send a request (slowloris, or a flood of plain TCP
// connects) must not hold every slot until a header timeout: at the cap, the
// one silent longest gives way once it has been silent for newGrace. The
// server here has no ReadHeaderTimeout, so without that rule the health
// check below would wait for ever (the client's timeout fails the test).
func TestConnectionCapReplacesASilentConnection(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newLimitListener(inner, 2)
	ln.newGrace = 50 * time.Millisecond // exercises the wait for the grace too
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), ConnState: ln.connState}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	var silent []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	// The second sends half a header: still no complete request.
	if _, err := silent[1].Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "two silent connections", func() bool { ln.mu.Lock(); defer ln.mu.Unlock(); return len(ln.fresh) == 2 })

	c := newClient(t)
	c.Timeout = 15 * time.Second
	getVia(t, c, "http://"+inner.Addr().String())

	// The one silent longest was closed to make room.
	_ = silent[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent[0].Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("oldest silent connection: read %v, want EOF (closed by the server)", err)
	}
	if n := len(ln.slots); n > 2 {
		t.Errorf("%d connections open, cap 2", n)
	}
}
