//go:build faults

package faults

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// tally counts outcomes of a load run: status codes, transport errors, and
// a few examples of anything that was not a 200.
type tally struct {
	mu       sync.Mutex
	byStatus map[int]int
	errs     int
	samples  []string
}

func (t *tally) add(r reply) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byStatus == nil {
		t.byStatus = map[int]int{}
	}
	if r.err != nil {
		t.errs++
	} else {
		t.byStatus[r.status]++
	}
	if (r.err != nil || r.status != 200) && len(t.samples) < 5 {
		s := r.String()
		if r.header != nil && r.header.Get("Retry-After") != "" {
			s += " (Retry-After " + r.header.Get("Retry-After") + ")"
		}
		t.samples = append(t.samples, s)
	}
}

func (t *tally) total() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.errs
	for _, c := range t.byStatus {
		n += c
	}
	return n
}

// failures is everything but 200.
func (t *tally) failures() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.errs
	for s, c := range t.byStatus {
		if s != 200 {
			n += c
		}
	}
	return n
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var codes []int
	for s := range t.byStatus {
		codes = append(codes, s)
	}
	sort.Ints(codes)
	var parts []string
	for _, s := range codes {
		parts = append(parts, fmt.Sprintf("%d x%d", s, t.byStatus[s]))
	}
	if t.errs > 0 {
		parts = append(parts, fmt.Sprintf("transport errors x%d", t.errs))
	}
	out := strings.Join(parts, ", ")
	if len(t.samples) > 0 {
		out += "; e.g. " + strings.Join(t.samples, " | ")
	}
	return out
}

// loadGen runs workers callers against url until stopped, each pausing
// pause between calls (a steady load, not a CPU hog on a shared machine).
type loadGen struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	tally  tally
}

func startLoad(t testing.TB, workers int, pause time.Duration, url string, header ...string) *loadGen {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g := &loadGen{cancel: cancel}
	for range workers {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			for ctx.Err() == nil {
				g.tally.add(get(url, header...))
				select {
				case <-ctx.Done():
				case <-time.After(pause):
				}
			}
		}()
	}
	t.Cleanup(g.stop)
	return g
}

// stop ends the load and waits for every caller; safe to call twice.
func (g *loadGen) stop() {
	g.cancel()
	g.wg.Wait()
}

// run is startLoad for a fixed time.
func runLoad(t testing.TB, d time.Duration, workers int, pause time.Duration, url string, header ...string) *tally {
	t.Helper()
	g := startLoad(t, workers, pause, url, header...)
	time.Sleep(d)
	g.stop()
	return &g.tally
}
