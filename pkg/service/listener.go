package service

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// defaultMaxConnections is MAX_CONNECTIONS' default. An idle connection
// costs ~40 KB (goroutine, buffers), so 1024 of them stay near 40 MB, well
// inside a 128 MiB container, while keep-alive between services needs a
// few dozen.
const defaultMaxConnections = 1024

// defaultNewGrace is how long a connection may stay without a complete
// request header before it may give its slot to a new one at the cap.
const defaultNewGrace = time.Second

// limitListener caps the connections open at once, so that a flood of
// connections costs bounded memory (each holds a goroutine and buffers).
//
// At the cap, a new connection takes the place of the connection that has
// been idle longest (a keep-alive connection between two requests, which its
// client reopens if it needs it), as nginx does with its reusable
// connections. So a flood of idle connections cannot lock out health checks.
// Failing an idle one, it takes the place of the connection that has sent
// no complete request header for longest, once that is newGrace old: a
// client sends its request right after connecting, so such a connection is
// on a very slow network or holding a slot on purpose (slowloris), and
// without this, silent connections would lock everyone out until
// ReadHeaderTimeout and again as soon as they reconnect.
// When every connection is busy, Accept waits for one to finish or go idle,
// and further connections wait in the kernel's accept backlog: the service
// is saturated, and waiting is better than answering nobody.
//
// A connection closed just as its next request arrives fails that request;
// clients retry idempotent requests on a reused connection (Go's http.Client
// does), as they must for the idle timeout anyway.
type limitListener struct {
	net.Listener
	max     int
	slots   chan struct{} // one token per open connection
	idleNow chan struct{} // a connection went idle (wakes a waiting Accept)
	done    chan struct{} // closed by Close
	once    sync.Once
	waiting atomic.Int32 // Accepts waiting for a slot (tests)

	newGrace time.Duration // see defaultNewGrace

	mu    sync.Mutex
	idle  map[*limitConn]time.Time // idle since
	fresh map[*limitConn]time.Time // open since, no complete request header yet
}

func newLimitListener(l net.Listener, max int) *limitListener {
	return &limitListener{
		Listener: l,
		max:      max,
		slots:    make(chan struct{}, max),
		idleNow:  make(chan struct{}, 1),
		done:     make(chan struct{}),
		idle:     make(map[*limitConn]time.Time),
		fresh:    make(map[*limitConn]time.Time),
		newGrace: defaultNewGrace,
	}
}

func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	select {
	case l.slots <- struct{}{}:
		return &limitConn{Conn: c, l: l}, nil
	default:
	}
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	for {
		// A free slot first: a connection is closed only to make room.
		select {
		case l.slots <- struct{}{}:
			return &limitConn{Conn: c, l: l}, nil
		default:
		}
		// Frees its slot at once, if there was one to close; otherwise
		// says when a silent connection becomes closable.
		retry := l.closeOne(time.Now())
		var timeout <-chan time.Time
		stop := func() bool { return false }
		if retry > 0 {
			t := time.NewTimer(retry)
			timeout, stop = t.C, t.Stop
		}
		select {
		case l.slots <- struct{}{}:
			stop()
			return &limitConn{Conn: c, l: l}, nil
		case <-l.idleNow:
		case <-timeout:
		case <-l.done:
			stop()
			_ = c.Close()
			return nil, net.ErrClosed
		}
		stop()
	}
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.done) })
	return err
}

// connState is the http.Server's ConnState hook: it keeps the idle set.
func (l *limitListener) connState(c net.Conn, st http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok { // serving TLS: the listener's conn is inside
		c = tc.NetConn()
	}
	lc, ok := c.(*limitConn)
	if !ok {
		return
	}
	l.mu.Lock()
	// StateNew lasts until the first request header is complete: a
	// connection that sends a partial header stays in it (and one that
	// does so between keep-alive requests stays idle).
	delete(l.idle, lc)
	delete(l.fresh, lc)
	switch st {
	case http.StateIdle:
		l.idle[lc] = time.Now()
	case http.StateNew:
		l.fresh[lc] = time.Now()
	}
	l.mu.Unlock()
	if st == http.StateIdle {
		select {
		case l.idleNow <- struct{}{}:
		default:
		}
	}
}

// closeOne closes the connection idle longest or, if none is idle, the one
// silent longest if it has been so for newGrace. Its slot is freed by
// Close. When nothing could be closed, it returns how long until the
// oldest silent connection may be (0: none is open).
func (l *limitListener) closeOne(now time.Time) time.Duration {
	l.mu.Lock()
	victim, _ := oldest(l.idle)
	retry := time.Duration(0)
	if victim == nil {
		c, since := oldest(l.fresh)
		if age := now.Sub(since); c != nil && age >= l.newGrace {
			victim = c
		} else if c != nil {
			retry = l.newGrace - age
		}
	}
	delete(l.idle, victim)
	delete(l.fresh, victim)
	l.mu.Unlock()
	if victim != nil {
		_ = victim.Close()
	}
	return retry
}

func oldest(m map[*limitConn]time.Time) (*limitConn, time.Time) {
	var o *limitConn
	var since time.Time
	for c, t := range m {
		if o == nil || t.Before(since) {
			o, since = c, t
		}
	}
	return o, since
}

type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.idle, c)
		delete(c.l.fresh, c)
		c.l.mu.Unlock()
		<-c.l.slots
	})
	return err
}
