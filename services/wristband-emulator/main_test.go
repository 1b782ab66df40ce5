package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service/servicetest"
)

// load reads the emulator's configuration from exactly env, as run does.
func load(t *testing.T, env ...string) (config, map[string]string, []string) {
	t.Helper()
	var cfg config
	servicetest.SetEnv(t, &cfg, env...)
	_, errs := service.Load(&cfg, defaultAddr)
	clients, _, verrs := cfg.validate()
	var msgs []string
	for _, e := range append(errs, verrs...) {
		msgs = append(msgs, strings.Split(e.Error(), "\n")...) // a joined error: one line each
	}
	return cfg, clients, msgs
}

// keyPEM is one PKCS#8 RSA key for all cases: generating one per case
// would only slow the test down.
var keyPEM = sync.OnceValue(func() []byte {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
})

func writeFile(t *testing.T, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateAcceptsTheDefaults(t *testing.T) {
	cfg, clients, msgs := load(t)
	if len(msgs) > 0 {
		t.Fatalf("errors: %q", msgs)
	}
	if cfg.ListenAddr != defaultAddr || cfg.TokenLifetime != 30*time.Minute || clients["demo-client"] != "demo-secret" {
		t.Errorf("defaults: %+v, clients %v", cfg, clients)
	}
}

func TestValidateReadsFiles(t *testing.T) {
	_, clients, msgs := load(t,
		"CLIENTS_FILE="+writeFile(t, "clients", []byte("a:s1, b:s2\n")),
		"SIGNING_KEY_FILE="+writeFile(t, "key.pem", keyPEM()))
	if len(msgs) > 0 || len(clients) != 2 || clients["b"] != "s2" {
		t.Fatalf("clients %v, errors %q", clients, msgs)
	}
}

func TestValidateReportsEachMistakeOnce(t *testing.T) {
	key := "SIGNING_KEY_FILE=" + writeFile(t, "key.pem", keyPEM())
	cases := []struct {
		name string
		env  []string
		want []string // message prefixes, in order
	}{
		{"every mistake at once",
			[]string{"CLIENTS=hunter2", "TOKEN_LIFETIME=500ms", "ISSUER=ftp://hunter2", "SIGNING_KEY_FILE=/nonexistent/hunter2.pem"},
			[]string{"CLIENTS (or CLIENTS_FILE): not a comma-separated list", "TOKEN_LIFETIME: must be at least 1s", "ISSUER: not an http", "SIGNING_KEY_FILE: its folder does not exist"}},
		{"empty issuer", []string{key, "ISSUER="}, []string{"ISSUER: empty"}},
		{"no client at all", []string{key, "CLIENTS= , "}, []string{"CLIENTS (or CLIENTS_FILE):"}},
		{"unparsable lifetime, reported once", []string{key, "TOKEN_LIFETIME=hunter2"}, []string{"TOKEN_LIFETIME: not a valid duration"}},
		{"unreadable clients file, reported once", []string{key, "CLIENTS_FILE=/nonexistent/hunter2"}, []string{"CLIENTS_FILE: the file does not exist"}},
		{"both CLIENTS and CLIENTS_FILE", []string{key, "CLIENTS=a:hunter2", "CLIENTS_FILE=" + writeFile(t, "c", []byte("b:s"))},
			[]string{"CLIENTS and CLIENTS_FILE: both set"}},
		{"key file not a key", []string{"SIGNING_KEY_FILE=" + writeFile(t, "hunter2.pem", []byte("hunter2"))}, []string{"SIGNING_KEY_FILE: not a readable RSA private key"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, msgs := load(t, tc.env...)
			if len(msgs) != len(tc.want) {
				t.Fatalf("got %q, want %d message(s) starting %q", msgs, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(msgs[i], w) || !strings.Contains(msgs[i], "e.g.") {
					t.Errorf("message %q, want it to start with %q and give an example", msgs[i], w)
				}
			}
			if slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, "hunter2") }) {
				t.Errorf("messages %q echo a value or a path", msgs)
			}
		})
	}
}
