package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service/servicetest"
)

// load reads the gateway's configuration from exactly env, as run does.
func load(t *testing.T, env ...string) (config, []string) {
	t.Helper()
	var cfg config
	servicetest.SetEnv(t, &cfg, env...)
	_, errs := service.Load(&cfg, defaultAddr)
	_, _, _, verrs := cfg.validate(service.NewDiscardLogger())
	var msgs []string
	for _, e := range append(errs, verrs...) {
		msgs = append(msgs, strings.Split(e.Error(), "\n")...) // a joined error: one line each
	}
	return cfg, msgs
}

func TestValidateAcceptsAWorkingConfiguration(t *testing.T) {
	cfg, msgs := load(t, "CLIENT_ID=c", "CLIENT_SECRET=s", "WRISTBAND_EMULATOR_URL=http://127.0.0.1:6003")
	if len(msgs) > 0 {
		t.Fatalf("errors: %q", msgs)
	}
	if cfg.ListenAddr != defaultAddr || cfg.DownstreamTimeout != 5*time.Second || cfg.TokenTimeout != 10*time.Second {
		t.Errorf("defaults: %+v", cfg)
	}
	ep, _, _, _ := cfg.validate(service.NewDiscardLogger())
	if ep.TokenURL != "http://127.0.0.1:6003/api/v1/oauth2/token" {
		t.Errorf("token URL %q", ep.TokenURL)
	}
}

func TestValidateReportsEachMistakeOnce(t *testing.T) {
	ok := []string{"CLIENT_ID=c", "CLIENT_SECRET=s", "WRISTBAND_EMULATOR_URL=http://127.0.0.1:6003"}
	cases := []struct {
		name string
		env  []string
		want []string // message prefixes, in order
	}{
		{"nothing set", nil, []string{"TOKEN_URL: no token endpoint", "CLIENT_ID:", "CLIENT_SECRET:"}},
		{"blank client id", append(ok, "CLIENT_ID=  "), []string{"CLIENT_ID:"}},
		{"bad vanity domain", append(ok, "APPLICATION_VANITY_DOMAIN=https://acme.dev"), []string{"APPLICATION_VANITY_DOMAIN:"}},
		{"bad token URL", append(ok, "TOKEN_URL=ftp://idp"), []string{"TOKEN_URL: not an http"}},
		{"bad protected-data URL", append(ok, "PROTECTED_DATA_URL=127.0.0.1:6002"), []string{"PROTECTED_DATA_URL:"}},
		{"downstream timeout zero", append(ok, "DOWNSTREAM_TIMEOUT=0s"), []string{"DOWNSTREAM_TIMEOUT:"}},
		{"downstream timeout above the write timeout", append(ok, "DOWNSTREAM_TIMEOUT=26s"), []string{"DOWNSTREAM_TIMEOUT:"}},
		{"attempt above the whole", append(ok, "DOWNSTREAM_TIMEOUT=2s", "DOWNSTREAM_ATTEMPT_TIMEOUT=3s"), []string{"DOWNSTREAM_ATTEMPT_TIMEOUT:"}},
		{"negative attempt", append(ok, "DOWNSTREAM_ATTEMPT_TIMEOUT=-1s"), []string{"DOWNSTREAM_ATTEMPT_TIMEOUT:"}},
		{"bad whole, attempt not compared", append(ok, "DOWNSTREAM_TIMEOUT=-1s", "DOWNSTREAM_ATTEMPT_TIMEOUT=3s"), []string{"DOWNSTREAM_TIMEOUT:"}},
		{"token timeout", append(ok, "TOKEN_TIMEOUT=0s"), []string{"TOKEN_TIMEOUT:"}},
		{"unparsable token timeout, reported once", append(ok, "TOKEN_TIMEOUT=soon"), []string{"TOKEN_TIMEOUT: not a valid duration"}},
		{"negative margin", append(ok, "TOKEN_MARGIN=-1s"), []string{"TOKEN_MARGIN:"}},
		{"protected-data CA for an http URL", append(ok, "PROTECTED_DATA_CA_FILE=/tls/ca.crt"), []string{"PROTECTED_DATA_CA_FILE, PROTECTED_DATA_CLIENT_CERT_FILE, PROTECTED_DATA_CLIENT_KEY_FILE: set, but PROTECTED_DATA_URL is not https://"}},
		{"missing protected-data CA file", append(ok, "PROTECTED_DATA_URL=https://protected-data:6002", "PROTECTED_DATA_CA_FILE=/nonexistent/ca.crt"), []string{"PROTECTED_DATA_CA_FILE: the file does not exist"}},
		{"client certificate without its key", append(ok, "PROTECTED_DATA_URL=https://protected-data:6002", "PROTECTED_DATA_CLIENT_CERT_FILE=/nonexistent/tls.crt"), []string{"PROTECTED_DATA_CLIENT_KEY_FILE: required when PROTECTED_DATA_CLIENT_CERT_FILE is set"}},
		{"protected-data TLS files and a bad URL", append(ok, "PROTECTED_DATA_URL=https://", "PROTECTED_DATA_CA_FILE=/nonexistent/ca.crt"), []string{"PROTECTED_DATA_URL:", "PROTECTED_DATA_CA_FILE: the file does not exist"}},
		{"unreadable secret file, reported once", []string{"CLIENT_ID=c", "WRISTBAND_EMULATOR_URL=http://127.0.0.1:6003", "CLIENT_SECRET_FILE=/nonexistent"},
			[]string{"CLIENT_SECRET_FILE: the file does not exist"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, msgs := load(t, tc.env...)
			if len(msgs) != len(tc.want) {
				t.Fatalf("got %q, want %d message(s) starting %q", msgs, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(msgs[i], w) {
					t.Errorf("message %q, want it to start with %q", msgs[i], w)
				}
				if !strings.Contains(msgs[i], "e.g.") {
					t.Errorf("message %q gives no example", msgs[i])
				}
			}
		})
	}
}

func TestValidateNeverEchoesTheSecret(t *testing.T) {
	_, msgs := load(t, "CLIENT_SECRET=hunter2", "CLIENT_SECRET_FILE=/x", "PROTECTED_DATA_URL=ftp://hunter2@x")
	if len(msgs) == 0 || slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, "hunter2") }) {
		t.Errorf("messages %q", msgs)
	}
}
