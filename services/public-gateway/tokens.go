package main

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/m2m"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
)

// TokenEnv holds the token request settings beyond the reference demo's
// CLIENT_ID and CLIENT_SECRET, for identity providers other than Wristband
// (Hydra, Auth0, Okta, Keycloak). With none set, the token request is
// exactly what Wristband expects. All are strings so that every problem is
// reported by check, naming the variable, never echoing a value.
type TokenEnv struct {
	Scopes     string `envconfig:"TOKEN_SCOPES"`      // space/comma list -> scope
	Audience   string `envconfig:"TOKEN_AUDIENCE"`    // space/comma list -> audience (space-joined)
	Resource   string `envconfig:"TOKEN_RESOURCE"`    // space/comma list -> one resource per value (RFC 8707)
	Params     string `envconfig:"TOKEN_PARAMS"`      // extra form parameters, a=1&b=2
	AuthMethod string `envconfig:"TOKEN_AUTH_METHOD"` // client_secret_basic (default) | client_secret_post | private_key_jwt

	KeyFile           string `envconfig:"CLIENT_ASSERTION_KEY_FILE"` // PEM private key for private_key_jwt
	KeyID             string `envconfig:"CLIENT_ASSERTION_KEY_ID"`   // "": RFC 7638 thumbprint
	Alg               string `envconfig:"CLIENT_ASSERTION_ALG"`      // "": RS256 (RSA), ES256 (P-256)
	AssertionAudience string `envconfig:"CLIENT_ASSERTION_AUDIENCE"` // "": the token URL
}

// maxSecretFile bounds what is read from a secret or key file: a mistyped
// path pointing at a large file must not be read whole.
const maxSecretFile = 64 << 10

// list splits a space- or comma-separated setting.
func list(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// tokenConfig turns the settings (and CLIENT_SECRET) into the token-request
// part of an m2m.Config, reporting every problem at once.
// secretReported says the shared loader already reported CLIENT_SECRET or
// CLIENT_SECRET_FILE (both set, unreadable file): one mistake, one message.
func (e TokenEnv) tokenConfig(secret string, secretReported bool) (m2m.Config, []error) {
	var (
		cfg  m2m.Config
		errs []error
	)
	cfg.AuthMethod = m2m.AuthMethod(strings.TrimSpace(e.AuthMethod))
	switch cfg.AuthMethod {
	case "", m2m.ClientSecretBasic, m2m.ClientSecretPost, m2m.PrivateKeyJWT:
	default:
		errs = append(errs, errors.New("TOKEN_AUTH_METHOD: want client_secret_basic (the default), client_secret_post or private_key_jwt"))
	}

	if sc := list(e.Scopes); len(sc) > 0 {
		cfg.Scopes = sc
	}
	for _, s := range cfg.Scopes {
		if strings.ContainsAny(s, `"\`) || !printable(s) {
			errs = append(errs, errors.New(`TOKEN_SCOPES: scopes are printable ASCII without quotes or backslashes, separated by spaces or commas, e.g. "read:data write:data"`))
			break
		}
	}

	params := url.Values{}
	if e.Params != "" {
		p, err := url.ParseQuery(e.Params)
		if err != nil {
			errs = append(errs, errors.New("TOKEN_PARAMS: not in URL query syntax, e.g. audience=https://api.example.com&organization=acme"))
		}
		for _, k := range slices.Sorted(maps.Keys(p)) {
			switch lk := strings.ToLower(k); lk {
			case "client_secret", "client_assertion", "client_assertion_type", "client_id", "password":
				errs = append(errs, fmt.Errorf("TOKEN_PARAMS: must not carry %s: credentials belong in CLIENT_SECRET/CLIENT_SECRET_FILE or CLIENT_ASSERTION_KEY_FILE, where they are masked", lk))
			case "grant_type":
				errs = append(errs, errors.New("TOKEN_PARAMS: must not set grant_type: it is always client_credentials"))
			case "scope":
				errs = append(errs, errors.New("TOKEN_PARAMS: must not set scope: use TOKEN_SCOPES"))
			case "audience", "resource":
				if (lk == "audience" && e.Audience != "") || (lk == "resource" && e.Resource != "") {
					errs = append(errs, fmt.Errorf("TOKEN_PARAMS: sets %s and so does TOKEN_%s: keep one", lk, strings.ToUpper(lk)))
				}
				params[k] = p[k]
			default:
				params[k] = p[k]
			}
		}
	}
	if aud := list(e.Audience); len(aud) > 0 {
		params.Set("audience", strings.Join(aud, " "))
	}
	for _, r := range list(e.Resource) {
		// RFC 8707 2: an absolute URI without a fragment.
		if u, err := url.Parse(r); err != nil || !u.IsAbs() || u.Fragment != "" {
			errs = append(errs, errors.New("TOKEN_RESOURCE: each value must be an absolute URI without a fragment, e.g. https://api.example.com"))
			break
		}
		params.Add("resource", r)
	}
	if len(params) > 0 {
		cfg.EndpointParams = params
	}

	if cfg.AuthMethod == m2m.PrivateKeyJWT {
		if e.KeyFile == "" {
			errs = append(errs, errors.New("CLIENT_ASSERTION_KEY_FILE: required with TOKEN_AUTH_METHOD=private_key_jwt, e.g. /run/secrets/gateway-key.pem"))
		} else if key, err := loadKey(e.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("CLIENT_ASSERTION_KEY_FILE: %w", err))
		} else {
			cfg.PrivateKey = key
			if _, err := m2m.PublicJWKS(key, e.KeyID, e.Alg); err != nil {
				errs = append(errs, fmt.Errorf("CLIENT_ASSERTION_ALG: %w", err))
			}
		}
		cfg.KeyID, cfg.SigningAlg = e.KeyID, e.Alg
		if e.AssertionAudience != "" {
			if u, err := url.Parse(e.AssertionAudience); err != nil || u.Scheme == "" || u.Host == "" {
				errs = append(errs, errors.New("CLIENT_ASSERTION_AUDIENCE: want an absolute URL, e.g. https://idp.example.com/oauth2/token"))
			}
			cfg.AssertionAudience = e.AssertionAudience
		}
		// A secret left over in the environment is not sent anywhere.
	} else {
		if e.KeyFile != "" || e.KeyID != "" || e.Alg != "" || e.AssertionAudience != "" {
			errs = append(errs, errors.New("CLIENT_ASSERTION_* is set but TOKEN_AUTH_METHOD is not private_key_jwt: set TOKEN_AUTH_METHOD=private_key_jwt or unset them"))
		}
		if secret == "" && !secretReported {
			errs = append(errs, errors.New("CLIENT_SECRET: empty; set it, or CLIENT_SECRET_FILE to a file holding it (e.g. /run/secrets/client_secret), or use TOKEN_AUTH_METHOD=private_key_jwt"))
		}
		cfg.ClientSecret = secret
	}
	return cfg, errs
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// readSecretFile reads a secret file (a Docker or Kubernetes secret), trims
// the trailing newline editors and `echo` add, and never quotes the content.
func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the file: %w", errors.Unwrap(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read the file: %w", err)
	}
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("the file is larger than %d KiB: wrong path?", maxSecretFile>>10)
	}
	return bytes.TrimRight(b, "\r\n"), nil
}

// loadKey reads a PEM private key file.
func loadKey(path string) (crypto.Signer, error) {
	b, err := readSecretFile(path)
	if err != nil {
		return nil, err
	}
	return m2m.ParsePrivateKeyPEM(b)
}

// jwksCommand prints the public JWK Set of CLIENT_ASSERTION_KEY_FILE, with
// the key ID and algorithm the gateway's assertions carry: what to register
// at the identity provider for private_key_jwt.
func jwksCommand(out io.Writer) error {
	var e TokenEnv
	if err := errors.Join(service.LoadEnv(&e)...); err != nil {
		return err
	}
	if e.KeyFile == "" {
		return errors.New("CLIENT_ASSERTION_KEY_FILE is not set: point it at the PEM private key, e.g. CLIENT_ASSERTION_KEY_FILE=gateway-key.pem public-gateway jwks")
	}
	key, err := loadKey(e.KeyFile)
	if err != nil {
		return fmt.Errorf("CLIENT_ASSERTION_KEY_FILE: %w", err)
	}
	set, err := m2m.PublicJWKS(key, e.KeyID, e.Alg)
	if err != nil {
		return fmt.Errorf("CLIENT_ASSERTION_KEY_ID/CLIENT_ASSERTION_ALG: %w", err)
	}
	_, err = fmt.Fprintf(out, "%s\n", set)
	return err
}
