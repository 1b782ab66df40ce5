package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminServer is the admin listener. It is separate from the public one so
// that /metrics and pprof are never reachable through the API port (the
// gateway's is published to the world); deployments do not publish it.
type adminServer struct {
	srv  *http.Server
	addr net.Addr
	done chan error
}

// AdminHandler is what the admin listener serves: /metrics, and
// /debug/pprof/ when PPROF is on. Exposed for tests.
func (t *Telemetry) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	if t.reg != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(t.reg, promhttp.HandlerOpts{
			// A failing collector must not blank every other series.
			ErrorHandling:       promhttp.ContinueOnError,
			ErrorLog:            slog.NewLogLogger(t.log.Handler(), slog.LevelWarn),
			MaxRequestsInFlight: 4,
			Timeout:             10 * time.Second,
		}))
	}
	if t.settings.PProf {
		// Registered by hand on our own mux: importing net/http/pprof also
		// registers on http.DefaultServeMux, which nothing here serves.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// StartAdmin listens on METRICS_ADDR and serves AdminHandler until Close. A
// listen error is returned at once. With METRICS_ADDR empty it does nothing.
func (t *Telemetry) StartAdmin() error {
	if t.settings.MetricsAddr == "" {
		return nil
	}
	if t.admin != nil {
		return errors.New("admin listener already started")
	}
	ln, err := net.Listen("tcp", t.settings.MetricsAddr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			// Every service defaults to :9090: the second one started on a
			// host without METRICS_ADDR lands here.
			return fmt.Errorf("admin listener (METRICS_ADDR): %w; each service on one host needs its own METRICS_ADDR (e.g. 127.0.0.1:9092), or METRICS_ADDR= to turn metrics off", err)
		}
		return fmt.Errorf("admin listener (METRICS_ADDR): %w", err)
	}
	write := 30 * time.Second
	if t.settings.PProf {
		// CPU profiles and execution traces stream for ?seconds=N; pprof
		// refuses durations at or above the write timeout.
		write = 125 * time.Second
	}
	a := &adminServer{
		srv: &http.Server{
			Handler:           t.AdminHandler(),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      write,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(t.log.Handler(), slog.LevelWarn),
		},
		addr: ln.Addr(),
		done: make(chan error, 1),
	}
	go func() { a.done <- a.srv.Serve(ln) }()
	t.admin = a
	t.log.Info("admin listening", "addr", ln.Addr().String(), "metrics", t.reg != nil, "pprof", t.settings.PProf)
	return nil
}

// AdminAddr is the admin listener's address (useful with port 0); nil when
// it is not running.
func (t *Telemetry) AdminAddr() net.Addr {
	if t.admin == nil {
		return nil
	}
	return t.admin.addr
}

func (a *adminServer) stop(ctx context.Context) error {
	err := a.srv.Shutdown(ctx)
	if err != nil {
		_ = a.srv.Close()
	}
	if serr := <-a.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
