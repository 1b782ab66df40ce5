package m2m

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// settle waits until no token request is in flight and the started
// refresher has armed its next timer, so that the next step on the fake
// clock sees the outcome of the last one and fires what is due.
func settle(t *testing.T, s *TokenSource) {
	t.Helper()
	clk, _ := s.clock.(*fakeClock)
	eventually(t, "the fetch in flight to end", func() bool {
		s.mu.Lock()
		idle, started := !s.inFlight, s.started
		s.mu.Unlock()
		return idle && (!started || clk == nil || len(clk.pending()) > 0)
	})
}

// Issue 8.4: after invalid_client, Retry-After says when the next attempt
// will be; once the IdP accepts the client again, callers get a token within
// RetryInterval (2 s); and a client that stays bad never becomes a storm:
// at most one request per RetryInterval under any load, and one per
// MaxBackoff with nobody asking.
func TestPermanentErrorRecoveryAndNoStorm(t *testing.T) {
	const (
		step    = 100 * time.Millisecond // a caller every 100 ms
		badFor  = 10 * time.Minute
		fixedAt = badFor + 300*time.Millisecond
	)
	for _, traffic := range []bool{true, false} {
		t.Run(map[bool]string{true: "callers every 100ms", false: "no callers"}[traffic], func(t *testing.T) {
			clk := newFakeClock()
			p := newIDP(t)
			var fixed atomic.Bool
			var calls []time.Duration // when each token request arrived
			start := clk.Now()
			p.setReply(func(n int, w http.ResponseWriter) {
				calls = append(calls, clk.Now().Sub(start)) // one request at a time: settle
				if !fixed.Load() {
					writeJSON(w, http.StatusUnauthorized, `{"error":"invalid_client","error_description":"client not found"}`)
					return
				}
				writeToken(w, "tok-ok", 3600)
			})
			var logs syncBuffer
			s := newSource(t, p, withClock(clk), withMaxWait(time.Second),
				withLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))))
			s.Start()
			settle(t, s)

			type refusal struct{ at, retryIn time.Duration }
			var refusals []refusal
			recovered := time.Duration(-1)
			for el := time.Duration(0); el < fixedAt+time.Minute && recovered < 0; el += step {
				if el >= fixedAt {
					fixed.Store(true)
				}
				if traffic {
					_, err := s.Token(context.Background())
					var ue *UnavailableError
					switch {
					case err == nil:
						recovered = el
					case errors.As(err, &ue):
						refusals = append(refusals, refusal{el, ue.RetryIn})
					default:
						t.Fatalf("at %s: %v", el, err)
					}
				} else if s.cur.Load() != nil {
					// Not Ready(): a readiness probe counts as demand.
					recovered = el
				}
				settle(t, s)
				clk.Advance(step)
				settle(t, s)
			}
			if recovered < 0 {
				t.Fatal("never recovered")
			}
			bad := 0
			for _, c := range calls {
				if c < fixedAt {
					bad++
				}
			}
			rate := float64(bad) / badFor.Seconds()
			t.Logf("bad client for %s: %d token requests (%.2f/s); recovered %s after the fix", badFor, bad, rate, recovered-fixedAt)
			if traffic {
				// RetryInterval bounds both.
				if recovered-fixedAt > DefaultRetryInterval {
					t.Errorf("recovered %s after the fix, want within %s", recovered-fixedAt, DefaultRetryInterval)
				}
				if limit := int(badFor/DefaultRetryInterval) + 1; bad > limit {
					t.Errorf("%d token requests in %s of a bad client, want at most %d", bad, badFor, limit)
				}
				// Honest Retry-After: a request did happen by the time promised.
				for _, r := range refusals {
					due := r.at + r.retryIn
					ok := false
					for _, c := range calls {
						if c >= r.at && c <= due+step {
							ok = true
							break
						}
					}
					if !ok && due+step < fixedAt {
						t.Fatalf("refused at %s with RetryIn %s, but no attempt by then (attempts %v)", r.at, r.retryIn, calls)
					}
				}
			} else {
				// No caller: only the background schedule, 2 s doubling to 30 s.
				if recovered-fixedAt > DefaultMaxBackoff {
					t.Errorf("recovered %s after the fix, want within MaxBackoff %s", recovered-fixedAt, DefaultMaxBackoff)
				}
				if bad > int(badFor/(DefaultMaxBackoff/2))+5 {
					t.Errorf("%d token requests in %s with nobody asking, want about one per 15-30 s", bad, badFor)
				}
			}
			// Issue 8.5: the cause once, then once a minute; the recovery once.
			eventually(t, "the recovery line", func() bool { return strings.Contains(logs.String(), "fetched again after failures") })
			out := logs.String()
			// With attempts every 2 s that is one a minute; with attempts
			// 15-30 s apart, one every 60-90 s.
			if n := strings.Count(out, "level=ERROR"); n < int(badFor/(90*time.Second)) || n > int(badFor/time.Minute)+1 {
				t.Errorf("%d ERROR lines for one cause over %s (%d attempts), want one a minute", n, badFor, bad)
			}
			if n := strings.Count(out, "fetched again after failures"); n != 1 {
				t.Errorf("%d recovery lines, want 1", n)
			}
		})
	}
}

// Issue 12.3: an IdP that is merely starting (connection refused) is logged
// at Info in the first seconds; if it stays down, one WARN says so.
func TestStartupConnectionRefusedIsNotAWarning(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there now: connection refused

	clk := newFakeClock()
	var logs syncBuffer
	s, err := New(Config{TokenURL: "http://" + addr + "/token", ClientID: testClientID, ClientSecret: testClientSecret, clock: clk,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Start()
	for el := time.Duration(0); el < 2*time.Minute; el += 100 * time.Millisecond {
		settle(t, s)
		if el == startupGrace-100*time.Millisecond {
			// The line is written just after the fetch is marked done.
			eventually(t, "an Info line", func() bool { return strings.Contains(logs.String(), "not reachable yet") })
			if out := logs.String(); strings.Contains(out, "level=WARN") {
				t.Fatalf("during start-up: want Info lines only:\n%s", out)
			}
		}
		clk.Advance(100 * time.Millisecond)
	}
	settle(t, s)
	eventually(t, "a WARN line", func() bool { return strings.Contains(logs.String(), "level=WARN") })
	out := logs.String()
	// One WARN when the grace ends, one more a minute later at most.
	if n := strings.Count(out, "level=WARN"); n < 1 || n > 3 {
		t.Errorf("%d WARN lines for an IdP down for 2 minutes, want 1-3:\n%s", n, out)
	}
	if s.Stats().FetchesTransient < 5 {
		t.Errorf("stats %+v: expected several attempts", s.Stats())
	}
}
