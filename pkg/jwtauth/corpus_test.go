package jwtauth_test

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth/jwtauthtest"
)

// corpusIdP publishes, besides its signing key, keys that must be refused
// or are of a kind the default allow-list refuses.
type corpusIdP struct {
	*jwtauthtest.IdP
	enc, small, ec *jwtauthtest.Key
}

func newCorpusIdP(t *testing.T) corpusIdP {
	idp := jwtauthtest.NewIdP(t)
	c := corpusIdP{IdP: idp, enc: jwtauthtest.NewRSAKey(2048), small: jwtauthtest.NewRSAKey(1024), ec: jwtauthtest.NewECKey()}
	c.enc.Use = "enc"
	idp.AddKey(c.enc)
	idp.AddKey(c.small)
	idp.AddKey(c.ec)
	return c
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func mustB64Decode(s string) []byte {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestMaliciousTokens runs each token through the real Echo middleware: none
// may pass, none may produce a 5xx, each gets its RFC 6750 answer.
func TestMaliciousTokens(t *testing.T) {
	idp := newCorpusIdP(t)
	v := newValidator(t, idp.IdP, nil)
	waitReady(t, v)
	e := newServer(v)

	k := idp.SigningKey()
	hdr := jwtauthtest.Header(k)
	claims := idp.Claims()
	with := func(m map[string]any, kv ...any) map[string]any {
		out := map[string]any{}
		for n, val := range m {
			out[n] = val
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(out, kv[i].(string))
			} else {
				out[kv[i].(string)] = kv[i+1]
			}
		}
		return out
	}
	sign := func(h, c any) string { return jwtauthtest.Sign(k, h, c) }
	valid := sign(hdr, claims)
	parts := strings.Split(valid, ".")
	pubDER, err := x509.MarshalPKIXPublicKey(k.Signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	now := time.Now()

	alteredSig := func() string {
		sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
		sig[10] ^= 0x01
		return parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	}()

	const (
		badReq   = http.StatusBadRequest
		unauth   = http.StatusUnauthorized
		invTok   = "invalid_token"
		invReq   = "invalid_request"
		noCode   = ""
		malform  = "malformed token"
		unknown  = "unknown kid"
		notAllow = "algorithm not allowed"
	)
	cases := []struct {
		name   string
		auth   []string // Authorization header values
		status int
		code   string // error= in WWW-Authenticate; "" for a bare challenge
		desc   string // error_description
	}{
		{"alg none, no signature", []string{bearer(jwtauthtest.Encode(with(hdr, "alg", "none")) + "." + jwtauthtest.Encode(claims) + ".")}, unauth, invTok, "missing signature"},
		{"alg none with a signature", []string{bearer(jwtauthtest.Encode(with(hdr, "alg", "none")) + "." + jwtauthtest.Encode(claims) + "." + parts[2])}, unauth, invTok, notAllow},
		{"alg None mixed case", []string{bearer(jwtauthtest.Encode(with(hdr, "alg", "None")) + "." + jwtauthtest.Encode(claims) + ".AAAA")}, unauth, invTok, notAllow},
		{"HS256 signed with the RSA public key PEM", []string{bearer(jwtauthtest.SignHS256(pubPEM, with(hdr, "alg", "HS256"), claims))}, unauth, invTok, notAllow},
		{"HS256 signed with the RSA public key DER", []string{bearer(jwtauthtest.SignHS256(pubDER, with(hdr, "alg", "HS256"), claims))}, unauth, invTok, notAllow},
		{"RS256 signature stripped", []string{bearer(parts[0] + "." + parts[1] + ".")}, unauth, invTok, "missing signature"},
		{"RS256 signature altered", []string{bearer(alteredSig)}, unauth, invTok, "invalid signature"},
		{"RS256 payload altered after signing", []string{bearer(parts[0] + "." + jwtauthtest.Encode(with(claims, "sub", "admin")) + "." + parts[2])}, unauth, invTok, "invalid signature"},
		{"signature of another token", []string{bearer(parts[0] + "." + parts[1] + "." + strings.Split(sign(hdr, with(claims, "jti", "other")), ".")[2])}, unauth, invTok, "invalid signature"},
		{"unknown kid", []string{bearer(sign(with(hdr, "kid", "no-such-kid"), claims))}, unauth, invTok, unknown},
		{"missing kid", []string{bearer(sign(with(hdr, "kid", nil), claims))}, unauth, invTok, "missing kid"},
		{"empty kid", []string{bearer(sign(with(hdr, "kid", ""), claims))}, unauth, invTok, "missing kid"},
		{"kid is a number", []string{bearer(sign(with(hdr, "kid", 7), claims))}, unauth, invTok, malform},
		{"kid with path traversal", []string{bearer(sign(with(hdr, "kid", "../../../etc/passwd"), claims))}, unauth, invTok, unknown},
		{"kid with SQL", []string{bearer(sign(with(hdr, "kid", "x' OR '1'='1'; DROP TABLE keys; --"), claims))}, unauth, invTok, unknown},
		{"kid of 4 KB", []string{bearer(sign(with(hdr, "kid", strings.Repeat("k", 4096)), claims))}, unauth, invTok, unknown},
		{"jku pointing elsewhere is ignored", []string{bearer(sign(with(hdr, "kid", "evil", "jku", "http://127.0.0.1:1/jwks"), claims))}, unauth, invTok, unknown},
		{"embedded jwk is ignored", []string{bearer(jwtauthtest.Sign(jwtauthtest.NewRSAKey(2048), with(hdr, "jwk", map[string]any{"kty": "RSA", "n": "AQAB", "e": "AQAB"}), claims))}, unauth, invTok, "invalid signature"},
		{"expired", []string{bearer(sign(hdr, with(claims, "exp", now.Add(-time.Hour).Unix())))}, unauth, invTok, "token expired"},
		{"expired beyond leeway", []string{bearer(sign(hdr, with(claims, "exp", now.Add(-31*time.Second).Unix())))}, unauth, invTok, "token expired"},
		{"nbf in the future", []string{bearer(sign(hdr, with(claims, "nbf", now.Add(time.Hour).Unix())))}, unauth, invTok, "token not yet valid"},
		{"iat far in the future", []string{bearer(sign(hdr, with(claims, "iat", now.Add(24*time.Hour).Unix())))}, unauth, invTok, "token issued in the future"},
		{"wrong issuer", []string{bearer(sign(hdr, with(claims, "iss", "https://evil.example")))}, unauth, invTok, "wrong issuer"},
		{"issuer with a trailing slash", []string{bearer(sign(hdr, with(claims, "iss", idp.Issuer()+"/")))}, unauth, invTok, "wrong issuer"},
		{"issuer in another case", []string{bearer(sign(hdr, with(claims, "iss", strings.ToUpper(idp.Issuer()))))}, unauth, invTok, "wrong issuer"},
		{"missing issuer", []string{bearer(sign(hdr, with(claims, "iss", nil)))}, unauth, invTok, "wrong issuer"},
		{"issuer is an array", []string{bearer(sign(hdr, with(claims, "iss", []string{idp.Issuer()})))}, unauth, invTok, "invalid iss claim"},
		{"missing exp", []string{bearer(sign(hdr, with(claims, "exp", nil)))}, unauth, invTok, "missing exp claim"},
		{"exp as a string", []string{bearer(sign(hdr, with(claims, "exp", "9999999999")))}, unauth, invTok, "invalid exp claim"},
		{"exp null", []string{bearer(sign(hdr, []byte(`{"iss":"`+idp.Issuer()+`","exp":null}`)))}, unauth, invTok, "invalid exp claim"},
		{"huge exp 1e300", []string{bearer(sign(hdr, []byte(`{"iss":"`+idp.Issuer()+`","exp":1e300}`)))}, unauth, invTok, "invalid exp claim"},
		{"huge exp beyond int64", []string{bearer(sign(hdr, []byte(`{"iss":"`+idp.Issuer()+`","exp":99999999999999999999999}`)))}, unauth, invTok, "invalid exp claim"},
		{"negative exp", []string{bearer(sign(hdr, with(claims, "exp", -1)))}, unauth, invTok, "invalid exp claim"},
		{"JWE, five parts", []string{bearer(b64(`{"alg":"RSA-OAEP","enc":"A256GCM","kid":"`+k.KID+`"}`) + ".AAAA.AAAA.AAAA.AAAA")}, unauth, invTok, "encrypted tokens (JWE) are not accepted"},
		{"enc header in a JWS", []string{bearer(sign(with(hdr, "enc", "A256GCM"), claims))}, unauth, invTok, "encrypted tokens (JWE) are not accepted"},
		{"two parts", []string{bearer(parts[0] + "." + parts[1])}, unauth, invTok, malform},
		{"one part", []string{bearer(parts[1])}, unauth, invTok, malform},
		{"four parts", []string{bearer(valid + ".AAAA")}, unauth, invTok, malform},
		{"empty parts", []string{bearer("..")}, unauth, invTok, malform},
		{"empty header part", []string{bearer("." + parts[1] + "." + parts[2])}, unauth, invTok, malform},
		{"invalid base64 length", []string{bearer("abcde." + parts[1] + "." + parts[2])}, unauth, invTok, malform},
		{"base64 with padding", []string{bearer(parts[0] + "." + parts[1] + "." + parts[2] + "==")}, unauth, invTok, malform},
		{"standard base64 alphabet", []string{bearer(parts[0] + "+/." + parts[1] + "." + parts[2])}, unauth, invTok, malform},
		{"non-canonical base64 trailing bits", []string{bearer(b64(`{"alg":"RS256"}`)[:19] + "F." + parts[1] + "." + parts[2])}, unauth, invTok, malform},
		{"non-JSON header", []string{bearer(b64("not json") + "." + parts[1] + "." + parts[2])}, unauth, invTok, malform},
		{"header is a JSON array", []string{bearer(b64(`["RS256"]`) + "." + parts[1] + "." + parts[2])}, unauth, invTok, malform},
		{"header with trailing garbage", []string{bearer(b64(`{"alg":"RS256","kid":"`+k.KID+`"}x`) + "." + parts[1] + "." + parts[2])}, unauth, invTok, malform},
		// jwx's header decoder stops after the object and jws.Verify
		// re-encodes what it read: without our pre-check, this token (the
		// signed header plus "x") would verify.
		{"signed header plus trailing garbage", []string{bearer(b64(string(mustB64Decode(parts[0]))+"x") + "." + parts[1] + "." + parts[2])}, unauth, invTok, malform},
		{"signed header plus trailing space", []string{bearer(b64(string(mustB64Decode(parts[0]))+" ") + "." + parts[1] + "." + parts[2])}, unauth, invTok, malform},
		{"signed header after a leading space", []string{bearer(b64(" "+string(mustB64Decode(parts[0]))) + "." + parts[1] + "." + parts[2])}, unauth, invTok, malform},
		{"non-canonical base64 in the signature", []string{bearer(valid[:len(valid)-1] + "B")}, unauth, invTok, malform},
		// Duplicate members resolve last-wins (RFC 7515 §5.2 allows it), and
		// every check reads the same parse: the last alg is "none".
		{"duplicate alg in header, last is none", []string{bearer(sign([]byte(`{"alg":"RS256","kid":"`+k.KID+`","typ":"at+JWT","alg":"none"}`), claims))}, unauth, invTok, notAllow},
		{"duplicate alg, escaped name, last is HS256", []string{bearer(sign([]byte(`{"alg":"RS256","kid":"`+k.KID+`","typ":"at+JWT","\u0061lg":"HS256"}`), claims))}, unauth, invTok, notAllow},
		{"duplicate iss in signed claims, last is evil", []string{bearer(sign(hdr, []byte(`{"iss":"`+idp.Issuer()+`","iss":"https://evil.example","exp":`+itoa(now.Add(time.Hour).Unix())+`}`)))}, unauth, invTok, "wrong issuer"},
		{"duplicate exp, last is a string", []string{bearer(sign(hdr, []byte(`{"iss":"`+idp.Issuer()+`","exp":`+itoa(now.Add(time.Hour).Unix())+`,"exp":"9999999999"}`)))}, unauth, invTok, "invalid exp claim"},
		{"exp as an RFC 3339 string", []string{bearer(sign(hdr, with(claims, "exp", "2999-01-01T00:00:00Z")))}, unauth, invTok, "invalid exp claim"},
		{"exp zero", []string{bearer(sign(hdr, with(claims, "exp", 0)))}, unauth, invTok, "invalid exp claim"},
		{"b64 header (RFC 7797)", []string{bearer(sign(with(hdr, "b64", false), claims))}, unauth, invTok, "unsupported critical header"},
		{"zip header", []string{bearer(sign(with(hdr, "zip", "DEF"), claims))}, unauth, invTok, "encrypted tokens (JWE) are not accepted"},
		{"cty application/jwt", []string{bearer(sign(with(hdr, "cty", "application/JWT"), claims))}, unauth, invTok, "nested tokens are not accepted"},
		{"x5u pointing elsewhere is ignored", []string{bearer(sign(with(hdr, "kid", "evil", "x5u", "http://127.0.0.1:1/cert"), claims))}, unauth, invTok, unknown},
		{"claims are a JSON array", []string{bearer(sign(hdr, []byte(`[1,2,3]`)))}, unauth, invTok, malform},
		{"claims are not JSON", []string{bearer(sign(hdr, []byte(`hello`)))}, unauth, invTok, malform},
		{"nested token, cty JWT", []string{bearer(sign(with(hdr, "cty", "JWT"), claims))}, unauth, invTok, "nested tokens are not accepted"},
		{"nested token as payload", []string{bearer(sign(hdr, []byte(valid)))}, unauth, invTok, malform},
		{"crit header", []string{bearer(sign(with(hdr, "crit", []string{"exp"}, "exp", 1), claims))}, unauth, invTok, "unsupported critical header"},
		{"alg lowercase rs256", []string{bearer(sign(with(hdr, "alg", "rs256"), claims))}, unauth, invTok, notAllow},
		{"alg PS256 not allowed", []string{bearer(sign(with(hdr, "alg", "PS256"), claims))}, unauth, invTok, notAllow},
		{"alg missing", []string{bearer(sign(with(hdr, "alg", nil), claims))}, unauth, invTok, "missing alg"},
		{"typ missing", []string{bearer(sign(with(hdr, "typ", nil), claims))}, unauth, invTok, "wrong token type"},
		{"typ JWT, not an access token", []string{bearer(sign(with(hdr, "typ", "JWT"), claims))}, unauth, invTok, "wrong token type"},
		{"scope is an array", []string{bearer(sign(hdr, with(claims, "scope", []string{"a"})))}, unauth, invTok, "invalid scope claim"},
		{"aud is a number", []string{bearer(sign(hdr, with(claims, "aud", 1)))}, unauth, invTok, "invalid aud claim"},
		{"1 MB token", []string{bearer(strings.Repeat("A", 1<<20))}, unauth, invTok, "token too large"},
		{"token one byte over the limit", []string{bearer(strings.Repeat("A", 8<<10+1))}, unauth, invTok, "token too large"},
		{"key with use enc", []string{bearer(jwtauthtest.Sign(idp.enc, jwtauthtest.Header(idp.enc), claims))}, unauth, invTok, "key not usable"},
		{"1024-bit RSA key", []string{bearer(jwtauthtest.Sign(idp.small, jwtauthtest.Header(idp.small), claims))}, unauth, invTok, "key not usable"},
		{"ES256 token where only RS256 is allowed", []string{bearer(jwtauthtest.Sign(idp.ec, jwtauthtest.Header(idp.ec), claims))}, unauth, invTok, notAllow},
		{"RS256 header on the EC key's kid", []string{bearer(sign(with(hdr, "kid", idp.ec.KID), claims))}, unauth, invTok, "key not usable"},
		{"no Authorization header", nil, unauth, noCode, "missing bearer token"},
		{"Bearer with no token", []string{"Bearer"}, badReq, invReq, "bearer token is empty"},
		{"Bearer and spaces", []string{"Bearer    "}, badReq, invReq, "bearer token is empty"},
		{"wrong scheme Basic", []string{"Basic dXNlcjpwYXNz"}, unauth, noCode, "authorization scheme must be Bearer"},
		{"token without a scheme", []string{valid}, unauth, noCode, "authorization scheme must be Bearer"},
		{"scheme glued to token", []string{"Bearer" + valid}, unauth, noCode, "authorization scheme must be Bearer"},
		{"two Authorization headers", []string{bearer(valid), bearer(valid)}, badReq, invReq, "more than one Authorization header"},
		{"two tokens in one header", []string{bearer(valid) + ", " + bearer(valid)}, badReq, invReq, "malformed Authorization header"},
		{"space inside the token", []string{bearer(parts[0] + " " + parts[1])}, badReq, invReq, "malformed Authorization header"},
		{"control character in the token", []string{bearer(valid[:10] + "\x01" + valid[10:])}, badReq, invReq, "malformed Authorization header"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, e, tc.auth...)
			if r.status != tc.status {
				t.Fatalf("status = %d, want %d (body %v)", r.status, tc.status, r.body)
			}
			want := `Bearer realm="api"`
			if tc.code != "" {
				want += `, error="` + tc.code + `", error_description="` + tc.desc + `"`
			}
			if r.challenge != want {
				t.Errorf("WWW-Authenticate = %q, want %q", r.challenge, want)
			}
			wantErr := tc.code
			if wantErr == "" {
				wantErr = "unauthorized"
			}
			if r.body["error"] != wantErr || r.body["error_description"] != tc.desc {
				t.Errorf("body = %v, want error %q, error_description %q", r.body, wantErr, tc.desc)
			}
		})
	}
}

// TestAcceptedVariants are tokens and headers that look odd but are right.
func TestAcceptedVariants(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, nil)
	waitReady(t, v)
	e := newServer(v)
	k := idp.SigningKey()
	c := idp.Claims()
	cases := []struct {
		name string
		auth string
	}{
		{"Bearer", "Bearer " + idp.Mint(nil)},
		{"lowercase bearer (RFC 7235: scheme is case-insensitive)", "bearer " + idp.Mint(nil)},
		{"uppercase BEARER", "BEARER " + idp.Mint(nil)},
		{"several spaces after the scheme (1*SP)", "Bearer   " + idp.Mint(nil)},
		{"typ application/at+jwt", bearer(jwtauthtest.Sign(k, map[string]any{"alg": "RS256", "kid": k.KID, "typ": "application/at+jwt"}, c))},
		{"typ AT+JWT", bearer(jwtauthtest.Sign(k, map[string]any{"alg": "RS256", "kid": k.KID, "typ": "AT+JWT"}, c))},
		{"expired within the leeway", bearer(idp.Mint(map[string]any{"exp": time.Now().Add(-10 * time.Second).Unix()}))},
		{"fractional exp", bearer(idp.Mint(map[string]any{"exp": float64(time.Now().Add(time.Hour).Unix()) + 0.5}))},
		{"unknown header and claims ignored", bearer(jwtauthtest.Sign(k, map[string]any{"alg": "RS256", "kid": k.KID, "typ": "at+JWT", "ALG": "none", "x5u": "http://127.0.0.1:1/"}, c))},
		{"claim names are exact: EXP is a private claim", bearer(idp.Mint(map[string]any{"EXP": "not a date", "ISS": 7}))},
		// Duplicate members, signed by the IdP, resolve last-wins (RFC 7515
		// §5.2): the signature check, the header checks and the claims the
		// handler gets all read the one parse, so no reader sees another
		// value than the one we checked. The old hand-written parser
		// refused these; refusing them buys nothing once there is one parse.
		{"duplicate alg, escaped name, both RS256", bearer(jwtauthtest.Sign(k, []byte(`{"alg":"RS256","kid":"`+k.KID+`","typ":"at+JWT","\u0061lg":"RS256"}`), c))},
		{"duplicate iss, last is ours", bearer(jwtauthtest.Sign(k, jwtauthtest.Header(k), []byte(`{"iss":"https://evil.example","iss":"`+idp.Issuer()+`","exp":`+itoa(time.Now().Add(time.Hour).Unix())+`}`)))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if r := do(t, e, tc.auth); r.status != http.StatusOK {
				t.Fatalf("status = %d, want 200 (body %v)", r.status, r.body)
			}
		})
	}
}
