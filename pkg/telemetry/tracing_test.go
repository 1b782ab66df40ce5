package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/telemetry"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/telemetry/otlptest"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, ln := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if ln == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(ln), &m); err != nil {
			t.Fatalf("log line %q: %v", ln, err)
		}
		out = append(out, m)
	}
	return out
}

// tracedService is one instrumented Echo server with its own Telemetry and
// JSON log, as a main builds it.
func tracedService(t *testing.T, name string, role telemetry.Role, register func(*echo.Echo, *telemetry.Telemetry)) (*httptest.Server, *lockedBuffer, *telemetry.Telemetry) {
	t.Helper()
	logs := &lockedBuffer{}
	base, err := service.NewLogger(logs, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	tel, err := telemetry.New(context.Background(), name, telemetry.Settings{}, base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Close() })
	if !tel.TracingEnabled() {
		t.Fatal("tracing off with OTEL_EXPORTER_OTLP_ENDPOINT set")
	}
	log := tel.Logger(base)
	e := service.NewEcho(log)
	tel.Instrument(e, role)
	register(e, tel)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv, logs, tel
}

func TestTraceAcrossTwoServices(t *testing.T) {
	rcv := otlptest.NewReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("OTEL_SDK_DISABLED", "")

	var sawTraceparent string
	back, backLogs, backTel := tracedService(t, "back", telemetry.Internal, func(e *echo.Echo, _ *telemetry.Telemetry) {
		e.GET("/data/:id", func(c echo.Context) error {
			sawTraceparent = c.Request().Header.Get("Traceparent")
			return c.String(http.StatusOK, "data")
		})
	})
	front, frontLogs, frontTel := tracedService(t, "front", telemetry.Edge, func(e *echo.Echo, tel *telemetry.Telemetry) {
		client := &http.Client{Transport: tel.Transport(http.DefaultTransport), Timeout: 5 * time.Second}
		e.GET("/public", func(c echo.Context) error {
			req, _ := http.NewRequestWithContext(c.Request().Context(), http.MethodGet, back.URL+"/data/42", nil)
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return c.String(http.StatusOK, "public+"+string(b))
		})
		e.GET("/panic", func(c echo.Context) error { panic("handler bug") })
	})

	// A caller's own traceparent is not adopted at the edge, only linked.
	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodGet, front.URL+"/public", nil)
	req.Header.Set("Traceparent", "00-"+callerTrace+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if resp2, err := http.Get(front.URL + "/nope"); err == nil {
		resp2.Body.Close()
	}
	if resp3, err := http.Get(front.URL + "/panic"); err != nil || resp3.StatusCode != http.StatusInternalServerError {
		t.Fatalf("panicking handler: %v %v", resp3, err)
	} else {
		resp3.Body.Close()
	}

	// Close flushes: no waiting for the batch timer.
	if err := frontTel.Close(); err != nil {
		t.Fatal(err)
	}
	if err := backTel.Close(); err != nil {
		t.Fatal(err)
	}
	spans := rcv.Spans()
	byName := map[string]otlptest.Span{}
	for _, s := range spans {
		byName[s.Service+" "+s.Kind+" "+s.Name] = s
	}
	edge, ok1 := byName["front server GET /public"]
	client, ok2 := byName["front client GET"]
	inner, ok3 := byName["back server GET /data/:id"]
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("want front server, front client and back server spans; got %+v", spans)
	}
	if s, ok := byName["front server GET /panic"]; !ok || !s.Error {
		t.Errorf("no error span for the panicking handler: %+v", spans)
	}
	if _, ok := byName["front server GET unmatched"]; !ok {
		t.Errorf("no span named by the unmatched route for /nope: %+v", spans)
	}
	if edge.TraceID == callerTrace {
		t.Error("the edge adopted the caller's trace ID")
	}
	if len(edge.LinkTraceIDs) != 1 || edge.LinkTraceIDs[0] != callerTrace {
		t.Errorf("edge span links %v, want the caller's trace %s", edge.LinkTraceIDs, callerTrace)
	}
	if edge.ParentSpanID != "" {
		t.Errorf("edge span has parent %s, want a root", edge.ParentSpanID)
	}
	if client.TraceID != edge.TraceID || client.ParentSpanID != edge.SpanID {
		t.Errorf("client span %+v is not a child of the edge span %+v", client, edge)
	}
	if inner.TraceID != edge.TraceID || inner.ParentSpanID != client.SpanID {
		t.Errorf("back server span %+v is not a child of the client span %+v", inner, client)
	}
	if want := "00-" + edge.TraceID + "-" + client.SpanID + "-01"; sawTraceparent != want {
		t.Errorf("back saw traceparent %q, want %q", sawTraceparent, want)
	}
	if inner.Attrs["http.route"] != "/data/:id" || inner.Attrs["http.response.status_code"] != "200" {
		t.Errorf("back span attributes %v", inner.Attrs)
	}

	// Each service's access line carries the trace and its server span.
	check := func(name string, logs *lockedBuffer, span otlptest.Span) {
		t.Helper()
		for _, m := range logs.lines(t) {
			if m["msg"] == "request" && m["status"] == float64(200) {
				if m["trace_id"] != span.TraceID || m["span_id"] != span.SpanID {
					t.Errorf("%s access line trace_id=%v span_id=%v, want %s %s", name, m["trace_id"], m["span_id"], span.TraceID, span.SpanID)
				}
				return
			}
		}
		t.Errorf("%s: no access line", name)
	}
	check("front", frontLogs, edge)
	check("back", backLogs, inner)
}

func TestTracingOffByDefault(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tel := newTelemetry(t, telemetry.Settings{})
	if tel.TracingEnabled() {
		t.Fatal("tracing on without an endpoint")
	}
	rt := http.DefaultTransport
	if tel.Transport(rt) != rt {
		t.Error("Transport wrapped without tracing")
	}
	log := slog.New(slog.DiscardHandler)
	if tel.Logger(log) != log {
		t.Error("Logger wrapped without tracing")
	}

	rcv := otlptest.NewReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rcv.URL+otlptest.TracesPath)
	t.Setenv("OTEL_SDK_DISABLED", "true")
	if telemetry.TracingConfigured() {
		t.Error("OTEL_SDK_DISABLED=true does not turn tracing off")
	}
	t.Setenv("OTEL_SDK_DISABLED", "")
	if !telemetry.TracingConfigured() {
		t.Error("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT alone does not turn tracing on")
	}
}

// The signal-specific endpoint is used as given (no /v1/traces appended).
func TestTracesEndpointVariable(t *testing.T) {
	rcv := otlptest.NewReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rcv.URL+otlptest.TracesPath)
	_, _, tel := tracedService(t, "solo", telemetry.Internal, func(e *echo.Echo, _ *telemetry.Telemetry) {
		e.GET("/x", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) })
	})
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	c := &http.Client{Transport: tel.Transport(http.DefaultTransport), Timeout: time.Second}
	if _, err := c.Get(srv.URL); err == nil {
		t.Fatal("request to a closed server succeeded")
	}
	if err := tel.Close(); err != nil {
		t.Fatal(err)
	}
	spans := rcv.Spans()
	if len(spans) != 1 || spans[0].Kind != "client" || !spans[0].Error || spans[0].Service != "solo" {
		t.Fatalf("want one failed client span from solo, got %+v", spans)
	}
}

// The SDK would take a malformed endpoint and export nowhere: refused at
// start, naming the variable and not its value (it may carry credentials).
func TestMalformedOTLPEndpointIsAConfigError(t *testing.T) {
	for _, name := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
			t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
			t.Setenv("OTEL_SDK_DISABLED", "")
			t.Setenv(name, "::user:s3cret@bad")
			tel, err := telemetry.New(context.Background(), "test-svc", telemetry.Settings{}, nil)
			if err == nil {
				tel.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), name+": not an http(s) URL") || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q: want it to name %s and not echo the value", err, name)
			}
		})
	}
}
