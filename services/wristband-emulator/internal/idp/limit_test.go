package idp

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
)

// clock is a settable fake clock for the limiter tests.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func limitedServer(t *testing.T, c *clock, l Limits, log *slog.Logger) *echo.Echo {
	t.Helper()
	p, err := New(Config{
		Issuer: "https://acme.us.wristband.dev", Clients: map[string]string{"cid": "s3cr:et", "other": "pw-other"},
		Lifetime: time.Hour, AppID: "app", TenantID: "tnt", Key: testKey, Now: c.now, Limits: l,
	})
	if err != nil {
		t.Fatal(err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := service.NewEcho(log)
	p.Register(e)
	return e
}

func fromAddr(addr string, basic ...string) func(*http.Request) {
	return func(r *http.Request) {
		r.RemoteAddr = addr
		if len(basic) == 2 {
			r.SetBasicAuth(basic[0], basic[1])
		}
	}
}

// check429 asserts an RFC 6749-style 429 whose Retry-After is wantSecs.
func check429(t *testing.T, rec *httptest.ResponseRecorder, wantSecs int) {
	t.Helper()
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429: %s", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("Retry-After"); got != strconv.Itoa(wantSecs) {
		t.Errorf("Retry-After %q, want %d", got, wantSecs)
	}
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error != "temporarily_unavailable" || body.Description == "" {
		t.Errorf("body %s: want an RFC 6749 error object (%v)", rec.Body, err)
	}
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Error("429 must not be cached")
	}
}

func TestRateLimitPerClient(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	e := limitedServer(t, c, Limits{PerClient: 2, PerClientBurst: 4}, nil)
	form := "grant_type=client_credentials"
	for i := range 4 {
		if rec := tokenRequest(e, form, nil); rec.Code != 200 {
			t.Fatalf("request %d within the burst: %d %s", i, rec.Code, rec.Body)
		}
	}
	// Bucket empty; at 2/s the next token comes in 500 ms: Retry-After 1.
	check429(t, tokenRequest(e, form, nil), 1)
	// Another client has its own bucket.
	if rec := tokenRequest(e, form, fromAddr("192.0.2.9:1", "other", "pw-other")); rec.Code != 200 {
		t.Fatalf("another client was limited: %d", rec.Code)
	}
	// Obeying Retry-After is enough.
	c.add(time.Second)
	if rec := tokenRequest(e, form, nil); rec.Code != 200 {
		t.Fatalf("after Retry-After: %d %s", rec.Code, rec.Body)
	}
	// Failed authentications are not charged to the client: an attacker who
	// knows the client_id cannot lock the real client out.
	c.add(10 * time.Second)
	for range 20 {
		if rec := tokenRequest(e, form, fromAddr("198.51.100.7:1", "cid", "guess")); rec.Code != 401 {
			t.Fatalf("wrong secret: %d, want 401", rec.Code)
		}
	}
	if rec := tokenRequest(e, form, nil); rec.Code != 200 {
		t.Fatalf("real client locked out by failed guesses: %d", rec.Code)
	}
}

func TestRateLimitPerSource(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	e := limitedServer(t, c, Limits{PerSource: 0.5, PerSourceBurst: 3}, nil)
	form := "grant_type=client_credentials"
	attacker := fromAddr("203.0.113.5:4444", "cid", "guess")
	for i := range 3 {
		if rec := tokenRequest(e, form, attacker); rec.Code != 401 {
			t.Fatalf("guess %d: %d, want 401", i, rec.Code)
		}
	}
	// Failed requests count per source; at 0.5/s the next slot is 2 s away.
	check429(t, tokenRequest(e, form, attacker), 2)
	// A forged X-Forwarded-For does not buy a new bucket.
	check429(t, tokenRequest(e, form, func(r *http.Request) {
		attacker(r)
		r.Header.Set("X-Forwarded-For", "10.9.8.7")
	}), 2)
	// Other sources are not affected.
	if rec := tokenRequest(e, form, fromAddr("192.0.2.1:5555")); rec.Code != 200 {
		t.Fatalf("another source was limited: %d %s", rec.Code, rec.Body)
	}
	c.add(2 * time.Second)
	if rec := tokenRequest(e, form, fromAddr("203.0.113.5:4444")); rec.Code != 200 {
		t.Fatalf("after Retry-After: %d %s", rec.Code, rec.Body)
	}
}

func TestRateLimitOff(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	e := limitedServer(t, c, Limits{}, nil)
	for i := range 200 {
		if rec := tokenRequest(e, "grant_type=client_credentials", nil); rec.Code != 200 {
			t.Fatalf("request %d with limits off: %d", i, rec.Code)
		}
	}
}

func TestSourceTableIsBounded(t *testing.T) {
	l := newLimiter(1, 1, nil)
	now := time.Unix(1_700_000_000, 0)
	for i := range maxSources + 10 {
		l.wait("src-"+strconv.Itoa(i), now)
	}
	if n := len(l.buckets); n > maxSources {
		t.Fatalf("%d buckets, want at most %d", n, maxSources)
	}
	// A table full of active sources is not swept on every request from a
	// new one: that is a pass over 65,536 entries under the lock each time.
	for i := range 1000 {
		l.wait("more-"+strconv.Itoa(i), now)
	}
	if l.sweeps > 1 {
		t.Fatalf("%d sweeps within one second, want at most 1", l.sweeps)
	}
	// Once the buckets have refilled, a sweep forgets them.
	l.wait("late", now.Add(time.Minute))
	if n := len(l.buckets); n > 1000 {
		t.Fatalf("%d buckets after refill, want the table swept", n)
	}
}

func TestFailedTokenRequestsLogTheClientIDNeverTheSecret(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	e := limitedServer(t, c, Limits{PerClient: 1, PerClientBurst: 1}, log)
	form := "grant_type=client_credentials"
	tokenRequest(e, form, func(r *http.Request) { r.SetBasicAuth("cid", "wrong-secret-xyz") })
	tokenRequest(e, form, func(r *http.Request) { r.SetBasicAuth("pasted-secret-xyzzy", "s3cr:et") })
	tokenRequest(e, form, nil)
	tokenRequest(e, form, nil) // 429
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want 4 access lines, got %d:\n%s", len(lines), buf.String())
	}
	// An unregistered ID may be a misplaced secret: not repeated.
	want := []struct{ id, code string }{{"cid", "invalid_client"}, {"(unknown)", "invalid_client"}, {"cid", ""}, {"cid", "rate_limited"}}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if m["client_id"] != want[i].id || (m["oauth_error"] != nil) != (want[i].code != "") ||
			(want[i].code != "" && m["oauth_error"] != want[i].code) {
			t.Errorf("line %d: client_id=%v oauth_error=%v, want %q %q", i, m["client_id"], m["oauth_error"], want[i].id, want[i].code)
		}
	}
	for _, secret := range []string{"wrong-secret-xyz", "s3cr:et", "s3cr%3Aet", "Basic ", "xyzzy"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("log carries %q:\n%s", secret, buf.String())
		}
	}
}
