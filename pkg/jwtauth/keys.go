package jwtauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// minRSABits: RSA keys shorter than this are refused (NIST SP 800-131A;
// Wristband's own validators do the same).
const minRSABits = 2048

// verifyKey is one usable public key from the JWKS, judged once per fetch.
// It verifies exactly one algorithm: jws.Verify gets that algorithm and the
// raw key explicitly, never a guess from the token.
type verifyKey struct {
	kid string
	alg jwa.SignatureAlgorithm
	pub crypto.PublicKey // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

func (k *verifyKey) equal(o *verifyKey) bool {
	e, ok := k.pub.(interface{ Equal(crypto.PublicKey) bool })
	return k.kid == o.kid && k.alg == o.alg && ok && e.Equal(o.pub)
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
	rsaAlgs = []jwa.SignatureAlgorithm{jwa.RS256, jwa.RS384, jwa.RS512, jwa.PS256, jwa.PS384, jwa.PS512}
	curveAl = map[elliptic.Curve]jwa.SignatureAlgorithm{elliptic.P256(): jwa.ES256, elliptic.P384(): jwa.ES384, elliptic.P521(): jwa.ES512}
)

// buildKeySet turns the keys of a fetched JWKS into a keySet. Keys are judged
// one by one so that one odd key does not take the others down. Keys equal to
// one in prev keep their identity, so verified-token cache entries survive a
// refresh that did not change their key.
func buildKeySet(raws []json.RawMessage, allowed []string, prev *keySet, now time.Time) *keySet {
	ks := &keySet{keys: map[string][]*verifyKey{}, refused: map[string]string{}, loadedAt: now}
	for _, raw := range raws {
		vk, kid, why := usableKey(raw, allowed)
		if vk == nil {
			if kid != "" {
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

// usableKey applies the key-level rules to one JWK, or says why it is
// refused (with its kid when it has one). The rules:
//
//   - a kid is required (tokens select keys by kid only);
//   - "use", if present, must be "sig"; "key_ops", if present, must hold "verify";
//   - RSA keys need at least minRSABits; EC keys P-256/384/521; OKP Ed25519;
//   - the key ends up with exactly one algorithm, from the allow-list. With
//     "alg" published, that one (it must fit the key type). Without "alg"
//     (Wristband's keys may lack it), it is inferred only when exactly one
//     allowed algorithm fits the key: an EC key's curve names one; an RSA key
//     fits six, so it is inferred only when the allow-list holds a single RSA
//     algorithm (the default, RS256). Otherwise the key is refused, since
//     guessing would let a token's header choose between RS* and PS*.
func usableKey(raw json.RawMessage, allowed []string) (*verifyKey, string, string) {
	key, err := jwk.ParseKey(raw)
	if err != nil {
		var peek struct {
			KID string `json:"kid"`
		}
		_ = json.Unmarshal(raw, &peek)
		return nil, peek.KID, "key cannot be parsed"
	}
	vk := &verifyKey{kid: key.KeyID()}
	if vk.kid == "" {
		return nil, "", "key has no kid"
	}
	if use := key.KeyUsage(); use != "" && use != string(jwk.ForSignature) {
		return nil, vk.kid, "key is not for signatures (use=" + use + ")"
	}
	if ops := key.KeyOps(); len(ops) > 0 && !slices.Contains(ops, jwk.KeyOpVerify) {
		return nil, vk.kid, "key_ops does not allow verify"
	}
	var rawKey any
	if err := key.Raw(&rawKey); err != nil {
		return nil, vk.kid, "key cannot be decoded"
	}
	var family []jwa.SignatureAlgorithm
	switch k := rawKey.(type) {
	case *rsa.PrivateKey: // a JWKS should never carry these; use the public half
		rawKey = &k.PublicKey
	case *ecdsa.PrivateKey:
		rawKey = &k.PublicKey
	case ed25519.PrivateKey:
		rawKey = k.Public()
	}
	switch k := rawKey.(type) {
	case *rsa.PublicKey:
		if k.N == nil || k.N.BitLen() < minRSABits {
			return nil, vk.kid, fmt.Sprintf("RSA key shorter than %d bits", minRSABits)
		}
		family = rsaAlgs
	case *ecdsa.PublicKey:
		a, ok := curveAl[k.Curve]
		if !ok {
			return nil, vk.kid, "EC curve is not accepted"
		}
		family = []jwa.SignatureAlgorithm{a}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return nil, vk.kid, "OKP key is not Ed25519"
		}
		family = []jwa.SignatureAlgorithm{jwa.EdDSA}
	default:
		return nil, vk.kid, fmt.Sprintf("key type %s is not accepted", key.KeyType())
	}
	vk.pub = rawKey
	if a := key.Algorithm().String(); a != "" {
		alg := jwa.SignatureAlgorithm(a)
		if !slices.Contains(family, alg) {
			return nil, vk.kid, "key alg " + a + " does not match its key type"
		}
		if !slices.Contains(allowed, a) {
			return nil, vk.kid, "key alg " + a + " is not in the allow-list"
		}
		vk.alg = alg
		return vk, vk.kid, ""
	}
	var fits []jwa.SignatureAlgorithm
	for _, a := range family {
		if slices.Contains(allowed, a.String()) {
			fits = append(fits, a)
		}
	}
	switch len(fits) {
	case 0:
		return nil, vk.kid, "key algorithm is not in the allow-list"
	case 1:
		vk.alg = fits[0]
		return vk, vk.kid, ""
	default:
		return nil, vk.kid, fmt.Sprintf("key has no alg and %d allowed algorithms fit it; publish alg or allow one", len(fits))
	}
}

// JWKS fetch outcomes: the keys of Stats.JWKSFetchOutcomes.
const (
	FetchOK        = "ok"        // a well-formed key set was installed
	FetchTransport = "transport" // connection, timeout, refused redirect
	FetchStatus    = "status"    // a status other than 200
	FetchBody      = "body"      // not a JWKS (not JSON, no "keys" array, too large)
	FetchNoKeys    = "no_keys"   // a JWKS with no usable key before any set was loaded
)

// JWKSFetchOutcomes lists every fetch outcome, in a stable order.
var JWKSFetchOutcomes = []string{FetchOK, FetchTransport, FetchStatus, FetchBody, FetchNoKeys}

var outcomeIndex = func() map[string]int {
	m := make(map[string]int, len(JWKSFetchOutcomes))
	for i, o := range JWKSFetchOutcomes {
		m[o] = i
	}
	return m
}()

var errNoUsableKeys = errors.New("jwks has no usable signing key")

// fetch GETs the JWKS and installs it. cause ("start", "refresh",
// "unknown_kid") goes on the span only.
func (v *Validator) fetch(ctx context.Context, cause string) (err error) {
	ctx, span := v.tracer.Start(ctx, "jwtauth.fetch_jwks",
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attribute.String("jwtauth.cause", cause)))
	outcome := FetchOK
	defer func() {
		v.stats.fetches.Add(1)
		v.stats.outcomes[outcomeIndex[outcome]].Add(1)
		span.SetAttributes(attribute.String("jwtauth.outcome", outcome))
		if err != nil {
			v.stats.fetchErrors.Add(1)
			v.lastErr.Store(&err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
	if err != nil {
		outcome = FetchTransport
		return fmt.Errorf("building jwks request: %w", err)
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	res, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		outcome = FetchTransport
		return err // *url.Error already says "Get <url>: ..."
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		outcome = FetchStatus
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 4<<10))
		return fmt.Errorf("jwks answered %s", res.Status)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxJWKSBytes+1))
	if err != nil {
		outcome = FetchTransport
		return fmt.Errorf("reading jwks: %w", err)
	}
	if len(body) > maxJWKSBytes {
		outcome = FetchBody
		return errors.New("jwks response is larger than 1 MiB")
	}
	// A well-formed JWKS is a JSON object with a "keys" array (RFC 7517
	// §5). Only such an answer may change what we trust; anything else is a
	// failed fetch and the last good set keeps serving.
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Keys == nil {
		outcome = FetchBody
		return errors.New("jwks response is not a JSON object with a keys array")
	}
	if err := v.publish(doc.Keys); err != nil {
		outcome = FetchNoKeys
		return err
	}
	return nil
}

// publish installs the keys of a well-formed JWKS answer. It is the
// IdP's current word and is honoured at once (issue 11.5): a key that
// disappears, or turns "use": "enc", stops verifying now, together with the
// cached tokens it verified; a set with no usable key left refuses every
// token (401) until the IdP publishes one again. The one exception is
// start-up: a first answer with no usable key is reported as a failed
// fetch, so that the service stays not-ready and says why (often an
// ALGORITHMS mismatch) instead of becoming ready to refuse everything.
// Transport errors, non-200 answers and malformed bodies never get here:
// they keep the last good set.
func (v *Validator) publish(raws []json.RawMessage) error {
	v.pubMu.Lock()
	defer v.pubMu.Unlock()
	prev := v.keys.Load()
	ks := buildKeySet(raws, v.cfg.Algorithms, prev, v.clock.Now())
	if len(ks.keys) == 0 && prev == nil {
		return fmt.Errorf("%w (%d keys in the set, %d refused)", errNoUsableKeys, len(raws), len(ks.refused))
	}
	v.keys.Store(ks)
	v.lastErr.Store(nil)
	v.stats.loads.Add(1)
	if v.cache != nil {
		v.cache.retain(ks)
	}
	switch {
	case len(ks.keys) == 0:
		v.log.Warn("jwks has no usable signing key any more: every token is refused until it has one",
			"keys_in_set", len(raws), "refused", len(ks.refused))
	case prev == nil || prev.size() != ks.size() || len(prev.refused) != len(ks.refused):
		v.log.Info("jwks loaded", "keys", ks.size(), "refused", len(ks.refused))
	}
	for kid, why := range ks.refused {
		if prev == nil || prev.refused[kid] != why {
			v.log.Warn("jwks key refused", "kid", kid, "reason", why)
		}
	}
	return nil
}
