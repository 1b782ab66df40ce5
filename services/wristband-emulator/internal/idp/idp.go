// Package idp imitates the machine-to-machine part of Wristband's OAuth2 API:
// the client-credentials token endpoint and the JWKS endpoint, with tokens
// shaped like Wristband's (RS256, typ at+JWT, kid; iss, sub, client_id,
// app_id, tnt_id, sub_kind, iat, exp, jti; no aud).
package idp

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/wristband"
)

// Config of the emulated application.
type Config struct {
	Issuer   string
	Clients  map[string]string // client ID -> secret
	Lifetime time.Duration
	AppID    string
	TenantID string
	Key      *rsa.PrivateKey
	KeyID    string // empty: derived from the key (RFC 7638 thumbprint)
	Now      func() time.Time
	// Limits of the token endpoint; the zero value means no limit.
	Limits Limits
}

// IdP serves the two endpoints.
type IdP struct {
	cfg     Config
	signKey jwk.Key
	jwks    []byte
	issued  atomic.Uint64
	limited atomic.Uint64

	perClient, perSource *limiter
}

// New checks the config and prepares the signing key and the JWKS document.
func New(cfg Config) (*IdP, error) {
	var errs []error
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("issuer is empty"))
	}
	if len(cfg.Clients) == 0 {
		errs = append(errs, errors.New("no clients registered"))
	}
	if cfg.Lifetime < time.Second {
		errs = append(errs, fmt.Errorf("token lifetime %s is under 1s", cfg.Lifetime))
	}
	if cfg.Key == nil {
		errs = append(errs, errors.New("no signing key"))
	} else if cfg.Key.N.BitLen() < 2048 {
		errs = append(errs, fmt.Errorf("signing key has %d bits, Wristband uses at least 2048", cfg.Key.N.BitLen()))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	priv, err := jwk.FromRaw(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	pub, err := jwk.PublicKeyOf(priv)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	if cfg.KeyID == "" {
		tp, err := pub.Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("key thumbprint: %w", err)
		}
		cfg.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	}
	for _, k := range []jwk.Key{priv, pub} {
		_ = k.Set(jwk.KeyIDKey, cfg.KeyID)
		_ = k.Set(jwk.AlgorithmKey, jwa.RS256)
		_ = k.Set(jwk.KeyUsageKey, jwk.ForSignature)
	}
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	doc, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("encoding JWKS: %w", err)
	}
	ids := make([]string, 0, len(cfg.Clients))
	for id := range cfg.Clients {
		ids = append(ids, id)
	}
	return &IdP{
		cfg: cfg, signKey: priv, jwks: doc,
		perClient: newLimiter(cfg.Limits.PerClient, cfg.Limits.PerClientBurst, ids),
		perSource: newLimiter(cfg.Limits.PerSource, cfg.Limits.PerSourceBurst, nil),
	}, nil
}

// KeyID is the kid of the signing key.
func (p *IdP) KeyID() string { return p.cfg.KeyID }

// Issued counts the tokens issued since start.
func (p *IdP) Issued() uint64 { return p.issued.Load() }

// Limited counts the token requests refused with 429 since start.
func (p *IdP) Limited() uint64 { return p.limited.Load() }

// Register adds the endpoints to e.
func (p *IdP) Register(e *echo.Echo) {
	// The paths are Wristband's own, from the one place that defines them.
	e.POST(wristband.TokenPath, p.token)
	e.GET(wristband.JWKSPath, p.jwksHandler)
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

func (p *IdP) fail(c echo.Context, status int, code, desc string) error {
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Basic realm="wristband-emulator"`)
	}
	return c.JSON(status, service.ErrorBody{Error: code, Description: desc})
}

// maxFormBytes bounds the token request body: a client-credentials form is a
// few dozen bytes.
const maxFormBytes = 8 << 10

// tooMany answers 429 with an honest Retry-After and an RFC 6749-style body
// (temporarily_unavailable is the registered code closest to "slow down").
func (p *IdP) tooMany(c echo.Context, wait time.Duration, desc string) error {
	p.limited.Add(1)
	ra := retryAfter(wait)
	c.Response().Header().Set("Retry-After", ra)
	return p.fail(c, http.StatusTooManyRequests, "temporarily_unavailable", desc+"; retry after "+ra+" s")
}

// refused notes a failed token request on its access-log line: the
// client_id, so an operator can tell which client is misconfigured or under
// attack, and the error code. An ID that is not registered is written as
// "(unknown)": it may be a secret pasted into the wrong field. The secret
// itself is never logged.
func (p *IdP) refused(c echo.Context, clientID, code string) {
	service.AddLogAttrs(c, slog.String("client_id", p.loggableID(clientID)), slog.String("oauth_error", code))
}

func (p *IdP) loggableID(id string) string {
	switch _, known := p.cfg.Clients[id]; {
	case id == "":
		return "(none)"
	case !known:
		return "(unknown)"
	}
	return id
}

// presentedID is the client_id a request claims, before anything is parsed
// or checked (for the log line of a request refused early).
func presentedID(r *http.Request) string {
	id, _, ok := r.BasicAuth()
	if !ok {
		return ""
	}
	if v, err := unescape(id); err == nil {
		return v
	}
	return id
}

func (p *IdP) token(c echo.Context) error {
	r := c.Request()
	now := p.cfg.Now()
	if wait := p.perSource.wait(sourceIP(r, c.Echo().IPExtractor), now); wait > 0 {
		p.refused(c, presentedID(r), "rate_limited")
		return p.tooMany(c, wait, "too many token requests from this address")
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType))
	if err != nil || mt != echo.MIMEApplicationForm {
		return p.fail(c, http.StatusBadRequest, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(c.Response(), r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return p.fail(c, http.StatusBadRequest, "invalid_request", "the request body is not a valid form")
	}
	for _, name := range []string{"grant_type", "client_id", "client_secret", "scope"} {
		if len(r.PostForm[name]) > 1 {
			return p.fail(c, http.StatusBadRequest, "invalid_request", "parameter "+name+" is repeated")
		}
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		p.refused(c, r.PostForm.Get("client_id"), "invalid_client")
		return p.fail(c, http.StatusUnauthorized, "invalid_client", "client authentication with HTTP Basic is required")
	}
	// RFC 6749 2.3.1: the credentials are form-urlencoded before Basic encoding.
	if v, err := unescape(id); err == nil {
		id = v
	}
	if v, err := unescape(secret); err == nil {
		secret = v
	}
	want, known := p.cfg.Clients[id]
	// Compare even for unknown clients so timing does not reveal which IDs exist.
	if !known {
		want = "\x00unknown-client"
	}
	if subtle.ConstantTimeCompare([]byte(secret), []byte(want)) != 1 || !known {
		p.refused(c, id, "invalid_client")
		return p.fail(c, http.StatusUnauthorized, "invalid_client", "client authentication failed")
	}
	service.AddLogAttrs(c, slog.String("client_id", id))
	// Charged only once authenticated: see Limits.PerClient.
	if wait := p.perClient.wait(id, now); wait > 0 {
		service.AddLogAttrs(c, slog.String("oauth_error", "rate_limited"))
		return p.tooMany(c, wait, "too many token requests for this client")
	}
	switch gt := r.PostForm.Get("grant_type"); gt {
	case "":
		service.AddLogAttrs(c, slog.String("oauth_error", "invalid_request"))
		return p.fail(c, http.StatusBadRequest, "invalid_request", "grant_type is required")
	case "client_credentials":
	default:
		service.AddLogAttrs(c, slog.String("oauth_error", "unsupported_grant_type"))
		return p.fail(c, http.StatusBadRequest, "unsupported_grant_type", "only client_credentials is supported for machine-to-machine clients")
	}
	tok, err := p.Mint(id)
	if err != nil {
		return p.fail(c, http.StatusInternalServerError, "server_error", "could not issue a token")
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	return c.JSON(http.StatusOK, tokenResponse{AccessToken: tok, TokenType: "Bearer", ExpiresIn: int64(p.cfg.Lifetime / time.Second)})
}

// Mint issues an access token for clientID.
func (p *IdP) Mint(clientID string) (string, error) {
	now := p.cfg.Now()
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	t, err := jwt.NewBuilder().
		Issuer(p.cfg.Issuer).
		Subject(clientID).
		IssuedAt(now).
		Expiration(now.Add(p.cfg.Lifetime)).
		JwtID(hex.EncodeToString(jti[:])).
		Claim("client_id", clientID).
		Claim("app_id", p.cfg.AppID).
		Claim("tnt_id", p.cfg.TenantID).
		Claim("sub_kind", "client").
		Build()
	if err != nil {
		return "", fmt.Errorf("building token: %w", err)
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, "at+JWT")
	_ = hdr.Set(jws.KeyIDKey, p.cfg.KeyID)
	signed, err := jwt.Sign(t, jwt.WithKey(jwa.RS256, p.signKey, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	p.issued.Add(1)
	return string(signed), nil
}

func (p *IdP) jwksHandler(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, p.jwks)
}

// ParseClients reads "id:secret,id2:secret2".
func ParseClients(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, pair := range strings.Split(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		id, secret, ok := strings.Cut(pair, ":")
		if !ok || id == "" || secret == "" {
			// Never echo the pair: it holds a secret.
			return nil, errors.New("CLIENTS must be a comma-separated list of id:secret pairs")
		}
		out[id] = secret
	}
	if len(out) == 0 {
		return nil, errors.New("CLIENTS names no client")
	}
	return out, nil
}

// LoadOrGenerateKey reads an RSA private key (PKCS#1 or PKCS#8 PEM) from
// path, or generates a 2048-bit key when path is empty. A key file lets
// restarts keep the key, so tokens issued before a restart stay valid and
// the kid never changes. A missing file is created (mode 0600) with a new
// key, so that a deployment needs only a writable volume, not a key of its
// own: the first start creates it, every later start reuses it.
func LoadOrGenerateKey(path string) (*rsa.PrivateKey, error) {
	if path == "" {
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := createKeyFile(path); err != nil {
			return nil, err
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("reading signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("signing key %s: no PEM block", path)
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return checkKeySize(k)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: not an RSA private key in PKCS#1 or PKCS#8", path)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not an RSA key", path)
	}
	return checkKeySize(rk)
}

// checkKeySize refuses what Wristband's validators and protected-data
// refuse: a key under 2048 bits would leave protected-data never ready.
func checkKeySize(k *rsa.PrivateKey) (*rsa.PrivateKey, error) {
	if n := k.N.BitLen(); n < 2048 {
		return nil, fmt.Errorf("signing key: RSA key of %d bits, want at least 2048", n)
	}
	return k, nil
}

// createKeyFile writes a new PKCS#8 PEM key to path. The key is written to a
// temporary file first and then linked into place, so that a reader never
// sees half a key and two emulators starting at once on one volume end up
// with the same key (the loser of the link race reads the winner's).
func createKeyFile(path string) error {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generating signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return fmt.Errorf("encoding signing key: %w", err)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("creating signing key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("creating signing key file: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return fmt.Errorf("writing signing key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing signing key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing signing key file: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating signing key file: %w", err)
	}
	return nil
}

func unescape(s string) (string, error) { return url.QueryUnescape(s) }
