package m2m

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// The global provider can be installed once per process: the package's
// tracer delegates to the first one set.
var (
	spansOnce sync.Once
	spans     *tracetest.SpanRecorder
)

func recordSpans() *tracetest.SpanRecorder {
	spansOnce.Do(func() {
		spans = tracetest.NewSpanRecorder()
		otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)))
	})
	return spans
}

func TestFetchTokenSpan(t *testing.T) {
	sr := recordSpans()
	p := newIDP(t)
	p.setReply(func(n int, w http.ResponseWriter) {
		switch n {
		case 1:
			writeJSON(w, http.StatusServiceUnavailable, `{"error":"temporarily_unavailable","error_description":"`+testClientSecret+`"}`)
		case 2:
			writeJSON(w, http.StatusUnauthorized, `{"error":"invalid_client"}`)
		default:
			writeToken(w, "tok-secret-value", 3600)
		}
	})
	clk := newFakeClock()
	s := newSource(t, p, withClock(clk), withRetryInterval(1))
	before := len(sr.Ended())
	for range 3 {
		_, _ = s.Token(context.Background())
		clk.Advance(DefaultMaxBackoff)
	}
	ended := sr.Ended()[before:]
	var got []string
	for _, sp := range ended {
		if sp.Name() != "m2m.fetch_token" {
			continue
		}
		outcome := ""
		for _, a := range sp.Attributes() {
			if a.Key == "m2m.outcome" {
				outcome = a.Value.AsString()
			}
			if v := a.Value.String(); strings.Contains(v, "s3cr3t") || strings.Contains(v, "tok-secret") {
				t.Errorf("attribute %s leaks a secret: %s", a.Key, v)
			}
		}
		if strings.Contains(sp.Status().Description, "s3cr3t") {
			t.Errorf("span status leaks the secret: %s", sp.Status().Description)
		}
		if (outcome == "ok") != (sp.Status().Code != codes.Error) {
			t.Errorf("outcome %s with status %v", outcome, sp.Status())
		}
		got = append(got, outcome)
	}
	if strings.Join(got, ",") != "transient,permanent,ok" {
		t.Errorf("spans by outcome %v, want transient, permanent, ok", got)
	}
}
