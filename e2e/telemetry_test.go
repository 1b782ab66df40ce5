package e2e

import (
	"bufio"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/telemetry/otlptest"
)

// observedSystem starts the three services like startSystem, with each
// service's admin listener on a known address and common env (tracing)
// given to all three.
type observedSystem struct {
	*system
	emuMetrics, pdMetrics, gwMetrics string
}

func startObserved(t *testing.T, common ...string) *observedSystem {
	t.Helper()
	s := &system{emuAddr: freeAddr(t), pdAddr: freeAddr(t), gwAddr: freeAddr(t)}
	o := &observedSystem{system: s, emuMetrics: freeAddr(t), pdMetrics: freeAddr(t), gwMetrics: freeAddr(t)}
	s.keyPath, s.key = writeKey(t)
	s.emuEnv = append([]string{
		"LISTEN_ADDR=" + s.emuAddr, "ISSUER=" + "http://" + s.emuAddr,
		"CLIENTS=" + clientID + ":" + clientSecret, "TOKEN_LIFETIME=30m",
		"SIGNING_KEY_FILE=" + s.keyPath, "KEY_ID=" + testKID, "METRICS_ADDR=" + o.emuMetrics,
	}, common...)
	s.startEmulator(t)
	s.pd = start(t, "protected-data", append([]string{"LISTEN_ADDR=" + s.pdAddr, "WRISTBAND_EMULATOR_URL=" + s.emuURL(),
		"METRICS_ADDR=" + o.pdMetrics}, common...)...)
	s.gw = start(t, "public-gateway", append([]string{
		"LISTEN_ADDR=" + s.gwAddr, "WRISTBAND_EMULATOR_URL=" + s.emuURL(),
		"CLIENT_ID=" + clientID, "CLIENT_SECRET=" + clientSecret,
		"PROTECTED_DATA_URL=" + s.pdURL(), "METRICS_ADDR=" + o.gwMetrics,
	}, common...)...)
	waitStatus(t, s.pdURL()+"/readyz", 200, 30*time.Second)
	waitStatus(t, s.gwURL()+"/readyz", 200, 30*time.Second)
	return o
}

// series is one parsed sample line of the Prometheus text format.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

func parseMetrics(t *testing.T, body string) []series {
	t.Helper()
	var out []series
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			t.Fatalf("metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		head := line[:sp]
		s := series{name: head, labels: map[string]string{}, value: v}
		if i := strings.IndexByte(head, '{'); i >= 0 {
			s.name = head[:i]
			for _, kv := range strings.Split(strings.TrimSuffix(head[i+1:], "}"), ",") {
				k, val, ok := strings.Cut(kv, "=")
				if ok {
					s.labels[k] = strings.Trim(val, `"`)
				}
			}
		}
		out = append(out, s)
	}
	return out
}

func metricValue(t *testing.T, all []series, name string, labels ...string) float64 {
	t.Helper()
next:
	for _, s := range all {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if s.labels[labels[i]] != labels[i+1] {
				continue next
			}
		}
		return s.value
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// TestMetricsOnTheAdminListener: each service serves /metrics on its own
// admin listener, never on the public port, and the series move with the
// traffic.
func TestMetricsOnTheAdminListener(t *testing.T) {
	o := startObserved(t)
	const calls = 5
	for range calls {
		if r := get(t, o.gwURL()+"/api/public/data"); r.status != 200 {
			t.Fatalf("public call: %d %s", r.status, r.body)
		}
	}
	get(t, o.gwURL()+"/no/such/"+clientSecret)

	for _, base := range []string{o.gwURL(), o.pdURL(), o.emuURL()} {
		if r := get(t, base+"/metrics"); r.status != 404 {
			t.Errorf("%s/metrics on the public port: %d, want 404", base, r.status)
		}
		if r := get(t, base+"/debug/pprof/"); r.status != 404 {
			t.Errorf("%s/debug/pprof/ on the public port: %d, want 404", base, r.status)
		}
	}
	if r := get(t, "http://"+o.gwMetrics+"/debug/pprof/"); r.status != 404 {
		t.Errorf("pprof on the admin listener without PPROF=true: %d", r.status)
	}

	scrape := func(addr string) ([]series, string) {
		r := get(t, "http://"+addr+"/metrics")
		if r.status != 200 {
			t.Fatalf("GET %s/metrics: %d", addr, r.status)
		}
		for _, secret := range []string{clientSecret, "Bearer ", "eyJ"} {
			if strings.Contains(r.body, secret) {
				t.Errorf("%s/metrics contains %q", addr, secret)
			}
		}
		return parseMetrics(t, r.body), r.body
	}

	gw, gwBody := scrape(o.gwMetrics)
	if v := metricValue(t, gw, "http_server_request_duration_seconds_count", "route", "/api/public/data", "method", "GET", "status", "200"); v != calls {
		t.Errorf("gateway requests on /api/public/data = %v, want %d", v, calls)
	}
	// /no/such/..., and /metrics and /debug/pprof/ on the public port.
	if v := metricValue(t, gw, "http_server_request_duration_seconds_count", "route", "unmatched", "status", "404"); v != 3 {
		t.Errorf("gateway unmatched = %v, want 3", v)
	}
	if strings.Contains(gwBody, "/no/such") {
		t.Error("a raw path appears in the gateway's metrics")
	}
	if v := metricValue(t, gw, "m2m_token_fetches_total", "outcome", "ok"); v != 1 {
		t.Errorf("token fetches ok = %v, want 1", v)
	}
	if v := metricValue(t, gw, "m2m_token_expiry_seconds"); v < 25*60 || v > 30*60 {
		t.Errorf("token expiry in %v s, want about 30 minutes", v)
	}
	pdHost, _, _ := strings.Cut(o.pdAddr, ":")
	if v := metricValue(t, gw, "lb_requests_total", "host", pdHost, "replica", pdHost); v != calls {
		t.Errorf("downstream requests to %s = %v, want %d", pdHost, v, calls)
	}
	if v := metricValue(t, gw, "build_info", "service", "public-gateway"); v != 1 {
		t.Errorf("build_info = %v", v)
	}
	if v := metricValue(t, gw, "process_resident_memory_bytes"); v <= 0 {
		t.Errorf("process RSS = %v", v)
	}

	if r := get(t, o.pdURL()+"/api/protected/data", "Authorization", "Bearer "+clientSecret); r.status != 401 {
		t.Errorf("garbage token: %d", r.status)
	}
	pd, _ := scrape(o.pdMetrics)
	if v := metricValue(t, pd, "jwtauth_validation_failures_total", "reason", "malformed"); v != 1 {
		t.Errorf("failures{reason=malformed} = %v, want 1", v)
	}
	if v := metricValue(t, pd, "jwtauth_validation_failures_total", "reason", "expired"); v != 0 {
		t.Errorf("failures{reason=expired} = %v, want 0", v)
	}
	if v := metricValue(t, pd, "http_server_request_duration_seconds_count", "route", "/api/protected/data", "method", "GET", "status", "200"); v != calls {
		t.Errorf("protected-data requests = %v, want %d", v, calls)
	}
	if v := metricValue(t, pd, "jwtauth_jwks_keys"); v != 1 {
		t.Errorf("JWKS keys = %v, want 1", v)
	}
	if v := metricValue(t, pd, "jwtauth_cache_hits_total"); v != calls-1 {
		t.Errorf("verified-token cache hits = %v, want %d (one token, first sight a miss)", v, calls-1)
	}
	if v := metricValue(t, pd, "jwtauth_jwks_last_load_timestamp_seconds"); v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("JWKS loaded at %v, want within the last minute", v)
	}

	emu, _ := scrape(o.emuMetrics)
	if v := metricValue(t, emu, "build_info", "service", "wristband-emulator"); v != 1 {
		t.Errorf("emulator build_info = %v", v)
	}
}

func TestPprofOnlyWithPPROF(t *testing.T) {
	o := startObserved(t, "PPROF=true")
	r := get(t, "http://"+o.gwMetrics+"/debug/pprof/goroutine?debug=1")
	if r.status != 200 || !strings.Contains(r.body, "goroutine profile:") {
		t.Fatalf("pprof with PPROF=true: %d %.200s", r.status, r.body)
	}
	if r := get(t, o.gwURL()+"/debug/pprof/"); r.status != 404 {
		t.Errorf("pprof on the public port: %d", r.status)
	}
}

// TestTraceGatewayToProtectedData runs a real OTLP/HTTP receiver in this
// process: one public call yields spans from both services in one trace,
// traceparent travels gateway -> protected-data, and both access lines
// carry the trace ID. The batch exporter's delay is the default (5 s):
// the spans arrive because SIGTERM flushes them.
func TestTraceGatewayToProtectedData(t *testing.T) {
	rcv := otlptest.NewReceiver(t)
	o := startObserved(t, "OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.URL)
	if r := get(t, o.gwURL()+"/api/public/data"); r.status != 200 {
		t.Fatalf("public call: %d %s", r.status, r.body)
	}
	o.gw.stop(t)
	o.pd.stop(t)

	spans := rcv.Spans()
	var gwServer, gwClient, pdServer *otlptest.Span
	for i, s := range spans {
		switch {
		case s.Service == "public-gateway" && s.Kind == "server" && s.Name == "GET /api/public/data":
			gwServer = &spans[i]
		case s.Service == "public-gateway" && s.Kind == "client" && s.Scope == "github.com/wristband-m2m-go/wristband-m2m-go/pkg/telemetry":
			gwClient = &spans[i]
		case s.Service == "protected-data" && s.Kind == "server" && s.Name == "GET /api/protected/data":
			pdServer = &spans[i]
		}
	}
	if gwServer == nil || gwClient == nil || pdServer == nil {
		t.Fatalf("want the gateway's server and client spans and protected-data's server span; got %+v", spans)
	}
	if pdServer.TraceID != gwServer.TraceID || gwClient.TraceID != gwServer.TraceID {
		t.Errorf("trace IDs differ: gateway %s, client %s, protected-data %s", gwServer.TraceID, gwClient.TraceID, pdServer.TraceID)
	}
	if gwClient.ParentSpanID != gwServer.SpanID || pdServer.ParentSpanID != gwClient.SpanID {
		t.Errorf("parents: client's %s (want %s), protected-data's %s (want %s)", gwClient.ParentSpanID, gwServer.SpanID, pdServer.ParentSpanID, gwClient.SpanID)
	}
	// The token and JWKS fetches at start-up are traces of their own; the
	// first sight of the token (a cache miss) is validated inside the call's
	// trace, under protected-data's server span.
	var fetchToken, fetchJWKS, validate bool
	for _, s := range spans {
		switch {
		case s.Service == "public-gateway" && s.Name == "m2m.fetch_token":
			fetchToken = true
		case s.Service == "protected-data" && s.Name == "jwtauth.fetch_jwks":
			fetchJWKS = true
		case s.Service == "protected-data" && s.Name == "jwtauth.validate":
			validate = s.TraceID == pdServer.TraceID && s.ParentSpanID == pdServer.SpanID
		}
	}
	if !fetchToken || !fetchJWKS || !validate {
		t.Errorf("m2m.fetch_token %v, jwtauth.fetch_jwks %v, jwtauth.validate under protected-data's span %v; spans %+v", fetchToken, fetchJWKS, validate, spans)
	}
	for _, p := range []*proc{o.gw, o.pd} {
		found := false
		sc := bufio.NewScanner(strings.NewReader(p.out.String()))
		for sc.Scan() {
			ln := sc.Text()
			if strings.Contains(ln, "msg=request") && strings.Contains(ln, "/api/") {
				found = true
				if !strings.Contains(ln, "trace_id="+gwServer.TraceID) {
					t.Errorf("%s access line without the trace ID %s: %s", p.name, gwServer.TraceID, ln)
				}
			}
		}
		if !found {
			t.Errorf("%s: no access line", p.name)
		}
	}
}
