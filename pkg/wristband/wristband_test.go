package wristband

import (
	"strings"
	"testing"
)

func TestFromVanityDomain(t *testing.T) {
	cases := []struct {
		name, in string
		want     Endpoints
		err      string
	}{
		{"plain", "acme.us.wristband.dev", Endpoints{"https://acme.us.wristband.dev/api/v1/oauth2/token", "https://acme.us.wristband.dev/api/v1/oauth2/jwks", "https://acme.us.wristband.dev"}, ""},
		{"with port", "localhost:8443", Endpoints{"https://localhost:8443/api/v1/oauth2/token", "https://localhost:8443/api/v1/oauth2/jwks", "https://localhost:8443"}, ""},
		{"spaces trimmed", "  acme.dev ", Endpoints{"https://acme.dev/api/v1/oauth2/token", "https://acme.dev/api/v1/oauth2/jwks", "https://acme.dev"}, ""},
		{"empty", "", Endpoints{}, "empty"},
		{"scheme", "https://acme.dev", Endpoints{}, "without a scheme"},
		{"http scheme", "http://acme.dev", Endpoints{}, "without a scheme"},
		{"path", "acme.dev/x", Endpoints{}, "without path"},
		{"credentials", "u:p@acme.dev", Endpoints{}, "credentials"},
		{"bad port", "acme.dev:xx", Endpoints{}, "not a valid host"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromVanityDomain(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}

func TestSourcePrecedence(t *testing.T) {
	cases := []struct {
		name string
		src  Source
		want Endpoints
		err  string
	}{
		{"nothing", Source{}, Endpoints{}, ""},
		{"emulator fallback", Source{EmulatorURL: "http://wristband-emulator:6003/"},
			Endpoints{"http://wristband-emulator:6003/api/v1/oauth2/token", "http://wristband-emulator:6003/api/v1/oauth2/jwks", "http://wristband-emulator:6003"}, ""},
		{"vanity domain beats emulator", Source{VanityDomain: "acme.dev", EmulatorURL: "http://emu:6003"},
			Endpoints{"https://acme.dev/api/v1/oauth2/token", "https://acme.dev/api/v1/oauth2/jwks", "https://acme.dev"}, ""},
		{"explicit overrides win field by field", Source{VanityDomain: "acme.dev", TokenURL: "http://idp:1/token", Issuer: "http://idp:1"},
			Endpoints{"http://idp:1/token", "https://acme.dev/api/v1/oauth2/jwks", "http://idp:1"}, ""},
		{"override without base", Source{JWKSURL: "https://idp/jwks"}, Endpoints{JWKSURL: "https://idp/jwks"}, ""},
		{"bad override", Source{TokenURL: "ftp://x"}, Endpoints{}, "TOKEN_URL"},
		{"bad emulator URL", Source{EmulatorURL: "emu:6003"}, Endpoints{}, "WRISTBAND_EMULATOR_URL: not an http"},
		{"bad vanity domain", Source{VanityDomain: "https://acme.dev"}, Endpoints{}, "APPLICATION_VANITY_DOMAIN: a host name without a scheme"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.src.Resolve()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}

func TestCheckURLNeverEchoesTheURL(t *testing.T) {
	for _, in := range []string{"https://user:hunter2@idp.example/token", "ftp://hunter2.example", "http://[hunter2", "https://"} {
		_, err := CheckURL(in)
		if err == nil {
			t.Errorf("%q accepted", in)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: error %q echoes the URL", in, err)
		}
	}
}

func TestVanityDomainErrorsNeverEchoTheValue(t *testing.T) {
	for _, in := range []string{"https://hunter2.dev", "hunter2.dev/x", "u:hunter2@acme.dev", "hunter2.dev:xx"} {
		_, err := FromVanityDomain(in)
		if err == nil {
			t.Errorf("%q accepted", in)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: error %q echoes the value", in, err)
		}
	}
}

// One mistake, one message: a malformed value is not also reported as a
// missing endpoint, and every problem comes in the same error.
func TestResolveReportsEachProblemOnce(t *testing.T) {
	cases := []struct {
		name string
		src  Source
		need []Need
		want []string // one line each, in order
	}{
		{"nothing at all", Source{}, []Need{NeedJWKSURL, NeedIssuer},
			[]string{"JWKS_URL: no JWKS URL", "ISSUER: no issuer"}},
		{"bad JWKS URL and no issuer", Source{JWKSURL: "notaurl"}, []Need{NeedJWKSURL, NeedIssuer},
			[]string{"JWKS_URL: not an http", "ISSUER: no issuer"}},
		{"bad vanity domain only", Source{VanityDomain: "acme.dev/x"}, []Need{NeedTokenURL},
			[]string{"APPLICATION_VANITY_DOMAIN: "}},
		{"needs met", Source{EmulatorURL: "http://emu:6003"}, []Need{NeedTokenURL, NeedJWKSURL, NeedIssuer}, nil},
		{"not needed, not reported", Source{}, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.src.Resolve(tc.need...)
			var lines []string
			if err != nil {
				lines = strings.Split(err.Error(), "\n")
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("got %d messages %q, want %d", len(lines), lines, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("message %d %q, want it to start with %q", i, lines[i], w)
				}
				if !strings.Contains(lines[i], "e.g.") {
					t.Errorf("message %d %q gives no example", i, lines[i])
				}
			}
		})
	}
}
