package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The load generator of `make bench`. It works the way wrk does: one
// keep-alive connection per concurrent caller, a request serialised once and
// written as bytes, the answer parsed just enough to check the status and
// the body. That keeps its own CPU cost per request close to wrk's (the
// figures show it: "loadgen µs/req"), which matters on two shared cores:
// every microsecond the generator burns is taken from the servers, and a
// heavy generator (Go's net/http client costs several times more) squeezes
// every endpoint's figure toward the same number and flatters the ratios.
// Unlike wrk it runs in the test process, so it can interleave the targets,
// keep every latency with its start time (the renewal windows need that) and
// check every body.

// target is one endpoint under load.
type target struct {
	name string // table row
	addr string // host:port
	path string
	auth string // Authorization header value, or ""
	want []byte // expected body, surrounding white space ignored
}

func (t target) request() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: m2m-bench\r\nAccept: application/json\r\n", t.path, t.addr)
	if t.auth != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", t.auth)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// rawConn is one keep-alive HTTP/1.1 connection.
type rawConn struct {
	c    net.Conn
	r    *bufio.Reader
	req  []byte
	body []byte
}

func dialRaw(t target) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", t.addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	return &rawConn{c: c, r: bufio.NewReaderSize(c, 4096), req: t.request(), body: make([]byte, 0, 512)}, nil
}

var errNoLength = errors.New("response without Content-Length (chunked answers are not expected here)")

// do sends the request and reads one response. keep is false when the
// server asked to close the connection.
func (rc *rawConn) do() (status int, body []byte, keep bool, err error) {
	_ = rc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err = rc.c.Write(rc.req); err != nil {
		return 0, nil, false, err
	}
	line, err := rc.r.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, nil, false, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, false, fmt.Errorf("bad status line %q", line)
	}
	length, keep := -1, true
	for {
		h, err := rc.r.ReadSlice('\n')
		if err != nil {
			return 0, nil, false, err
		}
		if len(h) <= 2 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, nil, false, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(value, []byte("close")):
			keep = false
		}
	}
	if length < 0 {
		return status, nil, false, errNoLength
	}
	if cap(rc.body) < length {
		rc.body = make([]byte, length)
	}
	rc.body = rc.body[:length]
	if _, err := io.ReadFull(rc.r, rc.body); err != nil {
		return 0, nil, false, err
	}
	return status, rc.body, keep, nil
}

func (rc *rawConn) close() { _ = rc.c.Close() }

// sample is one request: when it started and how long it took, both in ns
// (start relative to the run's epoch).
type sample struct{ start, dur int64 }

// tally is what a set of callers saw.
type tally struct {
	samples []sample
	errs    map[string]int // by kind: "status 502", "body", "connection"...
	// wrk reports counts and percentiles only: extra (requests it made)
	// and one latencies summary per round.
	extra int
	wrk   []latencies
}

func (t *tally) requests() int { return len(t.samples) + t.extra }

func (t *tally) addErr(kind string) {
	if t.errs == nil {
		t.errs = map[string]int{}
	}
	t.errs[kind]++
}

func (t *tally) merge(o *tally) {
	t.samples = append(t.samples, o.samples...)
	t.extra += o.extra
	t.wrk = append(t.wrk, o.wrk...)
	for k, v := range o.errs {
		if t.errs == nil {
			t.errs = map[string]int{}
		}
		t.errs[k] += v
	}
}

func (t *tally) errCount() int {
	n := 0
	for _, v := range t.errs {
		n += v
	}
	return n
}

// drive runs conc closed-loop callers against tg for warm+d and returns what
// they saw after the warm-up. epoch anchors the sample start times.
func drive(tg target, conc int, warm, d time.Duration, epoch time.Time, mode string) *tally {
	if mode == "wrk" {
		return driveWrk(tg, conc, d)
	}
	var until atomic.Int64
	until.Store(time.Now().Add(warm + d).UnixNano())
	return driveUntil(tg, conc, warm, &until, epoch, mode)
}

// driveUntil is drive with an end that the caller may move (to stop early).
func driveUntil(tg target, conc int, warm time.Duration, until *atomic.Int64, epoch time.Time, mode string) *tally {
	var mu sync.Mutex
	total := &tally{}
	var wg sync.WaitGroup
	from := time.Now().Add(warm)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local tally
			if mode == "nethttp" {
				netHTTPCaller(tg, from, until, epoch, &local)
			} else {
				rawCaller(tg, from, until, epoch, &local)
			}
			mu.Lock()
			total.merge(&local)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return total
}

func rawCaller(tg target, from time.Time, until *atomic.Int64, epoch time.Time, out *tally) {
	var rc *rawConn
	defer func() {
		if rc != nil {
			rc.close()
		}
	}()
	for {
		t0 := time.Now()
		if t0.UnixNano() >= until.Load() {
			return
		}
		if rc == nil {
			var err error
			if rc, err = dialRaw(tg); err != nil {
				if !t0.Before(from) {
					out.addErr("connect")
				}
				time.Sleep(10 * time.Millisecond)
				continue
			}
		}
		status, body, keep, err := rc.do()
		t1 := time.Now()
		counted := !t0.Before(from)
		switch {
		case err != nil:
			if counted {
				out.addErr("connection")
			}
			rc.close()
			rc = nil
			continue
		case status != http.StatusOK:
			if counted {
				out.addErr("status " + strconv.Itoa(status))
			}
		case !bytes.Equal(bytes.TrimSpace(body), tg.want):
			if counted {
				out.addErr("body")
			}
		}
		if counted {
			out.samples = append(out.samples, sample{start: int64(t0.Sub(epoch)), dur: int64(t1.Sub(t0))})
		}
		if !keep {
			rc.close()
			rc = nil
		}
	}
}

// netHTTPCaller is the same caller built on net/http's client, kept to show
// what the choice of load generator does to the figures (BENCH_CLIENT=nethttp).
var benchHTTP = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute},
}

func netHTTPCaller(tg target, from time.Time, until *atomic.Int64, epoch time.Time, out *tally) {
	url := "http://" + tg.addr + tg.path
	buf := make([]byte, 0, 512)
	for {
		t0 := time.Now()
		if t0.UnixNano() >= until.Load() {
			return
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Accept", "application/json")
		if tg.auth != "" {
			req.Header.Set("Authorization", tg.auth)
		}
		resp, err := benchHTTP.Do(req)
		counted := !t0.Before(from)
		if err != nil {
			if counted {
				out.addErr("connection")
			}
			time.Sleep(time.Millisecond)
			continue
		}
		buf = buf[:0]
		b := bytes.NewBuffer(buf)
		_, rerr := io.Copy(b, resp.Body)
		resp.Body.Close()
		t1 := time.Now()
		if counted {
			switch {
			case rerr != nil:
				out.addErr("connection")
			case resp.StatusCode != http.StatusOK:
				out.addErr("status " + strconv.Itoa(resp.StatusCode))
			case !bytes.Equal(bytes.TrimSpace(b.Bytes()), tg.want):
				out.addErr("body")
			}
			out.samples = append(out.samples, sample{start: int64(t0.Sub(epoch)), dur: int64(t1.Sub(t0))})
		}
	}
}

// latencies summarises durations (ns): p50, p90, p99 and max.
type latencies struct{ p50, p90, p99, max time.Duration }

func summarise(durs []int64) latencies {
	if len(durs) == 0 {
		return latencies{}
	}
	s := slices.Clone(durs)
	slices.Sort(s)
	q := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.5) - 1
		i = max(0, min(i, len(s)-1))
		return time.Duration(s[i])
	}
	return latencies{q(0.50), q(0.90), q(0.99), time.Duration(s[len(s)-1])}
}

func durations(ss []sample) []int64 {
	d := make([]int64, len(ss))
	for i, s := range ss {
		d[i] = s.dur
	}
	return d
}

// driveWrk runs wrk (1 thread, like the reference demo's figures) for d,
// rounded up to whole seconds, and parses its report. wrk checks statuses,
// not bodies.
func driveWrk(tg target, conc int, d time.Duration) *tally {
	t := &tally{}
	secs := int((d + time.Second - 1) / time.Second)
	args := []string{"-t1", "-c" + strconv.Itoa(conc), "-d" + strconv.Itoa(secs) + "s", "--latency", "-H", "Accept: application/json"}
	if tg.auth != "" {
		args = append(args, "-H", "Authorization: "+tg.auth)
	}
	out, err := exec.Command("wrk", append(args, "http://"+tg.addr+tg.path)...).CombinedOutput()
	if err != nil {
		t.addErr("wrk: " + err.Error())
		return t
	}
	var l latencies
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 4 && f[0] == "Latency" && !strings.HasSuffix(f[1], "%"):
			l.max = wrkDuration(f[3])
		case len(f) == 2 && f[0] == "50%":
			l.p50 = wrkDuration(f[1])
		case len(f) == 2 && f[0] == "90%":
			l.p90 = wrkDuration(f[1])
		case len(f) == 2 && f[0] == "99%":
			l.p99 = wrkDuration(f[1])
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			n, _ := strconv.Atoi(f[0])
			t.extra += n
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx or 3xx responses:"):
			n, _ := strconv.Atoi(f[len(f)-1])
			for range n {
				t.addErr("status not 2xx")
			}
		case strings.HasPrefix(strings.TrimSpace(line), "Socket errors:"):
			// "Socket errors: connect 0, read 0, write 0, timeout 0"
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.Atoi(strings.TrimSuffix(f[i+1], ","))
				for range n {
					t.addErr("socket " + f[i])
				}
			}
		}
	}
	t.wrk = append(t.wrk, l)
	return t
}

func wrkDuration(s string) time.Duration {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0
			}
			return time.Duration(f * float64(u.unit))
		}
	}
	return 0
}

// medianLatencies summarises wrk's per-round reports: the median of each
// quantile, the largest max.
func medianLatencies(ls []latencies) latencies {
	if len(ls) == 0 {
		return latencies{}
	}
	med := func(get func(latencies) time.Duration) time.Duration {
		v := make([]int64, len(ls))
		for i, l := range ls {
			v[i] = int64(get(l))
		}
		slices.Sort(v)
		return time.Duration(v[len(v)/2])
	}
	out := latencies{
		p50: med(func(l latencies) time.Duration { return l.p50 }),
		p90: med(func(l latencies) time.Duration { return l.p90 }),
		p99: med(func(l latencies) time.Duration { return l.p99 }),
	}
	for _, l := range ls {
		out.max = max(out.max, l.max)
	}
	return out
}
