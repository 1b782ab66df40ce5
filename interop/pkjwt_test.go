//go:build interop

package interop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"
)

var b64 = base64.RawURLEncoding

// publicJWK is the public half of key as a JWK, and its RFC 7638 thumbprint.
func publicJWK(t testing.TB, key crypto.Signer, alg string) (map[string]string, string) {
	t.Helper()
	var jwk map[string]string
	var canonical string // members in lexicographic order, no spaces (RFC 7638 §3)
	switch k := key.Public().(type) {
	case *rsa.PublicKey:
		e := b64.EncodeToString(big.NewInt(int64(k.E)).Bytes())
		n := b64.EncodeToString(k.N.Bytes())
		jwk = map[string]string{"kty": "RSA", "e": e, "n": n}
		canonical = `{"e":"` + e + `","kty":"RSA","n":"` + n + `"}`
	case *ecdsa.PublicKey:
		raw, err := k.Bytes() // 0x04 || X || Y, fixed width
		if err != nil {
			t.Fatal(err)
		}
		x, y := b64.EncodeToString(raw[1:33]), b64.EncodeToString(raw[33:])
		jwk = map[string]string{"kty": "EC", "crv": "P-256", "x": x, "y": y}
		canonical = `{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`
	default:
		t.Fatalf("unexpected key type %T", k)
	}
	sum := sha256.Sum256([]byte(canonical))
	jwk["use"], jwk["alg"] = "sig", alg
	return jwk, b64.EncodeToString(sum[:])
}

// keyPEM writes key the way openssl writes it by default: PKCS#8
// ("PRIVATE KEY", openssl genpkey) for RSA, SEC 1 ("EC PRIVATE KEY",
// openssl ecparam -genkey) for EC, so that both forms are read.
func keyPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	switch k := key.(type) {
	case *rsa.PrivateKey:
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	t.Fatalf("unexpected key type %T", key)
	return nil
}

// TestPrivateKeyJWT: the gateway authenticates to Hydra with a signed
// client assertion (RFC 7523) instead of a secret, with an RSA key (kid
// defaulting to the RFC 7638 thumbprint) and with a P-256 key (explicit
// kid). Hydra checks the signature against the public JWK registered with
// the client, iss = sub = client_id, aud = its token endpoint, and a jti
// never seen before, so a renewal also proves that each assertion is fresh.
func TestPrivateKeyJWT(t *testing.T) {
	h := startHydra(t)
	pd := startPD(t, h, "AUDIENCE="+audience, "REQUIRED_SCOPES="+scope)

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, alg, kid string // kid "" : the gateway's default, the thumbprint
		key            crypto.Signer
	}{
		{"RS256, kid from the thumbprint", "RS256", "", rsaKey},
		{"ES256, CLIENT_ASSERTION_KEY_ID", "ES256", "gateway-ec-1", ecKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := "gw-pkjwt-" + strings.ToLower(c.alg)
			jwk, thumb := publicJWK(t, c.key, c.alg)
			jwk["kid"] = thumb
			if c.kid != "" {
				jwk["kid"] = c.kid
			}
			spec := m2mClient(id, "", "private_key_jwt", []string{scope}, []string{audience})
			spec["token_endpoint_auth_signing_alg"] = c.alg
			spec["jwks"] = map[string]any{"keys": []any{jwk}}
			// Short tokens: the renewal a few seconds in needs a fresh jti.
			spec["client_credentials_grant_access_token_lifespan"] = "10s"
			h.createClient(t, spec)

			pemBytes := keyPEM(t, c.key)
			keyFile := writeFile(t, "assertion-key.pem", pemBytes)
			env := []string{"CLIENT_ID=" + id, "TOKEN_AUTH_METHOD=private_key_jwt", "CLIENT_ASSERTION_KEY_FILE=" + keyFile,
				"TOKEN_SCOPES=" + scope, "TOKEN_AUDIENCE=" + audience}
			if c.kid != "" {
				env = append(env, "CLIENT_ASSERTION_KEY_ID="+c.kid)
			}
			since := time.Now()
			gw := startGW(t, h, pd, env...)
			gw.ready(t)
			wantPublic(t, gw)

			reqs := h.log.tokens(since)
			if len(reqs) == 0 {
				t.Fatal("no token request seen")
			}
			f := reqs[0].form
			if f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" || reqs[0].basicAuth || f.Has("client_secret") {
				t.Errorf("private_key_jwt request: form %v, Basic header %v; want a jwt-bearer assertion and no secret", f, reqs[0].basicAuth)
			}
			checkAssertions(t, h, id, c.alg, jwk["kid"])

			// A renewal: a second accepted assertion (Hydra refuses a reused jti).
			ok := waitTokens(t, h, id, since, 2)
			t.Logf("%s: %d assertions accepted, renewal %.1fs after the first", c.alg, len(ok), ok[1].at.Sub(ok[0].at).Seconds())
			wantPublic(t, gw)
			checkAssertions(t, h, id, c.alg, jwk["kid"])

			noSecrets(t, gw.proc, append(h.log.seenAssertions(), string(pemBytes), pemBody(pemBytes))...)
		})
	}

	t.Run("an unregistered key is refused: 503", func(t *testing.T) {
		other, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		const id = "gw-pkjwt-rs256" // registered above with another key
		since := time.Now()
		keyFile := writeFile(t, "other-key.pem", keyPEM(t, other))
		gw := startGW(t, h, pd, "CLIENT_ID="+id, "TOKEN_AUTH_METHOD=private_key_jwt", "CLIENT_ASSERTION_KEY_FILE="+keyFile,
			"TOKEN_SCOPES="+scope, "TOKEN_AUDIENCE="+audience)
		// Hydra answers 400 or 401 depending on where the check fails.
		ev := waitTokenStatus(t, h, id, since, http.StatusBadRequest, http.StatusUnauthorized)
		r := get(t, gw.url+publicAPI)
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Fatalf("got %d Retry-After %q %s; want 503 with Retry-After", r.status, r.header.Get("Retry-After"), r.body)
		}
		t.Logf("unregistered key: Hydra %d %s; gateway %d %s", ev.status, ev.errBody, r.status, strings.TrimSpace(r.body))
		noSecrets(t, gw.proc, append(h.log.seenAssertions(), pemBody(keyPEM(t, other)))...)
	})
}

// pemBody is the base64 body of a PEM block on one line, as a log might
// hold it.
func pemBody(p []byte) string {
	b, _ := pem.Decode(p)
	if b == nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(b.Bytes)
}

// checkAssertions decodes every assertion the gateway sent and checks the
// claims RFC 7523 §3 asks for (Hydra enforces them too).
func checkAssertions(t testing.TB, h *hydra, id, alg, kid string) {
	t.Helper()
	jtis := map[string]bool{}
	for _, a := range h.log.seenAssertions() {
		hdr, claims, err := decodeJWT(a)
		if err != nil {
			t.Fatalf("assertion is not a JWT: %v", err)
		}
		if claims["iss"] != id {
			continue
		}
		if hdr["alg"] != alg || hdr["kid"] != kid {
			t.Errorf("assertion header %v; want alg %s kid %s", hdr, alg, kid)
		}
		if claims["sub"] != id || !audienceHas(claims["aud"], h.tokenURL()) {
			t.Errorf("assertion claims sub %v aud %v; want %s and %s", claims["sub"], claims["aud"], id, h.tokenURL())
		}
		jti, _ := claims["jti"].(string)
		if jti == "" || jtis[jti] {
			t.Errorf("assertion jti %q empty or reused", jti)
		}
		jtis[jti] = true
		exp, _ := claims["exp"].(float64)
		if life := time.Until(time.Unix(int64(exp), 0)); life <= 0 || life > 10*time.Minute {
			t.Errorf("assertion exp %v: %s from now; want a few minutes at most", claims["exp"], life)
		}
	}
}

func audienceHas(aud any, want string) bool {
	switch a := aud.(type) {
	case string:
		return a == want
	case []any:
		for _, v := range a {
			if v == want {
				return true
			}
		}
	}
	return false
}

// waitTokens waits until n token requests from clientID were answered 200.
func waitTokens(t testing.TB, h *hydra, clientID string, since time.Time, n int) []event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ok []event
		for _, ev := range h.log.tokens(since) {
			if ev.clientID == clientID && ev.status == 200 {
				ok = append(ok, ev)
			}
		}
		if len(ok) >= n {
			return ok
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d token requests answered 200 within 30s, want %d", clientID, len(ok), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
