package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// floodSummary is what -flood prints.
type floodSummary struct {
	Opened         int64   `json:"opened"`           // connections established
	DialFailed     int64   `json:"dial_failed"`      // connections that could not be opened
	Answered       int64   `json:"answered"`         // first request answered 200 on its connection
	ClosedByServer int64   `json:"closed_by_server"` // during the hold (shed at the cap, idle timeout)
	HealthOK       int64   `json:"health_ok"`        // fresh-connection /healthz during the flood
	HealthFailed   int64   `json:"health_failed"`
	HealthMaxMs    float64 `json:"health_max_ms"`
	FirstErr       string  `json:"first_error,omitempty"`
}

// flood opens n keep-alive connections to the URL's host, sends one GET of
// the URL on each and reads the answer, then holds them all open for hold:
// idle keep-alive connections, the cheapest way to make a server hold
// memory. Meanwhile a fresh connection asks /healthz every 500 ms, as a
// health checker would. Bounded: n connections, hold plus a dial deadline.
func flood(rawURL string, n int, hold, timeout time.Duration) error {
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		return err
	}
	host := req.URL.Host
	if req.URL.Port() == "" {
		host = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	var (
		s     floodSummary
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
		next  atomic.Int64
	)
	note := func(err error) {
		mu.Lock()
		if s.FirstErr == "" {
			s.FirstErr = err.Error()
		}
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), hold+2*time.Minute)
	defer cancel()
	d := net.Dialer{Timeout: timeout}
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				c, err := d.DialContext(ctx, "tcp", host)
				if err != nil {
					atomic.AddInt64(&s.DialFailed, 1)
					note(err)
					continue
				}
				atomic.AddInt64(&s.Opened, 1)
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				_ = c.SetDeadline(time.Now().Add(timeout))
				br := bufio.NewReader(c)
				if err := req.Write(c); err != nil {
					note(err)
					continue
				}
				resp, err := http.ReadResponse(br, req)
				if err != nil {
					note(err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					atomic.AddInt64(&s.Answered, 1)
				}
				_ = c.SetDeadline(time.Time{})
				// Idle from here on; a read returns when the server closes it.
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := br.ReadByte(); err != nil && ctx.Err() == nil {
						atomic.AddInt64(&s.ClosedByServer, 1)
					}
				}()
			}
		}()
	}

	health := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	hurl := *req.URL
	hurl.Path, hurl.RawQuery = "/healthz", ""
	stop := time.Now().Add(hold)
	for time.Now().Before(stop) {
		start := time.Now()
		resp, err := health.Get(hurl.String())
		ms := float64(time.Since(start).Microseconds()) / 1000
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("healthz status %d", resp.StatusCode)
			}
		}
		if err != nil {
			atomic.AddInt64(&s.HealthFailed, 1)
			note(fmt.Errorf("health: %w", err))
		} else {
			atomic.AddInt64(&s.HealthOK, 1)
		}
		if ms > s.HealthMaxMs {
			s.HealthMaxMs = ms
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Counted before closing: from here on the closes are ours.
	closed := atomic.LoadInt64(&s.ClosedByServer)
	cancel()
	mu.Lock()
	for _, c := range conns {
		_ = c.Close()
	}
	mu.Unlock()
	wg.Wait()
	s.ClosedByServer = closed
	return json.NewEncoder(os.Stdout).Encode(&s)
}
