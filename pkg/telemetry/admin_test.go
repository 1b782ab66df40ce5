package telemetry_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/telemetry"
)

func adminGet(t *testing.T, tel *telemetry.Telemetry, path string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + tel.AdminAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestPprofOffByDefault(t *testing.T) {
	tel := newTelemetry(t, telemetry.Settings{MetricsAddr: "127.0.0.1:0"})
	if err := tel.StartAdmin(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline", "/debug/pprof/profile?seconds=1"} {
		if code, _ := adminGet(t, tel, p); code != http.StatusNotFound {
			t.Errorf("GET %s with PPROF off: %d, want 404", p, code)
		}
	}
	if code, _ := adminGet(t, tel, "/metrics"); code != http.StatusOK {
		t.Errorf("/metrics: %d", code)
	}
}

func TestPprofOnAdminListener(t *testing.T) {
	tel := newTelemetry(t, telemetry.Settings{MetricsAddr: "127.0.0.1:0", PProf: true})
	if err := tel.StartAdmin(); err != nil {
		t.Fatal(err)
	}
	code, body := adminGet(t, tel, "/debug/pprof/")
	if code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/: %d %.200s", code, body)
	}
	code, body = adminGet(t, tel, "/debug/pprof/goroutine?debug=1")
	if code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Fatalf("goroutine profile: %d %.200s", code, body)
	}
	// A CPU profile streams for its duration: the admin write timeout must
	// allow it (pprof refuses durations over the server's WriteTimeout).
	code, body = adminGet(t, tel, "/debug/pprof/profile?seconds=1")
	if code != http.StatusOK || len(body) == 0 {
		t.Fatalf("cpu profile: %d %.200s", code, body)
	}
}

// Two services on one host with the default METRICS_ADDR: the second one's
// error says what to do, not only "address already in use".
func TestAdminAddressInUseSaysWhatToDo(t *testing.T) {
	first := newTelemetry(t, telemetry.Settings{MetricsAddr: "127.0.0.1:0"})
	if err := first.StartAdmin(); err != nil {
		t.Fatal(err)
	}
	second := newTelemetry(t, telemetry.Settings{MetricsAddr: first.AdminAddr().String()})
	err := second.StartAdmin()
	if err == nil {
		t.Fatal("second admin listener on the same address started")
	}
	for _, want := range []string{"METRICS_ADDR", "own METRICS_ADDR (e.g. 127.0.0.1:9092)", "METRICS_ADDR= to turn metrics off"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
