//go:build composetest

package composetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// promResult is one sample of an instant query.
type promResult struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (r promResult) value() float64 {
	s, _ := r.Value[1].(string)
	v, _ := strconv.ParseFloat(s, 64)
	return v
}

// promQuery runs an instant query against Prometheus' HTTP API.
func promQuery(base, q string) ([]promResult, error) {
	resp, err := client.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []promResult `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %q: status %d: %w", q, resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK || body.Status != "success" {
		return nil, fmt.Errorf("query %q: status %d %s %s", q, resp.StatusCode, body.Status, body.Error)
	}
	return body.Data.Result, nil
}

// TestObservability brings the deployment up with the `observability`
// profile and protected-data scaled to 3, sends traffic, and asks the real
// Prometheus (built from its Go module) for request and token metrics from
// every protected-data replica, found through Docker DNS.
func TestObservability(t *testing.T) {
	e := setup(t)
	e.project += "obs"
	promImage := e.prefix + "/prometheus:" + e.tag
	if err := exec.Command("docker", "image", "inspect", promImage).Run(); err != nil {
		t.Fatalf("image %s missing: run `make images-prometheus`", promImage)
	}
	promPort := freePort(t)
	promEnv := []string{fmt.Sprintf("PROMETHEUS_PUBLISH=127.0.0.1:%d", promPort)}
	compose := func(timeout time.Duration, args ...string) (string, error) {
		name, full := e.composeArgs(append([]string{"--profile", "observability"}, args...)...)
		return e.run(t, timeout, promEnv, name, full...)
	}
	down := func() {
		if out, err := compose(2*time.Minute, "down", "--remove-orphans", "--timeout", "5"); err != nil {
			t.Logf("compose down: %v\n%s", err, out)
		}
	}
	down()
	t.Cleanup(down)
	if out, err := compose(3*time.Minute, "up", "-d", "--no-build", "--scale", "protected-data=3"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	pds := e.waitHealthy(t, "protected-data", 3, 90*time.Second)
	e.waitHealthy(t, "public-gateway", 1, 90*time.Second)
	e.waitOK(t, 60*time.Second)

	// Metrics ports stay inside: no service publishes 9090.
	for _, svc := range []string{"wristband-emulator", "protected-data", "public-gateway"} {
		for _, id := range e.containers(t, svc) {
			out := e.mustRun(t, 30*time.Second, "docker", "inspect", "-f", "{{json .NetworkSettings.Ports}}", id)
			if strings.Contains(out, `"9090/tcp":[{`) {
				t.Errorf("%s %s publishes its metrics port: %s", svc, id, out)
			}
		}
	}
	var pdIPs []string
	for _, id := range pds {
		out := e.mustRun(t, 30*time.Second, "docker", "inspect", "-f",
			fmt.Sprintf(`{{(index .NetworkSettings.Networks "%s_backend").IPAddress}}`, e.project), id)
		pdIPs = append(pdIPs, strings.TrimSpace(out))
	}
	slices.Sort(pdIPs)

	// Enough traffic for the gateway to have reached every replica.
	if r := load(e.publicURL(), 300, 8, nil); r.failed > 0 {
		t.Fatalf("%d of %d public calls failed, first: %s", r.failed, r.ok+r.failed, r.firstErr)
	}

	prom := fmt.Sprintf("http://127.0.0.1:%d", promPort)
	instances := func(rs []promResult) []string {
		var out []string
		for _, r := range rs {
			if r.value() > 0 {
				host, _, _ := strings.Cut(r.Metric["instance"], ":")
				out = append(out, host)
			}
		}
		slices.Sort(out)
		return out
	}
	checks := []struct {
		name, query string
		wantIPs     []string // the instances with a positive value
	}{
		{"scraped", `up{job="protected-data"}`, pdIPs},
		{"requests", `sum by (instance) (http_server_request_duration_seconds_count{job="protected-data",route="/api/protected/data",status="200"})`, pdIPs},
		{"token validation", `sum by (instance) (jwtauth_cache_hits_total{job="protected-data"} + jwtauth_cache_misses_total{job="protected-data"})`, pdIPs},
		{"jwks keys", `jwtauth_jwks_keys{job="protected-data"}`, pdIPs},
	}
	deadline := time.Now().Add(90 * time.Second)
	for _, c := range checks {
		for {
			rs, err := promQuery(prom, c.query)
			got := instances(rs)
			if err == nil && slices.Equal(got, c.wantIPs) {
				t.Logf("%s: every replica %v", c.name, got)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s gives instances %v (err %v), want %v", c.name, c.query, got, err, c.wantIPs)
			}
			time.Sleep(time.Second)
		}
	}
	checkDashboard(t, e.root, prom)

	// The gateway's side: a token held, and calls spread over the three.
	for {
		exp, err1 := promQuery(prom, `m2m_token_expiry_seconds{job="public-gateway"}`)
		reps, err2 := promQuery(prom, `sum by (replica) (lb_requests_total{job="public-gateway"})`)
		var replicas []string
		for _, r := range reps {
			if r.value() > 0 {
				replicas = append(replicas, r.Metric["replica"])
			}
		}
		slices.Sort(replicas)
		if err1 == nil && err2 == nil && len(exp) == 1 && exp[0].value() > 0 && slices.Equal(replicas, pdIPs) {
			t.Logf("gateway: token expires in %.0f s; downstream replicas %v", exp[0].value(), replicas)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway series: expiry %v (%v), replicas %v (%v), want a token and %v", exp, err1, replicas, err2, pdIPs)
		}
		time.Sleep(time.Second)
	}
}

// TestObservability's companion: every query of the Grafana dashboard
// parses and runs on the real Prometheus (Grafana's $__rate_interval
// becomes 1m). Runs inside TestObservability while Prometheus is up.
func checkDashboard(t *testing.T, root, prom string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy", "observability", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	want := []string{"Request rate", "p99", "Token expiry countdown", "JWKS age", "failures by reason"}
	var titles []string
	n := 0
	for _, p := range d.Panels {
		titles = append(titles, p.Title)
		for _, tg := range p.Targets {
			q := strings.ReplaceAll(tg.Expr, "$__rate_interval", "1m")
			if _, err := promQuery(prom, q); err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
			}
			n++
		}
	}
	all := strings.Join(titles, "|")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("dashboard has no panel %q: %v", w, titles)
		}
	}
	t.Logf("dashboard: %d panels, %d queries run on Prometheus", len(d.Panels), n)
}
