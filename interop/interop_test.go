//go:build interop

package interop

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	audience  = "https://protected-data.example"
	scope     = "read:data"
	okJSON    = `{"publicData":"hello world","protectedData":"here I am"}`
	publicAPI = "/api/public/data"
	dataAPI   = "/api/protected/data"
)

// wantPublic fails unless the gateway's public call answers 200 with the
// demo's JSON.
func wantPublic(t testing.TB, gw *service) {
	t.Helper()
	r := get(t, gw.url+publicAPI)
	if r.status != 200 || strings.TrimSpace(r.body) != okJSON {
		t.Fatalf("GET %s: %d %s, want 200 %s", publicAPI, r.status, r.body, okJSON)
	}
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// wantRefused fails unless protected-data answers status with an RFC 6750
// challenge carrying errCode.
func wantRefused(t testing.TB, r reply, status int, errCode string) {
	t.Helper()
	wa := r.header.Get("WWW-Authenticate")
	if r.status != status || !strings.HasPrefix(wa, "Bearer") || !strings.Contains(wa, `error="`+errCode+`"`) {
		t.Fatalf("got %d WWW-Authenticate %q body %s; want %d with Bearer error=%q", r.status, wa, r.body, status, errCode)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Errorf("body is not JSON: %q", r.body)
	}
}

// TestScopeAndAudience: protected-data requires a scope and an audience;
// the gateway asks Hydra for both (TOKEN_SCOPES, TOKEN_AUDIENCE) and gets
// through; tokens without them are refused as RFC 6750 says.
func TestScopeAndAudience(t *testing.T) {
	h := startHydra(t)
	const id, secret = "gw-basic", "basic-secret-must-never-be-logged"
	h.createClient(t, m2mClient(id, secret, "client_secret_basic", []string{scope, "other"}, []string{audience}))
	pd := startPD(t, h, "AUDIENCE="+audience, "REQUIRED_SCOPES="+scope)

	// The secret from a file with a trailing newline, as a mounted secret has.
	secretFile := writeFile(t, "client-secret", []byte(secret+"\n"))
	since := time.Now()
	gw := startGW(t, h, pd, "CLIENT_ID="+id, "CLIENT_SECRET_FILE="+secretFile,
		"TOKEN_SCOPES="+scope, "TOKEN_AUDIENCE="+audience)
	gw.ready(t)

	t.Run("the gateway asks for the scope and the audience and gets through", func(t *testing.T) {
		wantPublic(t, gw)
		reqs := h.log.tokens(since)
		if len(reqs) == 0 {
			t.Fatal("no token request seen")
		}
		f := reqs[0].form
		if f.Get("scope") != scope || f.Get("audience") != audience || f.Get("grant_type") != "client_credentials" {
			t.Errorf("token request form %v; want scope=%q audience=%q", f, scope, audience)
		}
		if !reqs[0].basicAuth || f.Has("client_secret") {
			t.Errorf("client_secret_basic: Basic header %v, client_secret in form %v", reqs[0].basicAuth, f.Has("client_secret"))
		}
	})

	t.Run("a token without the scope: 403 insufficient_scope", func(t *testing.T) {
		tok := h.token(t, id, secret, url.Values{"audience": {audience}})
		r := get(t, pd.url+dataAPI, bearer(tok)...)
		wantRefused(t, r, http.StatusForbidden, "insufficient_scope")
		if wa := r.header.Get("WWW-Authenticate"); !strings.Contains(wa, `scope="`+scope+`"`) {
			t.Errorf("WWW-Authenticate %q does not name the required scope", wa)
		}
		t.Logf("token without the scope: %d %s", r.status, r.header.Get("WWW-Authenticate"))
	})

	t.Run("a token without the audience: 401 invalid_token", func(t *testing.T) {
		tok := h.token(t, id, secret, url.Values{"scope": {scope}})
		r := get(t, pd.url+dataAPI, bearer(tok)...)
		wantRefused(t, r, http.StatusUnauthorized, "invalid_token")
		t.Logf("token without the audience: %d %s", r.status, r.header.Get("WWW-Authenticate"))
	})

	t.Run("a gateway that asks for neither is refused: 502", func(t *testing.T) {
		bare := startGW(t, h, pd, "CLIENT_ID="+id, "CLIENT_SECRET="+secret)
		bare.ready(t)
		r := get(t, bare.url+publicAPI)
		if r.status != http.StatusBadGateway {
			t.Fatalf("got %d %s; want 502 (protected-data refuses a token without scope and audience)", r.status, r.body)
		}
		noSecrets(t, bare.proc, secret)
	})

	t.Run("client_secret_post", func(t *testing.T) {
		const pid, psecret = "gw-post", "post-secret-must-never-be-logged"
		h.createClient(t, m2mClient(pid, psecret, "client_secret_post", []string{scope}, []string{audience}))
		since := time.Now()
		post := startGW(t, h, pd, "CLIENT_ID="+pid, "CLIENT_SECRET="+psecret, "TOKEN_AUTH_METHOD=client_secret_post",
			"TOKEN_SCOPES="+scope, "TOKEN_AUDIENCE="+audience)
		post.ready(t)
		wantPublic(t, post)
		reqs := h.log.tokens(since)
		if len(reqs) == 0 || reqs[0].basicAuth || reqs[0].form.Get("client_id") != pid || !reqs[0].form.Has("client_secret") {
			t.Errorf("client_secret_post: want client_id and client_secret in the form and no Basic header; got %+v", reqs)
		}
		noSecrets(t, post.proc, psecret)

		// Hydra holds clients to their registered method: the default
		// (Basic) against this client is refused, so the setting matters.
		since = time.Now()
		basic := startGW(t, h, pd, "CLIENT_ID="+pid, "CLIENT_SECRET="+psecret, "TOKEN_SCOPES="+scope, "TOKEN_AUDIENCE="+audience)
		refused := waitTokenStatus(t, h, pid, since, http.StatusUnauthorized)
		r := get(t, basic.url+publicAPI)
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Fatalf("wrong auth method: got %d Retry-After %q %s; want 503 with Retry-After", r.status, r.header.Get("Retry-After"), r.body)
		}
		t.Logf("client_secret_basic against a client_secret_post client: Hydra %d, gateway %d %s", refused.status, r.status, strings.TrimSpace(r.body))
		noSecrets(t, basic.proc, psecret)
	})

	noSecrets(t, gw.proc, secret)
}

// waitTokenStatus waits until the proxy has seen a token request from
// clientID answered with one of statuses.
func waitTokenStatus(t testing.TB, h *hydra, clientID string, since time.Time, statuses ...int) event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, ev := range h.log.tokens(since) {
			if ev.clientID == clientID && slices.Contains(statuses, ev.status) {
				return ev
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no token request from %s answered %v within 30s; seen %+v", clientID, statuses, h.log.tokens(since))
	return event{}
}

// TestES256Key: Hydra signs with a new ES256 key. protected-data accepts
// it when ALGORITHMS lists ES256 and refuses it when ALGORITHMS is RS256
// only: an allow-list that names one algorithm means exactly that one.
func TestES256Key(t *testing.T) {
	h := startHydra(t)
	const id, secret = "gw-es", "es-secret-must-never-be-logged"
	h.createClient(t, m2mClient(id, secret, "client_secret_basic", []string{scope}, []string{audience}))
	h.createKey(t, "ES256", "es256-key-1")
	tok := h.token(t, id, secret, url.Values{"scope": {scope}, "audience": {audience}})
	if hdr := tokenHeader(t, tok); hdr["alg"] != "ES256" || hdr["kid"] != "es256-key-1" {
		t.Fatalf("hydra signed with %v, want ES256 es256-key-1", hdr)
	}
	req := []string{"AUDIENCE=" + audience, "REQUIRED_SCOPES=" + scope}
	gwEnv := []string{"CLIENT_ID=" + id, "CLIENT_SECRET=" + secret, "TOKEN_SCOPES=" + scope, "TOKEN_AUDIENCE=" + audience}

	t.Run("ALGORITHMS=RS256,ES256: accepted", func(t *testing.T) {
		pd := startPD(t, h, append(req, "ALGORITHMS=RS256,ES256")...)
		if r := get(t, pd.url+dataAPI, bearer(tok)...); r.status != 200 {
			t.Fatalf("direct: %d %s", r.status, r.body)
		}
		gw := startGW(t, h, pd, gwEnv...)
		gw.ready(t)
		wantPublic(t, gw)
	})

	t.Run("ALGORITHMS=RS256: refused (401), as configured", func(t *testing.T) {
		pd := startPD(t, h, append(req, "ALGORITHMS=RS256")...)
		r := get(t, pd.url+dataAPI, bearer(tok)...)
		wantRefused(t, r, http.StatusUnauthorized, "invalid_token")
		t.Logf("ES256 token, ALGORITHMS=RS256: %d %s", r.status, r.header.Get("WWW-Authenticate"))
		gw := startGW(t, h, pd, gwEnv...)
		gw.ready(t)
		if r := get(t, gw.url+publicAPI); r.status != http.StatusBadGateway {
			t.Fatalf("gateway: %d %s; want 502 (its token is refused)", r.status, r.body)
		}
	})

	t.Run("ALGORITHMS unset: the default is RS256, so refused", func(t *testing.T) {
		pd := startPD(t, h, req...)
		r := get(t, pd.url+dataAPI, bearer(tok)...)
		wantRefused(t, r, http.StatusUnauthorized, "invalid_token")
		t.Logf("ES256 token, ALGORITHMS unset: %d %s", r.status, r.header.Get("WWW-Authenticate"))
	})
}

// defaultCooldown is protected-data's JWKS_REFRESH_COOLDOWN default.
const defaultCooldown = 5 * time.Second

// TestKeyRotation: a second and a third signing key, created seconds
// apart while protected-data is warm, are each accepted on the first
// request after the unknown-kid refetch cooldown; the refused requests in
// between cost at most one JWKS fetch per cooldown, and tokens of the
// previous key keep passing meanwhile.
func TestKeyRotation(t *testing.T) {
	h := startHydra(t)
	const id, secret = "gw-rotate", "rotate-secret-must-never-be-logged"
	h.createClient(t, m2mClient(id, secret, "client_secret_basic", []string{scope}, []string{audience}))
	form := url.Values{"scope": {scope}, "audience": {audience}}
	tok := h.token(t, id, secret, form)
	pd := startPD(t, h, "AUDIENCE="+audience, "REQUIRED_SCOPES="+scope, "ALGORITHMS=RS256,ES256")
	if r := get(t, pd.url+dataAPI, bearer(tok)...); r.status != 200 {
		t.Fatalf("first key: %d %s", r.status, r.body)
	}
	t.Logf("first key %v accepted; protected-data is warm", tokenHeader(t, tok)["kid"])

	prev := tok // the previous key's token: valid traffic must not notice
	var fetchGaps []time.Duration
	// Key 2 made by Hydra (ES256: an RSA-4096 key can take Hydra longer
	// than its 10 s write timeout on a busy machine); key 3 an RS256 key
	// brought by the operator (PUT), as when keys come from a KMS.
	for i, alg := range []string{"ES256", "RS256"} {
		kid := fmt.Sprintf("rotated-%d-%s", i+2, strings.ToLower(alg))
		created := time.Now()
		if alg == "ES256" {
			h.createKey(t, alg, kid)
		} else {
			h.importRSAKey(t, kid)
		}
		tok := h.token(t, id, secret, form)
		if hdr := tokenHeader(t, tok); hdr["kid"] != kid {
			t.Fatalf("hydra signs with %v, want the new key %s", hdr["kid"], kid)
		}
		before := h.log.jwks(time.Time{})
		lastFetch := before[len(before)-1].at
		first := time.Now()
		var refused []reply
		var accepted reply
		for deadline := first.Add(defaultCooldown + 10*time.Second); ; {
			r := get(t, pd.url+dataAPI, bearer(tok)...)
			if r.status == 200 {
				accepted = r
				break
			}
			wantRefused(t, r, http.StatusUnauthorized, "invalid_token")
			refused = append(refused, r)
			if v := get(t, pd.url+dataAPI, bearer(prev)...); v.status != 200 {
				t.Errorf("a token of the previous key got %d %s while the new kid was refused", v.status, v.body)
			}
			if time.Now().After(deadline) {
				t.Fatalf("key %s: still refused %s after its first use", kid, time.Since(first))
			}
			time.Sleep(100 * time.Millisecond)
		}
		fetches := h.log.jwks(first)
		t.Logf("key %d (%s %s): created %.1fs before first use; accepted %.2fs after first use, %d refused requests, %d JWKS fetch(es), last fetch before %.2fs earlier",
			i+2, alg, kid, first.Sub(created).Seconds(), accepted.got.Sub(first).Seconds(), len(refused), len(fetches), first.Sub(lastFetch).Seconds())
		// The first request sent a cooldown (plus scheduling slack) after the
		// last fetch must succeed: nothing may hold a new key back longer.
		for _, r := range refused {
			if late := r.sent.Sub(lastFetch); late > defaultCooldown+time.Second {
				t.Errorf("key %s refused on a request sent %.2fs after the last JWKS fetch; the cooldown is %s", kid, late.Seconds(), defaultCooldown)
			}
		}
		// Ten refused requests a second must not become ten fetches.
		if len(fetches) > 2 {
			t.Errorf("key %s: %d JWKS fetches while %d requests were refused; want at most one per cooldown", kid, len(fetches), len(refused))
		}
		all := h.log.jwks(time.Time{})
		if n := len(all); n >= 2 {
			fetchGaps = append(fetchGaps, all[n-1].at.Sub(all[n-2].at))
		}
		prev = tok
		time.Sleep(time.Second) // "seconds apart"
	}
	// Measured cooldown: the gap between the two refetches when the third
	// key came inside the cooldown of the second's refetch.
	t.Logf("gaps between the last JWKS fetches at each rotation: %v (JWKS_REFRESH_COOLDOWN default %s)", fetchGaps, defaultCooldown)
	if n := len(fetchGaps); n > 0 && fetchGaps[n-1] < defaultCooldown-500*time.Millisecond {
		t.Errorf("two JWKS refetches %s apart; the cooldown is %s", fetchGaps[n-1], defaultCooldown)
	}
}

// TestDeletedClient: the gateway's client is deleted in Hydra. Once its
// token is spent the gateway answers 503 with a Retry-After that says when
// it will next ask Hydra, asks rarely however many calls come, and is back
// soon after the client is re-created with the same id and secret.
func TestDeletedClient(t *testing.T) {
	h := startHydra(t)
	const id, secret = "gw-deleted", "deleted-secret-must-never-be-logged"
	spec := m2mClient(id, secret, "client_secret_basic", []string{scope}, []string{audience})
	// Short tokens so that the gateway needs a new one soon after the
	// deletion (Hydra's JWTs stay valid until exp: nothing revokes them).
	spec["client_credentials_grant_access_token_lifespan"] = "10s"
	h.createClient(t, spec)
	pd := startPD(t, h, "AUDIENCE="+audience, "REQUIRED_SCOPES="+scope)
	gw := startGW(t, h, pd, "CLIENT_ID="+id, "CLIENT_SECRET="+secret, "TOKEN_SCOPES="+scope, "TOKEN_AUDIENCE="+audience)
	gw.ready(t)
	wantPublic(t, gw)

	deleted := time.Now()
	h.deleteClient(t, id)

	// Poll until the spent token shows as 503.
	var firstDown reply
	for deadline := deleted.Add(30 * time.Second); ; {
		r := get(t, gw.url+publicAPI)
		if r.status == http.StatusServiceUnavailable {
			firstDown = r
			break
		}
		if r.status != 200 {
			t.Fatalf("after the deletion: %d %s; want 200 until the token is spent, then 503", r.status, r.body)
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway still answers 200 30s after its client was deleted (tokens live 10s)")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("first 503 %.1fs after the deletion", firstDown.got.Sub(deleted).Seconds())

	// The outage: one poller every 100 ms, and every second a burst of 20
	// concurrent calls, for 12 s.
	const outage = 12 * time.Second
	var (
		mu    sync.Mutex
		downs = []reply{firstDown}
		calls int
	)
	record := func(r reply, err error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if err != nil {
			t.Errorf("during the outage: %v", err)
			return
		}
		if r.status != http.StatusServiceUnavailable {
			t.Errorf("during the outage: %d %s; want 503", r.status, r.body)
			return
		}
		downs = append(downs, r)
	}
	end := time.Now().Add(outage)
	var wg sync.WaitGroup
	for time.Now().Before(end) {
		for range 20 {
			wg.Add(1)
			go func() { defer wg.Done(); record(try(http.MethodGet, gw.url+publicAPI, nil)) }()
		}
		for range 10 {
			record(try(http.MethodGet, gw.url+publicAPI, nil))
			time.Sleep(100 * time.Millisecond)
		}
	}
	wg.Wait()

	recreated := time.Now()
	h.createClient(t, spec)
	var back reply
	for deadline := recreated.Add(60 * time.Second); ; {
		r := get(t, gw.url+publicAPI)
		if r.status == 200 {
			back = r
			break
		}
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("after re-creating the client: %d %s", r.status, r.body)
		}
		downs = append(downs, r)
		if time.Now().After(deadline) {
			t.Fatal("the gateway is still down 60s after its client was re-created")
		}
		time.Sleep(100 * time.Millisecond)
	}
	recovery := back.got.Sub(recreated)

	tokens := h.log.tokens(deleted)
	var failed int
	var times []string
	for _, ev := range tokens {
		if ev.status != 200 {
			failed++
		}
		times = append(times, fmt.Sprintf("+%.1fs:%d", ev.at.Sub(deleted).Seconds(), ev.status))
	}
	down := back.got.Sub(firstDown.sent)
	t.Logf("outage: %d calls, %d answered 503, over %.1fs; %d token requests to Hydra (%d refused): %s",
		calls, len(downs), down.Seconds(), len(tokens), failed, strings.Join(times, " "))
	t.Logf("recovery: 200 again %.2fs after the client was re-created", recovery.Seconds())

	// No storm: at most one token request a second on average, however
	// many calls arrive (here about 30 a second).
	if limit := int(down/time.Second) + 2; len(tokens) > limit {
		t.Errorf("%d token requests during a %.0fs outage; want at most %d", len(tokens), down.Seconds(), limit)
	}

	// Honest Retry-After: every 503 names, in whole seconds, when the
	// gateway next asks Hydra.
	ras := map[int]int{}
	var lastRA int
	for _, r := range downs {
		ra, err := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || ra < 1 {
			t.Errorf("503 with Retry-After %q; want a whole number of seconds >= 1", r.header.Get("Retry-After"))
			continue
		}
		ras[ra]++
		lastRA = ra
		// The next attempt after the answer: a call may itself trigger an
		// attempt and report its failure, with the time of the one after.
		var next time.Time
		for _, ev := range tokens {
			if ev.at.After(r.got) {
				next = ev.at
				break
			}
		}
		announced := time.Duration(ra) * time.Second
		switch {
		case next.IsZero():
			t.Errorf("503 at +%.1fs said Retry-After %d; no token request followed", r.sent.Sub(deleted).Seconds(), ra)
		case next.After(r.got.Add(announced + 1500*time.Millisecond)):
			t.Errorf("503 at +%.1fs said Retry-After %d, but the gateway next asked Hydra %.1fs later",
				r.got.Sub(deleted).Seconds(), ra, next.Sub(r.got).Seconds())
		case next.Before(r.got.Add(announced - 1500*time.Millisecond)):
			t.Errorf("503 at +%.1fs said Retry-After %d, but the gateway asked Hydra again after only %.1fs",
				r.got.Sub(deleted).Seconds(), ra, next.Sub(r.got).Seconds())
		}
	}
	t.Logf("Retry-After values seen (value: count): %v", ras)
	if lastRA > 0 && recovery > time.Duration(lastRA)*time.Second+1500*time.Millisecond {
		t.Errorf("back %.1fs after the re-creation, but the last 503 said Retry-After %d", recovery.Seconds(), lastRA)
	}
	if recovery > statedRecovery+1500*time.Millisecond {
		t.Errorf("back %.1fs after the re-creation; pkg/m2m states %s under load", recovery.Seconds(), statedRecovery)
	}

	// The cause is logged once per state change (and once a minute while
	// it lasts), not once per call.
	var warns int
	for _, line := range strings.Split(gw.out.String(), "\n") {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			warns++
		}
	}
	t.Logf("gateway log: %d WARN/ERROR lines for %d calls answered 503", warns, len(downs))
	if warns > 10 {
		t.Errorf("%d WARN/ERROR lines in the gateway's log during a %.0fs outage; want the cause once per state change", warns, down.Seconds())
	}
	noSecrets(t, gw.proc, secret)
}

// statedRecovery: pkg/m2m states that, while callers keep asking, a client
// fixed at the IdP is noticed within its RetryInterval (default 2 s).
const statedRecovery = 2 * time.Second
