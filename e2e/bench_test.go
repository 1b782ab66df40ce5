package e2e

import (
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkThroughput drives a Go hello-world, protected-data and the public
// gateway, all real processes on loopback, from one load generator in the
// same run, so that their figures can be read as ratios (ns/op of
// hello-world / ns/op of the service). The load generator shares the two
// cores with the servers, as wrk would. Run with `make bench`.
//
// The services run as shipped: JSON logs at info, one line per request.
func BenchmarkThroughput(b *testing.B) {
	logLevel, logFormat = "info", "json"
	defer func() { logLevel, logFormat = "debug", "text" }()
	s := startSystem(b, 30*time.Minute)
	hello := freeAddr(b)
	start(b, "hello", "LISTEN_ADDR="+hello)
	waitStatus(b, "http://"+hello+"/", 200, 30*time.Second)
	tok := emulatorToken(b, s)

	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	cases := []struct {
		name, url, auth string
		proc            *proc
	}{
		{"hello-world", "http://" + hello + "/", "", nil},
		{"protected-data", s.pdURL() + "/api/protected/data", "Bearer " + tok, s.pd},
		{"public-gateway", s.gwURL() + "/api/public/data", "", s.gw},
	}
	for _, conc := range []int{1, 16, 64} {
		for _, bc := range cases {
			b.Run(bc.name+"/c="+strconv.Itoa(conc), func(b *testing.B) {
				// RunParallel starts parallelism*GOMAXPROCS goroutines.
				p := conc / runtime.GOMAXPROCS(0)
				b.SetParallelism(maxInt(1, p))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						req, _ := http.NewRequest(http.MethodGet, bc.url, nil)
						if bc.auth != "" {
							req.Header.Set("Authorization", bc.auth)
						}
						resp, err := c.Do(req)
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							b.Errorf("%s answered %d", bc.url, resp.StatusCode)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
				if bc.proc != nil {
					if mb, ok := peakRSSMB(bc.proc.cmd.Process.Pid); ok {
						b.ReportMetric(mb, "peak-RSS-MB")
					}
				}
			})
		}
	}
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// peakRSSMB reads VmHWM (peak resident set) of pid from /proc.
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
