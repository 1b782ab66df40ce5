// Command twohop is the floor the public route stands on, for `make bench`:
// a net/http front that calls a net/http back end with a fixed bearer string
// and merges the same JSON as public-gateway, with no framework, no auth, no
// logging and no metrics. Run twice, as two processes:
//
//	ROLE=back  LISTEN_ADDR=127.0.0.1:7002 twohop
//	ROLE=front LISTEN_ADDR=127.0.0.1:7001 BACK_URL=http://127.0.0.1:7002 twohop
//
// GET /api/public/data on the front answers
// {"publicData":"hello world","protectedData":"here I am"}, like the gateway.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// bearer is what the front sends and the back end expects: a fixed string
// compare stands in for the token the real services carry.
const bearer = "Bearer fixed-yardstick-token"

type protectedBody struct {
	ProtectedData string `json:"protectedData"`
}

type publicBody struct {
	PublicData    string `json:"publicData"`
	ProtectedData string `json:"protectedData"`
}

func main() {
	addr := os.Getenv("LISTEN_ADDR")
	var h http.Handler
	switch os.Getenv("ROLE") {
	case "back":
		h = back()
	case "front":
		back := os.Getenv("BACK_URL")
		if back == "" {
			fail(errors.New("BACK_URL is empty: want e.g. http://127.0.0.1:7002"))
		}
		h = front(back + "/api/protected/data")
	default:
		fail(errors.New("ROLE must be front or back"))
	}
	if os.Getenv("PPROF") == "true" && os.Getenv("METRICS_ADDR") != "" {
		// For make bench's profiles only (BENCH_PROFILE); a separate
		// listener, so the yardstick's own path stays bare.
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.Handle("/debug/pprof/allocs", pprof.Handler("allocs"))
		go func() { _ = http.ListenAndServe(os.Getenv("METRICS_ADDR"), mux) }()
	}
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "twohop:", err)
	os.Exit(1)
}

func back() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/protected/data" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != bearer {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(protectedBody{ProtectedData: "here I am"})
	})
}

func front(backURL string) http.Handler {
	// Enough idle connections per host for c=64: the default (2) would make
	// most calls dial a new connection, measuring connect() instead of the
	// architecture.
	c := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/public/data" {
			http.NotFound(w, r)
			return
		}
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, backURL, nil)
		if err != nil {
			http.Error(w, "bad back end URL", http.StatusInternalServerError)
			return
		}
		req.Header.Set("Authorization", bearer)
		req.Header.Set("Accept", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			http.Error(w, "back end unreachable", http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil || resp.StatusCode != http.StatusOK {
			http.Error(w, "back end failed", http.StatusBadGateway)
			return
		}
		var pb protectedBody
		if err := json.Unmarshal(b, &pb); err != nil {
			http.Error(w, "back end answered an unexpected body", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(publicBody{PublicData: "hello world", ProtectedData: pb.ProtectedData})
	})
}
