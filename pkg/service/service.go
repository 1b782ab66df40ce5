// Package service is what every service's main shares: a slog logger, an Echo
// server with timeouts, request IDs and one log line per request, liveness
// and readiness endpoints outside any auth middleware, graceful shutdown, and
// the `healthcheck` subcommand that scratch images use as their HEALTHCHECK.
package service

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// HeaderRequestID travels from the gateway to protected-data so that one
// public request can be followed through both services' logs.
const HeaderRequestID = echo.HeaderXRequestID

// HeaderServedBy names the protected-data replica that answered, so that
// load spreading can be seen from outside (the gateway passes it on only
// when EXPOSE_SERVED_BY is set).
const HeaderServedBy = "X-Served-By"

// NewLogger returns a JSON (containers, default) or text logger. Errors do
// not repeat the setting: it is a variable's value.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	lv, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch strings.ToLower(strings.TrimSpace(format)) {
	case "json", "":
		h = slog.NewJSONHandler(w, opts)
	case "text":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, errors.New("log format: want json or text")
	}
	if f, ok := w.(interface{ Flush() }); ok {
		// A batched writer: an error line is often the last one before a
		// crash, so it (and everything before it) goes out at once.
		h = flushOnError{Handler: h, flush: f.Flush}
	}
	return slog.New(h), nil
}

// flushOnError flushes a batched log writer after every record at Error
// level or above.
type flushOnError struct {
	slog.Handler
	flush func()
}

func (h flushOnError) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelError {
		h.flush()
	}
	return err
}

func (h flushOnError) WithAttrs(as []slog.Attr) slog.Handler {
	return flushOnError{Handler: h.Handler.WithAttrs(as), flush: h.flush}
}

func (h flushOnError) WithGroup(name string) slog.Handler {
	return flushOnError{Handler: h.Handler.WithGroup(name), flush: h.flush}
}

// parseLevel reads debug, info, warn or error (empty: info).
func parseLevel(level string) (slog.Level, error) {
	var lv slog.Level
	if level = strings.TrimSpace(level); level == "" {
		return slog.LevelInfo, nil
	}
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return 0, errors.New("log level: want debug, info, warn or error")
	}
	return lv, nil
}

// Main runs a service: it wires SIGINT/SIGTERM to the context, handles the
// `healthcheck` subcommand, and turns an error from run into one clear line
// and exit code 1. Only Main exits.
// defaultAddr is the LISTEN_ADDR default, the same one the service gives
// Load.
// subcommands are the service's own (handled by run), for the usage line
// and the argument check: settings are environment variables, so any other
// argument (say --help, or a flag from another program's habits) is a
// mistake worth a word, not something to start and ignore.
func Main(name, defaultAddr string, run func(ctx context.Context, args []string) error, subcommands ...string) {
	if help, err := checkArgs(os.Args[1:], subcommands); help || err != nil {
		u := usage(name, subcommands)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n%s", name, err, u)
			os.Exit(2)
		}
		fmt.Print(u)
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		if err := healthcheckEnv(defaultAddr); err != nil {
			fmt.Fprintf(os.Stderr, "%s healthcheck: %v\n", name, err)
			os.Exit(1)
		}
		return
	}
	// A panic that escapes run still gets the batched log lines out first:
	// they are the ones that explain it.
	defer func() {
		if r := recover(); r != nil {
			closeLogOutput()
			panic(r)
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	closeLogOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// healthcheckEnv runs Healthcheck, or HealthcheckTLS when the environment
// (the container's, the same as the service's) sets TLS_CERT_FILE.
func healthcheckEnv(defaultAddr string) error {
	addr := cmp.Or(os.Getenv("LISTEN_ADDR"), defaultAddr)
	if cert := os.Getenv("TLS_CERT_FILE"); cert != "" {
		return HealthcheckTLS(addr, cert, os.Getenv("TLS_KEY_FILE"))
	}
	return Healthcheck(addr)
}

// Healthcheck asks the service listening on addr (":6001", "0.0.0.0:6001"...)
// for /healthz on loopback. Scratch images have no curl, so the binary checks
// itself.
func Healthcheck(addr string) error { return healthcheck(addr, nil) }

// HealthcheckTLS is Healthcheck for a service serving TLS from certFile and
// keyFile. It presents that same certificate, which the service accepts as
// a client certificate even when it requires them (TLS_CLIENT_CA_FILE), so
// the check works with mTLS too and needs no port of its own.
func HealthcheckTLS(addr, certFile, keyFile string) error {
	cfg, err := healthcheckTLSConfig(certFile, keyFile)
	if err != nil {
		return err
	}
	return healthcheck(addr, cfg)
}

func healthcheck(addr string, tlsCfg *tls.Config) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("LISTEN_ADDR: not host:port or :port")
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "http://"
	c := &http.Client{Timeout: 3 * time.Second}
	if tlsCfg != nil {
		scheme = "https://"
		c.Transport = &http.Transport{TLSClientConfig: tlsCfg, Proxy: nil}
		defer c.CloseIdleConnections()
	}
	resp, err := c.Get(scheme + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz answered %d", resp.StatusCode)
	}
	return nil
}

// Timeouts of the HTTP server.
const (
	readHeaderTimeout = 5 * time.Second  // slowloris protection
	readTimeout       = 15 * time.Second // whole request
	writeTimeout      = 30 * time.Second // above any downstream timeout
	// idleTimeout bounds how long an idle keep-alive connection holds one
	// of MAX_CONNECTIONS' slots and its buffers: long enough for reuse
	// between services under steady traffic, short enough that a flood of
	// idle connections is shed quickly.
	idleTimeout     = 30 * time.Second
	shutdownTimeout = 15 * time.Second // in-flight requests drain
)

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
	// remote_ip is the peer's address unless TrustProxies says otherwise:
	// a forwarding header from anyone else is forgeable.
	e.IPExtractor = echo.ExtractIPDirect()
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
				// Milliseconds as a float: a unit in the name, and a number
				// that log queries can compare in JSON and text alike.
				slog.Int("status", v.Status), slog.Float64("latency_ms", float64(v.Latency.Microseconds())/1000),
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

// TrustProxies makes remote_ip the client address that the trusted
// proxies (Base.TrustedProxies, checked by Load) put in X-Forwarded-For.
// With none, the peer address is used and the header ignored.
func TrustProxies(e *echo.Echo, b Base) {
	if len(b.proxies) == 0 {
		e.IPExtractor = echo.ExtractIPDirect()
		return
	}
	// Echo trusts loopback and private ranges by default: only the
	// configured ranges are trusted here.
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range b.proxies {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{
			IP:   p.Addr().AsSlice(),
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		}))
	}
	e.IPExtractor = echo.ExtractIPFromXFFHeader(opts...)
}

// Serve listens on b.ListenAddr and serves e until ctx is done, then shuts
// down gracefully within the shutdown timeout. At most b.MaxConnections
// connections are open at once (see limitListener). A listen error is
// returned at once. afterListen (e.g. starting the admin listener) runs
// once the API address is bound: a side listener on an ephemeral port can
// then never take the API's port, which a restarted process wants back.
func Serve(ctx context.Context, log *slog.Logger, e *echo.Echo, b Base, afterListen ...func() error) error {
	inner, err := net.Listen("tcp", b.ListenAddr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", b.ListenAddr, err)
	}
	for _, f := range afterListen {
		if err := f(); err != nil {
			inner.Close()
			return err
		}
	}
	limit := b.MaxConnections
	if limit <= 0 { // a Base not read by Load
		limit = defaultMaxConnections
	}
	ln := newLimitListener(inner, limit)
	srv := &http.Server{
		Handler:           e,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnState:         ln.connState,
	}
	errc := make(chan error, 1)
	tlsMode := "off"
	if b.tls != nil {
		// ServeTLS adds h2 and http/1.1 to ALPN; the certificate comes
		// from GetCertificate, hence no file names here.
		// ServeTLS sets up HTTP/2 (TLSNextProto["h2"]) before any
		// connection is accepted, so reading it at a handshake is safe.
		srv.TLSConfig = b.tls.config(log, func() bool { _, ok := srv.TLSNextProto["h2"]; return ok })
		tlsMode = "on"
		if b.tls.clientCA != nil {
			tlsMode = "mutual"
		}
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	log.Info("listening", "addr", ln.Addr().String(), "max_connections", ln.max, "tls", tlsMode)
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", shutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
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

// checkArgs says whether args ask for help, or are not a subcommand this
// service knows (the subcommand's own flags are its business).
func checkArgs(args, subcommands []string) (help bool, err error) {
	if len(args) == 0 {
		return false, nil
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		return true, nil
	case "healthcheck":
		return false, nil
	}
	if slices.Contains(subcommands, args[0]) {
		return false, nil
	}
	return false, errors.New("unknown argument (settings are environment variables, not flags)")
}

func usage(name string, subcommands []string) string {
	cmds := strings.Join(append([]string{"healthcheck"}, subcommands...), " | ")
	return fmt.Sprintf("usage: %s [%s]\n"+
		"With no argument it runs the service, configured by environment variables\n"+
		"(README.md, Configuration); healthcheck asks the running service's /healthz.\n", name, cmds)
}
