// Package jwtauthtest is a fake identity provider for tests of code that
// validates JWTs: it serves a JWKS over httptest, counts the fetches, can go
// down or stall, rotates, adds and removes keys, and mints tokens with any
// header and claims, including broken ones.
package jwtauthtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/wristband"
)

// JWKSPath is where Wristband serves its JWKS; the fake serves it there.
const JWKSPath = wristband.JWKSPath

// Key is a signing key and how it is published in the JWKS.
type Key struct {
	KID    string
	Alg    string        // JWS alg used to sign: RS256 or ES256 (and published as "alg" unless OmitAlg)
	Signer crypto.Signer // *rsa.PrivateKey or *ecdsa.PrivateKey
	Use    string        // published "use"; "" publishes "sig"; "-" publishes none
	// OmitAlg leaves "alg" out of the JWK, as Wristband's keys may.
	OmitAlg bool
}

var (
	rsaPoolMu sync.Mutex
	rsaPool   = map[int][]*rsa.PrivateKey{}
)

// rsaKey returns the i-th RSA key of the given size, generating it once per
// test binary: RSA key generation is slow on a small, busy machine.
func rsaKey(bits, i int) *rsa.PrivateKey {
	rsaPoolMu.Lock()
	defer rsaPoolMu.Unlock()
	for len(rsaPool[bits]) <= i {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			panic(fmt.Sprintf("generating rsa key: %v", err))
		}
		rsaPool[bits] = append(rsaPool[bits], k)
	}
	return rsaPool[bits][i]
}

var keySeq atomic.Int64

// NewRSAKey returns an RS256 key with a fresh kid. Keys of the same size are
// reused across calls in one test binary only after 8 distinct ones.
func NewRSAKey(bits int) *Key {
	n := keySeq.Add(1)
	return &Key{KID: fmt.Sprintf("rsa-%d-%d", bits, n), Alg: "RS256", Signer: rsaKey(bits, int(n%8))}
}

// NewECKey returns an ES256 key with a fresh kid.
func NewECKey() *Key {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(fmt.Sprintf("generating ec key: %v", err))
	}
	return &Key{KID: fmt.Sprintf("ec-%d", keySeq.Add(1)), Alg: "ES256", Signer: k}
}

// JWK returns the key's public JWK as published.
func (k *Key) JWK() map[string]any {
	m := map[string]any{"kid": k.KID}
	switch k.Use {
	case "":
		m["use"] = "sig"
	case "-":
	default:
		m["use"] = k.Use
	}
	if !k.OmitAlg {
		m["alg"] = k.Alg
	}
	switch pub := k.Signer.Public().(type) {
	case *rsa.PublicKey:
		m["kty"] = "RSA"
		m["n"] = b64(pub.N.Bytes())
		m["e"] = b64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		m["kty"] = "EC"
		m["crv"] = pub.Curve.Params().Name
		raw, err := pub.Bytes() // 0x04 || X || Y, each coordinate padded to the curve size
		if err != nil {
			panic(fmt.Sprintf("encoding ec key: %v", err))
		}
		size := (len(raw) - 1) / 2
		m["x"] = b64(raw[1 : 1+size])
		m["y"] = b64(raw[1+size:])
	}
	return m
}

// IdP is the fake identity provider. Its zero value is not usable; call NewIdP.
type IdP struct {
	Server *httptest.Server

	mu      sync.Mutex
	keys    []*Key
	signing *Key
	down    bool
	stall   chan struct{}
	extra   []json.RawMessage
	body    []byte // non-nil: served as is with 200 instead of the JWKS

	fetches atomic.Int64
}

// NewIdP starts a fake IdP with one RS256 signing key (2048 bits). It is
// closed when the test ends.
func NewIdP(tb testing.TB) *IdP {
	tb.Helper()
	p := Start()
	tb.Cleanup(p.Close)
	return p
}

// Start starts a fake IdP outside a test (examples, benchmarks' setup);
// the caller must Close it.
func Start() *IdP {
	p := &IdP{}
	k := NewRSAKey(2048)
	p.keys, p.signing = []*Key{k}, k
	mux := http.NewServeMux()
	mux.HandleFunc(JWKSPath, p.serveJWKS)
	p.Server = httptest.NewServer(mux)
	return p
}

// Close releases any stalled JWKS request and stops the server.
func (p *IdP) Close() {
	p.mu.Lock()
	if p.stall != nil {
		close(p.stall)
		p.stall = nil
	}
	p.mu.Unlock()
	p.Server.Close()
}

// Issuer is the server's base URL, Wristband-style (no trailing slash).
func (p *IdP) Issuer() string { return p.Server.URL }

// JWKSURL is the JWKS address.
func (p *IdP) JWKSURL() string { return p.Server.URL + JWKSPath }

// Fetches is how many JWKS requests have arrived (answered or not).
func (p *IdP) Fetches() int64 { return p.fetches.Load() }

// SetDown makes the JWKS answer 503 (true) or serve again (false).
func (p *IdP) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}

// SetBody makes the JWKS endpoint answer 200 with body as is (garbage, an
// empty object, ...); nil serves the JWKS again.
func (p *IdP) SetBody(body []byte) {
	p.mu.Lock()
	p.body = body
	p.mu.Unlock()
}

// Stall makes JWKS requests hang until the returned release is called
// (or the IdP closes). release is idempotent.
func (p *IdP) Stall() (release func()) {
	ch := make(chan struct{})
	p.mu.Lock()
	p.stall = ch
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			if p.stall == ch {
				p.stall = nil
				close(ch)
			}
			p.mu.Unlock()
		})
	}
}

// SigningKey is the key Mint signs with.
func (p *IdP) SigningKey() *Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.signing
}

// AddKey publishes k in the JWKS (it does not become the signing key).
func (p *IdP) AddKey(k *Key) {
	p.mu.Lock()
	p.keys = append(p.keys, k)
	p.mu.Unlock()
}

// RemoveKey unpublishes the key with kid.
func (p *IdP) RemoveKey(kid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, k := range p.keys {
		if k.KID == kid {
			p.keys = append(p.keys[:i:i], p.keys[i+1:]...)
			return
		}
	}
}

// SetKeyUse changes the published "use" of the key with kid (see Key.Use),
// e.g. to "enc" to revoke it for signatures.
func (p *IdP) SetKeyUse(kid, use string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range p.keys {
		if k.KID == kid {
			k.Use = use
		}
	}
}

// Rotate publishes a new RSA key, makes it the signing key, and leaves the
// old one published (as IdPs do while old tokens live). It returns the new key.
func (p *IdP) Rotate() *Key {
	k := NewRSAKey(2048)
	p.mu.Lock()
	p.keys = append(p.keys, k)
	p.signing = k
	p.mu.Unlock()
	return k
}

// AddRawJWK publishes an arbitrary JWK object as well (malformed keys,
// symmetric keys, ...).
func (p *IdP) AddRawJWK(raw json.RawMessage) {
	p.mu.Lock()
	p.extra = append(p.extra, raw)
	p.mu.Unlock()
}

func (p *IdP) serveJWKS(w http.ResponseWriter, r *http.Request) {
	p.fetches.Add(1)
	p.mu.Lock()
	stall, down, body := p.stall, p.down, p.body
	keys := make([]any, 0, len(p.keys)+len(p.extra))
	for _, k := range p.keys {
		keys = append(keys, k.JWK())
	}
	for _, raw := range p.extra {
		keys = append(keys, raw)
	}
	p.mu.Unlock()
	if stall != nil {
		select {
		case <-stall:
		case <-r.Context().Done():
			return
		}
	}
	if down {
		http.Error(w, "jwks down", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if body != nil {
		_, _ = w.Write(body)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
}

// Claims returns Wristband-like claims for a token valid for 30 minutes.
func (p *IdP) Claims() map[string]any {
	now := time.Now()
	return map[string]any{
		"iss":       p.Issuer(),
		"sub":       "client-1",
		"client_id": "client-1",
		"app_id":    "app-1",
		"tnt_id":    "tenant-1",
		"sub_kind":  "client",
		"iat":       now.Unix(),
		"exp":       now.Add(30 * time.Minute).Unix(),
		"jti":       fmt.Sprintf("jti-%d", keySeq.Add(1)),
	}
}

// Header returns the Wristband header for k: alg, kid, typ at+JWT.
func Header(k *Key) map[string]any {
	return map[string]any{"alg": k.Alg, "kid": k.KID, "typ": "at+JWT"}
}

// Mint signs p.Claims() with the signing key, after applying overrides
// (a nil value deletes the claim).
func (p *IdP) Mint(overrides map[string]any) string {
	k := p.SigningKey()
	c := p.Claims()
	for name, val := range overrides {
		if val == nil {
			delete(c, name)
		} else {
			c[name] = val
		}
	}
	return Sign(k, Header(k), c)
}

// Encode base64url-encodes a header or claims value: []byte and
// json.RawMessage are used as is (for hand-written JSON), anything else is
// marshalled.
func Encode(v any) string {
	switch b := v.(type) {
	case []byte:
		return b64(b)
	case json.RawMessage:
		return b64(b)
	case string:
		return b64([]byte(b))
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encoding token part: %v", err))
	}
	return b64(b)
}

// Sign builds a compact JWS of header and claims (see Encode), signed with k
// using k.Alg whatever the header says.
func Sign(k *Key, header, claims any) string {
	in := Encode(header) + "." + Encode(claims)
	return in + "." + b64(SignInput(k, in))
}

// SignInput signs a JWS signing input with k.
func SignInput(k *Key, in string) []byte {
	d := sha256.Sum256([]byte(in))
	switch s := k.Signer.(type) {
	case *rsa.PrivateKey:
		sig, err := rsa.SignPKCS1v15(rand.Reader, s, crypto.SHA256, d[:])
		if err != nil {
			panic(fmt.Sprintf("signing: %v", err))
		}
		return sig
	case *ecdsa.PrivateKey:
		r, sv, err := ecdsa.Sign(rand.Reader, s, d[:])
		if err != nil {
			panic(fmt.Sprintf("signing: %v", err))
		}
		size := (s.Curve.Params().BitSize + 7) / 8
		return append(r.FillBytes(make([]byte, size)), sv.FillBytes(make([]byte, size))...)
	}
	panic("unsupported signer")
}

// SignHS256 builds an HMAC-SHA256 JWS with secret: the alg-confusion attack
// uses the RSA public key as the secret.
func SignHS256(secret []byte, header, claims any) string {
	in := Encode(header) + "." + Encode(claims)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return in + "." + b64(m.Sum(nil))
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
