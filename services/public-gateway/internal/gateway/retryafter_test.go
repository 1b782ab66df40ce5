package gateway

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/m2m"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
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

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A failing IdP: the 503's Retry-After is when the token source's next
// attempt is due, no request waits for the IdP, and the gateway adds no
// WARN line per request (the token source logs the cause once).
func TestTokenUnavailableRetryAfterIsHonest(t *testing.T) {
	cases := []struct {
		name   string
		reply  func(w http.ResponseWriter)
		lo, hi int // Retry-After range in seconds
	}{
		// The server's own Retry-After bounds our next attempt.
		{"IdP 503 with Retry-After 30", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "30")
			http.Error(w, `{"error":"temporarily_unavailable"}`, http.StatusServiceUnavailable)
		}, 29, 30},
		// A rejected client: the first background retry comes within 2 s,
		// and a caller may trigger one after the 2 s RetryInterval.
		{"invalid_client", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
		}, 1, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				calls.Add(1)
				tc.reply(w)
			}))
			t.Cleanup(idp.Close)
			pd := httptest.NewServer(answer(200, `{"protectedData":"here I am"}`))
			t.Cleanup(pd.Close)
			ts, err := m2m.New(m2m.Config{TokenURL: idp.URL, ClientID: "c", ClientSecret: "s"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ts.Close() })
			var logs lockedBuffer
			log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			e := service.NewEcho(service.NewDiscardLogger())
			New(Config{ProtectedDataURL: pd.URL, Timeout: 5 * time.Second, Transport: http.DefaultTransport,
				Tokens: ts, Log: log}).Register(e)

			for i := range 20 {
				rec := call(e, PublicPath)
				if rec.Code != http.StatusServiceUnavailable {
					t.Fatalf("call %d: %d %s, want 503", i, rec.Code, rec.Body)
				}
				ra, err := strconv.Atoi(rec.Header().Get("Retry-After"))
				if err != nil || ra < tc.lo || ra > tc.hi {
					t.Fatalf("call %d: Retry-After %q, want %d..%d s", i, rec.Header().Get("Retry-After"), tc.lo, tc.hi)
				}
			}
			// 20 calls in well under RetryInterval: the first fetch only.
			if n := calls.Load(); n != 1 {
				t.Errorf("%d token requests for 20 calls, want 1", n)
			}
			if n := strings.Count(logs.String(), `"level":"WARN"`); n != 0 {
				t.Errorf("the gateway logged %d WARN lines for one cause:\n%s", n, logs.String())
			}
		})
	}
}

// Other downstream failures: one WARN a minute per cause, not per request.
func TestDownstreamFailureWarnsOncePerMinute(t *testing.T) {
	var logs lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	pd := httptest.NewServer(answer(401, `{}`))
	t.Cleanup(pd.Close)
	ts, err := m2m.New(m2m.Config{TokenURL: tokenEndpoint(t, false), ClientID: "c", ClientSecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	e := echo.New()
	New(Config{ProtectedDataURL: pd.URL, Timeout: 5 * time.Second, Transport: http.DefaultTransport,
		Tokens: ts, Log: log}).Register(e)
	for range 10 {
		if rec := call(e, PublicPath); rec.Code != http.StatusBadGateway {
			t.Fatalf("%d %s, want 502", rec.Code, rec.Body)
		}
	}
	if n := strings.Count(logs.String(), "refused the gateway's token"); n != 1 {
		t.Errorf("%d lines for one cause in 10 requests, want 1:\n%s", n, logs.String())
	}
}
