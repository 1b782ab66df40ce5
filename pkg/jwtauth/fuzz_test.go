package jwtauth_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth/jwtauthtest"
)

// FuzzValidate feeds arbitrary tokens to Validate and to the middleware.
// Properties: no panic; every error is ErrInvalidToken; the middleware
// answers 200, 400 or 401 only; and whatever we accept, (a) jws.Verify
// accepts on its own with the same key and (b) the standard library's RSA
// verify accepts over the bytes as received (jws.Verify checks a
// re-encoding of what it parsed; (b) proves our pre-check leaves no room
// between the two). The committed seeds in testdata/fuzz/FuzzValidate run
// with every `go test`; `go test -fuzz FuzzValidate ./jwtauth/` explores
// further.
func FuzzValidate(f *testing.F) {
	idp := jwtauthtest.NewIdP(f)
	v := newValidator(f, idp, nil)
	waitReady(f, v)
	e := newServer(v)
	k := idp.SigningKey()
	good := idp.Mint(nil)
	parts := strings.Split(good, ".")
	for _, s := range []string{
		good,
		idp.Mint(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}),
		jwtauthtest.Sign(k, []byte(`{"alg":"RS256","kid":"`+k.KID+`","typ":"at+JWT","alg":"RS256"}`), idp.Claims()),
		jwtauthtest.Sign(k, jwtauthtest.Header(k), []byte(`{"exp":1e999,"iss":[]}`)),
		parts[0] + "." + parts[1] + ".",
		jwtauthtest.Encode(string(mustB64Decode(parts[0]))+" ") + "." + parts[1] + "." + parts[2],
		good[:len(good)-1] + "B", // 256-byte signature: the last character must have its low 4 bits zero
		"", ".", "..", "...", "....", "a.b.c", "e30.e30.e30",
	} {
		f.Add(s)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, tok string) {
		cl, err := v.Validate(ctx, tok)
		if err != nil {
			if !errors.Is(err, jwtauth.ErrInvalidToken) {
				t.Fatalf("error %v does not wrap ErrInvalidToken", err)
			}
		} else {
			if cl == nil || cl.Issuer != idp.Issuer() || !time.Now().Before(cl.ExpiresAt.Add(jwtauth.DefaultLeeway)) {
				t.Fatalf("accepted with claims %+v", cl)
			}
			if _, err := jws.Verify([]byte(tok), jws.WithKey(jwa.RS256, k.Signer.Public())); err != nil {
				t.Fatalf("we accepted a token jwx rejects: %v", err)
			}
			i := strings.LastIndexByte(tok, '.')
			sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
			d := sha256.Sum256([]byte(tok[:i]))
			if err != nil || rsa.VerifyPKCS1v15(k.Signer.Public().(*rsa.PublicKey), crypto.SHA256, d[:], sig) != nil {
				t.Fatalf("we accepted a token whose bytes as received are not what the IdP signed: %q", tok)
			}
		}
		req := httptest.NewRequest(http.MethodGet, "/data", nil)
		req.Header["Authorization"] = []string{"Bearer " + tok}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized:
		default:
			t.Fatalf("middleware answered %d", rec.Code)
		}
		if rec.Code != http.StatusOK && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), `Bearer realm="api"`) {
			t.Fatalf("answer %d without a Bearer challenge", rec.Code)
		}
	})
}
