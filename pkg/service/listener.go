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

// limitListener caps the connections open at once, so that a flood of
// connections costs bounded memory (each holds a goroutine and buffers).
//
// At the cap, a new connection takes the place of the connection that has
// been idle longest (a keep-alive connection between two requests, which its
// client reopens if it needs it), as nginx does with its reusable
// connections. So a flood of idle connections cannot lock out health checks.
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

	mu   sync.Mutex
	idle map[*limitConn]time.Time // idle since
}

func newLimitListener(l net.Listener, max int) *limitListener {
	return &limitListener{
		Listener: l,
		max:      max,
		slots:    make(chan struct{}, max),
		idleNow:  make(chan struct{}, 1),
		done:     make(chan struct{}),
		idle:     make(map[*limitConn]time.Time),
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
		l.closeOldestIdle() // frees its slot at once, if there was one
		select {
		case l.slots <- struct{}{}:
			return &limitConn{Conn: c, l: l}, nil
		case <-l.idleNow:
		case <-l.done:
			_ = c.Close()
			return nil, net.ErrClosed
		}
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
	if st == http.StateIdle {
		l.idle[lc] = time.Now()
	} else {
		delete(l.idle, lc)
	}
	l.mu.Unlock()
	if st == http.StateIdle {
		select {
		case l.idleNow <- struct{}{}:
		default:
		}
	}
}

// closeOldestIdle closes the connection idle longest, if any. Its slot is
// freed by Close.
func (l *limitListener) closeOldestIdle() {
	l.mu.Lock()
	var oldest *limitConn
	var since time.Time
	for c, t := range l.idle {
		if oldest == nil || t.Before(since) {
			oldest, since = c, t
		}
	}
	delete(l.idle, oldest)
	l.mu.Unlock()
	if oldest != nil {
		_ = oldest.Close()
	}
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
		c.l.mu.Unlock()
		<-c.l.slots
	})
	return err
}
