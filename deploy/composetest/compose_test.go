//go:build composetest

package composetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCompose walks a user's day with docker compose, each step depending on
// the one before: up from nothing, the public call, the protected call
// without a token, scaling protected-data, killing a replica under load,
// restarting the identity provider, and down.
func TestCompose(t *testing.T) {
	e := setup(t)
	t.Logf("compose: %s; project %s; gateway on 127.0.0.1:%d", strings.Join(e.compose, " "), e.project, e.port)
	t.Cleanup(func() { e.down(t) })
	url := e.publicURL()

	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"up from nothing", func(t *testing.T) {
			e.down(t) // a leftover of an interrupted run would hide a real cold start
			start := time.Now()
			e.composeRun(t, 3*time.Minute, "up", "-d", "--no-build")
			e.waitHealthy(t, "wristband-emulator", 1, 90*time.Second)
			e.waitHealthy(t, "protected-data", 1, 90*time.Second)
			e.waitHealthy(t, "public-gateway", 1, 90*time.Second)
			t.Logf("all healthy %s after `up`", time.Since(start).Round(100*time.Millisecond))
		}},
		{"hardened containers", func(t *testing.T) {
			for _, svc := range []string{"wristband-emulator", "protected-data", "public-gateway"} {
				id := e.containers(t, svc)[0]
				out := e.mustRun(t, 30*time.Second, "docker", "inspect", "-f",
					"{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.RestartPolicy.Name}} {{json .NetworkSettings.Ports}}", id)
				f := strings.Fields(out)
				if len(f) < 4 || f[0] != "65532:65532" || f[1] != "true" || f[2] != "unless-stopped" {
					t.Errorf("%s: user, read-only, restart = %v; want 65532:65532 true unless-stopped", svc, f)
				}
				published := strings.Contains(out, "HostPort")
				if published != (svc == "public-gateway") {
					t.Errorf("%s: host port published = %v; only the gateway may publish one: %s", svc, published, out)
				}
			}
		}},
		{"public call works", func(t *testing.T) {
			start := time.Now()
			a := e.waitOK(t, 60*time.Second)
			var got map[string]string
			if err := json.Unmarshal([]byte(a.body), &got); err != nil {
				t.Fatalf("body %q: %v", a.body, err)
			}
			want := map[string]string{"publicData": "hello world", "protectedData": "here I am"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("body %v, want %v", got, want)
			}
			t.Logf("first 200 %s after healthy", time.Since(start).Round(10*time.Millisecond))
		}},
		{"protected call without a token is 401", func(t *testing.T) {
			s, out, err := e.probe(t, e.project+"_backend",
				"-url", "http://protected-data:6002/api/protected/data", "-expect", "401", "-n", "5", "-c", "1", "-wait", "30s")
			if err != nil || s.OK != 5 {
				t.Fatalf("want 5 answers 401 from protected-data on the internal network: %v\n%s", err, out)
			}
		}},
		{"secure defaults: another client's token is 403, the gateway's is 200", func(t *testing.T) {
			tokenURL := "http://wristband-emulator:6003/api/v1/oauth2/token"
			data := "http://protected-data:6002/api/protected/data"
			s, out, err := e.probe(t, e.project+"_backend", "-token-url", tokenURL,
				"-client-id", otherClient, "-client-secret", otherSecret, "-url", data, "-expect", "403", "-n", "3", "-c", "1", "-wait", "30s")
			if err != nil || s.OK != 3 {
				t.Errorf("another client's token: want 3 answers 403 from protected-data: %v\n%s", err, out)
			}
			s, out, err = e.probe(t, e.project+"_backend", "-token-url", tokenURL,
				"-client-id", "demo-client", "-client-secret", "demo-secret", "-url", data, "-expect", "200", "-n", "3", "-c", "1", "-wait", "30s")
			if err != nil || s.OK != 3 {
				t.Errorf("the gateway's client's token: want 3 answers 200: %v\n%s", err, out)
			}
		}},
		{"the client secret is a file, not an environment variable", func(t *testing.T) {
			id := e.containers(t, "public-gateway")[0]
			out := e.mustRun(t, 30*time.Second, "docker", "inspect", "-f", "{{json .Config.Env}}", id)
			if strings.Contains(out, "demo-secret") || strings.Contains(out, "CLIENT_SECRET=") {
				t.Errorf("the gateway's environment holds the client secret: %s", out)
			}
			if !strings.Contains(out, "CLIENT_SECRET_FILE=/run/secrets/client_secret") {
				t.Errorf("the gateway's environment has no CLIENT_SECRET_FILE=/run/secrets/client_secret: %s", out)
			}
		}},
		{"scale protected-data to 3: fair spread", func(t *testing.T) {
			e.composeRun(t, 3*time.Minute, "up", "-d", "--no-build", "--no-recreate", "--scale", "protected-data=3")
			ids := e.waitHealthy(t, "protected-data", 3, 90*time.Second)
			// The gateway re-resolves every few seconds: wait until all three
			// have answered once, then measure.
			seen := map[string]bool{}
			deadline := time.Now().Add(30 * time.Second)
			for len(seen) < 3 {
				a, err := call(url)
				if err == nil && a.status == http.StatusOK {
					if a.servedBy == "" {
						t.Fatal("no X-Served-By header on /api/public/data: the gateway must pass protected-data's through")
					}
					seen[a.servedBy] = true
				}
				if time.Now().After(deadline) {
					t.Fatalf("after 30 s only %d of 3 replicas answered: %v", len(seen), seen)
				}
				time.Sleep(50 * time.Millisecond)
			}
			const n = 300
			r := load(url, n, 4, nil)
			if r.failed > 0 {
				t.Fatalf("%d of %d failed, first: %s", r.failed, n, r.firstErr)
			}
			for _, id := range ids {
				if share := float64(r.servedBy[id]) / n; share < 0.20 {
					t.Errorf("replica %s served %.1f%% of %d calls, want at least 20%%; spread %v", id, share*100, n, r.servedBy)
				}
			}
			if len(r.servedBy) != 3 {
				t.Errorf("answers came from %v, want exactly the replicas %v", r.servedBy, ids)
			}
			t.Logf("spread over 3 replicas: %v in %s (%.0f req/s at c=4)", r.servedBy, r.elapsed.Round(time.Millisecond), n/r.elapsed.Seconds())
		}},
		{"kill a replica under load: no failed request", func(t *testing.T) {
			ids := e.containers(t, "protected-data")
			victim := ids[1]
			const n = 1200
			var once sync.Once
			var killErr error
			var killOut string
			r := load(url, n, 4, func(done int64) {
				if done >= 200 {
					once.Do(func() {
						killOut, killErr = e.run(t, 30*time.Second, nil, "docker", "kill", victim)
					})
				}
			})
			if killErr != nil {
				t.Fatalf("docker kill %s: %v\n%s", victim, killErr, killOut)
			}
			if r.failed > 0 {
				t.Fatalf("%d of %d public requests failed after killing replica %s; first: %s", r.failed, n, victim, r.firstErr)
			}
			t.Logf("killed %s after 200 of %d calls: 0 failures; spread %v; %s", victim, n, r.servedBy, r.elapsed.Round(time.Millisecond))
			// Back to three (restart policy or compose), for the next steps.
			e.composeRun(t, 3*time.Minute, "up", "-d", "--no-build", "--no-recreate", "--scale", "protected-data=3")
			e.waitHealthy(t, "protected-data", 3, 90*time.Second)
		}},
		{"scale protected-data down to 2 under load: no failed request", func(t *testing.T) {
			const n = 1000
			var once sync.Once
			var scaleOut string
			var scaleErr error
			name, args := e.composeArgs("up", "-d", "--no-build", "--no-recreate", "--scale", "protected-data=2")
			r := load(url, n, 4, func(done int64) {
				if done >= 100 {
					once.Do(func() { scaleOut, scaleErr = e.run(t, 2*time.Minute, nil, name, args...) })
				}
			})
			if scaleErr != nil {
				t.Fatalf("scale to 2: %v\n%s", scaleErr, scaleOut)
			}
			if r.failed > 0 {
				t.Fatalf("%d of %d failed while scaling down; first: %s", r.failed, n, r.firstErr)
			}
			t.Logf("scaled 3 -> 2 under load: 0 failures of %d; spread %v", n, r.servedBy)
		}},
		{"restart the emulator under load: same key, no failed request", func(t *testing.T) {
			// The signing key lives on a volume (SIGNING_KEY_FILE), so the
			// restarted emulator signs with the same kid: tokens the gateway
			// holds stay valid and protected-data never meets an unknown kid.
			kidBefore := e.emulatorKids(t)
			// Calls from 4 workers from before the restart begins until 2 s
			// after it ends (bounded: 2 min).
			var (
				okN, failN atomic.Int64
				firstMu    sync.Mutex
				firstErr   string
				wg         sync.WaitGroup
			)
			stop := make(chan struct{})
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						a, err := call(url)
						if err == nil && a.status == http.StatusOK {
							okN.Add(1)
							continue
						}
						failN.Add(1)
						firstMu.Lock()
						if firstErr == "" {
							firstErr = fmt.Sprintf("%v %d %s", err, a.status, a.body)
						}
						firstMu.Unlock()
					}
				}()
			}
			time.Sleep(time.Second)
			start := time.Now()
			name, args := e.composeArgs("restart", "wristband-emulator")
			rOut, rErr := e.run(t, 2*time.Minute, nil, name, args...)
			restartT := time.Since(start)
			e.waitHealthy(t, "wristband-emulator", 1, 60*time.Second)
			time.Sleep(2 * time.Second)
			close(stop)
			wg.Wait()
			if rErr != nil {
				t.Fatalf("restart: %v\n%s", rErr, rOut)
			}
			r := struct{ ok, failed int64 }{okN.Load(), failN.Load()}
			if r.failed > 0 || r.ok == 0 {
				t.Errorf("%d ok, %d failed while the emulator restarted; first failure: %s", r.ok, r.failed, firstErr)
			}
			kids := e.emulatorKids(t)
			if len(kidBefore) != 1 || len(kids) != 2 || kids[0] != kids[1] {
				t.Errorf("emulator kids before %v, after restart %v: want one kid, the same after the restart", kidBefore, kids)
			}
			// Keep calling for longer than a token lives, so the gateway must
			// also use a token from the restarted emulator.
			until := time.Now().Add(tokenLifetime + 5*time.Second)
			var calls, failed int
			var first string
			for time.Now().Before(until) {
				a, err := call(url)
				calls++
				if err != nil || a.status != http.StatusOK {
					failed++
					if first == "" {
						first = fmt.Sprintf("%v %d %s", err, a.status, a.body)
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
			if failed > 0 {
				t.Errorf("%d of %d calls failed after the emulator came back; first: %s", failed, calls, first)
			}
			t.Logf("restart took %s; %d calls ok, %d failed around it; kid %v kept; then %d calls over %s, %d failed",
				restartT.Round(100*time.Millisecond), r.ok, r.failed, kids, calls, tokenLifetime+5*time.Second, failed)
		}},
		{"3000 keep-alive connections against the gateway (128 MiB limit)", func(t *testing.T) {
			e.flood(t, "public-gateway", "http://public-gateway:6001/healthz", e.project+"_edge")
		}},
		{"down leaves nothing", func(t *testing.T) {
			e.composeRun(t, 2*time.Minute, "down", "--remove-orphans", "--timeout", "5")
			filter := "label=com.docker.compose.project=" + e.project
			// down keeps the emulator's key volume (that is its point) ...
			if out := strings.TrimSpace(e.mustRun(t, 30*time.Second, "docker", "volume", "ls", "-q", "--filter", filter)); out == "" {
				t.Errorf("down removed the emulator's key volume; it should keep it")
			}
			// ... and down --volumes removes it.
			e.composeRun(t, 2*time.Minute, "down", "--remove-orphans", "--volumes", "--timeout", "5")
			if out := strings.TrimSpace(e.mustRun(t, 30*time.Second, "docker", "volume", "ls", "-q", "--filter", filter)); out != "" {
				t.Errorf("volumes left after down --volumes: %s", out)
			}
			if out := strings.TrimSpace(e.mustRun(t, 30*time.Second, "docker", "ps", "-aq", "--filter", filter)); out != "" {
				t.Errorf("containers left: %s", out)
			}
			out := e.mustRun(t, 30*time.Second, "docker", "network", "ls", "--format", "{{.Name}}")
			for _, n := range strings.Fields(out) {
				if strings.HasPrefix(n, e.project+"_") {
					t.Errorf("network left: %s", n)
				}
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.fn) {
			return // later steps build on this one
		}
	}
}

// TestSwarm deploys deploy/swarm/stack.yml with 2 gateway and 3
// protected-data replicas on a single-node swarm, calls it, and removes it.
// A swarm is initialised for the test if the engine is in none, and left
// again afterwards.
func TestSwarm(t *testing.T) {
	e := setup(t)
	state := strings.TrimSpace(e.mustRun(t, 30*time.Second, "docker", "info", "-f", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"))
	switch state {
	case "active true":
	case "inactive false":
		// swarm init also creates docker_gwbridge; remove it on leaving
		// unless it was there before, so the engine is left as found.
		_, gwErr := e.run(t, 30*time.Second, nil, "docker", "network", "inspect", "docker_gwbridge")
		e.mustRun(t, time.Minute, "docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
		t.Cleanup(func() {
			if out, err := e.run(t, time.Minute, nil, "docker", "swarm", "leave", "--force"); err != nil {
				t.Logf("swarm leave: %v\n%s", err, out)
			}
			if gwErr != nil {
				_, _ = e.run(t, 30*time.Second, nil, "docker", "network", "rm", "docker_gwbridge")
			}
		})
	default:
		t.Fatalf("engine swarm state %q: need a manager or no swarm", state)
	}
	stack := e.project
	t.Cleanup(func() { removeStack(t, e, stack) })

	start := time.Now()
	out, err := e.run(t, 2*time.Minute, []string{"GATEWAY_REPLICAS=2", "PROTECTED_DATA_REPLICAS=3", fmt.Sprintf("GATEWAY_PORT=%d", e.port)},
		"docker", "stack", "deploy", "--resolve-image", "never", "-c", "deploy/swarm/stack.yml", stack)
	if err != nil {
		t.Fatalf("stack deploy: %v\n%s", err, out)
	}
	want := map[string]string{"public-gateway": "2/2", "protected-data": "3/3", "wristband-emulator": "1/1"}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out := e.mustRun(t, 30*time.Second, "docker", "stack", "services", stack, "--format", "{{.Name}} {{.Replicas}}")
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				got[strings.TrimPrefix(f[0], stack+"_")] = f[1]
			}
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas %v after 2 min, want %v", got, want)
		}
		time.Sleep(time.Second)
	}
	t.Logf("stack running %s after deploy", time.Since(start).Round(100*time.Millisecond))

	// Every task in rotation first, as the compose test does: Swarm starts
	// tasks in any order, and a replica that became ready a moment ago is
	// picked up by the gateways' resolvers within 2 s. Short probes until
	// both gateways and all three replicas have answered (at most 60 s).
	inRotation := time.Now().Add(60 * time.Second)
	for {
		s, _, err := e.probe(t, stack+"_edge",
			"-url", "http://tasks.public-gateway:6001/api/public/data", "-n", "40", "-c", "2", "-wait", "60s", "-warm", "5")
		if err == nil && len(s.Addrs) == 2 && len(s.ServedBy) == 3 {
			break
		}
		if time.Now().After(inRotation) {
			t.Fatalf("after 60 s not every task answers: gateways %v, protected-data %v (err %v)", s.Addrs, s.ServedBy, err)
		}
		time.Sleep(2 * time.Second)
	}

	// Through the overlay: tasks.public-gateway names every gateway task, and
	// the probe balances over them, so both gateways and all three
	// protected-data replicas must answer.
	s, pout, err := e.probe(t, stack+"_edge",
		"-url", "http://tasks.public-gateway:6001/api/public/data", "-n", "300", "-c", "4", "-wait", "90s",
		// Swarm starts tasks in any order: a gateway may be up before it
		// holds a token (503 + Retry-After). Count once both answer.
		"-warm", "20")
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, pout)
	}
	if s.Failed > 0 || s.OK != 300 {
		t.Errorf("%d ok, %d failed (first: %s), want 300 ok", s.OK, s.Failed, s.FirstErr)
	}
	if len(s.Addrs) != 2 || len(s.ServedBy) != 3 {
		t.Errorf("gateways called %v, protected-data replicas answering %v; want 2 and 3", s.Addrs, s.ServedBy)
	}
	for by, c := range s.ServedBy {
		if c < 60 {
			t.Errorf("protected-data %s served %d of 300, want at least 20%%", by, c)
		}
	}
	t.Logf("overlay: gateways %v, protected-data %v", s.Addrs, s.ServedBy)

	// Through the routing mesh, where the kernel has IPVS (not on every
	// sandbox kernel: without it Swarm cannot publish ports).
	if _, err := os.Stat("/proc/sys/net/ipv4/vs"); err == nil {
		a := e.waitOK(t, 60*time.Second)
		t.Logf("routing mesh on 127.0.0.1:%d answered %d", e.port, a.status)
	} else {
		t.Logf("no IPVS in this kernel: the routing mesh (published port) cannot work here; checked through the overlay only")
	}

	removeStack(t, e, stack)
	if out := strings.TrimSpace(e.mustRun(t, 30*time.Second, "docker", "ps", "-aq", "--filter", "label=com.docker.stack.namespace="+stack)); out != "" {
		t.Errorf("containers left after stack rm: %s", out)
	}
}

// removeStack removes the stack and waits until its tasks and networks are
// gone (docker stack rm returns before they are).
func removeStack(t *testing.T, e *env, stack string) {
	t.Helper()
	if out, err := e.run(t, time.Minute, nil, "docker", "stack", "rm", stack); err != nil && !strings.Contains(out, "Nothing found") {
		t.Logf("stack rm: %v\n%s", err, out)
	}
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		ps, _ := e.run(t, 30*time.Second, nil, "docker", "ps", "-aq", "--filter", "label=com.docker.stack.namespace="+stack)
		nets, _ := e.run(t, 30*time.Second, nil, "docker", "network", "ls", "-q", "--filter", "label=com.docker.stack.namespace="+stack)
		if strings.TrimSpace(ps) == "" && strings.TrimSpace(nets) == "" {
			// The emulator's key volume outlives `stack rm` by design.
			vols, _ := e.run(t, 30*time.Second, nil, "docker", "volume", "ls", "-q", "--filter", "label=com.docker.stack.namespace="+stack)
			for _, v := range strings.Fields(vols) {
				if out, err := e.run(t, 30*time.Second, nil, "docker", "volume", "rm", v); err != nil {
					t.Errorf("volume rm %s: %v\n%s", v, err, out)
				}
			}
			return
		}
		time.Sleep(time.Second)
	}
	t.Errorf("stack %s not gone after 90 s", stack)
}
