// Command probe sends a bounded number of GETs to a URL and prints a JSON
// summary: successes, failures, and how the answers spread over the
// X-Served-By header and over the resolved addresses of the URL's host.
//
// The compose tests run it inside a FROM scratch container attached to a
// Swarm overlay network when the host cannot reach the stack through the
// routing mesh (kernels without IPVS). It balances with pkg/lb, so a name
// that resolves to several gateway tasks gets all of them called.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/lb"
)

type summary struct {
	OK       int64            `json:"ok"`
	Failed   int64            `json:"failed"`
	FirstErr string           `json:"first_error,omitempty"`
	ServedBy map[string]int64 `json:"served_by"`
	Addrs    map[string]int64 `json:"addrs"`
}

func main() {
	url := flag.String("url", "", "URL to GET")
	n := flag.Int("n", 100, "number of requests")
	c := flag.Int("c", 4, "concurrent workers")
	wait := flag.Duration("wait", 60*time.Second, "retry the first request for this long (services starting)")
	timeout := flag.Duration("timeout", 5*time.Second, "per-request timeout")
	expect := flag.Int("expect", http.StatusOK, "the status every answer must have")
	body := flag.Bool("body", false, "print one answer's body instead of a load summary (a curl for scratch images)")
	flag.Parse()
	if *body {
		*n = 0
	}
	if err := run(*url, *n, *c, *expect, *wait, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func run(url string, n, workers, expect int, wait, timeout time.Duration) error {
	if url == "" || n < 0 || workers <= 0 {
		return fmt.Errorf("need -url, -n >= 0, -c > 0")
	}
	tr, err := lb.NewTransport(lb.Config{ResolveEvery: time.Second})
	if err != nil {
		return err
	}
	defer tr.Close()
	client := &http.Client{Transport: tr, Timeout: timeout}

	var last []byte // the latest body, for -body (n == 0)
	get := func() (string, error) {
		resp, err := client.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if n == 0 {
			last, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
		}
		if resp.StatusCode != expect {
			return "", fmt.Errorf("status %d, want %d", resp.StatusCode, expect)
		}
		return resp.Header.Get("X-Served-By"), nil
	}

	// Wait until the stack answers as expected once: tasks start in any order in Swarm.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for {
		if _, err := get(); err == nil {
			break
		} else if ctx.Err() != nil {
			return fmt.Errorf("no successful answer within %s: %w", wait, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if n == 0 {
		_, err := os.Stdout.Write(last)
		return err
	}

	s := summary{ServedBy: map[string]int64{}, Addrs: map[string]int64{}}
	before := map[string]uint64{}
	for _, a := range tr.Stats() {
		before[a.Addr.String()] = a.Requests
	}
	var (
		mu   sync.Mutex
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				by, err := get()
				mu.Lock()
				if err != nil {
					s.Failed++
					if s.FirstErr == "" {
						s.FirstErr = err.Error()
					}
				} else {
					s.OK++
					s.ServedBy[by]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, a := range tr.Stats() {
		s.Addrs[a.Addr.String()] = int64(a.Requests - before[a.Addr.String()])
	}
	return json.NewEncoder(os.Stdout).Encode(s)
}
