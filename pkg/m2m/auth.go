package m2m

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// AuthMethod is how the client authenticates at the token endpoint, named as
// in the OAuth 2.0 client metadata (RFC 7591 token_endpoint_auth_method).
type AuthMethod string

// The supported client authentication methods.
const (
	// ClientSecretBasic sends the id and secret in an HTTP Basic header, each
	// form-url-encoded first (RFC 6749 2.3.1). The default.
	ClientSecretBasic AuthMethod = "client_secret_basic"
	// ClientSecretPost sends client_id and client_secret as form fields
	// (Auth0's default, and what some servers require).
	ClientSecretPost AuthMethod = "client_secret_post"
	// PrivateKeyJWT signs a short client assertion with the client's own
	// private key (RFC 7523 2.2, OpenID Connect Core 9): no shared secret.
	PrivateKeyJWT AuthMethod = "private_key_jwt"
)

// ClientAssertionType is the client_assertion_type of private_key_jwt.
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionLifetime is the exp of a client assertion: long enough for a
// request to reach the server and for modest clock skew, short enough that a
// captured assertion is of little use (servers also refuse a reused jti).
const assertionLifetime = 60 * time.Second

// reservedParams are form fields the token source sets itself; a value in
// EndpointParams would either conflict with them or put a credential where
// masking does not look (a secret typed into TOKEN_PARAMS).
var reservedParams = map[string]string{
	"grant_type":            "always client_credentials",
	"scope":                 "use Scopes",
	"client_id":             "set by the client authentication method",
	"client_secret":         "a credential: use ClientSecret with client_secret_post",
	"client_assertion":      "a credential: use private_key_jwt",
	"client_assertion_type": "set by private_key_jwt",
}

// signingAlgs lists what a key of each kind may sign with.
var signingAlgs = map[string][]jwa.SignatureAlgorithm{
	"RSA":   {jwa.RS256, jwa.RS384, jwa.RS512, jwa.PS256, jwa.PS384, jwa.PS512},
	"P-256": {jwa.ES256},
	"P-384": {jwa.ES384},
	"P-521": {jwa.ES512},
}

// ParsePrivateKeyPEM reads an RSA or EC private key from PEM: PKCS #8
// ("PRIVATE KEY"), PKCS #1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY").
// Its errors never quote the input.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	// Other blocks are skipped: openssl ecparam -genkey writes "EC PARAMETERS"
	// first, and a file may hold a certificate beside the key.
	block := firstPrivateKeyBlock(data)
	if block == nil {
		return nil, errors.New("no PEM private key block found (want -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)")
	}
	if block.Headers["Proc-Type"] != "" || block.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, errors.New("the private key is encrypted; store it unencrypted in a file only the service can read (e.g. openssl pkcs8 -topk8 -nocrypt)")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		// x509's messages describe the structure, never the key bytes.
		return nil, fmt.Errorf("parsing %s: %w", block.Type, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits: want at least 2048", k.N.BitLen())
		}
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("unsupported private key type %T: want RSA or EC (P-256, P-384, P-521)", key)
	}
}

func firstPrivateKeyBlock(data []byte) *pem.Block {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil
		}
		if strings.HasSuffix(block.Type, "PRIVATE KEY") {
			return block
		}
	}
}

// keyKind names the signing-algorithm family of a key: "RSA" or the curve.
func keyKind(key crypto.Signer) (string, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return "", fmt.Errorf("RSA key of %d bits: want at least 2048", k.N.BitLen())
		}
		return "RSA", nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return "P-256", nil
		case elliptic.P384():
			return "P-384", nil
		case elliptic.P521():
			return "P-521", nil
		}
		return "", errors.New("unsupported EC curve: want P-256, P-384 or P-521")
	default:
		return "", fmt.Errorf("unsupported private key type %T: want *rsa.PrivateKey or *ecdsa.PrivateKey", key)
	}
}

// signingKey turns a private key, key ID and algorithm (either may be empty
// for the defaults) into the jwk.Key and algorithm that sign assertions.
// The default key ID is the RFC 7638 SHA-256 thumbprint of the public key,
// so PublicJWKS and the assertions agree without configuration.
func signingKey(key crypto.Signer, keyID, alg string) (jwk.Key, jwa.SignatureAlgorithm, error) {
	kind, err := keyKind(key)
	if err != nil {
		return nil, "", err
	}
	allowed := signingAlgs[kind]
	sa := allowed[0] // RS256 for RSA, ES256/384/512 by curve
	if alg != "" {
		i := slices.IndexFunc(allowed, func(a jwa.SignatureAlgorithm) bool { return a.String() == alg })
		if i < 0 {
			names := make([]string, len(allowed))
			for j, a := range allowed {
				names[j] = a.String()
			}
			return nil, "", fmt.Errorf("the algorithm does not fit a %s key: want one of %s", kind, strings.Join(names, ", "))
		}
		sa = allowed[i]
	}
	k, err := jwk.FromRaw(key)
	if err != nil {
		return nil, "", fmt.Errorf("converting the private key: %w", err)
	}
	if keyID == "" {
		tp, err := k.Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, "", fmt.Errorf("key thumbprint: %w", err)
		}
		keyID = base64.RawURLEncoding.EncodeToString(tp)
	}
	if err := k.Set(jwk.KeyIDKey, keyID); err != nil {
		return nil, "", err
	}
	if err := k.Set(jwk.AlgorithmKey, sa); err != nil {
		return nil, "", err
	}
	return k, sa, nil
}

// PublicJWKS returns the public JWK Set to register at the identity provider
// for private_key_jwt: the public half of key with the same key ID and
// algorithm the token source uses for the same arguments ("" for the
// defaults), and "use":"sig" (Hydra insists on it).
func PublicJWKS(key crypto.Signer, keyID, alg string) ([]byte, error) {
	k, _, err := signingKey(key, keyID, alg)
	if err != nil {
		return nil, err
	}
	pub, err := k.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	if err := pub.Set(jwk.KeyUsageKey, jwk.ForSignature); err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	return json.MarshalIndent(set, "", "  ")
}

// staticForm builds the part of the token request body that never changes,
// in a fixed order: grant_type, scope, the endpoint parameters (sorted), then
// the client authentication fields. With no scopes, no parameters and Basic
// authentication it is exactly "grant_type=client_credentials".
func staticForm(cfg *Config, method AuthMethod) string {
	var b strings.Builder
	b.WriteString("grant_type=client_credentials")
	if len(cfg.Scopes) > 0 {
		b.WriteString("&scope=")
		b.WriteString(url.QueryEscape(strings.Join(cfg.Scopes, " ")))
	}
	if len(cfg.EndpointParams) > 0 {
		b.WriteString("&")
		b.WriteString(cfg.EndpointParams.Encode())
	}
	switch method {
	case ClientSecretPost:
		b.WriteString("&client_id=" + url.QueryEscape(cfg.ClientID) + "&client_secret=" + url.QueryEscape(cfg.ClientSecret))
	case PrivateKeyJWT:
		// client_id is optional with an assertion; sending it lets a server
		// find the client before parsing the JWT, and Hydra checks it
		// against iss and sub.
		b.WriteString("&client_id=" + url.QueryEscape(cfg.ClientID) + "&client_assertion_type=" + url.QueryEscape(ClientAssertionType))
	}
	return b.String()
}

// checkAuthConfig reports problems with scopes, parameters and the client
// authentication settings, never quoting a secret or key.
func checkAuthConfig(cfg *Config) (AuthMethod, []error) {
	var errs []error
	method := cfg.AuthMethod
	if method == "" {
		method = ClientSecretBasic
	}
	switch method {
	case ClientSecretBasic, ClientSecretPost:
		if cfg.ClientSecret == "" {
			errs = append(errs, errors.New("m2m: ClientSecret is required"))
		}
		if cfg.PrivateKey != nil {
			errs = append(errs, fmt.Errorf("m2m: PrivateKey is set but AuthMethod is %s; set AuthMethod to private_key_jwt", method))
		}
	case PrivateKeyJWT:
		if cfg.PrivateKey == nil {
			errs = append(errs, errors.New("m2m: PrivateKey is required with private_key_jwt"))
		} else if _, _, err := signingKey(cfg.PrivateKey, cfg.KeyID, cfg.SigningAlg); err != nil {
			errs = append(errs, fmt.Errorf("m2m: PrivateKey/SigningAlg: %w", err))
		}
		if cfg.AssertionAudience != "" {
			if u, err := url.Parse(cfg.AssertionAudience); err != nil || u.Scheme == "" || u.Host == "" {
				errs = append(errs, errors.New("m2m: AssertionAudience must be an absolute URL, e.g. https://idp.example.com/oauth2/token"))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("m2m: AuthMethod %.32q is not supported: want client_secret_basic, client_secret_post or private_key_jwt", string(method)))
	}
	for _, sc := range cfg.Scopes {
		if !scopeToken(sc) {
			errs = append(errs, fmt.Errorf("m2m: scope %.64q is not a valid scope token (RFC 6749 3.3: printable ASCII, no space, quote or backslash)", sc))
		}
	}
	for k := range cfg.EndpointParams {
		if why, ok := reservedParams[strings.ToLower(k)]; ok {
			errs = append(errs, fmt.Errorf("m2m: EndpointParams must not set %q (%s)", k, why))
		}
	}
	return method, errs
}

// scopeToken reports whether s is an RFC 6749 3.3 scope-token.
func scopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// assertion signs a fresh client assertion for one token request: a new jti
// each time, so a server that remembers jtis (Hydra does) accepts it.
func (s *TokenSource) assertion(now time.Time) (string, error) {
	var id [16]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails (Go 1.24+)
	t, err := jwt.NewBuilder().
		Issuer(s.clientID).
		Subject(s.clientID).
		Audience([]string{s.assertionAud}).
		JwtID(base64.RawURLEncoding.EncodeToString(id[:])).
		IssuedAt(now).
		Expiration(now.Add(assertionLifetime)).
		Build()
	if err != nil {
		return "", fmt.Errorf("building the client assertion: %w", err)
	}
	signed, err := jwt.Sign(t, jwt.WithKey(s.signAlg, s.signKey))
	if err != nil {
		return "", fmt.Errorf("signing the client assertion: %w", err)
	}
	return string(signed), nil
}

// secretForms lists every form in which the client secret could reach a log
// line if a server echoed the request: raw, URL-encoded both ways, and the
// base64 of the Basic header (which also covers "Basic <b64>").
func secretForms(id, secret string) []string {
	if secret == "" {
		return nil
	}
	forms := []string{
		secret,
		url.QueryEscape(secret),
		url.PathEscape(secret),
		base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret))),
		base64.StdEncoding.EncodeToString([]byte(id + ":" + secret)),
		base64.URLEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret))),
	}
	// Longest first, so a longer form is masked whole before a shorter one
	// inside it is.
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(forms)
}

// redact masks every known secret form, and extra (a client assertion), in v.
func (s *TokenSource) redact(v string, extra ...string) string {
	for _, f := range extra {
		if f != "" {
			v = strings.ReplaceAll(v, f, "[REDACTED]")
		}
	}
	for _, f := range s.secretForms {
		v = strings.ReplaceAll(v, f, "[REDACTED]")
	}
	return v
}
