package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

const tracerName = "github.com/wristband-m2m-go/wristband-m2m-go/pkg/telemetry"

// propagator is W3C trace context only: traceparent/tracestate, the header
// every OpenTelemetry SDK and most proxies understand.
var propagator = propagation.TraceContext{}

// TracingConfigured reports whether the standard OpenTelemetry environment
// asks for trace export: OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set, and OTEL_SDK_DISABLED not true.
func TracingConfigured() bool {
	if strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// newTracerProvider returns nil when tracing is not configured. Otherwise it
// installs a provider exporting in batches over OTLP/HTTP (endpoint,
// headers, timeout and sampler from the standard OTEL_* variables) as the
// global one, so that otel.Tracer in m2m and jwtauth reaches it, and the W3C
// trace-context propagator.
func newTracerProvider(ctx context.Context, service string, log *slog.Logger) (*sdktrace.TracerProvider, error) {
	if !TracingConfigured() {
		return nil, nil
	}
	// The SDK takes a bad endpoint silently and exports nowhere: say so at
	// start, naming the variable (an endpoint may carry credentials: no value).
	for _, name := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		if v := os.Getenv(name); v != "" {
			if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, fmt.Errorf("%s: not an http(s) URL (e.g. http://otel-collector:4318)", name)
			}
		}
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, err
	}
	version, _, _ := buildInfo()
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, read last, win.
	res, err := resource.New(ctx,
		resource.WithAttributes(
			attribute.String("service.name", service),
			attribute.String("service.version", version),
		),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagator)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: " + err.Error())
	}))
	return tp, nil
}

// untraced routes are probed every few seconds by Docker and Kubernetes: a
// trace per probe would drown the real ones. They are still counted.
var untraced = map[string]bool{"/healthz": true, "/readyz": true}

// traceMiddleware starts a server span per request, named by method and
// route template, and puts it in the request's context so that handlers,
// downstream calls and log lines see it.
func (t *Telemetry) traceMiddleware(rt *routes, role Role) echo.MiddlewareFunc {
	tracer := t.tp.Tracer(tracerName)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if untraced[c.Path()] {
				return next(c)
			}
			req := c.Request()
			ctx := req.Context()
			m := method(req.Method)
			opts := []trace.SpanStartOption{
				trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("http.request.method", m)),
			}
			if role == Edge {
				// A new root; the caller's context, if any, only as a link.
				if sc := trace.SpanContextFromContext(propagator.Extract(context.Background(), propagation.HeaderCarrier(req.Header))); sc.IsValid() {
					opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
				}
				opts = append(opts, trace.WithNewRoot())
			} else {
				ctx = propagator.Extract(ctx, propagation.HeaderCarrier(req.Header))
			}
			ctx, span := tracer.Start(ctx, m, opts...)
			c.SetRequest(req.WithContext(ctx))
			done := false
			defer func() {
				// A panic passes through to the recover middleware; the
				// span still ends, as the 500 it becomes.
				if !done {
					span.SetName(m + " " + rt.label(c, nil))
					span.SetStatus(codes.Error, "panic")
					span.End()
				}
			}()

			err := next(c)
			commit(c, err)
			route := rt.label(c, err)
			status := statusOf(c)
			span.SetName(m + " " + route)
			span.SetAttributes(attribute.String("http.route", route), attribute.Int("http.response.status_code", status))
			if status >= 500 || status == 0 {
				span.SetStatus(codes.Error, "")
			}
			span.End()
			done = true
			return nil
		}
	}
}

// Transport wraps a client transport so that each request gets a client
// span and carries traceparent. Without tracing it returns rt unchanged.
func (t *Telemetry) Transport(rt http.RoundTripper) http.RoundTripper {
	if t.tp == nil {
		return rt
	}
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &tracingTransport{base: rt, tracer: t.tp.Tracer(tracerName)}
}

type tracingTransport struct {
	base   http.RoundTripper
	tracer trace.Tracer
}

func (t *tracingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	m := method(req.Method)
	ctx, span := t.tracer.Start(req.Context(), m,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("http.request.method", m),
			attribute.String("server.address", req.URL.Hostname()),
		))
	defer span.End()
	// A RoundTripper must not change the caller's request: send a copy
	// with its own header map.
	out := req.Clone(ctx)
	propagator.Inject(ctx, propagation.HeaderCarrier(out.Header))
	resp, err := t.base.RoundTrip(out)
	if err != nil {
		span.SetStatus(codes.Error, "transport error")
		return nil, err
	}
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode >= 400 {
		span.SetStatus(codes.Error, "")
	}
	return resp, nil
}

// CloseIdleConnections reaches the wrapped transport's pools.
func (t *tracingTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Logger returns log with trace_id and span_id added to every line logged
// with a context that holds a span (the per-request access line included).
// Without tracing it returns log unchanged: no cost per line.
func (t *Telemetry) Logger(log *slog.Logger) *slog.Logger {
	if t.tp == nil {
		return log
	}
	return slog.New(TraceLogHandler(log.Handler()))
}

// TraceLogHandler wraps h to add trace_id and span_id from the record's
// context.
func TraceLogHandler(h slog.Handler) slog.Handler { return traceHandler{h} }

type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
