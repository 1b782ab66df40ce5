package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSystem is `make bench`: the floors and the services, real
// processes on loopback, driven in one run so that their figures can be read
// as ratios.
//
//   - hello: a Go net/http hello-world (e2e/hello), the one-hop floor;
//   - two-hop: a net/http front calling a net/http back end with a fixed
//     bearer string and merging the same JSON (e2e/twohop), the floor of the
//     public route: no framework, no auth, no logging;
//   - protected: protected-data with a valid token;
//   - public: the gateway, calling protected-data with its M2M token.
//
// Each is driven at c=1, 16 and 64, interleaved (rounds of every cell, the
// order rotating), then a renewal run puts the public route under steady
// c=16 load while the gateway renews 5 s tokens. The services run as shipped
// (JSON logs at info, one line per request); their logs go to a file
// (BENCH_LOG=file|pipe|null). It writes results/bench.md and
// results/bench.png and prints the table. It fails on any error answer and
// on fewer than 20 renewals; the goals are reported, not asserted.
//
// Settings: BENCH_ROUNDS (4), BENCH_CELL (800ms per cell and round),
// BENCH_RENEWAL (at most 60s; it ends after 21 renewals, ~42s with 5s tokens; 0 skips the renewal run), BENCH_LOG (file),
// BENCH_CLIENT (raw: the wrk-like generator; nethttp: Go's client),
// BENCH_OUT (results), BENCH_VARIANT (e.g. "LOG_FLUSH_INTERVAL=0": a
// second protected-data + gateway pair with these settings, rows "[B]"),
// BENCH_PROFILE (a directory: CPU profiles under load, see profile).
func BenchmarkSystem(b *testing.B) {
	cfg := benchConfigFromEnv(b)
	res := &benchResult{cfg: cfg, when: time.Now().UTC(), cpus: runtime.NumCPU(), goVersion: runtime.Version()}
	res.machine = machineName()

	runMatrix(b, cfg, res)
	if cfg.renewal > 0 {
		runRenewal(b, cfg, res)
	}

	md := res.markdown()
	fmt.Println()
	fmt.Println(md)
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.out, "bench.md"), []byte(md), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := res.chart(filepath.Join(cfg.out, "bench.png")); err != nil {
		b.Fatalf("chart: %v", err)
	}
	fmt.Printf("wrote %s and %s\n", filepath.Join(cfg.out, "bench.md"), filepath.Join(cfg.out, "bench.png"))

	for _, c := range res.cells {
		if n := c.tally.errCount(); n > 0 {
			b.Errorf("%s c=%d: %d errors %v", c.target, c.conc, n, c.tally.errs)
		}
	}
	if r := res.renewal; r != nil {
		if r.errs > 0 {
			b.Errorf("renewal run: %d errors %v", r.errs, r.errKinds)
		}
		if r.renewals < wantRenewals {
			b.Errorf("renewal run saw %d renewals, want at least %d (raise BENCH_RENEWAL)", r.renewals, wantRenewals)
		}
	}
}

type benchConfig struct {
	rounds       int
	cell, warm   time.Duration
	renewal      time.Duration
	logDest      string
	client, out  string
	renewalConc  int
	variant      string // BENCH_VARIANT: extra env of a second pd+gw pair
	renewalToken time.Duration
}

func benchConfigFromEnv(b *testing.B) benchConfig {
	c := benchConfig{rounds: 4, cell: 800 * time.Millisecond, warm: 200 * time.Millisecond,
		renewal: 60 * time.Second, logDest: "file", client: "raw", out: "results",
		renewalConc: 16, renewalToken: 5 * time.Second}
	if v := os.Getenv("BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("BENCH_ROUNDS: want a whole number >= 1, e.g. 3")
		}
		c.rounds = n
	}
	dur := func(name string, d *time.Duration, zeroOK bool) {
		if v := os.Getenv(name); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x < 0 || (x == 0 && !zeroOK) {
				b.Fatalf("%s: want a positive duration, e.g. 2s", name)
			}
			*d = x
		}
	}
	dur("BENCH_CELL", &c.cell, false)
	dur("BENCH_RENEWAL", &c.renewal, true)
	if v := os.Getenv("BENCH_LOG"); v != "" {
		if v != "file" && v != "pipe" && v != "null" {
			b.Fatalf("BENCH_LOG: want file, pipe or null")
		}
		c.logDest = v
	}
	if v := os.Getenv("BENCH_CLIENT"); v != "" {
		if v != "raw" && v != "nethttp" && v != "wrk" {
			b.Fatalf("BENCH_CLIENT: want raw, nethttp or wrk")
		}
		if _, err := exec.LookPath("wrk"); v == "wrk" && err != nil {
			b.Fatalf("BENCH_CLIENT=wrk: wrk is not installed (make bench-wrk installs it)")
		}
		c.client = v
	}
	c.variant = os.Getenv("BENCH_VARIANT")
	if c.client == "wrk" {
		// wrk runs whole seconds and has no warm-up phase.
		c.warm = 0
		c.cell = (c.cell + time.Second - 1) / time.Second * time.Second
	}
	if v := os.Getenv("BENCH_OUT"); v != "" {
		c.out = v
	}
	return c
}

// svcProc is one process under test. Its output goes to a file (always for
// the emulator, whose access log counts token and JWKS calls), a pipe read
// by this process, or /dev/null.
type svcProc struct {
	name, logPath string
	metricsAddr   string
	cmd           *exec.Cmd
	done          chan struct{}
	err           error
	stopped       bool
}

func launch(b *testing.B, dir, bin, name, dest string, env ...string) *svcProc {
	b.Helper()
	p := &svcProc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, bin))
	// The shipped defaults (JSON, info) are not set here on purpose: the
	// bench measures what a user gets. METRICS_ADDR is set so that no two
	// processes contend for the default admin port.
	p.metricsAddr = freeAddr(b)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "METRICS_ADDR=" + p.metricsAddr}, env...)
	if profileDir != "" {
		p.cmd.Env = append(p.cmd.Env, "PPROF=true")
	}
	switch dest {
	case "file":
		p.logPath = filepath.Join(dir, name+".log")
		f, err := os.Create(p.logPath)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close() // the child holds its own descriptor
		p.cmd.Stdout, p.cmd.Stderr = f, f
	case "pipe":
		var w discardCounter
		p.cmd.Stdout, p.cmd.Stderr = &w, &w
	case "null":
		f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		p.cmd.Stdout, p.cmd.Stderr = f, f
	}
	if err := p.cmd.Start(); err != nil {
		b.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	b.Cleanup(func() { p.stop(b) })
	return p
}

// discardCounter reads a pipe's bytes and drops them: what a log collector
// that keeps up does, at the cost of a reader process (here, this one).
type discardCounter struct{ n int64 }

func (d *discardCounter) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }

func (p *svcProc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and waits for a clean exit (logs flushed).
func (p *svcProc) stop(b *testing.B) {
	if p.stopped {
		return
	}
	p.stopped = true
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			b.Errorf("%s did not exit cleanly on SIGTERM: %v", p.name, p.err)
		}
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		b.Errorf("%s did not stop within 20s of SIGTERM", p.name)
	}
	if b.Failed() && p.logPath != "" {
		if out, err := os.ReadFile(p.logPath); err == nil {
			if len(out) > 8<<10 {
				out = out[len(out)-8<<10:]
			}
			b.Logf("--- %s output (tail) ---\n%s", p.name, out)
		}
	}
}

// procStat is what /proc says about a process: CPU time used so far (user +
// system, every thread) and peak resident set (VmHWM).
func cpuTime(pid string) time.Duration {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	if pid == "self" {
		// Children waited for (wrk runs) count as the load generator; the
		// services are children too but are not waited for until the end.
		cut, _ := strconv.ParseInt(f[13], 10, 64)
		cst, _ := strconv.ParseInt(f[14], 10, 64)
		ut, st = ut+cut, st+cst
	}
	return time.Duration(ut+st) * time.Second / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

func peakRSSMB(pid int) (float64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, err := strconv.ParseFloat(f[1], 64)
				if err == nil {
					return kb / 1024, true
				}
			}
		}
	}
	return 0, false
}

func machineName() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				if _, v, ok := strings.Cut(line, ":"); ok {
					model = strings.TrimSpace(v)
					break
				}
			}
		}
	}
	return fmt.Sprintf("%d CPUs, %s", runtime.NumCPU(), model)
}

// cellResult is one endpoint at one concurrency, all rounds merged.
type cellResult struct {
	target string
	conc   int
	tally  *tally
	secs   float64
	cpu    map[string]time.Duration // CPU used during the cell, by process
	lat    latencies
	rounds []float64 // req/s of each round
}

func (c *cellResult) rps() float64 {
	if c.secs == 0 {
		return 0
	}
	return float64(c.tally.requests()) / c.secs
}

// cpuPerReq is the CPU a process used per request, in µs.
func (c *cellResult) cpuPerReq(proc string) float64 {
	n := c.tally.requests() + c.tally.errCount()
	if n == 0 {
		return 0
	}
	return float64(c.cpu[proc].Microseconds()) / float64(n)
}

type rssRow struct {
	name string
	mb   float64
}

type benchResult struct {
	cfg                 benchConfig
	when                time.Time
	cpus                int
	goVersion, machine  string
	cells               []*cellResult
	rss                 []rssRow
	tokenCalls, jwksReq int
	renewal             *renewalResult
	metrics             string
	// What the services counted during the run, from /metrics (nil
	// without it).
	gwCounters, pdCounters map[string]float64
}

func (r *benchResult) cell(target string, conc int) *cellResult {
	for _, c := range r.cells {
		if c.target == target && c.conc == conc {
			return c
		}
	}
	return nil
}

var concurrencies = []int{1, 16, 64}

// Endpoint names, in table order.
const (
	nHello     = "hello-world"
	nTwoHop    = "bare two-hop"
	nProtected = "protected-data"
	nPublic    = "public-gateway"
)

func runMatrix(b *testing.B, cfg benchConfig, res *benchResult) {
	dir := b.TempDir()
	emuAddr, pdAddr, gwAddr := freeAddr(b), freeAddr(b), freeAddr(b)
	helloAddr, frontAddr, backAddr := freeAddr(b), freeAddr(b), freeAddr(b)
	keyPath, _ := writeKey(b)
	emuURL := "http://" + emuAddr

	hello := launch(b, dir, "hello", "hello", "null", "LISTEN_ADDR="+helloAddr)
	back := launch(b, dir, "twohop", "twohop-back", "null", "ROLE=back", "LISTEN_ADDR="+backAddr)
	front := launch(b, dir, "twohop", "twohop-front", "null", "ROLE=front", "LISTEN_ADDR="+frontAddr, "BACK_URL=http://"+backAddr)
	emu := launch(b, dir, "wristband-emulator", "wristband-emulator", "file",
		"LISTEN_ADDR="+emuAddr, "ISSUER="+emuURL, "CLIENTS="+clientID+":"+clientSecret,
		"TOKEN_LIFETIME=30m", "SIGNING_KEY_FILE="+keyPath, "KEY_ID="+testKID)
	waitStatus(b, emuURL+"/healthz", 200, 30*time.Second)
	pd := launch(b, dir, "protected-data", "protected-data", cfg.logDest, "LISTEN_ADDR="+pdAddr, "WRISTBAND_EMULATOR_URL="+emuURL)
	gw := launch(b, dir, "public-gateway", "public-gateway", cfg.logDest,
		"LISTEN_ADDR="+gwAddr, "WRISTBAND_EMULATOR_URL="+emuURL,
		"CLIENT_ID="+clientID, "CLIENT_SECRET="+clientSecret, "PROTECTED_DATA_URL=http://"+pdAddr)
	waitStatus(b, "http://"+helloAddr+"/", 200, 30*time.Second)
	waitStatus(b, "http://"+frontAddr+"/api/public/data", 200, 30*time.Second)
	waitStatus(b, "http://"+pdAddr+"/readyz", 200, 30*time.Second)
	waitStatus(b, "http://"+gwAddr+"/readyz", 200, 30*time.Second)
	tok := emulatorToken(b, &system{emuAddr: emuAddr})
	var pd2, gw2 *svcProc
	var pd2Addr, gw2Addr string
	if cfg.variant != "" {
		// A second protected-data + gateway pair with extra settings, driven
		// in the same rounds: an A/B comparison free of run-to-run noise.
		pd2Addr, gw2Addr = freeAddr(b), freeAddr(b)
		vEnv := strings.Fields(cfg.variant)
		pd2 = launch(b, dir, "protected-data", "protected-data-B", cfg.logDest, append([]string{"LISTEN_ADDR=" + pd2Addr, "WRISTBAND_EMULATOR_URL=" + emuURL}, vEnv...)...)
		gw2 = launch(b, dir, "public-gateway", "public-gateway-B", cfg.logDest, append([]string{
			"LISTEN_ADDR=" + gw2Addr, "WRISTBAND_EMULATOR_URL=" + emuURL,
			"CLIENT_ID=" + clientID, "CLIENT_SECRET=" + clientSecret, "PROTECTED_DATA_URL=http://" + pd2Addr}, vEnv...)...)
		waitStatus(b, "http://"+pd2Addr+"/readyz", 200, 30*time.Second)
		waitStatus(b, "http://"+gw2Addr+"/readyz", 200, 30*time.Second)
	}

	pub := []byte(publicJSON)
	prot := []byte(`{"protectedData":"here I am"}`)
	type entry struct {
		tg    target
		procs []*svcProc
	}
	entries := []entry{
		// In pairs (floor, service): a round's order rotates by pairs, so
		// the two sides of a ratio always run one after the other.
		{target{nHello, helloAddr, "/", "", []byte(`{"hello":"world"}`)}, []*svcProc{hello}},
		{target{nProtected, pdAddr, "/api/protected/data", "Bearer " + tok, prot}, []*svcProc{pd}},
		{target{nTwoHop, frontAddr, "/api/public/data", "", pub}, []*svcProc{front, back}},
		{target{nPublic, gwAddr, "/api/public/data", "", pub}, []*svcProc{gw, pd}},
	}
	if cfg.variant != "" {
		entries = append(entries,
			entry{target{nProtected + " [B]", pd2Addr, "/api/protected/data", "Bearer " + tok, prot}, []*svcProc{pd2}},
			entry{target{nPublic + " [B]", gw2Addr, "/api/public/data", "", pub}, []*svcProc{gw2, pd2}})
		endpointOrder = append(endpointOrder, nProtected+" [B]", nPublic+" [B]")
	}
	for _, conc := range concurrencies {
		for _, e := range entries {
			res.cells = append(res.cells, &cellResult{target: e.tg.name, conc: conc, tally: &tally{}, cpu: map[string]time.Duration{}})
		}
	}
	const self = "self"
	gwBefore, pdBefore := scrape(gw, gwSeries...), scrape(pd, pdSeries...)
	start := time.Now()
	// One warm-up pass: connection pools, caches, the first token
	// validations.
	for _, e := range entries {
		drive(e.tg, 64, 300*time.Millisecond, 0, start, "raw")
	}
	for round := range cfg.rounds {
		for _, conc := range concurrencies {
			for i := range entries {
				e := entries[(i+2*round)%len(entries)]
				c := res.cell(e.tg.name, conc)
				before := map[string]time.Duration{"loadgen": cpuTime(self)}
				for _, p := range e.procs {
					before[p.name] = cpuTime(strconv.Itoa(p.pid()))
				}
				// The warm-up of each cell is not counted, but its CPU is:
				// it is the same work, so per-request CPU stays right.
				t := drive(e.tg, conc, cfg.warm, cfg.cell, start, cfg.client)
				c.cpu["loadgen"] += cpuTime(self) - before["loadgen"]
				for _, p := range e.procs {
					c.cpu[p.name] += cpuTime(strconv.Itoa(p.pid())) - before[p.name]
				}
				c.tally.merge(t)
				c.secs += cfg.cell.Seconds()
				c.rounds = append(c.rounds, float64(t.requests())/cfg.cell.Seconds())
			}
		}
	}
	matrixEnd := time.Now()
	if profileDir != "" {
		profile(b, entries[3].tg, []*svcProc{gw, pd}, "public")
		profile(b, entries[1].tg, []*svcProc{pd}, "protected")
		profile(b, entries[2].tg, []*svcProc{front, back}, "twohop")
	}
	for _, c := range res.cells {
		c.lat = summarise(durations(c.tally.samples))
		if len(c.tally.wrk) > 0 {
			c.lat = medianLatencies(c.tally.wrk)
		}
		// CPU was measured over warm-up and measurement: scale it to the
		// measured part.
		f := cfg.cell.Seconds() / (cfg.cell + cfg.warm).Seconds()
		for k, v := range c.cpu {
			c.cpu[k] = time.Duration(float64(v) * f)
		}
	}
	all := []*svcProc{hello, front, back, emu, pd, gw}
	if pd2 != nil {
		all = append(all, pd2, gw2)
	}
	for _, p := range all {
		if mb, ok := peakRSSMB(p.pid()); ok {
			res.rss = append(res.rss, rssRow{p.name, mb})
		}
	}
	// Metrics on (issue 10: the services run as shipped): say whether the
	// admin listener answered, rather than assume it.
	res.metrics = "no /metrics in this build"
	if metricsServed(pd) && metricsServed(gw) {
		res.metrics = "metrics served on each service's METRICS_ADDR"
	}
	res.gwCounters = counterDelta(gwBefore, scrape(gw, gwSeries...))
	res.pdCounters = counterDelta(pdBefore, scrape(pd, pdSeries...))
	// Stop the emulator first: its log is complete once it has exited.
	emu.stop(b)
	lines, err := readAccessLog(emu.logPath)
	if err != nil {
		b.Fatalf("emulator log: %v", err)
	}
	for _, l := range lines {
		if l.Time.Before(start) || l.Time.After(matrixEnd) {
			continue
		}
		switch l.Path {
		case "/api/v1/oauth2/token":
			res.tokenCalls++
		case "/api/v1/oauth2/jwks":
			res.jwksReq++
		}
	}
	for _, p := range all {
		p.stop(b)
	}
}

// profileDir (BENCH_PROFILE) asks for CPU profiles of the real processes
// under c=64 load, taken after the matrix from their admin listeners
// (PPROF=true): BENCH_PROFILE=/tmp/prof make bench, then
// go tool pprof -top /tmp/prof/public-gateway-public.pprof.
var profileDir = os.Getenv("BENCH_PROFILE")

func profile(b *testing.B, tg target, procs []*svcProc, label string) {
	if err := os.MkdirAll(profileDir, 0o755); err != nil {
		b.Fatal(err)
	}
	const secs = 8
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: (secs + 10) * time.Second}
			resp, err := c.Get("http://" + p.metricsAddr + "/debug/pprof/profile?seconds=" + strconv.Itoa(secs))
			if err != nil {
				b.Errorf("profile of %s: %v", p.name, err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(profileDir, p.name+"-"+label+".pprof"))
			if err != nil {
				b.Error(err)
				return
			}
			defer f.Close()
			if _, err := io.Copy(f, resp.Body); err != nil || resp.StatusCode != 200 {
				b.Errorf("profile of %s: %d %v", p.name, resp.StatusCode, err)
			}
		}()
	}
	t := drive(tg, 64, 500*time.Millisecond, secs*time.Second, time.Now(), "raw")
	wg.Wait()
	// Allocations since start (mostly this load): what feeds the GC.
	for _, p := range procs {
		resp, err := http.Get("http://" + p.metricsAddr + "/debug/pprof/allocs")
		if err != nil {
			continue
		}
		if f, err := os.Create(filepath.Join(profileDir, p.name+"-"+label+".allocs")); err == nil {
			_, _ = io.Copy(f, resp.Body)
			f.Close()
		}
		resp.Body.Close()
	}
	fmt.Printf("profile %s: %.0f req/s at c=64 while profiling\n", label, float64(len(t.samples))/secs)
}

// scrape sums each named series of p's /metrics over its labels; nil when
// nothing answers (no admin listener in this build).
func scrape(p *svcProc, names ...string) map[string]float64 {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(f[0], "{")
		if !slices.Contains(names, name) {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[name] += v
		}
	}
	return out
}

// Series the bench reads from the services' /metrics (pkg/telemetry).
var (
	gwSeries = []string{"m2m_token_fetches_total", "m2m_token_renewals_total", "m2m_token_invalidations_total", "m2m_token_waits_total"}
	pdSeries = []string{"jwtauth_jwks_fetches_total", "jwtauth_signature_verifications_total", "jwtauth_cache_misses_total"}
)

// counterDelta is after minus before, for the series both have.
func counterDelta(before, after map[string]float64) map[string]float64 {
	if before == nil || after == nil {
		return nil
	}
	d := map[string]float64{}
	for k, v := range after {
		d[k] = v - before[k]
	}
	return d
}

func metricsServed(p *svcProc) bool {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// accessLine is one JSON request line of a service's log.
type accessLine struct {
	Time      time.Time `json:"time"`
	Msg       string    `json:"msg"`
	Path      string    `json:"path"`
	Status    int       `json:"status"`
	Latency   int64     `json:"latency"`    // ns (older builds)
	LatencyMS float64   `json:"latency_ms"` // ms
}

func (l accessLine) latency() time.Duration {
	if l.LatencyMS > 0 {
		return time.Duration(l.LatencyMS * float64(time.Millisecond))
	}
	return time.Duration(l.Latency)
}

func readAccessLog(path string) ([]accessLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []accessLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l accessLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Msg != "request" {
			continue
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// renewalResult compares the public route's latency while the gateway
// renews its token with the latency between renewals.
type renewalResult struct {
	secs                   float64
	requests               int
	errs                   int
	errKinds               map[string]int
	during, between        latencies
	nDuring, nBetween      int
	fetching, after        latencies // the two parts of the windows
	nFetching, nAfter      int
	emuCPU                 time.Duration
	tokenFetches, renewals int
	period                 time.Duration // median gap between fetches
	refused                int           // 401s protected-data answered
	rss                    []rssRow
	series                 []sample // for the chart
	windows                [][2]int64
	gwCounters, pdCounters map[string]float64
}

// wantRenewals is what the renewal run waits for (issue 10: at least 20).
const wantRenewals = 20

// renewalPad is how long after a token answer a window stays open: it
// covers the first calls that carry the new token (a cold validation at
// protected-data).
const renewalPad = 100 * time.Millisecond

func runRenewal(b *testing.B, cfg benchConfig, res *benchResult) {
	dir := b.TempDir()
	emuAddr, pdAddr, gwAddr := freeAddr(b), freeAddr(b), freeAddr(b)
	keyPath, _ := writeKey(b)
	emuURL := "http://" + emuAddr
	emu := launch(b, dir, "wristband-emulator", "wristband-emulator", "file",
		"LISTEN_ADDR="+emuAddr, "ISSUER="+emuURL, "CLIENTS="+clientID+":"+clientSecret,
		"TOKEN_LIFETIME="+cfg.renewalToken.String(), "SIGNING_KEY_FILE="+keyPath, "KEY_ID="+testKID)
	waitStatus(b, emuURL+"/healthz", 200, 30*time.Second)
	// protected-data logs to a file whatever BENCH_LOG says: its 401s are
	// counted from it.
	pd := launch(b, dir, "protected-data", "protected-data", "file", "LISTEN_ADDR="+pdAddr, "WRISTBAND_EMULATOR_URL="+emuURL)
	gw := launch(b, dir, "public-gateway", "public-gateway", cfg.logDest,
		"LISTEN_ADDR="+gwAddr, "WRISTBAND_EMULATOR_URL="+emuURL,
		"CLIENT_ID="+clientID, "CLIENT_SECRET="+clientSecret, "PROTECTED_DATA_URL=http://"+pdAddr)
	waitStatus(b, "http://"+pdAddr+"/readyz", 200, 30*time.Second)
	waitStatus(b, "http://"+gwAddr+"/readyz", 200, 30*time.Second)

	tg := target{nPublic, gwAddr, "/api/public/data", "", []byte(publicJSON)}
	gwBefore, pdBefore := scrape(gw, gwSeries...), scrape(pd, pdSeries...)
	emuCPU0 := cpuTime(strconv.Itoa(emu.pid()))
	epoch := time.Now()
	// Always the built-in generator: the windows need every request's time.
	client := cfg.client
	if client == "wrk" {
		client = "raw"
	}
	// Run until the emulator has answered enough token requests (its log
	// is flushed every 100 ms), at most BENCH_RENEWAL.
	var until atomic.Int64
	until.Store(epoch.Add(cfg.renewal).UnixNano())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for time.Now().UnixNano() < until.Load() {
			time.Sleep(250 * time.Millisecond)
			lines, err := readAccessLog(emu.logPath)
			if err != nil {
				continue
			}
			n := 0
			for _, l := range lines {
				if l.Path == "/api/v1/oauth2/token" && l.Time.After(epoch) {
					n++
				}
			}
			if n >= wantRenewals+1 {
				// Half a period more, so the last window is followed by
				// calls too.
				until.Store(time.Now().Add(time.Second).UnixNano())
				return
			}
		}
	}()
	t := driveUntil(tg, cfg.renewalConc, 0, &until, epoch, client)
	<-watchDone
	end := time.Now()
	r := &renewalResult{secs: end.Sub(epoch).Seconds(), requests: len(t.samples), errs: t.errCount(), errKinds: t.errs}
	r.emuCPU = cpuTime(strconv.Itoa(emu.pid())) - emuCPU0
	r.gwCounters = counterDelta(gwBefore, scrape(gw, gwSeries...))
	r.pdCounters = counterDelta(pdBefore, scrape(pd, pdSeries...))
	for _, p := range []*svcProc{emu, pd, gw} {
		if mb, ok := peakRSSMB(p.pid()); ok {
			r.rss = append(r.rss, rssRow{p.name, mb})
		}
	}
	emu.stop(b)
	pd.stop(b)
	gw.stop(b)

	lines, err := readAccessLog(emu.logPath)
	if err != nil {
		b.Fatalf("emulator log: %v", err)
	}
	var fetchTimes []time.Time
	for _, l := range lines {
		if l.Path != "/api/v1/oauth2/token" || l.Time.Before(epoch) || l.Time.After(end) {
			continue
		}
		r.tokenFetches++
		// The log's time is the end of the request, to the millisecond.
		from := l.Time.Add(-l.latency() - time.Millisecond)
		r.windows = append(r.windows, [2]int64{int64(from.Sub(epoch)), int64(l.Time.Add(renewalPad).Sub(epoch))})
		fetchTimes = append(fetchTimes, l.Time)
	}
	pdLines, err := readAccessLog(pd.logPath)
	if err != nil {
		b.Fatalf("protected-data log: %v", err)
	}
	for _, l := range pdLines {
		if l.Status == 401 && !l.Time.Before(epoch) && !l.Time.After(end) {
			r.refused++
		}
	}
	// Every fetch during the run replaces a token that was still valid
	// (the first one was fetched before the run), so fetches are renewals
	// unless protected-data refused tokens, which would force extra fetches.
	r.renewals = r.tokenFetches - r.refused
	if len(fetchTimes) > 1 {
		gaps := make([]int64, 0, len(fetchTimes)-1)
		for i := 1; i < len(fetchTimes); i++ {
			gaps = append(gaps, int64(fetchTimes[i].Sub(fetchTimes[i-1])))
		}
		slices.Sort(gaps)
		r.period = time.Duration(gaps[len(gaps)/2])
	}
	var during, between, fetching, after []int64
	var fetchWs, afterWs [][2]int64
	for _, w := range r.windows {
		mid := w[1] - int64(renewalPad)
		fetchWs = append(fetchWs, [2]int64{w[0], mid})
		afterWs = append(afterWs, [2]int64{mid, w[1]})
	}
	for _, s := range t.samples {
		if inWindow(s, r.windows) {
			during = append(during, s.dur)
			// Split: overlapping the token request itself (the IdP signing
			// on these CPUs), or only the calls after it (the new token's
			// first validations at protected-data).
			if inWindow(s, fetchWs) {
				fetching = append(fetching, s.dur)
			} else if inWindow(s, afterWs) {
				after = append(after, s.dur)
			}
		} else {
			between = append(between, s.dur)
		}
	}
	r.nFetching, r.nAfter = len(fetching), len(after)
	r.fetching, r.after = summarise(fetching), summarise(after)

	r.nDuring, r.nBetween = len(during), len(between)
	r.during, r.between = summarise(during), summarise(between)
	r.series = t.samples
	res.renewal = r
}

// inWindow reports whether the request overlaps any renewal window.
func inWindow(s sample, ws [][2]int64) bool {
	for _, w := range ws {
		if s.start <= w[1] && s.start+s.dur >= w[0] {
			return true
		}
	}
	return false
}
