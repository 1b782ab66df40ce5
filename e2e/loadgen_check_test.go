package e2e

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The bench's load generator is only as good as its parsing: these pin
// what it counts as an answer, an error and a percentile.
func TestLoadGeneratorCountsAnswersAndErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			if r.Header.Get("Authorization") != "Bearer x" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			_, _ = w.Write([]byte(`{"a":1}` + "\n"))
		case "/wrong":
			_, _ = w.Write([]byte(`{"a":2}`))
		case "/close":
			w.Header().Set("Connection", "close")
			_, _ = w.Write([]byte(`{"a":1}`))
		case "/chunked":
			w.(http.Flusher).Flush() // no Content-Length
			_, _ = w.Write([]byte(`{"a":1}`))
		case "/500":
			http.Error(w, "boom", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	want := []byte(`{"a":1}`)
	run := func(path, auth string) *tally {
		return drive(target{path, addr, path, auth, want}, 2, 0, 200*time.Millisecond, time.Now(), "raw")
	}

	if tl := run("/ok", "Bearer x"); tl.errCount() != 0 || tl.requests() < 10 {
		t.Fatalf("/ok: %d answers, errors %v; want many and none", tl.requests(), tl.errs)
	}
	if tl := run("/ok", ""); tl.errs["status 401"] == 0 || tl.errCount() != tl.errs["status 401"] {
		t.Errorf("without the header: errors %v, want only status 401", tl.errs)
	}
	if tl := run("/wrong", ""); tl.errs["body"] == 0 {
		t.Errorf("a wrong body was not counted: %v", tl.errs)
	}
	if tl := run("/close", ""); tl.errCount() != 0 || tl.requests() < 2 {
		t.Errorf("Connection: close must reconnect, not fail: %d answers, errors %v", tl.requests(), tl.errs)
	}
	if tl := run("/chunked", ""); tl.errs["connection"] == 0 {
		t.Errorf("an answer without Content-Length must count as an error: %v", tl.errs)
	}
	if tl := run("/500", ""); tl.errs["status 500"] == 0 {
		t.Errorf("500s were not counted: %v", tl.errs)
	}
}

func TestSummariseAndWindows(t *testing.T) {
	d := make([]int64, 100)
	for i := range d {
		d[i] = int64(i+1) * int64(time.Millisecond)
	}
	l := summarise(d)
	if l.p50 != 50*time.Millisecond || l.p90 != 90*time.Millisecond || l.p99 != 99*time.Millisecond || l.max != 100*time.Millisecond {
		t.Fatalf("summarise: %+v", l)
	}
	ws := [][2]int64{{100, 200}}
	for _, c := range []struct {
		s    sample
		want bool
	}{
		{sample{start: 50, dur: 40}, false},  // ends before
		{sample{start: 50, dur: 60}, true},   // runs into it
		{sample{start: 150, dur: 10}, true},  // inside
		{sample{start: 190, dur: 100}, true}, // starts inside
		{sample{start: 201, dur: 10}, false}, // after
	} {
		if got := inWindow(c.s, ws); got != c.want {
			t.Errorf("inWindow(%+v) = %v, want %v", c.s, got, c.want)
		}
	}
	if got := wrkDuration("1.50ms"); got != 1500*time.Microsecond {
		t.Errorf("wrkDuration(1.50ms) = %s", got)
	}
	if got := wrkDuration("812.00us"); got != 812*time.Microsecond {
		t.Errorf("wrkDuration(812.00us) = %s", got)
	}
}
