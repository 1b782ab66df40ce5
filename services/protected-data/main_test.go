package main

import (
	"strings"
	"testing"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service/servicetest"
)

func load(t *testing.T, env ...string) []string {
	t.Helper()
	var cfg config
	servicetest.SetEnv(t, &cfg, env...)
	_, errs := service.Load(&cfg, defaultAddr)
	_, verrs := cfg.validate()
	var msgs []string
	for _, e := range append(errs, verrs...) {
		msgs = append(msgs, strings.Split(e.Error(), "\n")...) // a joined error: one line each
	}
	return msgs
}

func TestValidateReportsEachMistakeOnce(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		want []string // message prefixes, in order
	}{
		{"emulator fallback is enough", []string{"WRISTBAND_EMULATOR_URL=http://127.0.0.1:6003"}, nil},
		{"every mistake at once", []string{"JWKS_URL=notaurl", "ISSUER=", "CLOCK_LEEWAY=5m", "ALGORITHMS=HS256"},
			[]string{"JWKS_URL: not an http", "ISSUER: no issuer", "ALGORITHMS:", "CLOCK_LEEWAY: more than 1m0s"}},
		{"unparsable leeway, reported once", []string{"WRISTBAND_EMULATOR_URL=http://127.0.0.1:6003", "CLOCK_LEEWAY=soon"},
			[]string{"CLOCK_LEEWAY: not a valid duration"}},
		{"no leeway at all is allowed", []string{"WRISTBAND_EMULATOR_URL=http://127.0.0.1:6003", "CLOCK_LEEWAY=-1s"}, nil},
		{"several algorithms, one bad", []string{"WRISTBAND_EMULATOR_URL=http://127.0.0.1:6003", "ALGORITHMS=RS256, ES256,none"},
			[]string{"ALGORITHMS:"}},
		{"token type with a quote", []string{"WRISTBAND_EMULATOR_URL=http://127.0.0.1:6003", `REQUIRE_TOKEN_TYPE=at"HS256`},
			[]string{"REQUIRE_TOKEN_TYPE:"}},
		{"cooldown too short to protect the IdP", []string{"WRISTBAND_EMULATOR_URL=http://127.0.0.1:6003", "JWKS_REFRESH_COOLDOWN=1ms"},
			[]string{"JWKS_REFRESH_COOLDOWN: must be at least 1s"}},
		{"bad vanity domain only", []string{"APPLICATION_VANITY_DOMAIN=acme.dev/x"}, []string{"APPLICATION_VANITY_DOMAIN:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msgs := load(t, tc.env...)
			if len(msgs) != len(tc.want) {
				t.Fatalf("got %q, want %d message(s) starting %q", msgs, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(msgs[i], w) || !strings.Contains(msgs[i], "e.g.") {
					t.Errorf("message %q, want it to start with %q and give an example", msgs[i], w)
				}
				if strings.Contains(msgs[i], "notaurl") || strings.Contains(msgs[i], "HS256") {
					t.Errorf("message %q echoes a value", msgs[i])
				}
			}
		})
	}
}
