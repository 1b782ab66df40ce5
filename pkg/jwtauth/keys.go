package jwtauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// minRSABits: RSA keys shorter than this are refused (NIST SP 800-131A;
// Wristband's own validators do the same).
const minRSABits = 2048

// verifyKey is one usable public key from the JWKS, parsed once per fetch.
type verifyKey struct {
	kid  string
	algs []string // the token algs this key may verify: its own "alg", or inferred from kty/crv, within the allow-list
	rsa  *rsa.PublicKey
	ec   *ecdsa.PublicKey
	ed   ed25519.PublicKey
}

func (k *verifyKey) equal(o *verifyKey) bool {
	if k.kid != o.kid || !slices.Equal(k.algs, o.algs) {
		return false
	}
	switch {
	case k.rsa != nil:
		return o.rsa != nil && k.rsa.Equal(o.rsa)
	case k.ec != nil:
		return o.ec != nil && k.ec.Equal(o.ec)
	default:
		return o.ed != nil && k.ed.Equal(o.ed)
	}
}

// keySet is an immutable snapshot of the usable keys, swapped atomically so
// that the request path reads it without a lock.
type keySet struct {
	keys     map[string][]*verifyKey // by kid; more than one only if the JWKS repeats a kid
	refused  map[string]string       // kid -> why no key with that kid is usable
	loadedAt time.Time
}

// has reports whether k (by identity) is still in the set; the token cache
// uses it so that an entry never outlives its key.
func (s *keySet) has(k *verifyKey) bool {
	for _, c := range s.keys[k.kid] {
		if c == k {
			return true
		}
	}
	return false
}

func (s *keySet) size() int {
	n := 0
	for _, ks := range s.keys {
		n += len(ks)
	}
	return n
}

var (
	rsaAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	curveAl = map[elliptic.Curve]string{elliptic.P256(): "ES256", elliptic.P384(): "ES384", elliptic.P521(): "ES512"}
)

// buildKeySet turns a fetched JWKS into a keySet. Keys are judged one by one
// so that one odd key does not take the others down. Keys equal to one in
// prev keep their identity, so verified-token cache entries survive a refresh
// that did not change their key.
func buildKeySet(set jwk.Set, allowed []string, prev *keySet) *keySet {
	ks := &keySet{keys: map[string][]*verifyKey{}, refused: map[string]string{}, loadedAt: time.Now()}
	for i := 0; i < set.Len(); i++ {
		key, ok := set.Key(i)
		if !ok {
			continue
		}
		vk, why := usableKey(key, allowed)
		if vk == nil {
			if kid := key.KeyID(); kid != "" {
				ks.refused[kid] = why
			}
			continue
		}
		if prev != nil {
			for _, old := range prev.keys[vk.kid] {
				if old.equal(vk) {
					vk = old
					break
				}
			}
		}
		ks.keys[vk.kid] = append(ks.keys[vk.kid], vk)
	}
	for kid := range ks.keys {
		delete(ks.refused, kid)
	}
	return ks
}

// usableKey applies the key-level rules, or says why the key is refused.
func usableKey(key jwk.Key, allowed []string) (*verifyKey, string) {
	vk := &verifyKey{kid: key.KeyID()}
	if vk.kid == "" {
		return nil, "key has no kid"
	}
	if use := key.KeyUsage(); use != "" && use != string(jwk.ForSignature) {
		return nil, "key is not for signatures (use=" + use + ")"
	}
	if ops := key.KeyOps(); len(ops) > 0 && !slices.Contains(ops, jwk.KeyOpVerify) {
		return nil, "key_ops does not allow verify"
	}
	var raw any
	if err := key.Raw(&raw); err != nil {
		return nil, "key cannot be decoded"
	}
	var family []string
	switch k := raw.(type) {
	case *rsa.PrivateKey: // a JWKS should never carry these; use the public half
		vk.rsa = &k.PublicKey
	case *rsa.PublicKey:
		vk.rsa = k
	case *ecdsa.PrivateKey:
		vk.ec = &k.PublicKey
	case *ecdsa.PublicKey:
		vk.ec = k
	case ed25519.PrivateKey:
		vk.ed, _ = k.Public().(ed25519.PublicKey)
	case ed25519.PublicKey:
		vk.ed = k
	default:
		return nil, fmt.Sprintf("key type %s is not accepted", key.KeyType())
	}
	switch {
	case vk.rsa != nil:
		if vk.rsa.N == nil || vk.rsa.N.BitLen() < minRSABits {
			return nil, fmt.Sprintf("RSA key shorter than %d bits", minRSABits)
		}
		family = rsaAlgs
	case vk.ec != nil:
		a, ok := curveAl[vk.ec.Curve]
		if !ok {
			return nil, "EC curve is not accepted"
		}
		family = []string{a}
	case vk.ed != nil:
		if len(vk.ed) != ed25519.PublicKeySize {
			return nil, "OKP key is not Ed25519"
		}
		family = []string{"EdDSA"}
	}
	// A key without "alg" (Wristband's may lack it) may verify any allowed
	// algorithm of its own family; jwx would skip it unless told to infer.
	// A key with "alg" verifies exactly that algorithm.
	if a := key.Algorithm().String(); a != "" {
		if !slices.Contains(family, a) {
			return nil, "key alg " + a + " does not match its key type"
		}
		family = []string{a}
	}
	for _, a := range family {
		if slices.Contains(allowed, a) {
			vk.algs = append(vk.algs, a)
		}
	}
	if len(vk.algs) == 0 {
		return nil, "key algorithm is not in the allow-list"
	}
	return vk, ""
}

// jwksGetter is the HTTP client handed to jwk.Cache. httprc calls Get with
// no context, so a stuck JWKS would pin its worker past Close; binding every
// request to the Validator's lifetime ends it. It also counts fetches and
// bounds the body.
type jwksGetter struct {
	ctx    context.Context
	client *http.Client
	v      *Validator
}

func (g *jwksGetter) Get(u string) (*http.Response, error) {
	g.v.stats.fetches.Add(1)
	req, err := http.NewRequestWithContext(g.ctx, http.MethodGet, u, nil)
	if err != nil {
		g.v.stats.fetchErrors.Add(1)
		return nil, fmt.Errorf("building jwks request: %w", err)
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	res, err := g.client.Do(req)
	if err != nil {
		g.v.stats.fetchErrors.Add(1)
		g.v.noteFetchError(err)
		return nil, fmt.Errorf("fetching jwks: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		g.v.stats.fetchErrors.Add(1)
		g.v.noteFetchError(fmt.Errorf("jwks answered %s", res.Status))
	}
	res.Body = &limitedBody{r: io.LimitReader(res.Body, maxJWKSBytes+1), c: res.Body}
	return res, nil
}

type limitedBody struct {
	r io.Reader
	c io.Closer
	n int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > maxJWKSBytes {
		return n, errors.New("jwks response is larger than 1 MiB")
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.c.Close() }

// fetchDirect fetches and publishes the JWKS without jwk.Cache; the getter
// binds the request to the Validator's lifetime. We use it
// for cold-start retries and unknown-kid refetches because every
// jwk.Cache.Refresh call schedules one more perpetual background refresh in
// httprc v1: N refetches would become N parallel refresh chains.
func (v *Validator) fetchDirect() error {
	res, err := v.getter.Get(v.cfg.JWKSURL)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching jwks: status %s", res.Status)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		v.stats.fetchErrors.Add(1)
		v.noteFetchError(err)
		return fmt.Errorf("reading jwks: %w", err)
	}
	set, err := jwk.Parse(body, jwk.WithIgnoreParseError(true))
	if err != nil {
		v.stats.fetchErrors.Add(1)
		v.noteFetchError(err)
		return fmt.Errorf("parsing jwks: %w", err)
	}
	return v.publish(set)
}

var errNoUsableKeys = errors.New("jwks has no usable signing key")

// publish installs a freshly fetched JWKS. A set with no usable key is
// treated as a failed fetch: an IdP that can sign nothing is far more likely
// misconfigured than revoking everything, and the last good set keeps
// serving. Removals of individual keys take effect at once.
func (v *Validator) publish(set jwk.Set) error {
	v.pubMu.Lock()
	defer v.pubMu.Unlock()
	prev := v.keys.Load()
	ks := buildKeySet(set, v.cfg.Algorithms, prev)
	if len(ks.keys) == 0 {
		v.stats.fetchErrors.Add(1)
		err := fmt.Errorf("%w (%d keys in the set, %d refused)", errNoUsableKeys, set.Len(), len(ks.refused))
		v.noteFetchError(err)
		v.log.Warn("jwks refused, keeping the last good key set", errAttr(err))
		return err
	}
	v.keys.Store(ks)
	v.lastErr.Store(nil)
	v.stats.loads.Add(1)
	if v.cache != nil {
		v.cache.retain(ks)
	}
	if prev == nil || prev.size() != ks.size() || len(prev.refused) != len(ks.refused) {
		v.log.Info("jwks loaded", "keys", ks.size(), "refused", len(ks.refused))
	}
	for kid, why := range ks.refused {
		if prev == nil || prev.refused[kid] != why {
			v.log.Warn("jwks key refused", "kid", kid, "reason", why)
		}
	}
	return nil
}
