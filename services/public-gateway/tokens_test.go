package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/m2m"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func ecKeyPEM(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func TestTokenSettings(t *testing.T) {
	const secret = "sup3r-s3cret"
	keyFile := writeFile(t, "key.pem", ecKeyPEM(t))
	ok := []struct {
		name   string
		env    TokenEnv
		secret string
		want   func(m2m.Config) string // "" when as expected
	}{
		{"none set: what Wristband expects", TokenEnv{}, secret, func(c m2m.Config) string {
			if c.AuthMethod != "" || c.Scopes != nil || c.EndpointParams != nil || c.ClientSecret != secret || c.PrivateKey != nil {
				return "want only the secret"
			}
			return ""
		}},
		{"lists and params", TokenEnv{Scopes: "read:data, write:data", Audience: "https://api.example.com",
			Resource: "https://a.example https://b.example", Params: "organization=acme"}, secret, func(c m2m.Config) string {
			want := url.Values{"audience": {"https://api.example.com"}, "resource": {"https://a.example", "https://b.example"}, "organization": {"acme"}}
			if !reflect.DeepEqual(c.Scopes, []string{"read:data", "write:data"}) || !reflect.DeepEqual(c.EndpointParams, want) {
				return "scopes or params"
			}
			return ""
		}},
		{"audience in TOKEN_PARAMS", TokenEnv{Params: "audience=https%3A%2F%2Fapi.example.com"}, secret, func(c m2m.Config) string {
			if c.EndpointParams.Get("audience") != "https://api.example.com" {
				return "audience"
			}
			return ""
		}},
		{"client_secret_post", TokenEnv{AuthMethod: "client_secret_post"}, secret, func(c m2m.Config) string {
			if c.AuthMethod != m2m.ClientSecretPost || c.ClientSecret != secret {
				return "method"
			}
			return ""
		}},
		{"private_key_jwt needs no secret", TokenEnv{AuthMethod: "private_key_jwt", KeyFile: keyFile, KeyID: "gw-1"}, "", func(c m2m.Config) string {
			if c.AuthMethod != m2m.PrivateKeyJWT || c.PrivateKey == nil || c.KeyID != "gw-1" || c.ClientSecret != "" {
				return "key"
			}
			return ""
		}},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			cfg, errs := tc.env.tokenConfig(tc.secret, false)
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errors.Join(errs...))
			}
			if msg := tc.want(cfg); msg != "" {
				t.Errorf("%s: %+v", msg, cfg)
			}
		})
	}

	bad := []struct {
		name   string
		env    TokenEnv
		secret string
		want   []string
	}{
		{"no secret", TokenEnv{}, "", []string{"CLIENT_SECRET: empty"}},
		{"secret in TOKEN_PARAMS", TokenEnv{Params: "client_secret=" + secret + "&client_assertion=x"}, secret,
			[]string{"TOKEN_PARAMS: must not carry client_secret", "TOKEN_PARAMS: must not carry client_assertion"}},
		{"grant_type and scope in TOKEN_PARAMS", TokenEnv{Params: "grant_type=password&scope=x"}, secret,
			[]string{"must not set grant_type", "use TOKEN_SCOPES"}},
		{"audience twice", TokenEnv{Params: "audience=a", Audience: "b"}, secret, []string{"TOKEN_PARAMS: sets audience and so does TOKEN_AUDIENCE"}},
		{"bad method", TokenEnv{AuthMethod: secret}, secret, []string{"TOKEN_AUTH_METHOD: want"}},
		{"relative resource", TokenEnv{Resource: "api/" + secret}, secret, []string{"TOKEN_RESOURCE: each value must be an absolute URI"}},
		{"key without method", TokenEnv{KeyFile: keyFile}, secret, []string{"TOKEN_AUTH_METHOD is not private_key_jwt"}},
		{"method without key", TokenEnv{AuthMethod: "private_key_jwt"}, "", []string{"CLIENT_ASSERTION_KEY_FILE: required"}},
		{"key file not a key", TokenEnv{AuthMethod: "private_key_jwt", KeyFile: writeFile(t, "k", secret)}, "", []string{"no PEM private key block"}},
		{"alg does not fit the key", TokenEnv{AuthMethod: "private_key_jwt", KeyFile: keyFile, Alg: "RS256"}, "", []string{"CLIENT_ASSERTION_ALG", "want one of ES256"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := tc.env.tokenConfig(tc.secret, false)
			err := errors.Join(errs...)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error echoes a value: %q", err)
			}
		})
	}
}

func TestJWKSCommand(t *testing.T) {
	t.Setenv("CLIENT_ASSERTION_KEY_FILE", writeFile(t, "key.pem", ecKeyPEM(t)))
	t.Setenv("CLIENT_ASSERTION_KEY_ID", "gw-1")
	var out bytes.Buffer
	if err := jwksCommand(&out); err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(out.Bytes(), &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("output %s: %v", out.String(), err)
	}
	k := set.Keys[0]
	if k["kid"] != "gw-1" || k["alg"] != "ES256" || k["use"] != "sig" || k["kty"] != "EC" || k["d"] != nil {
		t.Errorf("JWK %v: want the public P-256 key, kid gw-1, ES256, use sig, no private part", k)
	}
}

// Through the real loader: TokenEnv is read from the environment with the
// rest, and each mistake is reported once, by name.
func TestTokenSettingsThroughLoad(t *testing.T) {
	ok := []string{"CLIENT_ID=c", "WRISTBAND_EMULATOR_URL=http://127.0.0.1:6003"}
	key := writeFile(t, "key.pem", ecKeyPEM(t))
	cases := []struct {
		name string
		env  []string
		want []string // message prefixes, in order
	}{
		{"private_key_jwt needs no secret", append(ok, "TOKEN_AUTH_METHOD=private_key_jwt", "CLIENT_ASSERTION_KEY_FILE="+key), nil},
		{"scopes and audience", append(ok, "CLIENT_SECRET=s", "TOKEN_SCOPES=a b", "TOKEN_AUDIENCE=https://api"), nil},
		{"secret file", append(ok, "CLIENT_SECRET_FILE="+writeFile(t, "s", "s\n")), nil},
		{"unreadable secret file reported once", append(ok, "CLIENT_SECRET_FILE=/nonexistent"), []string{"CLIENT_SECRET_FILE:"}},
		{"credential in TOKEN_PARAMS", append(ok, "CLIENT_SECRET=s", "TOKEN_PARAMS=client_secret=s"), []string{"TOKEN_PARAMS: must not carry client_secret"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, msgs := load(t, tc.env...)
			if len(msgs) != len(tc.want) {
				t.Fatalf("errors %q, want %q", msgs, tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(msgs[i], w) {
					t.Errorf("error %q, want prefix %q", msgs[i], w)
				}
			}
		})
	}
}
