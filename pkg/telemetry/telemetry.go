// Package telemetry is what an operator sees of a service: Prometheus
// metrics and, on request, pprof on a separate admin listener (never the
// public port), and OpenTelemetry traces exported over OTLP/HTTP when the
// standard OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set.
//
// A main wires it in a few lines:
//
//	tel, err := telemetry.New(ctx, "public-gateway", telemetry.Settings{MetricsAddr: cfg.MetricsAddr, PProf: cfg.PProf}, log)
//	defer tel.Close()              // stops the admin listener, flushes spans
//	log = tel.Logger(log)          // trace_id/span_id on lines logged with a context
//	e := service.NewEcho(log)
//	tel.Instrument(e, telemetry.Edge)
//	tel.Register(telemetry.TokenSourceCollector(tokens))
//	err = tel.StartAdmin()
//
// Metrics use their own registry, not the global default, so that nothing a
// library registers behind our back is exported. No label value ever comes
// from caller input: routes are Echo's templates (unknown ones are
// "unmatched"), methods a fixed set, replicas the resolved IP addresses.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Settings come from every service's METRICS_ADDR and PPROF (read with the
// rest of the shared configuration in pkg/service).
type Settings struct {
	// MetricsAddr is the admin listener serving /metrics (and pprof when
	// enabled). Empty disables it, and with it every metric.
	MetricsAddr string
	// PProf serves net/http/pprof under /debug/pprof/ on the admin listener.
	PProf bool
}

// Validate reports settings that cannot work, naming the variable and a
// valid example without echoing the value.
func (s Settings) Validate() error {
	var errs []error
	if s.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(s.MetricsAddr); err != nil {
			errs = append(errs, errors.New("METRICS_ADDR: want host:port or :port (e.g. :9090), or empty to turn metrics off"))
		}
	}
	if s.PProf && s.MetricsAddr == "" {
		errs = append(errs, errors.New("PPROF: needs the admin listener; set METRICS_ADDR (e.g. :9090) or PPROF=false"))
	}
	return errors.Join(errs...)
}

// Telemetry owns a service's registry, admin listener and tracer provider.
// The zero value is not usable; build it with New and Close it.
type Telemetry struct {
	service  string
	settings Settings
	log      *slog.Logger

	reg  *prometheus.Registry // nil when metrics are off
	http *httpMetrics

	tp *sdktrace.TracerProvider // nil when tracing is off

	admin *adminServer

	closeOnce sync.Once
	closeErr  error
}

// New builds the registry (Go runtime, process and build-info collectors
// included) when metrics are on, and the tracer provider when the OTLP
// endpoint is set. It starts no listener: see StartAdmin.
func New(ctx context.Context, service string, s Settings, log *slog.Logger) (*Telemetry, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Telemetry{service: service, settings: s, log: log}
	if s.MetricsAddr != "" {
		t.reg = prometheus.NewRegistry()
		t.reg.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
			newBuildInfoCollector(service),
		)
		t.http = newHTTPMetrics()
		t.reg.MustRegister(t.http.duration)
	}
	tp, err := newTracerProvider(ctx, service, log)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	t.tp = tp
	if tp != nil {
		log.Info("tracing on: exporting spans over OTLP/HTTP")
	}
	return t, nil
}

// MetricsEnabled reports whether METRICS_ADDR is set.
func (t *Telemetry) MetricsEnabled() bool { return t.reg != nil }

// TracingEnabled reports whether an OTLP endpoint is configured.
func (t *Telemetry) TracingEnabled() bool { return t.tp != nil }

// Registry is the service's own registry; nil when metrics are off.
func (t *Telemetry) Registry() *prometheus.Registry { return t.reg }

// Register adds collectors (e.g. TokenSourceCollector) to the registry. It
// does nothing when metrics are off, and panics on a duplicate, which is a
// programming error.
func (t *Telemetry) Register(cs ...prometheus.Collector) {
	if t.reg == nil {
		return
	}
	t.reg.MustRegister(cs...)
}

// closeTimeout bounds the span flush and the admin listener's shutdown.
const closeTimeout = 5 * time.Second

// Close stops the admin listener and flushes pending spans, each within a
// few seconds, so that a dead collector cannot hold up the exit.
func (t *Telemetry) Close() error {
	t.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		var errs []error
		if t.admin != nil {
			if err := t.admin.stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("admin listener: %w", err))
			}
		}
		if t.tp != nil {
			if err := t.tp.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("flushing spans: %w", err))
			}
		}
		t.closeErr = errors.Join(errs...)
	})
	return t.closeErr
}
