//go:build faults

package faults

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Soak: 5-second tokens under steady load for at least 20 renewals.
// Expected: 0 non-2xx, token requests ~ renewals (no extra fetches from
// refused tokens), RSS flat. RSS is reported, not asserted: memory and
// speed are measured, never asserted in tests. FAULTS_SOAK_RENEWALS runs a
// longer soak by hand (e.g. 100: about 5.5 minutes).
func TestSoakShortTokens(t *testing.T) {
	const (
		lifetime = 5 * time.Second
		margin   = time.Second
		workers  = 8
	)
	renewals := int64(20)
	if v := os.Getenv("FAULTS_SOAK_RENEWALS"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 20 {
			t.Fatalf("FAULTS_SOAK_RENEWALS: want a whole number >= 20 (e.g. 100)")
		}
		renewals = n
	}
	s := newSystem(t, opts{lifetime: lifetime, gwEnv: []string{"TOKEN_MARGIN=" + margin.String()}})
	g := startLoad(t, workers, 10*time.Millisecond, s.public())
	// Warm up before the first RSS reading: pools and buffers filled.
	time.Sleep(2 * time.Second)
	procs := []*proc{s.gw, s.pd, s.emu}
	startRSS := make([]int, len(procs))
	for i, p := range procs {
		startRSS[i] = p.rssKiB(t)
	}
	s.idp.resetCounts()
	began := time.Now()
	// Until the renewals have happened, with a bound in case none do; RSS
	// sampled every 10 renewals to show its course, not only its ends.
	deadline := began.Add(time.Duration(renewals) * 9 * time.Second)
	var course []string
	for next := int64(10); s.idp.count(tokenPath) < renewals && time.Now().Before(deadline); {
		if s.idp.count(tokenPath) >= next {
			var parts []string
			for _, p := range procs {
				parts = append(parts, fmt.Sprintf("%.1f", float64(p.rssKiB(t))/1024))
			}
			course = append(course, fmt.Sprintf("%d: %s", next, strings.Join(parts, "/")))
			next += 10
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Half a period more so the last renewal is exercised by the load.
	time.Sleep(lifetime / 2)
	elapsed := time.Since(began)
	g.stop()
	fetches := s.idp.count(tokenPath)
	endRSS := make([]int, len(procs))
	for i, p := range procs {
		endRSS[i] = p.rssKiB(t)
	}
	tl := &g.tally
	// The refresher renews at 80% of the usable life (lifetime - margin).
	period := time.Duration(float64(lifetime-margin) * 0.8)
	expected := float64(elapsed) / float64(period)
	t.Logf("soak: %s, %d workers, %d calls (%s)", elapsed.Round(time.Second), workers, tl.total(), tl)
	t.Logf("soak: %d token requests; %.1f renewals expected at one per %s", fetches, expected, period)
	for i, p := range procs {
		t.Logf("soak: %s RSS %.1f MiB at start, %.1f MiB at end", p.name, float64(startRSS[i])/1024, float64(endRSS[i])/1024)
	}
	t.Logf("soak: RSS MiB gateway/protected-data/emulator after N renewals: %s", strings.Join(course, ", "))
	if fetches < renewals {
		t.Errorf("%d token requests in %s: want >= %d renewals", fetches, elapsed.Round(time.Second), renewals)
	}
	if tl.failures() != 0 {
		t.Errorf("%d of %d calls were not 200: %s", tl.failures(), tl.total(), tl)
	}
	// Token requests ~ renewals: a refused token (expiry boundary, clock)
	// would add fetches. Loose bound for renewal jitter.
	if float64(fetches) > 1.5*expected+2 {
		t.Errorf("%d token requests for about %.0f renewals: extra fetches", fetches, expected)
	}
}
