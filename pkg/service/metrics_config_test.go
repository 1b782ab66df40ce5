package service

import (
	"strings"
	"testing"
)

func TestMetricsSettings(t *testing.T) {
	var spec baseSpec
	if _, errs := Load(&spec, ":7001"); len(errs) > 0 {
		t.Fatal(errs)
	}
	if spec.MetricsAddr != ":9090" || spec.PProf {
		t.Errorf("defaults METRICS_ADDR %q PPROF %v, want :9090 false", spec.MetricsAddr, spec.PProf)
	}
	for _, tc := range []struct {
		env     map[string]string
		wantErr string
	}{
		{map[string]string{"METRICS_ADDR": ""}, ""}, // set and empty: off
		{map[string]string{"METRICS_ADDR": "127.0.0.1:9191", "PPROF": "true"}, ""},
		{map[string]string{"METRICS_ADDR": "nonsense-secret"}, "METRICS_ADDR: want host:port"},
		{map[string]string{"METRICS_ADDR": ":7001"}, "METRICS_ADDR: must differ from LISTEN_ADDR"},
		{map[string]string{"METRICS_ADDR": "", "PPROF": "true"}, "PPROF: needs the admin listener"},
		{map[string]string{"PPROF": "maybe-secret"}, "PPROF: not a boolean"},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		var spec baseSpec
		_, errs := Load(&spec, ":7001")
		var got string
		for _, e := range errs {
			got += e.Error() + "\n"
		}
		if tc.wantErr == "" && got != "" || !strings.Contains(got, tc.wantErr) {
			t.Errorf("%v: errors %q, want %q", tc.env, got, tc.wantErr)
		}
		if strings.Contains(got, "secret") {
			t.Errorf("%v: value echoed: %q", tc.env, got)
		}
		for k := range tc.env {
			t.Setenv(k, ":9090")
			if k == "PPROF" {
				t.Setenv(k, "false")
			}
		}
	}
}
