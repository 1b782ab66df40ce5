package service

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadEnvReportsEveryBadValueAtOnce(t *testing.T) {
	var spec struct {
		A time.Duration   `envconfig:"SVC_TEST_A" default:"1s"`
		B time.Duration   `envconfig:"SVC_TEST_B"`
		C bool            `envconfig:"SVC_TEST_C"`
		D string          `envconfig:"SVC_TEST_D" default:"d"`
		E int             `envconfig:"SVC_TEST_E" default:"7"`
		F []time.Duration `envconfig:"SVC_TEST_F"`
		G []string        `envconfig:"SVC_TEST_G"`
		H uint8           `envconfig:"SVC_TEST_H"`
	}
	t.Setenv("SVC_TEST_A", "soon-secret-1")
	t.Setenv("SVC_TEST_B", "later-secret-2")
	t.Setenv("SVC_TEST_C", "maybe-secret-3")
	t.Setenv("SVC_TEST_E", "many-secret-4")
	t.Setenv("SVC_TEST_F", "1s, never-secret-5")
	t.Setenv("SVC_TEST_G", " a, b ,,c ")
	t.Setenv("SVC_TEST_H", "300")
	before := os.Environ()
	errs := LoadEnv(&spec)
	if !slices.Equal(before, os.Environ()) {
		t.Error("LoadEnv changed the process environment")
	}
	want := []string{
		"SVC_TEST_A: not a valid duration (e.g. 1s)",
		"SVC_TEST_B: not a valid duration (e.g. 30s, 1m)",
		"SVC_TEST_C: not a boolean (e.g. true, false)",
		"SVC_TEST_E: not a whole number in range (e.g. 7)",
		"SVC_TEST_F: item 2: not a valid duration (e.g. 30s, 1m)",
		"SVC_TEST_H: not a non-negative whole number in range (e.g. 10)",
	}
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors\n%q\nwant\n%q", got, want)
	}
	for _, g := range got {
		if strings.Contains(g, "secret") {
			t.Errorf("error %q echoes a value", g)
		}
	}
	if spec.D != "d" || !slices.Equal(spec.G, []string{"a", "b", "c"}) {
		t.Errorf("good fields not read alongside the bad ones: D=%q G=%q", spec.D, spec.G)
	}
}

func TestLoadEnvUnsetAndEmpty(t *testing.T) {
	var spec struct {
		A time.Duration `envconfig:"SVC_TEST_A" default:"1s"`
		S string        `envconfig:"SVC_TEST_S" default:"x"`
		T string        `envconfig:"SVC_TEST_T" default:"y"`
		N int           `envconfig:"SVC_TEST_N"`
		R string        `envconfig:"SVC_TEST_R" required:"true"`
	}
	t.Setenv("SVC_TEST_T", "")  // set but empty: empty (METRICS_ADDR= turns metrics off)
	t.Setenv("SVC_TEST_A", " ") // blank, not text: the default
	if errs := LoadEnv(&spec); len(errs) != 1 || errs[0].Error() != "SVC_TEST_R: required but not set" {
		t.Errorf("errors %v, want only the required one", errs)
	}
	if spec.A != time.Second || spec.S != "x" || spec.T != "" || spec.N != 0 {
		t.Errorf("got %+v", spec)
	}
}

// envconfig's own semantics apply: split_words names, nested structs'
// prefixes, its TextUnmarshaler, map and pointer handling, required.
func TestLoadEnvFollowsEnvconfig(t *testing.T) {
	var spec struct {
		ProxyAddr netip.Addr     `split_words:"true"`
		Limits    map[string]int `envconfig:"SVC_TEST_LIMITS"`
		Ratio     *float64       `envconfig:"SVC_TEST_RATIO"`
		Nested    struct {
			Port int `default:"80"`
		}
		Skipped string `envconfig:"SVC_TEST_SKIPPED" ignored:"true"`
		Need    string `envconfig:"SVC_TEST_NEED" required:"1"`
	}
	t.Setenv("PROXY_ADDR", "10.1.2.3")
	t.Setenv("SVC_TEST_LIMITS", "a:1,b:2")
	t.Setenv("SVC_TEST_RATIO", "0.25")
	t.Setenv("NESTED_PORT", "8080")
	t.Setenv("SVC_TEST_SKIPPED", "x")
	errs := LoadEnv(&spec)
	if len(errs) != 1 || errs[0].Error() != "SVC_TEST_NEED: required but not set" {
		t.Errorf("errors %v, want only the required one", errs)
	}
	if spec.ProxyAddr != netip.MustParseAddr("10.1.2.3") || spec.Limits["b"] != 2 || spec.Ratio == nil || *spec.Ratio != 0.25 ||
		spec.Nested.Port != 8080 || spec.Skipped != "" {
		t.Errorf("got %+v", spec)
	}
	t.Setenv("PROXY_ADDR", "not-an-ip-secret")
	t.Setenv("SVC_TEST_LIMITS", "a-secret")
	t.Setenv("SVC_TEST_NEED", "n")
	var got []string
	for _, e := range LoadEnv(&spec) {
		got = append(got, e.Error())
	}
	want := []string{"PROXY_ADDR: not a valid value", "SVC_TEST_LIMITS: not a comma-separated list of key:value pairs (e.g. a:1,b:2)"}
	if !slices.Equal(got, want) {
		t.Errorf("errors\n%q\nwant\n%q", got, want)
	}
}

type secretSpec struct {
	Secret string `envconfig:"SVC_TEST_SECRET" secret:"true"`
	Plain  string `envconfig:"SVC_TEST_PLAIN"`
}

// A spec that reads NAME_FILE itself keeps it: the file is not read twice,
// nor is NAME set from it behind the spec's back.
func TestSecretFileConventionGivesWayToAnExplicitField(t *testing.T) {
	var spec struct {
		Secret string `envconfig:"SVC_TEST_SECRET" secret:"true"`
		File   string `envconfig:"SVC_TEST_SECRET_FILE"`
	}
	t.Setenv("SVC_TEST_SECRET_FILE", "/nonexistent/file")
	if errs := LoadEnv(&spec); len(errs) > 0 || spec.Secret != "" || spec.File != "/nonexistent/file" {
		t.Fatalf("got %+v %v", spec, errs)
	}
}

func TestSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("file read, trailing newline trimmed", func(t *testing.T) {
		t.Setenv("SVC_TEST_SECRET_FILE", write("s", "s3cret value\n", 0o600))
		var spec secretSpec
		if errs := LoadEnv(&spec); len(errs) > 0 || spec.Secret != "s3cret value" {
			t.Fatalf("got %q %v", spec.Secret, errs)
		}
	})
	t.Run("CRLF trimmed too", func(t *testing.T) {
		t.Setenv("SVC_TEST_SECRET_FILE", write("crlf", "s3cret\r\n", 0o600))
		var spec secretSpec
		if errs := LoadEnv(&spec); len(errs) > 0 || spec.Secret != "s3cret" {
			t.Fatalf("got %q %v", spec.Secret, errs)
		}
	})
	t.Run("an empty variable gives way to the file", func(t *testing.T) {
		t.Setenv("SVC_TEST_SECRET", "")
		t.Setenv("SVC_TEST_SECRET_FILE", write("e", "from-file", 0o600))
		var spec secretSpec
		if errs := LoadEnv(&spec); len(errs) > 0 || spec.Secret != "from-file" {
			t.Fatalf("got %q %v", spec.Secret, errs)
		}
	})
	t.Run("only fields marked secret", func(t *testing.T) {
		t.Setenv("SVC_TEST_PLAIN_FILE", write("p", "x", 0o600))
		var spec secretSpec
		if errs := LoadEnv(&spec); len(errs) > 0 || spec.Plain != "" {
			t.Fatalf("got %q %v", spec.Plain, errs)
		}
	})
	cases := []struct {
		name, env, file, want string
	}{
		{"both set", "hunter2", write("both", "hunter2", 0o600), "SVC_TEST_SECRET and SVC_TEST_SECRET_FILE: both set; set one of them (e.g. SVC_TEST_SECRET_FILE=/run/secrets/svc_test_secret alone)"},
		{"missing file", "", filepath.Join(dir, "hunter2-missing"), "SVC_TEST_SECRET_FILE: the file does not exist (e.g. /run/secrets/svc_test_secret)"},
		{"directory", "", dir, "SVC_TEST_SECRET_FILE: the file cannot be read"},
		{"too big", "", write("big", strings.Repeat("hunter2", 20000), 0o600), "SVC_TEST_SECRET_FILE: the file is larger than 64 KiB"},
		{"empty name", "", "", "SVC_TEST_SECRET_FILE: empty (e.g. /run/secrets/svc_test_secret)"},
		{"empty file", "", write("empty", "\n", 0o600), "SVC_TEST_SECRET_FILE: the file is empty; it should hold what SVC_TEST_SECRET would"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("SVC_TEST_SECRET", tc.env)
			}
			t.Setenv("SVC_TEST_SECRET_FILE", tc.file)
			var spec secretSpec
			errs := LoadEnv(&spec)
			if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), tc.want) {
				t.Fatalf("errors %v, want one starting with %q", errs, tc.want)
			}
			if strings.Contains(errs[0].Error(), "hunter2") || strings.Contains(errs[0].Error(), dir) {
				t.Errorf("error %q echoes a value, a path or the file's content", errs[0])
			}
		})
	}
}

type baseSpec struct {
	Base
	Extra time.Duration `envconfig:"SVC_TEST_EXTRA"`
}

func TestLoadChecksTheSharedBase(t *testing.T) {
	t.Setenv("LOG_LEVEL", "loud-secret")
	t.Setenv("LOG_FORMAT", "xml-secret")
	t.Setenv("MAX_CONNECTIONS", "-1")
	t.Setenv("TRUSTED_PROXIES", "10.0.0.0/8,proxy-secret")
	t.Setenv("SVC_TEST_EXTRA", "soon-secret")
	var spec baseSpec
	log, errs := Load(&spec, ":7001")
	if log == nil {
		t.Fatal("no logger")
	}
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	want := []string{
		"SVC_TEST_EXTRA: not a valid duration (e.g. 30s, 1m)",
		"LOG_LEVEL: not a log level (e.g. debug, info, warn, error)",
		"LOG_FORMAT: not a log format (e.g. json, text)",
		"MAX_CONNECTIONS: must not be negative (e.g. 1024; 0 for the default)",
		"TRUSTED_PROXIES: an entry is not an IP address or CIDR (e.g. 10.0.0.0/8,192.168.1.10)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors\n%q\nwant\n%q", got, want)
	}
	if strings.Contains(strings.Join(got, "\n"), "secret") {
		t.Error("a value was echoed")
	}
	if spec.ListenAddr != ":7001" {
		t.Errorf("ListenAddr %q, want the service default", spec.ListenAddr)
	}
}

func TestLoadDefaults(t *testing.T) {
	var spec baseSpec
	if _, errs := Load(&spec, ":7001"); len(errs) > 0 {
		t.Fatal(errs)
	}
	if spec.ListenAddr != ":7001" || spec.LogFormat != "json" || spec.LogLevel != "info" ||
		spec.MaxConnections != defaultMaxConnections || len(spec.TrustedProxies) != 0 {
		t.Errorf("defaults: %+v", spec.Base)
	}
	t.Setenv("LISTEN_ADDR", "nonsense-secret")
	if _, errs := Load(&spec, ":7001"); len(errs) != 1 || errs[0].Error() != "LISTEN_ADDR: not host:port or :port (e.g. :8080, 127.0.0.1:8080)" {
		t.Errorf("bad LISTEN_ADDR: %v", errs)
	}
}

// strconv.ParseFloat takes NaN and Inf; a setting never means them, and NaN
// slips through every range check a service makes (TOKEN_RATE_PER_CLIENT=NaN
// turned the emulator's rate limit off without a word).
func TestLoadEnvRefusesNaNAndInf(t *testing.T) {
	var spec struct {
		A float64   `envconfig:"SVC_TEST_A" default:"20"`
		B float64   `envconfig:"SVC_TEST_B"`
		C []float64 `envconfig:"SVC_TEST_C"`
		D float64   `envconfig:"SVC_TEST_D"`
	}
	t.Setenv("SVC_TEST_A", "NaN")
	t.Setenv("SVC_TEST_B", "+Inf")
	t.Setenv("SVC_TEST_C", "1,-inf")
	t.Setenv("SVC_TEST_D", "2.5")
	var got []string
	for _, e := range LoadEnv(&spec) {
		got = append(got, e.Error())
	}
	want := []string{
		"SVC_TEST_A: not a number (e.g. 20)",
		"SVC_TEST_B: not a number (e.g. 0.5)",
		"SVC_TEST_C: item 2: not a number (e.g. 0.5)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors\n%q\nwant\n%q", got, want)
	}
	if spec.A != 20 || spec.B != 0 || spec.C != nil || spec.D != 2.5 {
		t.Errorf("got %+v, want the defaults (or zero) for the bad ones and 2.5", spec)
	}
}
