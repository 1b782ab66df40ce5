package m2m

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNewValidatesWholeConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings, all of which must appear
	}{
		{"empty", Config{}, []string{"TokenURL is required", "ClientID is required", "ClientSecret is required"}},
		{"relative URL", Config{TokenURL: "/oauth2/token", ClientID: "a", ClientSecret: "b"}, []string{"not an absolute http(s) URL"}},
		{"bad scheme", Config{TokenURL: "ftp://idp/token", ClientID: "a", ClientSecret: "b"}, []string{"not an absolute http(s) URL"}},
		{"negative durations", Config{TokenURL: "https://idp/token", ClientID: "a", ClientSecret: "b", Margin: -1, MaxBackoff: -1},
			[]string{"Margin must not be negative", "MaxBackoff must not be negative"}},
		{"backoff order", Config{TokenURL: "https://idp/token", ClientID: "a", ClientSecret: "b", MinBackoff: time.Minute, MaxBackoff: time.Second},
			[]string{"MinBackoff 1m0s exceeds MaxBackoff 1s"}},
		{"secret not echoed", Config{TokenURL: "https://user:pw@idp/x y%zz", ClientID: "", ClientSecret: "topsecret"},
			[]string{"ClientID is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg)
			if err == nil {
				_ = s.Close()
				t.Fatal("New accepted an invalid config")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			for _, secret := range []string{"topsecret", "pw"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q reveals a secret", err)
				}
			}
		})
	}

	s, err := New(Config{TokenURL: "https://idp.example/token", ClientID: "a", ClientSecret: "b"})
	if err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	_ = s.Close()
}

func TestConfigPrintingMasksSecret(t *testing.T) {
	key := rsaKey(t)
	cfg := Config{TokenURL: "https://idp/token", ClientID: "id", ClientSecret: testClientSecret, PrivateKey: key}
	var logs syncBuffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "cfg", cfg)
	for _, out := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), logs.String()} {
		if strings.Contains(out, testClientSecret) {
			t.Errorf("printed config reveals the secret: %s", out)
		}
		if strings.Contains(out, key.D.String()[:20]) || strings.Contains(out, key.D.Text(16)[:20]) {
			t.Errorf("printed config reveals the private key: %s", out)
		}
		if !strings.Contains(out, "REDACTED") {
			t.Errorf("printed config does not mark the secret as redacted: %s", out)
		}
	}
}

func TestConcurrentCallersShareOneFetch(t *testing.T) {
	p := newIDP(t)
	s := newSource(t, p)
	p.hold()

	const callers = 1000
	var wg sync.WaitGroup
	toks := make([]string, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() { toks[i], errs[i] = s.Token(context.Background()) })
	}
	// Release the endpoint only once every caller is waiting on it.
	eventually(t, "all callers waiting", func() bool { return s.Stats().Waits == callers })
	p.open()
	wg.Wait()

	for i := range callers {
		if errs[i] != nil || toks[i] != "tok-1" {
			t.Fatalf("caller %d: token %q, err %v; want tok-1", i, toks[i], errs[i])
		}
	}
	if n := p.calls.Load(); n != 1 {
		t.Errorf("token endpoint called %d times, want 1", n)
	}
	if st := s.Stats(); st.Fetches != 1 || st.Failures != 0 {
		t.Errorf("stats %+v, want 1 fetch and no failure", st)
	}
}

func TestConcurrentCallersShareOneFailure(t *testing.T) {
	p := newIDP(t)
	s := newSource(t, p)
	p.setReply(func(_ int, w http.ResponseWriter) {
		writeJSON(w, http.StatusUnauthorized, `{"error":"invalid_client","error_description":"client authentication failed"}`)
	})
	p.hold()

	const callers = 100
	var wg sync.WaitGroup
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() { _, errs[i] = s.Token(context.Background()) })
	}
	eventually(t, "all callers waiting", func() bool { return s.Stats().Waits == callers })
	p.open()
	wg.Wait()
	for i, err := range errs {
		var oe *OAuthError
		if !errors.As(err, &oe) || oe.Code != "invalid_client" {
			t.Fatalf("caller %d: err %v, want the shared invalid_client error", i, err)
		}
	}
	if n := p.calls.Load(); n != 1 {
		t.Errorf("token endpoint called %d times, want 1", n)
	}
}

// The reference demo's crash: the endpoint is 1 s slow exactly when the token
// expires and 64 requests arrive.
func TestSlowEndpointAtExpiry(t *testing.T) {
	for _, background := range []bool{false, true} {
		t.Run(fmt.Sprintf("background=%v", background), func(t *testing.T) {
			clk := newFakeClock()
			p := newIDP(t)
			p.lifetime.Store(100)
			s := newSource(t, p, withClock(clk), withMargin(10*time.Second))
			if background {
				s.Start()
				eventually(t, "first token", func() bool { return s.Ready() == nil })
			} else if _, err := s.Token(context.Background()); err != nil {
				t.Fatal(err)
			}

			p.setReply(func(n int, w http.ResponseWriter) {
				time.Sleep(time.Second)
				writeToken(w, fmt.Sprintf("tok-%d", n), 100)
			})
			p.hold()
			if background {
				// At the renewal point: the refresher fetches, callers keep
				// getting the current token meanwhile.
				clk.Advance(clk.waitTimers(t, 1)[0])
				eventually(t, "renewal request", func() bool { return p.calls.Load() == 2 })
			} else {
				// Past the margin: every caller has to wait for the fetch.
				clk.Advance(90 * time.Second)
			}

			const callers = 64
			waits0 := s.Stats().Waits // the first on-demand fetch was a wait
			var wg sync.WaitGroup
			var failed, got2 sync.Map
			for i := range callers {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					tok, err := s.Token(ctx)
					if err != nil {
						failed.Store(i, err)
					}
					if tok == "tok-2" {
						got2.Store(i, true)
					}
				})
			}
			if !background {
				eventually(t, "all callers waiting", func() bool { return s.Stats().Waits == waits0+callers })
			} else {
				wg.Wait() // nobody waits for the slow renewal
			}
			p.open()
			wg.Wait()

			failed.Range(func(k, v any) bool {
				t.Errorf("caller %v failed: %v", k, v)
				return true
			})
			if n := p.calls.Load(); n != 2 {
				t.Errorf("token endpoint called %d times, want 2 (one initial, one at expiry)", n)
			}
			if background {
				if w := s.Stats().Waits; w != 0 {
					t.Errorf("%d callers waited despite background renewal", w)
				}
			} else {
				n := 0
				got2.Range(func(any, any) bool { n++; return true })
				if n != callers {
					t.Errorf("%d of %d callers got the new token", n, callers)
				}
			}
		})
	}
}

// While the IdP fails, Token answers at once with the time of the next
// attempt; the caller that comes back then triggers it and gets the token.
func TestRetryWithBackoffOn5xx(t *testing.T) {
	clk := newFakeClock()
	p := newIDP(t)
	p.setReply(func(n int, w http.ResponseWriter) {
		switch n {
		case 1:
			writeJSON(w, http.StatusServiceUnavailable, `{"error":"temporarily_unavailable"}`)
		case 2:
			http.Error(w, "boom", http.StatusInternalServerError)
		default:
			writeToken(w, "tok-ok", 3600)
		}
	})
	const lo = 100 * time.Millisecond
	s := newSource(t, p, withClock(clk), withBackoff(lo, 10*time.Second))

	// Each failure schedules the next attempt with equal jitter in [d/2, d],
	// d doubling from MinBackoff; the error says when.
	for i, d := range []time.Duration{lo, 2 * lo} {
		_, err := s.Token(context.Background())
		var ue *UnavailableError
		if !errors.As(err, &ue) || !errors.Is(err, ErrTokenUnavailable) || !strings.Contains(err.Error(), "HTTP 5") {
			t.Fatalf("attempt %d: err %v, want an *UnavailableError for the 5xx", i+1, err)
		}
		if ue.RetryIn < d/2 || ue.RetryIn > d {
			t.Fatalf("attempt %d: RetryIn %s, want within [%s, %s]", i+1, ue.RetryIn, d/2, d)
		}
		if got := RetryAfter(err); got != time.Second {
			t.Errorf("RetryAfter = %s, want the 1 s floor", got)
		}
		// Asking again before then costs no request.
		if _, err := s.Token(context.Background()); err == nil || p.calls.Load() != int64(i+1) {
			t.Fatalf("attempt %d: a second call before the retry is due made a request (%d calls, err %v)", i+1, p.calls.Load(), err)
		}
		if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "HTTP 5") {
			t.Errorf("Ready = %v, want the 5xx error", err)
		}
		clk.Advance(ue.RetryIn)
	}
	if tok, err := s.Token(context.Background()); err != nil || tok != "tok-ok" {
		t.Fatalf("Token = %q, %v; want tok-ok once the retry is due", tok, err)
	}
	if st := s.Stats(); st.Fetches != 3 || st.Failures != 2 || st.FetchesTransient != 2 || st.FetchesOK != 1 {
		t.Errorf("stats %+v, want 3 fetches: 2 transient failures, 1 ok", st)
	}
	if err := s.Ready(); err != nil {
		t.Errorf("Ready after recovery: %v", err)
	}
}

func TestBackoffCapAndJitter(t *testing.T) {
	s := &TokenSource{minBackoff: 100 * time.Millisecond, maxBackoff: 2 * time.Second}
	seen := map[time.Duration]bool{}
	for n := 1; n < 100; n++ {
		d := s.backoffLocked(s.minBackoff, n)
		ceil := min(s.minBackoff<<min(n-1, 20), s.maxBackoff)
		if d < ceil/2 || d > ceil {
			t.Fatalf("backoff(%d) = %s, want within [%s, %s]", n, d, ceil/2, ceil)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Errorf("only %d distinct delays: no jitter?", len(seen))
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	clk := newFakeClock()
	p := newIDP(t)
	p.setReply(func(n int, w http.ResponseWriter) {
		if n == 1 {
			w.Header().Set("Retry-After", "7")
			writeJSON(w, http.StatusTooManyRequests, `{"error":"slow_down"}`)
			return
		}
		writeToken(w, "tok-ok", 3600)
	})
	s := newSource(t, p, withClock(clk), withBackoff(10*time.Millisecond, time.Second))
	s.Start()

	// Above the 1 s backoff cap and the 2 s on-demand interval alike.
	if ds := clk.waitTimers(t, 1); ds[0] != 7*time.Second {
		t.Fatalf("retry armed in %s, want Retry-After's 7s", ds[0])
	}
	_, err := s.Token(context.Background())
	if got := RetryAfter(err); got != 7*time.Second {
		t.Errorf("RetryAfter(%v) = %s, want 7s", err, got)
	}
	clk.Advance(6 * time.Second)
	if _, err := s.Token(context.Background()); err == nil {
		t.Fatal("a token before Retry-After elapsed")
	}
	_ = s.Ready()
	if n := p.calls.Load(); n != 1 {
		t.Fatalf("retried before Retry-After elapsed: %d calls", n)
	}
	clk.Advance(time.Second)
	eventually(t, "the retry", func() bool { return s.Ready() == nil })
	if n := p.calls.Load(); n != 2 {
		t.Errorf("%d calls, want 2", n)
	}
}

func TestRetryAfterParsing(t *testing.T) {
	clk := newFakeClock()
	s := &TokenSource{clock: clk}
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"0", 0}, {"-5", 0}, {"3", 3 * time.Second}, {"junk", 0},
		{"999999", maxRetryAfter},
		{clk.Now().Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{clk.Now().Add(-time.Hour).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := s.retryAfter(tt.in); got != tt.want {
			t.Errorf("retryAfter(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// Only a 4xx is a verdict on the client: an unexpected 2xx or 3xx (a 204, a
// 304 from a cache in between) is retried like a 5xx.
func TestUnexpectedSuccessStatusIsTransient(t *testing.T) {
	for _, status := range []int{http.StatusNoContent, http.StatusNotModified} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			p := newIDP(t)
			p.setReply(func(_ int, w http.ResponseWriter) { w.WriteHeader(status) })
			s := newSource(t, p, withClock(newFakeClock()), withBackoff(time.Millisecond, time.Minute))
			_, err := s.Token(context.Background())
			var oe *OAuthError
			if err == nil || errors.As(err, &oe) {
				t.Fatalf("err %v, want a transient (non-OAuthError) failure", err)
			}
			if st := s.Stats(); st.FetchesTransient != 1 || st.FetchesPermanent != 0 {
				t.Errorf("stats %+v, want one transient failure", st)
			}
		})
	}
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		wantCode string
	}{
		{"invalid_client", http.StatusUnauthorized, `{"error":"invalid_client","error_description":"Client authentication failed"}`, "invalid_client"},
		{"invalid_grant", http.StatusBadRequest, `{"error":"invalid_grant"}`, "invalid_grant"},
		{"forbidden without body", http.StatusForbidden, ``, ""},
		{"not found html", http.StatusNotFound, `<html>nope</html>`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			p := newIDP(t)
			p.setReply(func(_ int, w http.ResponseWriter) { writeJSON(w, tt.status, tt.body) })
			var logs syncBuffer
			s := newSource(t, p, withClock(clk), withBackoff(time.Millisecond, time.Minute),
				withLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))

			for i := range 3 {
				_, err := s.Token(context.Background())
				var oe *OAuthError
				if !errors.As(err, &oe) {
					t.Fatalf("call %d: err %v, want an *OAuthError", i, err)
				}
				if oe.StatusCode != tt.status || oe.Code != tt.wantCode {
					t.Errorf("call %d: %+v, want status %d code %q", i, oe, tt.status, tt.wantCode)
				}
				if !errors.Is(err, ErrTokenUnavailable) {
					t.Errorf("call %d: %v is not ErrTokenUnavailable", i, err)
				}
			}
			if n := p.calls.Load(); n != 1 {
				t.Errorf("token endpoint called %d times, want 1: permanent errors must not be retried on demand", n)
			}
			var oe *OAuthError
			if err := s.Ready(); !errors.As(err, &oe) {
				t.Errorf("Ready = %v, want the *OAuthError", err)
			}

			// The refresher still tries again, from 2 s doubling to the cap:
			// the client may get fixed in the IdP.
			s.Start()
			for i, d := range []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second} {
				ds := clk.waitTimers(t, 1)
				if ds[0] < d/2 || ds[0] > d {
					t.Fatalf("retry %d armed in %v, want within [%s, %s]", i+1, ds, d/2, d)
				}
				clk.Advance(ds[0])
				eventually(t, "slow retry", func() bool { return p.calls.Load() == int64(i+2) })
			}
			clk.waitTimers(t, 1) // that failure is recorded and the next retry armed
			if st := s.Stats(); st.FetchesPermanent != 4 || st.FetchesTransient != 0 {
				t.Errorf("stats %+v, want 4 permanent failures", st)
			}

			if got := strings.Count(logs.String(), "level=ERROR"); got != 1 {
				t.Errorf("%d error log lines for one persistent rejection, want 1:\n%s", got, logs.String())
			}
		})
	}
}

func TestRecoversAfterPermanentErrorIsFixed(t *testing.T) {
	clk := newFakeClock()
	p := newIDP(t)
	p.setReply(func(_ int, w http.ResponseWriter) {
		writeJSON(w, http.StatusUnauthorized, `{"error":"invalid_client"}`)
	})
	s := newSource(t, p, withClock(clk), withBackoff(time.Millisecond, time.Minute))
	s.Start()
	clk.waitTimers(t, 1)
	p.setReply(nil) // the operator fixed the client
	clk.Advance(time.Minute)
	eventually(t, "recovery", func() bool { return s.Ready() == nil })
	if tok, err := s.Token(context.Background()); err != nil || tok != "tok-2" {
		t.Errorf("Token = %q, %v; want tok-2", tok, err)
	}
}

func TestMarginIsNeverViolated(t *testing.T) {
	const lifetime = 100
	tests := []struct {
		name       string
		margin     time.Duration
		lifetime   int64
		wantMargin time.Duration
		wantWarn   bool
	}{
		{"default margin", 0, lifetime, DefaultMargin, false},
		{"custom margin", 10 * time.Second, lifetime, 10 * time.Second, false},
		// A token living under twice the margin gets half its life as margin.
		{"short-lived token", 30 * time.Second, 20, 10 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			p := newIDP(t)
			var mu sync.Mutex
			expiry := map[string]time.Time{}   // what the IdP put in exp
			reckoned := map[string]time.Time{} // send time + expires_in: the fake clock stands still in flight
			p.setReply(func(n int, w http.ResponseWriter) {
				tok := fmt.Sprintf("tok-%d", n)
				mu.Lock()
				// The IdP truncates iat to whole seconds, as Wristband does.
				expiry[tok] = clk.Now().Truncate(time.Second).Add(time.Duration(tt.lifetime) * time.Second)
				reckoned[tok] = clk.Now().Add(time.Duration(tt.lifetime) * time.Second)
				mu.Unlock()
				writeToken(w, tok, tt.lifetime)
			})
			var logs syncBuffer
			s := newSource(t, p, withClock(clk), withMargin(tt.margin),
				withLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			clk.Advance(700 * time.Millisecond) // off the whole second

			for step := 0; step < 300; step++ {
				tok, err := s.Token(context.Background())
				if err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				mu.Lock()
				left, ours := expiry[tok].Sub(clk.Now()), reckoned[tok].Sub(clk.Now())
				mu.Unlock()
				// One second of exp truncation is the margin's to absorb.
				if left <= tt.wantMargin-time.Second {
					t.Fatalf("step %d: %s handed out with %s left by the IdP's exp, margin %s", step, tok, left, tt.wantMargin)
				}
				// By our own reckoning (from the send time) it has more than the margin.
				if ours <= tt.wantMargin {
					t.Fatalf("step %d: %s handed out with %s left, not more than the margin %s", step, tok, ours, tt.wantMargin)
				}
				clk.Advance(time.Second)
				// Let an early renewal started by this call land, so that the
				// next step sees a settled state.
				eventually(t, "renewal to finish", func() bool {
					s.mu.Lock()
					defer s.mu.Unlock()
					return !s.inFlight
				})
			}
			if n := p.calls.Load(); n < 3 {
				t.Errorf("only %d fetches over 300 s of %d s tokens", n, tt.lifetime)
			}
			if warned := strings.Count(logs.String(), "under twice the margin"); warned != map[bool]int{true: 1}[tt.wantWarn] {
				t.Errorf("clamp warning logged %d times (want it once iff clamped):\n%s", warned, logs.String())
			}
		})
	}
}

func TestTokenArrivingPastMarginIsAFailure(t *testing.T) {
	clk := newFakeClock()
	p := newIDP(t)
	p.setReply(func(_ int, w http.ResponseWriter) {
		clk.Advance(8 * time.Second) // the response takes longer than the usable life
		writeToken(w, "tok-late", 10)
	})
	s := newSource(t, p, withClock(clk), withMargin(5*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := s.Token(ctx)
	if !errors.Is(err, ErrTokenUnavailable) || !strings.Contains(err.Error(), "arrived with less than") {
		t.Fatalf("err %v, want a token-arrived-too-late error", err)
	}
}

func TestBackgroundRenewalReplacesTokenBeforeExpiry(t *testing.T) {
	clk := newFakeClock()
	p := newIDP(t)
	p.lifetime.Store(100)
	s := newSource(t, p, withClock(clk), withMargin(10*time.Second))
	s.Start()
	eventually(t, "first token", func() bool { return s.Ready() == nil })

	// Usable life 90 s. The first token renews anywhere in [7.5%, 85%] of
	// it (spreading a fleet started together), later ones in [70%, 85%].
	for i, want := range []struct{ lo, hi time.Duration }{{6750 * time.Millisecond, 76500 * time.Millisecond}, {63 * time.Second, 76500 * time.Millisecond}} {
		ds := clk.waitTimers(t, 1)
		if ds[0] < want.lo || ds[0] > want.hi {
			t.Fatalf("renewal %d armed in %v, want within [%s, %s]", i+1, ds, want.lo, want.hi)
		}
		clk.Advance(ds[0])
		tok := fmt.Sprintf("tok-%d", i+2)
		eventually(t, "renewed token", func() bool {
			got, _ := s.Token(context.Background())
			return got == tok
		})
	}
	if st := s.Stats(); st.Waits != 0 || st.Remaining != 100*time.Second || st.Renewals != 2 || st.FetchesOK != 3 {
		t.Errorf("stats %+v, want no waits, 2 renewals and a full 100s remaining", st)
	}
}

func TestFailedRenewalKeepsServingUntilMargin(t *testing.T) {
	clk := newFakeClock()
	p := newIDP(t)
	p.lifetime.Store(100)
	s := newSource(t, p, withClock(clk), withMargin(10*time.Second), withBackoff(time.Second, 4*time.Second))
	s.Start()
	eventually(t, "first token", func() bool { return s.Ready() == nil })
	renewAt := clk.waitTimers(t, 1)[0]

	p.setReply(func(_ int, w http.ResponseWriter) { http.Error(w, "down", http.StatusBadGateway) })
	clk.Advance(renewAt) // renewal fails...
	for at := renewAt; at < 90*time.Second; {
		ds := clk.waitTimers(t, 1) // ...and is retried with backoff
		if tok, err := s.Token(context.Background()); err != nil || tok != "tok-1" {
			t.Fatalf("at %s: Token = %q, %v; want the current tok-1 while renewal fails", at, tok, err)
		}
		if err := s.Ready(); err != nil {
			t.Fatalf("at %s: Ready = %v while the token is still usable", at, err)
		}
		step := min(ds[0], 90*time.Second-at)
		clk.Advance(step)
		at += step
		eventually(t, "retry to finish", func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return !s.inFlight
		})
	}
	// Past the margin the token is no longer handed out.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if tok, err := s.Token(ctx); !errors.Is(err, ErrTokenUnavailable) {
		t.Errorf("past the margin: Token = %q, %v; want ErrTokenUnavailable", tok, err)
	}
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("Ready = %v, want the 502", err)
	}
	if st := s.Stats(); st.Failures < 3 {
		t.Errorf("stats %+v: expected several retries", st)
	}
}

func TestCallerDeadlineHonouredWhileWaiting(t *testing.T) {
	p := newIDP(t)
	s := newSource(t, p)
	p.hold() // the endpoint hangs

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := s.Token(ctx); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTokenUnavailable) {
			t.Errorf("err %v, want DeadlineExceeded and ErrTokenUnavailable", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Token ignored the caller's deadline")
	}

	// A later caller joins the same fetch; when it finally answers, it wins.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	go func() { _, err := s.Token(ctx2); done <- err }()
	eventually(t, "second caller waiting", func() bool { return s.Stats().Waits == 2 })
	p.open()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := p.calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1 shared fetch", n)
	}
}

// Issue 9.4: with no usable token and the IdP failing, no caller waits for
// the IdP; the answer says when the next attempt will be.
func TestFailFastWithTheTimeOfTheNextAttempt(t *testing.T) {
	clk := newFakeClock()
	p := newIDP(t)
	p.setReply(func(_ int, w http.ResponseWriter) {
		w.Header().Set("Retry-After", "60")
		writeJSON(w, http.StatusServiceUnavailable, `{"error":"temporarily_unavailable"}`)
	})
	s := newSource(t, p, withClock(clk))
	_, err := s.Token(context.Background()) // the first fetch: waited on, fails
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.RetryIn != time.Minute {
		t.Fatalf("err %v, want an *UnavailableError with RetryIn 1m", err)
	}
	// Later callers, even without a deadline, get the answer at once.
	for range 10 {
		clk.Advance(time.Second)
		_, err = s.Token(context.Background())
		if !errors.As(err, &ue) || !errors.Is(err, ErrTokenUnavailable) {
			t.Fatalf("err %v, want an *UnavailableError", err)
		}
	}
	if got := RetryAfter(err); got != 50*time.Second {
		t.Errorf("RetryAfter = %s, want the 50 s left of the server's Retry-After", got)
	}
	if n := p.calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

// Only the first fetch (no failure known yet) is waited on, and only for
// MaxWait.
func TestFirstFetchWaitIsBounded(t *testing.T) {
	clk := newFakeClock()
	p := newIDP(t)
	p.hold()
	s := newSource(t, p, withClock(clk), withMaxWait(2*time.Second))
	done := make(chan error, 1)
	go func() { _, err := s.Token(context.Background()); done <- err }()
	clk.waitTimers(t, 1) // the caller's MaxWait timer
	clk.Advance(2 * time.Second)
	err := <-done
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.RetryIn != 0 || !strings.Contains(err.Error(), "in flight") {
		t.Fatalf("err %v, want an in-flight *UnavailableError", err)
	}
	p.open()
	eventually(t, "the first token", func() bool { return s.Ready() == nil })
	if n := p.calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

func TestInvalidate(t *testing.T) {
	p := newIDP(t)
	s := newSource(t, p)
	tok1, err := s.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	s.Invalidate("some-older-token")
	if tok, _ := s.Token(context.Background()); tok != tok1 {
		t.Fatalf("invalidating another token dropped the cached one")
	}

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { s.Invalidate(tok1) })
	}
	wg.Wait()
	for range 20 {
		wg.Go(func() {
			if tok, err := s.Token(context.Background()); err != nil || tok != "tok-2" {
				t.Errorf("after invalidate: %q, %v", tok, err)
			}
		})
	}
	wg.Wait()
	s.Invalidate(tok1) // late 401s for the old token must not drop tok-2
	if tok, _ := s.Token(context.Background()); tok != "tok-2" {
		t.Errorf("a late Invalidate of the old token dropped the new one")
	}
	if n := p.calls.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
}

func TestInvalidateWakesRefresher(t *testing.T) {
	p := newIDP(t)
	s := newSource(t, p)
	s.Start()
	eventually(t, "first token", func() bool { return s.Ready() == nil })
	tok, _ := s.Token(context.Background())
	s.Invalidate(tok)
	eventually(t, "refresher to refetch without any caller", func() bool { return p.calls.Load() == 2 && s.Ready() == nil })
	if st := s.Stats(); st.Waits != 0 {
		t.Errorf("stats %+v: nobody called Token, nobody should have waited", st)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		p := newIDP(t)
		s := newSource(t, p)
		s.Start()
		eventually(t, "first token", func() bool { return s.Ready() == nil })
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		_ = s.Close() // idempotent
		s.Start()     // no-op after Close
		_, err := s.Token(context.Background())
		if !errors.Is(err, ErrClosed) || !errors.Is(err, ErrTokenUnavailable) {
			t.Errorf("Token after Close: %v", err)
		}
		if err := s.Ready(); !errors.Is(err, ErrClosed) {
			t.Errorf("Ready after Close: %v", err)
		}
	})
	t.Run("fetch in flight", func(t *testing.T) {
		p := newIDP(t)
		s := newSource(t, p)
		p.hold()
		s.Start()
		done := make(chan error, 1)
		go func() { _, err := s.Token(context.Background()); done <- err }()
		eventually(t, "request at the endpoint", func() bool { return p.calls.Load() == 1 && s.Stats().Waits == 1 })
		closed := make(chan struct{})
		go func() { _ = s.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(20 * time.Second):
			t.Fatal("Close hangs while a fetch is in flight")
		}
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Errorf("waiter got %v, want ErrClosed", err)
		}
	})
	t.Run("refresher in backoff", func(t *testing.T) {
		clk := newFakeClock()
		p := newIDP(t)
		p.setReply(func(_ int, w http.ResponseWriter) { http.Error(w, "x", http.StatusInternalServerError) })
		s := newSource(t, p, withClock(clk))
		s.Start()
		clk.waitTimers(t, 1)
		_ = s.Close()
		if _, err := s.Token(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Token after Close got %v, want ErrClosed", err)
		}
	})
	// goleak in TestMain checks that no goroutine outlives these tests.
}

func TestResponseValidation(t *testing.T) {
	big := `{"access_token":"` + strings.Repeat("a", 70<<10) + `","token_type":"Bearer","expires_in":60}`
	tests := []struct {
		name    string
		body    string
		wantErr string // "" means success
		wantTTL time.Duration
	}{
		{"ok", `{"access_token":"abc","token_type":"Bearer","expires_in":1800}`, "", 1800 * time.Second},
		{"lower-case bearer", `{"access_token":"abc","token_type":"bearer","expires_in":60}`, "", time.Minute},
		{"quoted expires_in", `{"access_token":"abc","token_type":"BEARER","expires_in":"60"}`, "", time.Minute},
		{"fractional expires_in", `{"access_token":"abc","token_type":"Bearer","expires_in":59.5}`, "", 59500 * time.Millisecond},
		{"expires_in clamped to a day", `{"access_token":"abc","token_type":"Bearer","expires_in":31536000}`, "", 24 * time.Hour},
		{"not JSON", `<html>login</html>`, "not a JSON object", 0},
		{"JSON array", `["abc"]`, "not a JSON object", 0},
		{"oversized", big, "larger than 64 KiB", 0},
		{"no access_token", `{"token_type":"Bearer","expires_in":60}`, "access_token is missing", 0},
		{"header injection", `{"access_token":"abc\r\nX-Evil: 1","token_type":"Bearer","expires_in":60}`, "not allowed in an Authorization header", 0},
		{"wrong token_type", `{"access_token":"abc","token_type":"mac","expires_in":60}`, `token_type is "mac"`, 0},
		{"no token_type", `{"access_token":"abc","expires_in":60}`, `token_type is ""`, 0},
		{"no expires_in", `{"access_token":"abc","token_type":"Bearer"}`, "expires_in is missing", 0},
		{"zero expires_in", `{"access_token":"abc","token_type":"Bearer","expires_in":0}`, "not positive", 0},
		{"negative expires_in", `{"access_token":"abc","token_type":"Bearer","expires_in":-5}`, "not positive", 0},
		{"junk expires_in", `{"access_token":"abc","token_type":"Bearer","expires_in":"soon"}`, "not a number", 0},
		{"all problems at once", `{"expires_in":0}`, "access_token is missing", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			p := newIDP(t)
			p.setReply(func(_ int, w http.ResponseWriter) { writeJSON(w, http.StatusOK, tt.body) })
			s := newSource(t, p, withClock(clk), withMargin(time.Second))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			tok, err := s.Token(ctx)
			if tt.wantErr == "" {
				if err != nil || tok == "" {
					t.Fatalf("Token = %q, %v", tok, err)
				}
				if got := s.Stats().Remaining; got != tt.wantTTL {
					t.Errorf("remaining %s, want %s", got, tt.wantTTL)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrTokenUnavailable) {
				t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "abc") || strings.Contains(err.Error(), "aaaa") || strings.Contains(err.Error(), "login") {
				t.Errorf("error %q quotes the response body", err)
			}
		})
	}
}

func TestSecretNeverInErrorsOrLogs(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	replies := []func(w http.ResponseWriter){
		func(w http.ResponseWriter) { http.Error(w, testClientSecret, http.StatusInternalServerError) },
		func(w http.ResponseWriter) {
			writeJSON(w, http.StatusServiceUnavailable, `{"error":"temporarily_unavailable","error_description":"bad secret `+testClientSecret+`"}`)
		},
		func(w http.ResponseWriter) { writeJSON(w, http.StatusOK, `{"access_token":"`+testClientSecret+`"`) },
		func(w http.ResponseWriter) { writeToken(w, "tok-visible-only-to-callers", 3600) },
		func(w http.ResponseWriter) {
			writeJSON(w, http.StatusUnauthorized, `{"error":"invalid_client","error_description":"secret `+testClientSecret+` is wrong"}`)
		},
	}
	clk := newFakeClock()
	p := newIDP(t)
	p.setReply(func(n int, w http.ResponseWriter) { replies[min(n, len(replies))-1](w) })
	s := newSource(t, p, withClock(clk), withLogger(logger), withBackoff(time.Millisecond, time.Millisecond))

	var errs []string
	for range len(replies) {
		// Failures come back at once: no caller waits on a failing endpoint.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		tok, err := s.Token(ctx)
		cancel()
		if err != nil {
			errs = append(errs, err.Error())
			if r := s.Ready(); r != nil {
				errs = append(errs, r.Error())
			}
			clk.Advance(time.Second) // past the backoff
			continue
		}
		s.Invalidate(tok)
	}
	// A refused connection too.
	dead, err := New(Config{TokenURL: "http://127.0.0.1:1/token", ClientID: testClientID, ClientSecret: testClientSecret, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if _, err := dead.Token(ctx); err != nil {
		errs = append(errs, err.Error())
	}
	cancel()
	_ = dead.Close()

	all := strings.Join(errs, "\n") + "\n" + logs.String()
	if len(errs) < 4 || !strings.Contains(all, "invalid_client") {
		t.Fatalf("scenarios did not run as planned:\n%s", all)
	}
	for _, leak := range []string{testClientSecret, "tok-visible-only-to-callers", "s3cr3t"} {
		if strings.Contains(all, leak) {
			t.Errorf("%q appears in errors or logs:\n%s", leak, all)
		}
	}
	if !strings.Contains(all, "[REDACTED]") {
		t.Errorf("an echoed secret should be shown as [REDACTED]:\n%s", all)
	}
}

func TestDefaultHTTPClientAndRequestTimeout(t *testing.T) {
	p := newIDP(t)
	p.hold()
	s, err := New(Config{TokenURL: p.srv.URL, ClientID: testClientID, ClientSecret: testClientSecret, RequestTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.httpClient.Timeout != 50*time.Millisecond {
		t.Errorf("own client timeout %s, want RequestTimeout", s.httpClient.Timeout)
	}
	// A RequestTimeout above the default is not cut short by the client's.
	long, err := New(Config{TokenURL: p.srv.URL, ClientID: testClientID, ClientSecret: testClientSecret, RequestTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	if long.httpClient.Timeout != time.Minute {
		t.Errorf("own client timeout %s with RequestTimeout 1m", long.httpClient.Timeout)
	}
	def, err := New(Config{TokenURL: p.srv.URL, ClientID: testClientID, ClientSecret: testClientSecret})
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	if def.httpClient.Timeout != DefaultRequestTimeout {
		t.Errorf("default client timeout %s", def.httpClient.Timeout)
	}
	// The per-request timeout ends a hung request even for a caller without
	// a deadline; the failure is recorded and retried after backoff.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _, _ = s.Token(ctx); close(done) }()
	eventually(t, "a timed-out attempt", func() bool { return s.Stats().Failures >= 1 })
	cancel()
	<-done
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("Ready = %v, want a timeout", err)
	}
}

// A resource server that refuses every token must not turn each request into
// a token request: after the first invalidation, fresh tokens are kept until
// they are older than a guard that doubles up to MaxBackoff.
func TestInvalidateGuardAgainstPersistentRefusal(t *testing.T) {
	p := newIDP(t)
	clk := newFakeClock()
	s := newSource(t, p, withClock(clk), withBackoff(time.Second, 8*time.Second))
	ctx := context.Background()
	refuseAll := func(n int) {
		for range n {
			tok, err := s.Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			s.Invalidate(tok)
		}
	}
	refuseAll(50) // all at once: the first drops tok-1, the rest hit the guard
	if n := p.calls.Load(); n != 2 {
		t.Fatalf("50 refusals in an instant caused %d fetches, want 2", n)
	}
	// Each guard is 1s, 2s, 4s, then capped at 8s.
	for i, step := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		clk.Advance(step - time.Millisecond)
		refuseAll(10)
		if n := p.calls.Load(); n != int64(2+i) {
			t.Fatalf("step %d: refusal before the %s guard caused a fetch (%d fetches)", i, step, n)
		}
		clk.Advance(time.Millisecond)
		refuseAll(10)
		if n := p.calls.Load(); n != int64(3+i) {
			t.Fatalf("step %d: %d fetches after the %s guard, want %d", i, n, step, 3+i)
		}
	}
	// A quiet spell ends the streak: the next lone 401 drops the token at once.
	clk.Advance(17 * time.Second)
	before := p.calls.Load()
	tok, _ := s.Token(ctx)
	s.Invalidate(tok)
	if _, err := s.Token(ctx); err != nil || p.calls.Load() != before+1 {
		t.Fatalf("after a quiet spell a 401 should refetch at once: %d -> %d fetches (%v)", before, p.calls.Load(), err)
	}
}
