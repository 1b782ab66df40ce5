package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// TestProtectedDataAdmission runs protected-data as shipped with the secure
// settings (ALLOWED_CLIENT_IDS, REQUIRE_TOKEN_TYPE, ALLOWED_SUB_KINDS) and
// checks the RFC 6750 answers: another client's token, or a user token, is
// valid but not admitted (403 insufficient_scope); a token of another type
// is not an access token for us (401 invalid_token).
func TestProtectedDataAdmission(t *testing.T) {
	s := &system{emuAddr: freeAddr(t), pdAddr: freeAddr(t)}
	s.keyPath, s.key = writeKey(t)
	s.emuEnv = []string{
		"LISTEN_ADDR=" + s.emuAddr, "ISSUER=" + s.emuURL(),
		"CLIENTS=" + clientID + ":" + clientSecret, "SIGNING_KEY_FILE=" + s.keyPath, "KEY_ID=" + testKID,
	}
	s.startEmulator(t)
	s.pd = start(t, "protected-data", "LISTEN_ADDR="+s.pdAddr, "WRISTBAND_EMULATOR_URL="+s.emuURL(),
		"ALLOWED_CLIENT_IDS="+clientID, "REQUIRE_TOKEN_TYPE=at+JWT", "ALLOWED_SUB_KINDS=client")
	waitStatus(t, s.pdURL()+"/readyz", 200, 30*time.Second)
	data := s.pdURL() + "/api/protected/data"

	mint := func(typ string, override map[string]any) string {
		t.Helper()
		now := time.Now()
		claims := map[string]any{
			"iss": s.emuURL(), "sub": clientID, "client_id": clientID, "sub_kind": "client",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "e2e-" + typ,
		}
		for k, v := range override {
			claims[k] = v
		}
		tok := jwt.New()
		for k, v := range claims {
			if err := tok.Set(k, v); err != nil {
				t.Fatal(err)
			}
		}
		hdr := jws.NewHeaders()
		_ = hdr.Set(jws.KeyIDKey, testKID)
		_ = hdr.Set(jws.TypeKey, typ)
		b, err := jwt.Sign(tok, jwt.WithKey(jwa.RS256, s.key, jws.WithProtectedHeaders(hdr)))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range []struct {
		name   string
		token  string
		status int
		code   string
	}{
		{"the allowed client, from the emulator", emulatorToken(t, s), 200, ""},
		{"another client of the same issuer", mint("at+JWT", map[string]any{"client_id": "other-client", "sub": "other-client"}), 403, "insufficient_scope"},
		{"a user token", mint("at+JWT", map[string]any{"sub_kind": "user", "sub": "user-1"}), 403, "insufficient_scope"},
		{"typ JWT, not an access token", mint("JWT", nil), 401, "invalid_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := get(t, data, "Authorization", "Bearer "+tc.token)
			if r.status != tc.status {
				t.Fatalf("status %d (%s), want %d", r.status, r.body, tc.status)
			}
			if tc.code != "" {
				if ch := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, `Bearer realm="protected-data"`) || !strings.Contains(ch, `error="`+tc.code+`"`) {
					t.Fatalf("WWW-Authenticate %q, want error=%q", ch, tc.code)
				}
				if !strings.Contains(r.body, `"error":"`+tc.code+`"`) {
					t.Fatalf("body %s, want error %q", r.body, tc.code)
				}
			}
		})
	}
}
