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
	"strings"
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
	warm := flag.Int("warm", 1, "before counting, wait for this many answers in a row as expected (every replica ready, not just one)")
	body := flag.Bool("body", false, "print one answer's body instead of a load summary (a curl for scratch images)")
	tokenURL := flag.String("token-url", "", "first get a client-credentials token here (-client-id, -client-secret) and send it as a Bearer token")
	clientID := flag.String("client-id", "", "with -token-url")
	clientSecret := flag.String("client-secret", "", "with -token-url")
	floodN := flag.Int("flood", 0, "instead: open this many keep-alive connections, one GET on each, and hold them (-hold)")
	hold := flag.Duration("hold", 20*time.Second, "with -flood: how long to hold the connections")
	flag.Parse()
	if *floodN > 0 {
		if err := flood(*url, *floodN, *hold, *timeout); err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
		return
	}
	if *body {
		*n = 0
	}
	if *tokenURL != "" {
		tok, err := fetchToken(*tokenURL, *clientID, *clientSecret, *wait, *timeout)
		if err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
		bearer = "Bearer " + tok
	}
	if err := run(*url, *n, *c, *expect, *warm, *wait, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

// bearer is the Authorization header of every request, if -token-url.
var bearer string

// fetchToken asks a token endpoint for a client-credentials token
// (client_secret_basic), retrying for wait while the endpoint starts.
func fetchToken(tokenURL, id, secret string, wait, timeout time.Duration) (string, error) {
	c := &http.Client{Timeout: timeout}
	deadline := time.Now().Add(wait)
	for {
		req, err := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader("grant_type=client_credentials"))
		if err != nil {
			return "", err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(id, secret)
		resp, err := c.Do(req)
		if err == nil {
			var body struct {
				AccessToken string `json:"access_token"`
			}
			derr := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body)
			resp.Body.Close()
			switch {
			case resp.StatusCode != http.StatusOK:
				err = fmt.Errorf("token endpoint answered %d", resp.StatusCode)
			case derr != nil || body.AccessToken == "":
				err = fmt.Errorf("token endpoint: no access_token in the answer")
			default:
				return body.AccessToken, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("token for %s: %w", id, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func run(url string, n, workers, expect, warm int, wait, timeout time.Duration) error {
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
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return "", err
		}
		if bearer != "" {
			req.Header.Set("Authorization", bearer)
		}
		resp, err := client.Do(req)
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
	for inARow := 0; inARow < warm; {
		_, err := get()
		if err == nil {
			inARow++
			continue
		}
		inARow = 0
		if ctx.Err() != nil {
			return fmt.Errorf("not %d answers in a row as expected within %s: %w", warm, wait, err)
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
