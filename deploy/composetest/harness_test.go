//go:build composetest

// Package composetest drives the real containers: docker-compose.yml and
// deploy/swarm/stack.yml with the images that `make images` builds. Run it
// with `make test-compose`, which builds the images and removes the project
// even if this binary dies. Without a Docker engine the tests fail under
// CI=true and skip otherwise. All traffic goes to 127.0.0.1 or to the
// project's own containers.
package composetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// env is what the tests need from their surroundings.
type env struct {
	root    string   // repository root
	compose []string // e.g. ["docker", "compose"] or [".../docker-compose"]
	project string   // compose project / swarm stack name
	port    int      // host port of the gateway, on 127.0.0.1
	prefix  string   // image prefix
	tag     string
}

func setup(t *testing.T) *env {
	t.Helper()
	if err := exec.Command("docker", "info").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no Docker engine reachable (CI=true, so this fails): %v", err)
		}
		t.Skipf("no Docker engine reachable: %v", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		root:    filepath.Clean(filepath.Join(wd, "..", "..")),
		compose: strings.Fields(os.Getenv("COMPOSE")),
		project: strings.ToLower(os.Getenv("COMPOSE_TEST_PROJECT")),
		prefix:  getenv("IMAGE_PREFIX", "wristband-m2m-go"),
		tag:     getenv("TAG", "latest"),
	}
	if len(e.compose) == 0 {
		e.compose = []string{"docker", "compose"}
	}
	if e.project == "" {
		e.project = fmt.Sprintf("m2mtest%d", time.Now().Unix())
	}
	for _, img := range []string{"public-gateway", "protected-data", "wristband-emulator", "probe"} {
		ref := e.prefix + "/" + img + ":" + e.tag
		if err := exec.Command("docker", "image", "inspect", ref).Run(); err != nil {
			t.Fatalf("image %s missing: run `make images images-probe` (make test-compose does)", ref)
		}
	}
	e.port = freePort(t)
	return e
}

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// cmdEnv is the environment for compose and docker: the developer's .env
// and shell must not turn the test towards a real Wristband application.
func (e *env) cmdEnv(extra ...string) []string {
	drop := []string{"APPLICATION_VANITY_DOMAIN", "CLIENT_ID", "CLIENT_SECRET", "TOKEN_URL", "JWKS_URL",
		"ISSUER", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "GATEWAY_PUBLISH", "GATEWAY_PORT",
		"EMULATOR_CLIENTS", "EMULATOR_TOKEN_LIFETIME", "GATEWAY_REPLICAS", "PROTECTED_DATA_REPLICAS",
		"CLIENT_SECRET_FILE", "ALLOWED_CLIENT_IDS", "REQUIRE_TOKEN_TYPE", "ALLOWED_SUB_KINDS"}
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(drop, k) {
			out = append(out, kv)
		}
	}
	out = append(out,
		fmt.Sprintf("GATEWAY_PUBLISH=127.0.0.1:%d", e.port),
		// Short tokens, so that the emulator-restart step sees the gateway
		// fetch a token from the restarted emulator.
		"EMULATOR_TOKEN_LIFETIME="+tokenLifetime.String(),
		// A second client, whose tokens protected-data must refuse (403):
		// the allow-list names the gateway's client only.
		"EMULATOR_CLIENTS=demo-client:demo-secret,"+otherClient+":"+otherSecret,
	)
	return append(out, extra...)
}

const tokenLifetime = 20 * time.Second

// The emulator's second client in the tests (demo credentials).
const otherClient, otherSecret = "other-client", "other-secret"

// run runs a command with a deadline and returns its combined output.
func (e *env) run(t *testing.T, timeout time.Duration, extraEnv []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = e.root
	cmd.Env = e.cmdEnv(extraEnv...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return buf.String(), err
}

func (e *env) mustRun(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := e.run(t, timeout, nil, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// composeArgs: the top-level file only, an empty env file (not the
// developer's .env), and the test's own project name.
func (e *env) composeArgs(args ...string) (string, []string) {
	full := append(slices.Clone(e.compose[1:]),
		"-f", filepath.Join(e.root, "docker-compose.yml"),
		"--env-file", filepath.Join(e.root, "deploy", "composetest", "test.env"),
		"-p", e.project)
	return e.compose[0], append(full, args...)
}

func (e *env) composeRun(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	name, full := e.composeArgs(args...)
	return e.mustRun(t, timeout, name, full...)
}

func (e *env) down(t *testing.T) {
	t.Helper()
	name, full := e.composeArgs("down", "--remove-orphans", "--volumes", "--timeout", "5")
	if out, err := e.run(t, 2*time.Minute, nil, name, full...); err != nil {
		t.Logf("compose down: %v\n%s", err, out)
	}
}

// containers lists the IDs (12 hex digits, which is also each container's
// host name) of a service's running containers. Labels work for both
// Compose generations, whose container names differ.
func (e *env) containers(t *testing.T, service string) []string {
	t.Helper()
	out := e.mustRun(t, 30*time.Second, "docker", "ps", "-q", "--no-trunc=false",
		"--filter", "label=com.docker.compose.project="+e.project,
		"--filter", "label=com.docker.compose.service="+service)
	ids := strings.Fields(out)
	for i, id := range ids {
		ids[i] = id[:min(12, len(id))]
	}
	slices.Sort(ids)
	return ids
}

func (e *env) health(t *testing.T, id string) string {
	out, err := e.run(t, 30*time.Second, nil, "docker", "inspect", "-f",
		"{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}", id)
	if err != nil {
		return "gone"
	}
	return strings.TrimSpace(out)
}

// waitHealthy waits until the service has want containers, all healthy.
func (e *env) waitHealthy(t *testing.T, service string, want int, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ids := e.containers(t, service)
		healthy := 0
		for _, id := range ids {
			if e.health(t, id) == "healthy" {
				healthy++
			}
		}
		if len(ids) == want && healthy == want {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d containers, %d healthy after %s; want %d healthy", service, len(ids), healthy, within, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// client talks to the gateway on 127.0.0.1 only.
var client = &http.Client{Timeout: 10 * time.Second}

type answer struct {
	status   int
	body     string
	servedBy string
}

func call(url string) (answer, error) {
	resp, err := client.Get(url)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return answer{}, err
	}
	return answer{status: resp.StatusCode, body: string(b), servedBy: resp.Header.Get("X-Served-By")}, nil
}

func (e *env) publicURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/api/public/data", e.port)
}

// waitOK calls the public route until it answers 200, within a deadline.
func (e *env) waitOK(t *testing.T, within time.Duration) answer {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for {
		a, err := call(e.publicURL())
		if err == nil && a.status == http.StatusOK {
			return a
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("status %d: %s", a.status, a.body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("public route not OK within %s; last: %s", within, last)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// loadResult counts the answers of a bounded load.
type loadResult struct {
	ok, failed int64
	firstErr   string
	servedBy   map[string]int64
	elapsed    time.Duration
}

// load sends n GETs to the public route from c workers; progress is called
// after each request with the number done. Bounded in count and time.
func load(url string, n, c int, progress func(done int64)) loadResult {
	var (
		mu   sync.Mutex
		next atomic.Int64
		done atomic.Int64
		wg   sync.WaitGroup
		res  = loadResult{servedBy: map[string]int64{}}
	)
	start := time.Now()
	stopAt := start.Add(2 * time.Minute)
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && time.Now().Before(stopAt) {
				a, err := call(url)
				mu.Lock()
				switch {
				case err != nil:
					res.failed++
					if res.firstErr == "" {
						res.firstErr = err.Error()
					}
				case a.status != http.StatusOK:
					res.failed++
					if res.firstErr == "" {
						res.firstErr = fmt.Sprintf("status %d: %s", a.status, a.body)
					}
				default:
					res.ok++
					res.servedBy[a.servedBy]++
				}
				mu.Unlock()
				if progress != nil {
					progress(done.Add(1))
				}
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// probe runs the probe image on one of the project's networks and decodes
// its summary. It is how the tests reach what the host cannot: protected-data
// on the internal network, gateway tasks on a Swarm overlay.
type probeSummary struct {
	OK       int64            `json:"ok"`
	Failed   int64            `json:"failed"`
	FirstErr string           `json:"first_error"`
	ServedBy map[string]int64 `json:"served_by"`
	Addrs    map[string]int64 `json:"addrs"`
}

func (e *env) probe(t *testing.T, network string, args ...string) (probeSummary, string, error) {
	t.Helper()
	full := append([]string{"run", "--rm", "--network", network, "--read-only", "--cap-drop", "ALL",
		e.prefix + "/probe:" + e.tag}, args...)
	out, err := e.run(t, 3*time.Minute, nil, "docker", full...)
	var s probeSummary
	if err == nil {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		err = json.Unmarshal([]byte(lines[len(lines)-1]), &s)
	}
	return s, out, err
}

// emulatorKids returns the kid of every start of the emulator's container,
// from its log ("wristband-emulator starting" lines), oldest first.
func (e *env) emulatorKids(t *testing.T) []string {
	t.Helper()
	ids := e.containers(t, "wristband-emulator")
	if len(ids) != 1 {
		t.Fatalf("want one emulator container, got %v", ids)
	}
	out := e.mustRun(t, 30*time.Second, "docker", "logs", ids[0])
	var kids []string
	for _, line := range strings.Split(out, "\n") {
		var l struct {
			Msg string `json:"msg"`
			Kid string `json:"kid"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "wristband-emulator starting" {
			kids = append(kids, l.Kid)
		}
	}
	return kids
}

// memory of one container: the process's resident set (and its peak) from
// /proc, and the container's cgroup usage (and its peak), which is what
// the memory limit is enforced on.
type memory struct {
	rss, rssPeak, cgroup, cgroupPeak int64 // bytes; -1 unknown
}

func (m memory) String() string {
	mib := func(b int64) string {
		if b < 0 {
			return "?"
		}
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("RSS %s (peak %s), cgroup %s (peak %s)", mib(m.rss), mib(m.rssPeak), mib(m.cgroup), mib(m.cgroupPeak))
}

func (e *env) memoryOf(t *testing.T, id string) memory {
	t.Helper()
	m := memory{-1, -1, -1, -1}
	out := strings.Fields(e.mustRun(t, 30*time.Second, "docker", "inspect", "-f", "{{.State.Pid}} {{.Id}}", id))
	if len(out) != 2 {
		return m
	}
	if b, err := os.ReadFile("/proc/" + out[0] + "/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			var kb int64
			if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &kb); err == nil {
				m.rss = kb << 10
			}
			if _, err := fmt.Sscanf(line, "VmHWM: %d kB", &kb); err == nil {
				m.rssPeak = kb << 10
			}
		}
	}
	read := func(paths ...string) int64 {
		for _, p := range paths {
			if b, err := os.ReadFile(p); err == nil {
				var v int64
				if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &v); err == nil {
					return v
				}
			}
		}
		return -1
	}
	// cgroup v1 (cgroupfs driver) or v2.
	v1 := "/sys/fs/cgroup/memory/docker/" + out[1]
	v2 := "/sys/fs/cgroup/system.slice/docker-" + out[1] + ".scope"
	m.cgroup = read(v1+"/memory.usage_in_bytes", v2+"/memory.current")
	m.cgroupPeak = read(v1+"/memory.max_usage_in_bytes", v2+"/memory.peak")
	return m
}

type floodSummary struct {
	Opened         int64   `json:"opened"`
	DialFailed     int64   `json:"dial_failed"`
	Answered       int64   `json:"answered"`
	ClosedByServer int64   `json:"closed_by_server"`
	HealthOK       int64   `json:"health_ok"`
	HealthFailed   int64   `json:"health_failed"`
	HealthMaxMs    float64 `json:"health_max_ms"`
	FirstErr       string  `json:"first_error"`
}

// flood holds 3000 keep-alive connections to one service's only container
// (the probe on the given network) for 20 s, sampling its memory, then
// checks: not OOM-killed nor restarted, under its 128 MiB limit, health
// checks answered throughout (the probe's own and Docker's), and the public
// route answering afterwards.
func (e *env) flood(t *testing.T, service, url, network string) {
	t.Helper()
	const conns, limit = 3000, 128 << 20
	ids := e.containers(t, service)
	if len(ids) != 1 {
		t.Fatalf("want one %s container, got %v", service, ids)
	}
	id := ids[0]
	restarts := func() string {
		return strings.TrimSpace(e.mustRun(t, 30*time.Second, "docker", "inspect", "-f", "{{.RestartCount}} {{.State.OOMKilled}} {{.State.StartedAt}}", id))
	}
	before, state := e.memoryOf(t, id), restarts()

	var peak memory
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				m := e.memoryOf(t, id)
				peak.rss = max(peak.rss, m.rss)
				peak.cgroup = max(peak.cgroup, m.cgroup)
				peak.rssPeak, peak.cgroupPeak = m.rssPeak, m.cgroupPeak
			}
		}
	}()
	start := time.Now()
	full := []string{"run", "--rm", "--network", network, "--read-only", "--cap-drop", "ALL",
		e.prefix + "/probe:" + e.tag, "-url", url, "-flood", fmt.Sprint(conns), "-hold", "20s"}
	out, err := e.run(t, 4*time.Minute, nil, "docker", full...)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatalf("flood probe: %v\n%s", err, out)
	}
	var s floodSummary
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
		t.Fatalf("flood probe output: %v\n%s", err, out)
	}
	during := e.memoryOf(t, id)
	if s.Opened != conns || s.DialFailed != 0 {
		t.Errorf("opened %d of %d connections (%d dial failures; first error %q)", s.Opened, conns, s.DialFailed, s.FirstErr)
	}
	if s.HealthFailed > 0 || s.HealthOK == 0 {
		t.Errorf("health checks during the flood: %d ok, %d failed (first error %q)", s.HealthOK, s.HealthFailed, s.FirstErr)
	}
	if st := restarts(); st != state {
		t.Errorf("the container was restarted or OOM-killed during the flood: before %q, after %q", state, st)
	}
	if during.rssPeak >= limit || during.cgroupPeak >= limit {
		t.Errorf("memory reached the %d MiB limit: %s", limit>>20, during)
	}
	if h := e.health(t, id); h != "healthy" {
		t.Errorf("docker health after the flood: %s", h)
	}
	a := e.waitOK(t, 30*time.Second)
	recovered := time.Since(start)
	time.Sleep(5 * time.Second)
	after := e.memoryOf(t, id)
	t.Logf("%s: %d connections held 20 s: %d answered, %d shed by the server, health %d ok / %d failed (max %.1f ms); first public call after: %d",
		service, s.Opened, s.Answered, s.ClosedByServer, s.HealthOK, s.HealthFailed, s.HealthMaxMs, a.status)
	t.Logf("%s memory: before %s; during: max sampled RSS %.1f MiB, cgroup %.1f MiB; peaks %s; 5 s after: %s (flood and recovery %s)",
		service, before, float64(peak.rss)/(1<<20), float64(peak.cgroup)/(1<<20), during, after, recovered.Round(100*time.Millisecond))
}
