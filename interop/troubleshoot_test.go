//go:build interop

package interop

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTroubleshooting reproduces each row of the troubleshooting table in
// docs/oauth2-servers.md against Hydra: the misconfiguration, the symptom
// a user sees at the gateway and at protected-data. It fails if a symptom
// changes, so the table stays true.
func TestTroubleshooting(t *testing.T) {
	h := startHydra(t)
	const id, secret = "gw-trouble", "trouble-secret-must-never-be-logged"
	h.createClient(t, m2mClient(id, secret, "client_secret_basic", []string{scope}, []string{audience}))
	good := url.Values{"scope": {scope}, "audience": {audience}}
	tok := h.token(t, id, secret, good) // also makes Hydra's signing key
	pdReq := []string{"AUDIENCE=" + audience, "REQUIRED_SCOPES=" + scope}
	gwGood := []string{"CLIENT_ID=" + id, "CLIENT_SECRET=" + secret, "TOKEN_SCOPES=" + scope, "TOKEN_AUDIENCE=" + audience}
	pd := startPD(t, h, pdReq...)
	if r := get(t, pd.url+dataAPI, bearer(tok)...); r.status != 200 {
		t.Fatalf("the correct configuration is refused: %d %s", r.status, r.body)
	}

	// pdCase: protected-data misconfigured; the gateway's call and a good
	// token sent directly show the symptom.
	pdCase := func(t *testing.T, pdEnv []string, wantDirect, wantGW int, wantErr string, wantLog ...string) {
		t.Helper()
		var bad *service
		if wantDirect == http.StatusServiceUnavailable {
			bad = startPDUnready(t, h, pdEnv...) // never gets keys
		} else {
			bad = startPD(t, h, pdEnv...)
		}
		r := get(t, bad.url+dataAPI, bearer(tok)...)
		if r.status != wantDirect || (wantErr != "" && !strings.Contains(r.header.Get("WWW-Authenticate"), `error="`+wantErr+`"`)) {
			t.Errorf("protected-data: %d WWW-Authenticate %q %s; want %d %s", r.status, r.header.Get("WWW-Authenticate"), r.body, wantDirect, wantErr)
		}
		t.Logf("protected-data answers %d, WWW-Authenticate: %s, body %s", r.status, r.header.Get("WWW-Authenticate"), strings.TrimSpace(r.body))
		gw := startGW(t, h, bad, gwGood...)
		gw.ready(t)
		if wantGW == http.StatusServiceUnavailable {
			waitStatus(t, gw.proc, gw.url+publicAPI, wantGW, 10*time.Second)
		}
		g := get(t, gw.url+publicAPI)
		if g.status != wantGW {
			t.Errorf("gateway: %d %s; want %d", g.status, g.body, wantGW)
		}
		t.Logf("gateway answers %d %s", g.status, strings.TrimSpace(g.body))
		logLines(t, bad.proc, "warn", "error")
		for _, w := range wantLog {
			if !strings.Contains(bad.out.String(), w) {
				t.Errorf("protected-data's log does not show %s", w)
			}
		}
	}

	// gwCase: the gateway misconfigured against the good protected-data.
	gwCase := func(t *testing.T, gwEnv []string, wantHydra, wantGW int) {
		t.Helper()
		since := time.Now()
		gw := startGW(t, h, pd, gwEnv...)
		if wantHydra != 0 && wantHydra != 200 {
			ev := waitTokenStatus(t, h, id, since, wantHydra)
			t.Logf("Hydra answers the token request %d %s (form %v)", ev.status, ev.errBody, ev.form)
		} else if wantHydra == 200 {
			gw.ready(t)
		}
		g := get(t, gw.url+publicAPI)
		if g.status != wantGW {
			t.Errorf("gateway: %d %s; want %d", g.status, g.body, wantGW)
		}
		if n := len(h.log.tokens(since)); wantHydra == 0 && n != 0 { // never reaches Hydra
			t.Errorf("%d token requests reached Hydra; want none", n)
		}
		if g.status == http.StatusServiceUnavailable && g.header.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
		t.Logf("gateway answers %d (Retry-After %q) %s", g.status, g.header.Get("Retry-After"), strings.TrimSpace(g.body))
		logLines(t, gw.proc, "warn", "error")
		noSecrets(t, gw.proc, secret)
	}

	// The log names both issuers (not secret): that is what shows the slash.
	quoted := func(s string) string { b, _ := json.Marshal(strconv.Quote(s)); return string(b[1 : len(b)-1]) }
	t.Run("issuer with a trailing slash", func(t *testing.T) {
		pdCase(t, append(pdReq, "ISSUER="+h.url+"/"), 401, 502, "invalid_token", quoted(h.url+"/"), quoted(h.url))
	})
	t.Run("issuer with https for an http issuer", func(t *testing.T) {
		https := strings.Replace(h.url, "http://", "https://", 1)
		pdCase(t, append(pdReq, "ISSUER="+https), 401, 502, "invalid_token", quoted(https), quoted(h.url))
	})
	t.Run("JWKS_URL with https for an http server", func(t *testing.T) {
		pdCase(t, append(pdReq, "JWKS_URL="+strings.Replace(h.jwksURL(), "http://", "https://", 1)), 503, 503, "")
	})
	t.Run("audience required but not requested", func(t *testing.T) {
		gwCase(t, []string{"CLIENT_ID=" + id, "CLIENT_SECRET=" + secret, "TOKEN_SCOPES=" + scope}, 200, 502)
	})
	t.Run("audience requested but not allowed for the client", func(t *testing.T) {
		gwCase(t, []string{"CLIENT_ID=" + id, "CLIENT_SECRET=" + secret, "TOKEN_SCOPES=" + scope, "TOKEN_AUDIENCE=https://other.example"}, 400, 503)
	})
	t.Run("scope required but not requested", func(t *testing.T) {
		gwCase(t, []string{"CLIENT_ID=" + id, "CLIENT_SECRET=" + secret, "TOKEN_AUDIENCE=" + audience}, 200, 502)
	})
	t.Run("scope requested but not allowed for the client", func(t *testing.T) {
		gwCase(t, []string{"CLIENT_ID=" + id, "CLIENT_SECRET=" + secret, "TOKEN_SCOPES=admin", "TOKEN_AUDIENCE=" + audience}, 400, 503)
	})
	t.Run("wrong client secret", func(t *testing.T) {
		gwCase(t, []string{"CLIENT_ID=" + id, "CLIENT_SECRET=not-the-secret", "TOKEN_SCOPES=" + scope, "TOKEN_AUDIENCE=" + audience}, 401, 503)
	})
	t.Run("unknown client id", func(t *testing.T) {
		since := time.Now()
		gw := startGW(t, h, pd, "CLIENT_ID=no-such-client", "CLIENT_SECRET="+secret, "TOKEN_SCOPES="+scope, "TOKEN_AUDIENCE="+audience)
		ev := waitTokenStatus(t, h, "no-such-client", since, http.StatusUnauthorized)
		g := get(t, gw.url+publicAPI)
		if g.status != http.StatusServiceUnavailable {
			t.Errorf("gateway: %d %s; want 503", g.status, g.body)
		}
		t.Logf("Hydra %d %s; gateway %d (Retry-After %q) %s", ev.status, ev.errBody, g.status, g.header.Get("Retry-After"), strings.TrimSpace(g.body))
		logLines(t, gw.proc, "warn", "error")
	})
	t.Run("TOKEN_URL with https for an http server", func(t *testing.T) {
		env := append([]string{"TOKEN_URL=" + strings.Replace(h.tokenURL(), "http://", "https://", 1)}, gwGood...)
		gwCase(t, env, 0, 503)
	})
}

// startPDUnready is startPD without waiting for /readyz: some
// misconfigurations never get ready.
func startPDUnready(t testing.TB, h *hydra, extra ...string) *service {
	t.Helper()
	addr := freeAddr(t)
	env := append(append([]string{}, commonEnv...),
		"LISTEN_ADDR="+addr, "JWKS_URL="+h.jwksURL(), "ISSUER="+h.url)
	s := &service{proc: start(t, "protected-data", binDir+"/protected-data", nil, append(env, extra...)...), url: "http://" + addr}
	waitStatus(t, s.proc, s.url+"/healthz", 200, 30*time.Second)
	return s
}

// logLines logs the process's JSON log lines at the given levels, with
// their message and attributes: what an operator would read.
func logLines(t testing.TB, p *proc, levels ...string) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(p.out.String()))
	seen := map[string]bool{}
	for {
		var line map[string]any
		if err := dec.Decode(&line); err == io.EOF {
			break
		} else if err != nil {
			return
		}
		lvl, _ := line["level"].(string)
		for _, want := range levels {
			if strings.EqualFold(lvl, want) {
				delete(line, "time")
				b, _ := json.Marshal(line)
				if !seen[string(b)] {
					seen[string(b)] = true
					t.Logf("%s log: %s", p.name, b)
				}
			}
		}
	}
}
