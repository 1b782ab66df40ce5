package telemetry_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"go.uber.org/goleak"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth/jwtauthtest"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/lb"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/m2m"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTelemetry(t *testing.T, s telemetry.Settings) *telemetry.Telemetry {
	t.Helper()
	// Tracing stays off whatever the developer's shell exports.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tel, err := telemetry.New(context.Background(), "test-svc", s, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Close() })
	return tel
}

func metricsOn(t *testing.T) *telemetry.Telemetry {
	return newTelemetry(t, telemetry.Settings{MetricsAddr: "127.0.0.1:0"})
}

// scrape fetches /metrics from the admin handler as Prometheus would and
// parses the text format.
func scrape(t *testing.T, tel *telemetry.Telemetry) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	tel.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics answered %d: %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return fams, body
}

// find returns the series of name whose labels include want.
func find(fams map[string]*dto.MetricFamily, name string, want map[string]string) (*dto.Metric, bool) {
	f, ok := fams[name]
	if !ok {
		return nil, false
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		return m, true
	}
	return nil, false
}

// value is a counter's or gauge's value, or a histogram's count.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	m, ok := find(fams, name, labels)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("series %s%v has no value", name, labels)
	return 0
}

func l(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestSettingsValidate(t *testing.T) {
	for _, tc := range []struct {
		s       telemetry.Settings
		wantErr string
	}{
		{telemetry.Settings{MetricsAddr: ":9090"}, ""},
		{telemetry.Settings{MetricsAddr: ""}, ""},
		{telemetry.Settings{MetricsAddr: ":9090", PProf: true}, ""},
		{telemetry.Settings{MetricsAddr: "secret-ish-value"}, "METRICS_ADDR"},
		{telemetry.Settings{PProf: true}, "PPROF"},
	} {
		err := tc.s.Validate()
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.s, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%+v: got %v, want an error naming %s", tc.s, err, tc.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "secret-ish-value") {
			t.Errorf("error echoes the value: %v", err)
		}
	}
}

func TestRuntimeProcessAndBuildInfo(t *testing.T) {
	fams, _ := scrape(t, metricsOn(t))
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "process_open_fds"} {
		if v := value(t, fams, name, nil); v <= 0 {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
	m, ok := find(fams, "build_info", l("service", "test-svc"))
	if !ok || m.Gauge.GetValue() != 1 {
		t.Fatalf("build_info{service=test-svc} missing or not 1: %v", fams["build_info"])
	}
	for _, name := range []string{"version", "revision", "goversion"} {
		if _, ok := find(fams, "build_info", l(name, "")); ok {
			t.Errorf("build_info has an empty %s label", name)
		}
	}
	if gv := labelOf(m, "goversion"); !strings.HasPrefix(gv, "go1.") {
		t.Errorf("build_info goversion = %q, want go1.x", gv)
	}
}

func labelOf(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

func TestHTTPMetricsByRouteTemplateMethodAndStatus(t *testing.T) {
	tel := metricsOn(t)
	e := echo.New()
	tel.Instrument(e, telemetry.Internal)
	e.GET("/items/:id", func(c echo.Context) error { return c.String(http.StatusOK, "ok") })
	e.GET("/teapot", func(c echo.Context) error { return echo.NewHTTPError(http.StatusTeapot, "short and stout") })
	e.Any("/any", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) })
	e.GET("/boom", func(c echo.Context) error { return fmt.Errorf("plain error") })

	do := func(method, path string) int {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code
	}
	for _, p := range []string{"/items/1", "/items/2", "/items/secret-token-value"} {
		if c := do(http.MethodGet, p); c != http.StatusOK {
			t.Fatalf("GET %s: %d", p, c)
		}
	}
	do(http.MethodGet, "/teapot")
	do(http.MethodGet, "/boom")
	do(http.MethodGet, "/no/such/path/caller-chosen")
	do(http.MethodGet, "/items")    // a prefix of a template, no route
	do(http.MethodPost, "/items/1") // route exists, method does not
	do("PROPFIND", "/any")          // non-standard method
	do(http.MethodDelete, "/any")

	fams, body := scrape(t, tel)
	const h = "http_server_request_duration_seconds"
	if f := fams[h]; f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("%s missing or not a histogram", h)
	}
	cases := []struct {
		labels map[string]string
		want   float64
	}{
		{l("route", "/items/:id", "method", "GET", "status", "200"), 3},
		{l("route", "/teapot", "method", "GET", "status", "418"), 1},
		{l("route", "/boom", "method", "GET", "status", "500"), 1},
		{l("route", telemetry.RouteUnmatched, "method", "GET", "status", "404"), 2},
		{l("route", "/items/:id", "method", "POST", "status", "405"), 1},
		{l("route", "/any", "method", telemetry.MethodOther, "status", "204"), 1},
		{l("route", "/any", "method", "DELETE", "status", "204"), 1},
	}
	for _, tc := range cases {
		if got := value(t, fams, h, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", h, tc.labels, got, tc.want)
		}
	}
	var total uint64
	for _, m := range fams[h].GetMetric() {
		total += m.Histogram.GetSampleCount()
	}
	if total != 10 {
		t.Errorf("%d requests counted, want 10", total)
	}
	for _, caller := range []string{"secret-token-value", "caller-chosen", "PROPFIND", "/items/1"} {
		if strings.Contains(body, caller) {
			t.Errorf("caller input %q appears in /metrics", caller)
		}
	}
	// Buckets reach below a millisecond and up to seconds.
	m, _ := find(fams, h, cases[0].labels)
	bs := m.Histogram.GetBucket()
	if bs[0].GetUpperBound() > 0.0001 || bs[len(bs)-1].GetUpperBound() < 5 {
		t.Errorf("buckets %v..%v, want <= 100µs .. >= 5s", bs[0].GetUpperBound(), bs[len(bs)-1].GetUpperBound())
	}
}

func TestMetricsOffServesNothing(t *testing.T) {
	tel := newTelemetry(t, telemetry.Settings{MetricsAddr: ""})
	if tel.MetricsEnabled() {
		t.Fatal("metrics on with METRICS_ADDR empty")
	}
	e := echo.New()
	tel.Instrument(e, telemetry.Internal)
	if err := tel.StartAdmin(); err != nil {
		t.Fatal(err)
	}
	if tel.AdminAddr() != nil {
		t.Fatalf("admin listener started on %v with METRICS_ADDR empty", tel.AdminAddr())
	}
	rec := httptest.NewRecorder()
	tel.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("/metrics with metrics off: %d, want 404", rec.Code)
	}
}

// The admin listener is a real listener, separate from the service's.
func TestAdminListenerServesMetrics(t *testing.T) {
	tel := metricsOn(t)
	if err := tel.StartAdmin(); err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + tel.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "go_goroutines") {
		t.Fatalf("admin /metrics: %d\n%.300s", resp.StatusCode, b)
	}
	addr := tel.AdminAddr().String()
	if err := tel.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("admin listener still accepts after Close")
	}
}

func TestTokenSourceSeries(t *testing.T) {
	const secret = "s3cr3t-client-secret"
	var mode atomic.Value // "ok", "short", "500", "401"
	mode.Store("ok")
	var seq atomic.Int64
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch mode.Load() {
		case "500":
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"error":"server_error"}`)
		case "401":
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid_client"}`)
		case "short":
			fmt.Fprintf(w, `{"access_token":"tok-abc-%d","token_type":"Bearer","expires_in":2}`, seq.Add(1))
		default:
			fmt.Fprintf(w, `{"access_token":"tok-abc-%d","token_type":"Bearer","expires_in":3600}`, seq.Add(1))
		}
	}))
	t.Cleanup(idp.Close)
	newSource := func() *m2m.TokenSource {
		src, err := m2m.New(m2m.Config{TokenURL: idp.URL, ClientID: "c1", ClientSecret: secret,
			MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, RetryInterval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		return src
	}
	src := newSource()
	tel := metricsOn(t)
	tel.Register(telemetry.TokenSourceCollector(src))
	fetches := func(fams map[string]*dto.MetricFamily, outcome string) float64 {
		return value(t, fams, "m2m_token_fetches_total", l("outcome", outcome))
	}

	fams, _ := scrape(t, tel)
	if v := value(t, fams, "m2m_token_expiry_seconds", nil); v != 0 {
		t.Errorf("expiry before any token = %v, want 0", v)
	}
	for _, o := range []string{"ok", "transient", "permanent"} {
		if v := fetches(fams, o); v != 0 {
			t.Errorf("fetches %s before any = %v", o, v)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok, err := src.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fams, body := scrape(t, tel)
	if v := fetches(fams, "ok"); v != 1 {
		t.Errorf("fetches ok = %v, want 1", v)
	}
	if v := value(t, fams, "m2m_token_expiry_seconds", nil); v < 3500 || v > 3600 {
		t.Errorf("expiry = %v s, want about 3600", v)
	}
	if v := value(t, fams, "m2m_token_waits_total", nil); v != 1 {
		t.Errorf("waits = %v, want 1 (the first caller waited for the fetch)", v)
	}
	if v := value(t, fams, "m2m_token_invalidations_total", nil); v != 0 {
		t.Errorf("invalidations = %v, want 0", v)
	}
	for _, s := range []string{secret, tok} {
		if strings.Contains(body, s) {
			t.Errorf("/metrics contains %q", s)
		}
	}

	// A 401 downstream drops the token; the next caller fetches another.
	src.Invalidate(tok)
	if _, err := src.Token(ctx); err != nil {
		t.Fatal(err)
	}
	fams, _ = scrape(t, tel)
	if v := value(t, fams, "m2m_token_invalidations_total", nil); v != 1 {
		t.Errorf("invalidations = %v, want 1", v)
	}
	if v := fetches(fams, "ok"); v != 2 {
		t.Errorf("fetches ok = %v, want 2", v)
	}

	// Failures by outcome, each on a fresh source: 5xx is transient,
	// invalid_client permanent.
	for _, tc := range []struct{ mode, outcome string }{{"500", "transient"}, {"401", "permanent"}} {
		mode.Store(tc.mode)
		bad := newSource()
		tb := metricsOn(t)
		tb.Register(telemetry.TokenSourceCollector(bad))
		sctx, scancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := bad.Token(sctx)
		scancel()
		if err == nil {
			t.Fatalf("%s: got a token", tc.mode)
		}
		fams, _ = scrape(t, tb)
		if v := fetches(fams, tc.outcome); v < 1 {
			t.Errorf("%s: %s fetches = %v, want >= 1", tc.mode, tc.outcome, v)
		}
		if v := fetches(fams, "ok"); v != 0 {
			t.Errorf("%s: ok fetches = %v, want 0", tc.mode, v)
		}
	}

	// Background renewal of short tokens counts renewals.
	mode.Store("short")
	short := newSource()
	ts := metricsOn(t)
	ts.Register(telemetry.TokenSourceCollector(short))
	short.Start()
	deadline := time.Now().Add(10 * time.Second)
	for short.Stats().Renewals == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no renewal of 2 s tokens within 10 s: %+v", short.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	fams, _ = scrape(t, ts)
	if v := value(t, fams, "m2m_token_renewals_total", nil); v < 1 {
		t.Errorf("renewals = %v, want >= 1", v)
	}
}

func TestValidatorSeries(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v, err := jwtauth.New(context.Background(), jwtauth.Config{JWKSURL: idp.JWKSURL(), Issuer: idp.Issuer()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	tel := metricsOn(t)
	tel.Register(telemetry.ValidatorCollector(v))
	before := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for v.Ready() != nil {
		select {
		case <-ctx.Done():
			t.Fatal("validator never became ready")
		case <-time.After(5 * time.Millisecond):
		}
	}
	tok := idp.Mint(nil)
	for range 3 {
		if _, err := v.Validate(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	// A token signed with a key the JWKS does not have triggers one refetch.
	stranger := jwtauthtest.NewRSAKey(2048)
	if _, err := v.Validate(ctx, jwtauthtest.Sign(stranger, jwtauthtest.Header(stranger), idp.Claims())); err == nil {
		t.Fatal("token with an unknown kid accepted")
	}

	fams, body := scrape(t, tel)
	if got := value(t, fams, "jwtauth_jwks_keys", nil); got != 1 {
		t.Errorf("keys = %v, want 1", got)
	}
	if got := value(t, fams, "jwtauth_jwks_fetches_total", l("outcome", "ok")); got < 2 {
		t.Errorf("jwks fetches ok = %v, want >= 2 (first load and the unknown-kid refetch)", got)
	}
	for _, o := range jwtauth.JWKSFetchOutcomes[1:] {
		if got := value(t, fams, "jwtauth_jwks_fetches_total", l("outcome", o)); got != 0 {
			t.Errorf("jwks fetches %s = %v, want 0", o, got)
		}
	}
	if got := value(t, fams, "jwtauth_jwks_unknown_kid_refetches_total", nil); got != 1 {
		t.Errorf("unknown-kid refetches = %v, want 1", got)
	}
	at := value(t, fams, "jwtauth_jwks_last_load_timestamp_seconds", nil)
	if at < float64(before.Add(-time.Second).Unix()) || at > float64(time.Now().Unix()+1) {
		t.Errorf("last load at %v, want between %v and now", at, before.Unix())
	}
	if got := value(t, fams, "jwtauth_cache_hits_total", nil); got != 2 {
		t.Errorf("cache hits = %v, want 2", got)
	}
	if got := value(t, fams, "jwtauth_cache_misses_total", nil); got != 2 {
		t.Errorf("cache misses = %v, want 2 (first sight of the good token and the stranger's)", got)
	}
	if got := value(t, fams, "jwtauth_cache_entries", nil); got != 1 {
		t.Errorf("cache entries = %v, want 1", got)
	}
	if got := value(t, fams, "jwtauth_signature_verifications_total", nil); got < 1 {
		t.Errorf("verifications = %v, want >= 1", got)
	}
	if strings.Contains(body, stranger.KID) || strings.Contains(body, tok[:20]) {
		t.Error("a kid or token from the caller appears in /metrics")
	}

	// Refusals through the middleware, by reason; every reason is exported,
	// zeros included, and nothing from the token becomes a label.
	e := echo.New()
	e.GET("/p", func(c echo.Context) error { return c.String(http.StatusOK, "ok") }, v.Middleware())
	call := func(auth string) int {
		req := httptest.NewRequest(http.MethodGet, "/p", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec.Code
	}
	stranger2 := jwtauthtest.NewRSAKey(2048)
	expired := idp.Mint(map[string]any{"exp": time.Now().Add(-time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix()})
	for _, c := range []struct {
		auth string
		want int
	}{
		{"", 401},
		{"Bearer not.a.jwt-secret-ish", 401},
		{"Bearer " + expired, 401},
		{"Bearer " + expired, 401},
		{"Bearer " + jwtauthtest.Sign(stranger2, jwtauthtest.Header(stranger2), idp.Claims()), 401},
		{"Bearer " + tok, 200},
	} {
		if got := call(c.auth); got != c.want {
			t.Fatalf("middleware answered %d, want %d", got, c.want)
		}
	}
	fams, body = scrape(t, tel)
	// unknown_kid: the direct Validate above and the middleware call.
	wantReasons := map[string]float64{"missing": 1, "malformed": 1, "expired": 2, "unknown_kid": 2}
	for _, r := range jwtauth.FailureReasons {
		got := value(t, fams, "jwtauth_validation_failures_total", l("reason", r))
		if got != wantReasons[r] {
			t.Errorf("failures{reason=%q} = %v, want %v", r, got, wantReasons[r])
		}
	}
	if n := len(fams["jwtauth_validation_failures_total"].GetMetric()); n != len(jwtauth.FailureReasons) {
		t.Errorf("%d failure series, want exactly one per reason (%d)", n, len(jwtauth.FailureReasons))
	}
	if strings.Contains(body, "secret-ish") || strings.Contains(body, stranger2.KID) {
		t.Error("caller input appears in /metrics")
	}
}

// fixedResolver names two loopback addresses for "svc"; only the first has
// a server behind it.
type fixedResolver struct{}

func (fixedResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	return []net.IPAddr{{IP: net.ParseIP("127.0.0.1")}, {IP: net.ParseIP("127.0.0.2")}}, nil
}

func TestDownstreamSeries(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	tr, err := lb.NewTransport(lb.Config{Resolver: fixedResolver{}, EjectFor: time.Hour, ResolveEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	tel := metricsOn(t)
	tel.Register(telemetry.DownstreamCollector(tr))
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for range 6 {
		resp, err := c.Get("http://svc:" + port + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	fams, _ := scrape(t, tel)
	live, dead := l("host", "svc", "replica", "127.0.0.1"), l("host", "svc", "replica", "127.0.0.2")
	// 127.0.0.2 refuses: picked once, failed, ejected for the hour, and that
	// request was retried on 127.0.0.1.
	want := []struct {
		name   string
		labels map[string]string
		v      float64
	}{
		{"lb_requests_total", live, 6},
		{"lb_requests_total", dead, 1},
		{"lb_failures_total", dead, 1},
		{"lb_failures_total", live, 0},
		{"lb_ejections_total", dead, 1},
		{"lb_ejections_total", live, 0},
		{"lb_retries_total", live, 1},
		{"lb_retries_total", dead, 0},
		{"lb_ejected", dead, 1},
		{"lb_ejected", live, 0},
		{"lb_in_flight", live, 0},
	}
	for _, w := range want {
		if got := value(t, fams, w.name, w.labels); got != w.v {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.v)
		}
	}
}
