// Package service is what every service's main shares: a slog logger, an Echo
// server with timeouts, request IDs and one log line per request, liveness
// and readiness endpoints outside any auth middleware, graceful shutdown, and
// the `healthcheck` subcommand that scratch images use as their HEALTHCHECK.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// HeaderRequestID travels from the gateway to protected-data so that one
// public request can be followed through both services' logs.
const HeaderRequestID = echo.HeaderXRequestID

// NewLogger returns a JSON (containers, default) or text logger.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "json", "":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want json or text", format)
	}
}

// Main runs a service: it wires SIGINT/SIGTERM to the context, handles the
// `healthcheck` subcommand, and turns an error from run into one clear line
// and exit code 1. Only Main exits.
func Main(name, defaultAddr string, run func(ctx context.Context, args []string) error) {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		addr := os.Getenv("LISTEN_ADDR")
		if addr == "" {
			addr = defaultAddr
		}
		if err := Healthcheck(addr); err != nil {
			fmt.Fprintf(os.Stderr, "%s healthcheck: %v\n", name, err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	closeLogOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Healthcheck asks the service listening on addr (":6001", "0.0.0.0:6001"...)
// for /healthz on loopback. Scratch images have no curl, so the binary checks
// itself.
func Healthcheck(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz answered %d", resp.StatusCode)
	}
	return nil
}

// Timeouts of the HTTP server. Zero values take the defaults.
type Timeouts struct {
	ReadHeader time.Duration // default 5s: slowloris protection
	Read       time.Duration // default 15s
	Write      time.Duration // default 30s: above any downstream timeout
	Idle       time.Duration // default 120s: keep-alive reuse between services
	Shutdown   time.Duration // default 15s: in-flight requests drain
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&t.ReadHeader, 5*time.Second)
	def(&t.Read, 15*time.Second)
	def(&t.Write, 30*time.Second)
	def(&t.Idle, 120*time.Second)
	def(&t.Shutdown, 15*time.Second)
	return t
}

// ErrorBody is the JSON error shape of every service (RFC 6749 style).
type ErrorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// JSONError answers status with an ErrorBody.
func JSONError(c echo.Context, status int, code, description string) error {
	return c.JSON(status, ErrorBody{Error: code, Description: description})
}

// NewEcho returns an Echo with request IDs, panic recovery, one log line per
// request and JSON errors. Health endpoints added by Health are not logged.
func NewEcho(log *slog.Logger) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.Logger.SetOutput(io.Discard)
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		status := http.StatusInternalServerError
		code, desc := "server_error", "internal error"
		var he *echo.HTTPError
		if errors.As(err, &he) {
			status = he.Code
			code = strings.ReplaceAll(strings.ToLower(http.StatusText(status)), " ", "_")
			desc = fmt.Sprint(he.Message)
		} else {
			log.Error("unhandled error", "err", err, "request_id", c.Response().Header().Get(HeaderRequestID))
		}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(status)
			return
		}
		_ = JSONError(c, status, code, desc)
	}
	e.Use(middleware.RequestIDWithConfig(middleware.RequestIDConfig{
		// Accept an upstream ID only if it is short and printable, so a caller
		// cannot inject log lines or huge headers.
		RequestIDHandler: func(c echo.Context, id string) {},
		Generator:        newRequestID,
	}))
	e.Use(sanitizeRequestID)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisableStackAll: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			log.Error("panic recovered", "err", err, "request_id", c.Response().Header().Get(HeaderRequestID), "stack", string(stack))
			return err
		},
	}))
	e.Use(middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		Skipper:      func(c echo.Context) bool { p := c.Path(); return p == "/healthz" || p == "/readyz" },
		LogMethod:    true,
		LogURIPath:   true,
		LogStatus:    true,
		LogLatency:   true,
		LogRequestID: true,
		LogRemoteIP:  true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			if !log.Enabled(c.Request().Context(), slog.LevelInfo) {
				return nil
			}
			attrs := []slog.Attr{
				slog.String("method", v.Method), slog.String("path", v.URIPath),
				slog.Int("status", v.Status), slog.Duration("latency", v.Latency),
				slog.String("request_id", v.RequestID), slog.String("remote_ip", v.RemoteIP),
			}
			if extra, ok := c.Get(logAttrsKey).([]slog.Attr); ok {
				attrs = append(attrs, extra...)
			}
			log.LogAttrs(c.Request().Context(), slog.LevelInfo, "request", attrs...)
			return nil
		},
	}))
	return e
}

const logAttrsKey = "service.logattrs"

// AddLogAttrs adds attributes to the request's log line (e.g. the calling
// client ID). Never pass secrets or tokens.
func AddLogAttrs(c echo.Context, attrs ...slog.Attr) {
	prev, _ := c.Get(logAttrsKey).([]slog.Attr)
	c.Set(logAttrsKey, append(prev, attrs...))
}

// Check is one named readiness condition.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Health registers /healthz (the process is alive and serving) and /readyz
// (every check passes). Failures answer 503 with the names of the failing
// checks only: reasons go to the log, not to anonymous callers.
func Health(e *echo.Echo, log *slog.Logger, checks ...Check) {
	e.GET("/healthz", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET("/readyz", func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
		defer cancel()
		failed := []string{}
		for _, ch := range checks {
			if err := ch.Fn(ctx); err != nil {
				failed = append(failed, ch.Name)
				log.Debug("readiness check failed", "check", ch.Name, "err", err)
			}
		}
		if len(failed) > 0 {
			c.Response().Header().Set("Retry-After", "1")
			return c.JSON(http.StatusServiceUnavailable, map[string]any{"status": "not ready", "failed": failed})
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	})
}

// Serve listens on addr and serves e until ctx is done, then shuts down
// gracefully within the shutdown timeout. A listen error is returned at once.
func Serve(ctx context.Context, log *slog.Logger, e *echo.Echo, addr string, t Timeouts) error {
	t = t.withDefaults()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           e,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", t.Shutdown.String())
	sctx, cancel := context.WithTimeout(context.Background(), t.Shutdown)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		<-errc
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}

// NewDiscardLogger is a logger that writes nowhere.
func NewDiscardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
