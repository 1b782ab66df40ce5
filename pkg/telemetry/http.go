package telemetry

import (
	"errors"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// RouteUnmatched labels requests no route matched: the raw path is caller
// input and would let anyone create series at will.
const RouteUnmatched = "unmatched"

// MethodOther labels any method outside the standard set.
const MethodOther = "other"

// latencyBuckets span a cached-token answer (well under a millisecond) to a
// downstream call that hits its timeout (seconds).
var latencyBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
	0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

type httpMetrics struct {
	duration *prometheus.HistogramVec

	// observers caches the histogram child per label set, so that the hot
	// path is one lock-free map read and no allocation (WithLabelValues
	// hashes the values and formats the status on every call). The map is
	// copied on write: label sets are few (bounded routes x methods x
	// statuses) and all appear in the first moments of traffic.
	observers atomic.Pointer[map[obsKey]prometheus.Observer]
	mu        sync.Mutex // serialises writers
}

type obsKey struct {
	route, method string
	status        int
}

func newHTTPMetrics() *httpMetrics {
	return &httpMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_server_request_duration_seconds",
			Help:    "Time to answer an HTTP request on the public listener, by route template, method and status.",
			Buckets: latencyBuckets,
		}, []string{"route", "method", "status"}),
	}
}

func (m *httpMetrics) observer(k obsKey) prometheus.Observer {
	if cur := m.observers.Load(); cur != nil {
		if o, ok := (*cur)[k]; ok {
			return o
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.observers.Load()
	if cur != nil {
		if o, ok := (*cur)[k]; ok {
			return o
		}
	}
	next := make(map[obsKey]prometheus.Observer, 1+len(ptrMap(cur)))
	for kk, o := range ptrMap(cur) {
		next[kk] = o
	}
	o := m.duration.WithLabelValues(k.route, k.method, strconv.Itoa(k.status))
	next[k] = o
	m.observers.Store(&next)
	return o
}

func ptrMap(p *map[obsKey]prometheus.Observer) map[obsKey]prometheus.Observer {
	if p == nil {
		return nil
	}
	return *p
}

// method maps the request method onto a fixed set.
func method(m string) string {
	switch m {
	case http.MethodGet:
		return http.MethodGet
	case http.MethodHead:
		return http.MethodHead
	case http.MethodPost:
		return http.MethodPost
	case http.MethodPut:
		return http.MethodPut
	case http.MethodPatch:
		return http.MethodPatch
	case http.MethodDelete:
		return http.MethodDelete
	case http.MethodOptions:
		return http.MethodOptions
	default:
		return MethodOther
	}
}

// routes knows the route templates registered on an Echo, read once at the
// first request (every route is registered before serving).
type routes struct {
	e    *echo.Echo
	once sync.Once
	set  map[string]bool
}

// label is the route template that served c, or RouteUnmatched. err is what
// the handler chain returned: Echo's 404 handler runs with whatever partial
// template the router reached, which must not become a label.
func (r *routes) label(c echo.Context, err error) string {
	if err != nil && errors.Is(err, echo.ErrNotFound) {
		return RouteUnmatched
	}
	r.once.Do(func() {
		r.set = make(map[string]bool)
		for _, rt := range r.e.Routes() {
			r.set[rt.Path] = true
		}
	})
	if p := c.Path(); r.set[p] {
		return p
	}
	return RouteUnmatched
}

// commit turns a handler's error into the response now (as Echo would after
// the chain), so that the status seen by this and outer middlewares is the
// one the caller gets.
func commit(c echo.Context, err error) {
	if err != nil && !c.Response().Committed {
		c.Error(err)
	}
}

func statusOf(c echo.Context) int {
	s := c.Response().Status
	if s < 100 || s > 599 {
		return 0
	}
	return s
}

// Role says how far a service trusts its callers' trace context.
type Role int

const (
	// Internal services adopt the caller's W3C trace context, so that their
	// spans join the caller's trace.
	Internal Role = iota
	// Edge services (the public gateway) start a new trace for every request
	// and only link to a trace context a caller sent: anyone on the
	// internet could otherwise choose our trace IDs and sampling.
	Edge
)

// Instrument adds the tracing middleware (when tracing is on) and the
// request metrics middleware (when metrics are on) to e. Call it after
// service.NewEcho and before registering routes; it runs inside the access
// log middleware, so the request's log line carries the trace ID.
func (t *Telemetry) Instrument(e *echo.Echo, role Role) {
	rt := &routes{e: e}
	if t.tp != nil {
		e.Use(t.traceMiddleware(rt, role))
	}
	if t.http != nil {
		e.Use(t.http.middleware(rt))
	}
}

func (m *httpMetrics) middleware(rt *routes) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			commit(c, err)
			k := obsKey{route: rt.label(c, err), method: method(c.Request().Method), status: statusOf(c)}
			m.observer(k).Observe(time.Since(start).Seconds())
			return nil
		}
	}
}

// buildInfo is the main module's version and VCS revision, as stamped by the
// Go toolchain ("(devel)" and "unknown" for plain builds).
func buildInfo() (version, revision, goVersion string) {
	version, revision, goVersion = "unknown", "unknown", "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	goVersion = bi.GoVersion
	if bi.Main.Version != "" {
		version = bi.Main.Version
	}
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && revision != "unknown" {
		revision += "-dirty"
	}
	return
}

func newBuildInfoCollector(service string) prometheus.Collector {
	version, revision, goVersion := buildInfo()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "build_info",
		Help: "Always 1; labels say which service, version, VCS revision and Go version is running.",
		ConstLabels: prometheus.Labels{
			"service": service, "version": version, "revision": revision, "goversion": goVersion,
		},
	})
	g.Set(1)
	return g
}
