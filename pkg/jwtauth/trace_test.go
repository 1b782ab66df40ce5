package jwtauth_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth/jwtauthtest"
)

// recorder is a TracerProvider that notes each span's tracer, name, status
// and attributes: enough to check what jwtauth reports without the SDK.
type recorder struct {
	embedded.TracerProvider
	mu    sync.Mutex
	spans []*recSpan
}

type recTracer struct {
	embedded.Tracer
	r    *recorder
	name string
}

type recSpan struct {
	noop.Span
	r      *recorder
	tracer string
	name   string
	status codes.Code
	attrs  []attribute.KeyValue
	ended  bool
}

func (r *recorder) Tracer(name string, _ ...trace.TracerOption) trace.Tracer {
	return &recTracer{r: r, name: name}
}

func (t *recTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(opts...)
	s := &recSpan{r: t.r, tracer: t.name, name: name, attrs: cfg.Attributes()}
	t.r.mu.Lock()
	t.r.spans = append(t.r.spans, s)
	t.r.mu.Unlock()
	return trace.ContextWithSpan(ctx, s), s
}

func (s *recSpan) SetStatus(c codes.Code, _ string) { s.r.mu.Lock(); s.status = c; s.r.mu.Unlock() }
func (s *recSpan) SetAttributes(kv ...attribute.KeyValue) {
	s.r.mu.Lock()
	s.attrs = append(s.attrs, kv...)
	s.r.mu.Unlock()
}
func (s *recSpan) End(...trace.SpanEndOption) { s.r.mu.Lock(); s.ended = true; s.r.mu.Unlock() }

func (r *recorder) find(name string) []recSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recSpan
	for _, s := range r.spans {
		if s.name == name {
			out = append(out, *s)
		}
	}
	return out
}

// TestSpans: a JWKS fetch and a cold validation each make one span from the
// package's tracer; the cached path makes none.
func TestSpans(t *testing.T) {
	rec := &recorder{}
	otel.SetTracerProvider(rec)
	// Not the previous provider: that is otel's global proxy, which refuses
	// to be set as its own delegate.
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()) })

	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, nil)
	waitReady(t, v)
	tok := idp.Mint(nil)
	for range 3 {
		if _, err := v.Validate(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = v.Validate(context.Background(), idp.Mint(map[string]any{"iss": "https://other.example"}))

	const pkgPath = "github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth"
	fetches := rec.find("jwtauth.fetch_jwks")
	if len(fetches) != 1 || fetches[0].tracer != pkgPath || !fetches[0].ended ||
		!slices.Contains(fetches[0].attrs, attribute.String("jwtauth.outcome", jwtauth.FetchOK)) {
		t.Fatalf("fetch spans = %+v, want one ended span with outcome ok", fetches)
	}
	vals := rec.find("jwtauth.validate")
	if len(vals) != 2 { // the first use of tok, and the wrong-issuer token; not the 2 cache hits
		t.Fatalf("%d validate spans, want 2 (cold path only)", len(vals))
	}
	if vals[0].status == codes.Error || vals[1].status != codes.Error ||
		!slices.Contains(vals[1].attrs, attribute.String("jwtauth.failure", jwtauth.ReasonIssuer)) {
		t.Fatalf("validate spans = %+v, want ok then an error with failure=issuer", vals)
	}
}

// TestCachedPathAllocatesNothing guards the cached path's zero allocations
// (an allocation count, not a timing: it is the same on any machine).
func TestCachedPathAllocatesNothing(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, nil)
	waitReady(t, v)
	tok := idp.Mint(nil)
	ctx := context.Background()
	if _, err := v.Validate(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = v.Validate(ctx, tok) }); n != 0 {
		t.Fatalf("cached Validate allocates %.1f times, want 0", n)
	}
}
