package m2m

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fleetIDP is an in-memory token endpoint (a thousand sources on one fake
// clock need no sockets) that counts requests per second of fake time.
type fleetIDP struct {
	clk      *fakeClock
	start    time.Time
	lifetime int
	down     atomic.Bool
	mu       sync.Mutex
	perSec   map[int]int
}

func (f *fleetIDP) RoundTrip(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	sec := int(f.clk.Now().Sub(f.start) / time.Second)
	f.mu.Lock()
	f.perSec[sec]++
	f.mu.Unlock()
	if f.down.Load() {
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
	}
	body := fmt.Sprintf(`{"access_token":"tok","token_type":"Bearer","expires_in":%d}`, f.lifetime)
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

// peak returns the busiest second and the mean per second in [from, to).
func (f *fleetIDP) peak(from, to int) (busiest int, mean float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	total := 0
	for s := from; s < to; s++ {
		total += f.perSec[s]
		busiest = max(busiest, f.perSec[s])
	}
	return busiest, float64(total) / float64(to-from)
}

// Issue 8.8: a fleet started at the same instant, or recovering together
// after a shared outage, must not renew in lockstep. 1,000 sources on one
// fake clock, 30 s tokens (3 s margin); after the first lifetime the IdP's
// busiest second holds at most twice the mean rate.
func TestFleetDoesNotRenewInLockstep(t *testing.T) {
	const (
		n        = 1000
		lifetime = 30 // seconds
	)
	clk := newFakeClock()
	idp := &fleetIDP{clk: clk, start: clk.Now(), lifetime: lifetime, perSec: map[int]int{}}
	client := &http.Client{Transport: idp}
	sources := make([]*TokenSource, n)
	for i := range sources {
		s, err := New(Config{TokenURL: "https://idp.example/token", ClientID: "gw", ClientSecret: "s", HTTPClient: client,
			Margin: 3 * time.Second, clock: clk, rnd: newRand(uint64(i))})
		if err != nil {
			t.Fatal(err)
		}
		sources[i] = s
	}
	t.Cleanup(func() {
		for _, s := range sources {
			_ = s.Close()
		}
	})
	// Every source idle, its refresher parked on a timer.
	settleAll := func() {
		eventually(t, "the fleet to settle", func() bool {
			if clk.armed() != n {
				return false
			}
			for _, s := range sources {
				s.mu.Lock()
				busy := s.inFlight
				s.mu.Unlock()
				if busy {
					return false
				}
			}
			return true
		})
	}
	for _, s := range sources {
		s.Start() // all at the same instant of fake time
	}
	settleAll()
	el := 0 // seconds of fake time
	run := func(until int, probe bool) {
		for ; el < until; el++ {
			if probe {
				// A few callers each second: none may wait (Waits stays 0).
				for i := range 5 {
					if _, err := sources[(el*7+i*131)%n].Token(context.Background()); err != nil {
						t.Fatalf("at %ds: %v", el, err)
					}
				}
			}
			clk.Advance(time.Second)
			settleAll()
		}
	}

	run(10*lifetime, true)
	busiest, mean := idp.peak(lifetime, 10*lifetime)
	t.Logf("started together: busiest second %d, mean %.1f/s (%.2fx), first second %d", busiest, mean, float64(busiest)/mean, idp.perSec[0])
	if float64(busiest) > 2*mean {
		t.Errorf("busiest second %d > 2x the mean %.1f/s: the fleet renews in lockstep", busiest, mean)
	}
	for _, s := range sources {
		if w := s.Stats().Waits; w != 0 {
			t.Fatalf("a caller waited (%d) with background renewal running", w)
		}
	}

	// A shared outage long enough for every token to expire, then recovery.
	idp.down.Store(true)
	run(el+2*lifetime, false)
	idp.down.Store(false)
	back := el
	run(back+6*lifetime, false)
	recovered := 0
	for _, s := range sources {
		if s.Ready() == nil {
			recovered++
		}
	}
	if recovered != n {
		t.Fatalf("%d of %d sources recovered", recovered, n)
	}
	busiest, mean = idp.peak(back+lifetime, back+6*lifetime)
	t.Logf("after a shared outage: busiest second %d, mean %.1f/s (%.2fx)", busiest, mean, float64(busiest)/mean)
	if float64(busiest) > 2*mean {
		t.Errorf("after recovery: busiest second %d > 2x the mean %.1f/s", busiest, mean)
	}
}
