package jwtauth_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth/jwtauthtest"
)

func TestClaimsReachTheHandler(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, nil)
	waitReady(t, v)
	tok := idp.Mint(map[string]any{"scope": "read  write", "aud": "x"})
	cl, err := v.Validate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if cl.Issuer != idp.Issuer() || cl.Subject != "client-1" || cl.ClientID != "client-1" || cl.AppID != "app-1" ||
		cl.TenantID != "tenant-1" || cl.SubKind != "client" || !strings.HasPrefix(cl.ID, "jti-") ||
		strings.Join(cl.Scopes, ",") != "read,write" || strings.Join(cl.Audience, ",") != "x" ||
		cl.ExpiresAt.IsZero() || cl.IssuedAt.IsZero() {
		t.Errorf("claims = %+v", cl)
	}
	// Hydra: "scp" array, client in "client_id"; azp as a fallback.
	cl, err = v.Validate(context.Background(), idp.Mint(map[string]any{"scp": []string{"a", "b"}, "client_id": nil, "azp": "hydra-client"}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cl.Scopes, ",") != "a,b" || cl.ClientID != "hydra-client" {
		t.Errorf("hydra-style claims = %+v", cl)
	}
	// Okta: the client in "cid", read when client_id and azp are absent.
	cl, err = v.Validate(context.Background(), idp.Mint(map[string]any{"client_id": nil, "cid": "okta-client"}))
	if err != nil {
		t.Fatal(err)
	}
	if cl.ClientID != "okta-client" {
		t.Errorf("okta-style claims = %+v", cl)
	}
	r := do(t, newServer(v), bearer(tok))
	if r.status != http.StatusOK || !strings.Contains(r.raw.Body.String(), `"ClientID":"client-1"`) {
		t.Fatalf("handler got %d %s", r.status, r.raw.Body.String())
	}
}

func TestJWKSDownCold(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	idp.SetDown(true)
	v := newValidator(t, idp, nil)
	e := newServer(v)
	eventually(t, "a failed JWKS fetch", func() bool { return idp.Fetches() >= 1 })
	if err := v.Ready(); !errors.Is(err, jwtauth.ErrNotReady) {
		t.Fatalf("Ready = %v, want ErrNotReady", err)
	}
	r := do(t, e, bearer(idp.Mint(nil)))
	if r.status != http.StatusServiceUnavailable || r.raw.Header().Get("Retry-After") == "" || r.body["error"] != "temporarily_unavailable" {
		t.Fatalf("cold: %d Retry-After=%q %v, want 503 with Retry-After", r.status, r.raw.Header().Get("Retry-After"), r.body)
	}
	if _, err := v.Validate(context.Background(), idp.Mint(nil)); !errors.Is(err, jwtauth.ErrNotReady) {
		t.Fatalf("Validate = %v, want ErrNotReady", err)
	}
	// The cold-start retries find the IdP once it is back.
	idp.SetDown(false)
	waitReady(t, v)
	if r := do(t, e, bearer(idp.Mint(nil))); r.status != http.StatusOK {
		t.Fatalf("after recovery: %d %v", r.status, r.body)
	}
}

func TestJWKSDownWarm(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v, clk := newFakeClockValidator(t, idp, nil)
	e := newServer(v)
	idp.SetDown(true)
	// The refresh fails, then its retry (1 s later, doubling) fails too.
	for i, d := range []time.Duration{jwtauth.DefaultRefreshInterval, time.Second, 2 * time.Second} {
		n := idp.Fetches()
		eventually(t, "the next refresh timer", func() bool { return clk.armed() > 0 })
		clk.Advance(d)
		eventually(t, fmt.Sprintf("refresh %d against the down IdP", i), func() bool { return idp.Fetches() > n })
	}
	if err := v.Ready(); err != nil {
		t.Fatalf("Ready = %v while warm, want nil", err)
	}
	eventually(t, "the failures counted", func() bool { return v.Stats().JWKSFetchOutcomes[jwtauth.FetchStatus] == 3 })
	// A token never seen (so not cached) still validates with the last good set.
	if r := do(t, e, bearer(idp.Mint(nil))); r.status != http.StatusOK {
		t.Fatalf("warm, IdP down: %d %v, want 200", r.status, r.body)
	}
}

func TestUnknownKIDFlood(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, nil) // cooldown 1 h
	waitReady(t, v)
	e := newServer(v)
	before := idp.Fetches()
	const n = 200
	var wg sync.WaitGroup
	statuses := make([]int, n)
	k := idp.SigningKey()
	c := idp.Claims()
	for i := range n {
		wg.Go(func() {
			tok := jwtauthtest.Sign(k, map[string]any{"alg": "RS256", "kid": fmt.Sprintf("random-%d", i), "typ": "at+JWT"}, c)
			statuses[i] = do(t, e, bearer(tok)).status
		})
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusUnauthorized {
			t.Fatalf("request %d: status %d, want 401", i, s)
		}
	}
	if got := idp.Fetches() - before; got != 1 {
		t.Fatalf("%d random kids caused %d JWKS fetches, want exactly 1 per cooldown", n, got)
	}
	if s := v.Stats(); s.UnknownKIDRefetches != 1 {
		t.Fatalf("UnknownKIDRefetches = %d, want 1", s.UnknownKIDRefetches)
	}
}

// TestUnknownKIDCooldown: with the default cooldown (5 s), a random-kid flood
// costs one JWKS fetch per cooldown while valid tokens keep passing, and a
// key published during the cooldown is accepted on the first request after
// it.
func TestUnknownKIDCooldown(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v, clk := newFakeClockValidator(t, idp, func(c *jwtauth.Config) { c.UnknownKIDCooldown = 0 })
	e := newServer(v)
	k := idp.SigningKey()
	flood := func(round int) {
		t.Helper()
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				tok := jwtauthtest.Sign(k, map[string]any{"alg": "RS256", "kid": fmt.Sprintf("random-%d-%d", round, i), "typ": "at+JWT"}, idp.Claims())
				if s := do(t, e, bearer(tok)).status; s != http.StatusUnauthorized {
					t.Errorf("random kid: %d, want 401", s)
				}
			})
			wg.Go(func() { // a fresh token (not cached) of the key in use before
				if r := do(t, e, bearer(jwtauthtest.Sign(k, jwtauthtest.Header(k), idp.Claims()))); r.status != http.StatusOK {
					t.Errorf("valid token during the flood: %d %v", r.status, r.body)
				}
			})
		}
		wg.Wait()
	}
	before := idp.Fetches()
	flood(0)
	if got := idp.Fetches() - before; got != 1 {
		t.Fatalf("first flood: %d JWKS fetches, want 1", got)
	}
	// A new key appears during the cooldown: refused until it ends...
	newKey := idp.Rotate()
	clk.Advance(jwtauth.DefaultUnknownKIDCooldown - time.Second)
	flood(1)
	if r := do(t, e, bearer(idp.Mint(nil))); r.status != http.StatusUnauthorized || r.body["error_description"] != "unknown kid" {
		t.Fatalf("new key within the cooldown: %d %v, want 401 unknown kid", r.status, r.body)
	}
	if got := idp.Fetches() - before; got != 1 {
		t.Fatalf("within the cooldown: %d JWKS fetches in all, want still 1", got)
	}
	// ... and accepted on the first request after it.
	clk.Advance(time.Second)
	if r := do(t, e, bearer(idp.Mint(nil))); r.status != http.StatusOK {
		t.Fatalf("new key %s after the cooldown: %d %v, want 200", newKey.KID, r.status, r.body)
	}
	if got := idp.Fetches() - before; got != 2 {
		t.Fatalf("after the cooldown: %d JWKS fetches in all, want 2", got)
	}
	if s := v.Stats(); s.UnknownKIDRefetches != 2 || s.Failures[jwtauth.ReasonUnknownKID] != 101 {
		t.Fatalf("stats = %+v, want 2 refetches and 101 unknown-kid failures", s)
	}
}

// A key refused at load (here: published with use "enc") that the IdP then
// fixes is picked up behind the same cooldown as an unknown kid, not only at
// the next periodic refresh.
func TestRefusedKIDIsRefetchedAfterTheCooldown(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	fixed := idp.Rotate() // the signing key from now on...
	idp.SetKeyUse(fixed.KID, "enc")
	v, clk := newFakeClockValidator(t, idp, func(c *jwtauth.Config) { c.UnknownKIDCooldown = 0 }) // ...refused at load; the default cooldown
	e := newServer(v)
	tok := idp.Mint(nil)
	if r := do(t, e, bearer(tok)); r.status != http.StatusUnauthorized || r.body["error_description"] != "key not usable" {
		t.Fatalf("refused key: %d %v, want 401 key not usable", r.status, r.body)
	}
	idp.SetKeyUse(fixed.KID, "sig")
	before := idp.Fetches()
	clk.Advance(jwtauth.DefaultUnknownKIDCooldown)
	if r := do(t, e, bearer(tok)); r.status != http.StatusOK {
		t.Fatalf("key fixed at the IdP, after the cooldown: %d %v, want 200", r.status, r.body)
	}
	if got := idp.Fetches() - before; got != 1 {
		t.Errorf("%d JWKS fetches to pick up the fixed key, want 1", got)
	}
}

// TestKnownKIDsNeverWaitOnRefetch: while an unknown-kid refetch hangs on a
// stalled IdP, tokens with known kids are still answered.
func TestKnownKIDsNeverWaitOnRefetch(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, nil)
	waitReady(t, v)
	e := newServer(v)
	release := idp.Stall()
	defer release()
	before := idp.Fetches()
	unknownDone := make(chan int, 1)
	go func() {
		tok := jwtauthtest.Sign(idp.SigningKey(), map[string]any{"alg": "RS256", "kid": "new-kid", "typ": "at+JWT"}, idp.Claims())
		unknownDone <- do(t, e, bearer(tok)).status
	}()
	eventually(t, "the refetch to reach the stalled IdP", func() bool { return idp.Fetches() > before })
	known := make(chan int, 1)
	go func() { known <- do(t, e, bearer(idp.Mint(nil))).status }()
	select {
	case s := <-known:
		if s != http.StatusOK {
			t.Fatalf("known kid during a stalled refetch: %d, want 200", s)
		}
	case <-time.After(mustNotHang):
		t.Fatal("a known-kid request waited on the unknown-kid refetch")
	}
	select {
	case <-unknownDone:
		t.Fatal("the unknown-kid request finished before its refetch did")
	default:
	}
	release()
	select {
	case s := <-unknownDone:
		if s != http.StatusUnauthorized {
			t.Fatalf("unknown kid: %d, want 401", s)
		}
	case <-time.After(mustNotHang):
		t.Fatal("unknown-kid request hung after the IdP came back")
	}
}

func TestRotationNewKeyAcceptedFirstTime(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, nil)
	waitReady(t, v)
	e := newServer(v)
	if r := do(t, e, bearer(idp.Mint(nil))); r.status != http.StatusOK {
		t.Fatalf("old key: %d", r.status)
	}
	idp.Rotate()
	if r := do(t, e, bearer(idp.Mint(nil))); r.status != http.StatusOK {
		t.Fatalf("first request with the new key: %d %v, want 200", r.status, r.body)
	}
}

func TestRotationRemovedKeyRejectedAfterRefresh(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v, clk := newFakeClockValidator(t, idp, nil)
	e := newServer(v)
	old := idp.SigningKey()
	oldTok := idp.Mint(nil)
	if r := do(t, e, bearer(oldTok)); r.status != http.StatusOK {
		t.Fatalf("old token: %d", r.status)
	}
	idp.Rotate()
	newTok := idp.Mint(nil)
	if r := do(t, e, bearer(newTok)); r.status != http.StatusOK {
		t.Fatalf("new token: %d", r.status)
	}
	if s := v.Stats(); s.CacheEntries != 2 {
		t.Fatalf("cache entries = %d, want 2", s.CacheEntries)
	}
	idp.RemoveKey(old.KID)
	// The background refresh drops the key, and with it its cached token.
	eventually(t, "the refresh timer", func() bool { return clk.armed() > 0 })
	clk.Advance(jwtauth.DefaultRefreshInterval)
	eventually(t, "the old key's cache entry to be dropped", func() bool { return v.Stats().CacheEntries == 1 })
	if r := do(t, e, bearer(oldTok)); r.status != http.StatusUnauthorized || r.body["error_description"] != "unknown kid" {
		t.Fatalf("token of a removed key: %d %v, want 401 unknown kid", r.status, r.body)
	}
	if r := do(t, e, bearer(newTok)); r.status != http.StatusOK {
		t.Fatalf("token of the remaining key: %d", r.status)
	}
}

func TestCachedPathSkipsVerification(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, nil)
	waitReady(t, v)
	e := newServer(v)
	tok := idp.Mint(nil)
	for i := range 3 {
		if r := do(t, e, bearer(tok)); r.status != http.StatusOK {
			t.Fatalf("request %d: %d", i, r.status)
		}
	}
	if s := v.Stats(); s.Verifications != 1 || s.CacheHits != 2 {
		t.Fatalf("stats = %+v, want 1 verification and 2 cache hits", s)
	}
}

func TestCacheDisabled(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, func(c *jwtauth.Config) { c.CacheSize = -1 })
	waitReady(t, v)
	tok := idp.Mint(nil)
	for range 3 {
		if _, err := v.Validate(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if s := v.Stats(); s.Verifications != 3 || s.CacheHits != 0 {
		t.Fatalf("stats = %+v, want 3 verifications", s)
	}
}

// TestCacheNeverOutlivesExp: a cached token is refused once exp (+leeway,
// none here) has passed, without being verified again.
func TestCacheNeverOutlivesExp(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v, clk := newFakeClockValidator(t, idp, func(c *jwtauth.Config) { c.Leeway = -1 })
	exp := clk.Now().Add(3 * time.Second).Truncate(time.Second)
	tok := idp.Mint(map[string]any{"exp": exp.Unix()})
	if _, err := v.Validate(context.Background(), tok); err != nil {
		t.Fatalf("valid token refused before exp: %v", err)
	}
	clk.Advance(exp.Sub(clk.Now()) - time.Millisecond)
	if _, err := v.Validate(context.Background(), tok); err != nil {
		t.Fatalf("valid token refused 1 ms before exp: %v", err)
	}
	clk.Advance(time.Millisecond)
	_, err := v.Validate(context.Background(), tok)
	var te *jwtauth.TokenError
	if !errors.As(err, &te) || te.Description != "token expired" {
		t.Fatalf("at exp: %v, want token expired", err)
	}
	if s := v.Stats(); s.Verifications != 1 || s.CacheEntries != 0 || s.CacheHits != 2 {
		t.Fatalf("stats = %+v, want 1 verification, 2 hits and the entry gone", s)
	}
}

func TestAuthorizationHooks(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, nil)
	waitReady(t, v)
	scoped := newServer(v, jwtauth.RequireScopes("read", "write"))
	clients := newServer(v, jwtauth.AllowClients("client-1", "client-2"))

	if r := do(t, scoped, bearer(idp.Mint(map[string]any{"scope": "write read admin"}))); r.status != http.StatusOK {
		t.Fatalf("all scopes: %d %v", r.status, r.body)
	}
	r := do(t, scoped, bearer(idp.Mint(map[string]any{"scope": "read"})))
	want := `Bearer realm="api", error="insufficient_scope", error_description="token lacks a required scope", scope="read write"`
	if r.status != http.StatusForbidden || r.challenge != want || r.body["error"] != "insufficient_scope" {
		t.Fatalf("missing scope: %d %q %v", r.status, r.challenge, r.body)
	}
	if r := do(t, clients, bearer(idp.Mint(map[string]any{"client_id": "client-2"}))); r.status != http.StatusOK {
		t.Fatalf("allowed client: %d", r.status)
	}
	r = do(t, clients, bearer(idp.Mint(map[string]any{"client_id": "client-3"})))
	if r.status != http.StatusForbidden || !strings.Contains(r.challenge, `error="insufficient_scope"`) || r.body["error_description"] != "client not allowed" {
		t.Fatalf("other client: %d %q %v", r.status, r.challenge, r.body)
	}
}

func TestAudience(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, func(c *jwtauth.Config) { c.Audience = []string{"api-a", "api-b"} })
	waitReady(t, v)
	for _, tc := range []struct {
		name string
		aud  any
		ok   bool
	}{
		{"none", nil, false},
		{"other", "api-c", false},
		{"string", "api-b", true},
		{"array", []string{"x", "api-a"}, true},
		{"empty array", []string{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Validate(context.Background(), idp.Mint(map[string]any{"aud": tc.aud}))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestKeyWithoutAlg: Wristband's JWKs may lack "alg". Such a key gets the
// one allowed algorithm that fits its type, and is refused when several fit
// (RS256 and PS256 for an RSA key): the token's header must never choose.
func TestKeyWithoutAlg(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	idp.SigningKey().OmitAlg = true
	idp.SigningKey().Use = "-"
	ec := jwtauthtest.NewECKey()
	ec.OmitAlg = true
	idp.AddKey(ec)
	v := newValidator(t, idp, func(c *jwtauth.Config) { c.Algorithms = []string{"RS256", "ES256"} })
	waitReady(t, v)
	if _, err := v.Validate(context.Background(), idp.Mint(nil)); err != nil {
		t.Fatalf("RSA key without alg/use: %v", err)
	}
	if _, err := v.Validate(context.Background(), jwtauthtest.Sign(ec, jwtauthtest.Header(ec), idp.Claims())); err != nil {
		t.Fatalf("EC key without alg: %v", err)
	}

	amb := newValidator(t, idp, func(c *jwtauth.Config) { c.Algorithms = []string{"RS256", "PS256", "ES256"} })
	waitReady(t, amb)
	_, err := amb.Validate(context.Background(), idp.Mint(nil))
	var te *jwtauth.TokenError
	if !errors.As(err, &te) || te.Description != "key not usable" || !strings.Contains(err.Error(), "2 allowed algorithms fit") {
		t.Fatalf("RSA key without alg, RS256 and PS256 allowed: %v, want key not usable", err)
	}
}

func TestES256Provider(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	ec := jwtauthtest.NewECKey()
	idp.AddKey(ec)
	v := newValidator(t, idp, func(c *jwtauth.Config) { c.Algorithms = []string{"ES256", "RS256"} })
	waitReady(t, v)
	if _, err := v.Validate(context.Background(), jwtauthtest.Sign(ec, jwtauthtest.Header(ec), idp.Claims())); err != nil {
		t.Fatalf("ES256: %v", err)
	}
	// The EC key must not verify an RS256 token, nor the RSA key an ES256 one.
	h := jwtauthtest.Header(ec)
	h["alg"] = "RS256"
	if _, err := v.Validate(context.Background(), jwtauthtest.Sign(idp.SigningKey(), h, idp.Claims())); err == nil {
		t.Fatal("RS256 token under the EC key's kid accepted")
	}
}

func TestConfigErrors(t *testing.T) {
	_, err := jwtauth.New(context.Background(), jwtauth.Config{Algorithms: []string{"HS256"}, Leeway: 2 * time.Minute, RefreshInterval: time.Millisecond})
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"jwks url is required", "issuer is required", `"HS256"`, "leeway", "refresh interval"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestNewDoesNotBlock(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	release := idp.Stall()
	defer release()
	done := make(chan *jwtauth.Validator, 1)
	go func() { done <- newValidator(t, idp, nil) }()
	select {
	case v := <-done:
		if v.Ready() == nil {
			t.Fatal("ready before any key set was loaded")
		}
	case <-time.After(mustNotHang):
		t.Fatal("New blocked on the first JWKS fetch")
	}
}

// TestCloseEndsAllGoroutines covers the worst case: Close while a fetch
// hangs on a stalled IdP.
func TestCloseEndsAllGoroutines(t *testing.T) {
	idp := jwtauthtest.Start()
	defer idp.Close()
	ignore := goleak.IgnoreCurrent() // after Start: the IdP outlives the Validator
	v, err := jwtauth.New(context.Background(), jwtauth.Config{JWKSURL: idp.JWKSURL(), Issuer: idp.Issuer(), RefreshInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, v)
	_, _ = v.Validate(context.Background(), idp.Mint(nil))
	release := idp.Stall()
	defer release()
	before := idp.Fetches()
	eventually(t, "a refresh to hang on the stalled IdP", func() bool { return idp.Fetches() > before })
	v.Close()
	v.Close() // idempotent
	if err := eventuallyNoLeaks(ignore); err != nil {
		t.Fatal(err)
	}
}

func TestContextCancelEndsBackgroundWork(t *testing.T) {
	idp := jwtauthtest.Start()
	defer idp.Close()
	ignore := goleak.IgnoreCurrent() // after Start: the IdP outlives the Validator
	ctx, cancel := context.WithCancel(context.Background())
	v, err := jwtauth.New(ctx, jwtauth.Config{JWKSURL: idp.JWKSURL(), Issuer: idp.Issuer()})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, v)
	cancel()
	if err := eventuallyNoLeaks(ignore); err != nil {
		t.Fatal(err)
	}
	v.Close()
}

// TestLogsNeverContainTheToken: one line per rejection, with the reason.
func TestLogsNeverContainTheToken(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	var buf syncBuffer
	v := newValidator(t, idp, func(c *jwtauth.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	waitReady(t, v)
	e := newServer(v)
	good := idp.Mint(nil)
	expired := idp.Mint(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})
	do(t, e, bearer(good))
	do(t, e, bearer(expired))
	do(t, e, bearer(good+"x"))
	logs := buf.String()
	for _, tok := range []string{good, expired} {
		for _, part := range strings.Split(tok, ".") {
			if strings.Contains(logs, part) {
				t.Fatalf("logs contain part of a token:\n%s", logs)
			}
		}
	}
	if n := strings.Count(logs, `"msg":"request rejected"`); n != 2 {
		t.Fatalf("%d rejection lines, want 2:\n%s", n, logs)
	}
	if !strings.Contains(logs, `"reason":"token expired"`) || !strings.Contains(logs, `"reason":"malformed token"`) {
		t.Fatalf("logs lack the reasons:\n%s", logs)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWellFormedJWKSIsHonoured: a 200 with a well-formed JWKS is the IdP's
// word, applied at the next fetch: a key turned "use": "enc", or a set
// emptied, stops verifying at once, cached tokens included.
func TestWellFormedJWKSIsHonoured(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revoke func(*jwtauthtest.IdP, string)
		why    string
	}{
		{"use enc", func(p *jwtauthtest.IdP, kid string) { p.SetKeyUse(kid, "enc") }, "key not usable"},
		{"empty set", func(p *jwtauthtest.IdP, kid string) { p.RemoveKey(kid) }, "unknown kid"},
		{"empty set, raw", func(p *jwtauthtest.IdP, _ string) { p.SetBody([]byte(`{"keys":[]}`)) }, "unknown kid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idp := jwtauthtest.NewIdP(t)
			v, clk := newFakeClockValidator(t, idp, nil)
			tok := idp.Mint(nil)
			if _, err := v.Validate(context.Background(), tok); err != nil {
				t.Fatal(err)
			}
			tc.revoke(idp, idp.SigningKey().KID)
			before := idp.Fetches()
			clk.Advance(jwtauth.DefaultRefreshInterval)
			eventually(t, "the refresh", func() bool { return v.Stats().JWKSLoads >= 2 })
			for _, tk := range []string{tok, idp.Mint(nil)} { // cached, and new
				_, err := v.Validate(context.Background(), tk)
				var te *jwtauth.TokenError
				if !errors.As(err, &te) || te.Description != tc.why {
					t.Fatalf("after revocation: %v, want %q", err, tc.why)
				}
			}
			// The refresh, and at most one unknown-kid refetch.
			if n := idp.Fetches() - before; n < 1 || n > 2 {
				t.Fatalf("%d fetches after the revocation, want 1 or 2", n)
			}
			if v.Ready() != nil {
				t.Fatalf("Ready = %v: a loaded (even empty) set keeps the validator ready", v.Ready())
			}
		})
	}
}

// TestFailedRefreshKeepsLastGoodSet: what is not a well-formed 200 JWKS
// (an error status, garbage, an object without "keys") changes nothing.
func TestFailedRefreshKeepsLastGoodSet(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(*jwtauthtest.IdP)
	}{
		{"503", func(p *jwtauthtest.IdP) { p.SetDown(true) }},
		{"not JSON", func(p *jwtauthtest.IdP) { p.SetBody([]byte(`<html>maintenance</html>`)) }},
		{"no keys member", func(p *jwtauthtest.IdP) { p.SetBody([]byte(`{}`)) }},
		{"keys is not an array", func(p *jwtauthtest.IdP) { p.SetBody([]byte(`{"keys":{}}`)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idp := jwtauthtest.NewIdP(t)
			v, clk := newFakeClockValidator(t, idp, nil)
			tc.break_(idp)
			before := v.Stats().JWKSFetchErrors
			clk.Advance(jwtauth.DefaultRefreshInterval)
			eventually(t, "the failed refresh", func() bool { return v.Stats().JWKSFetchErrors > before })
			if _, err := v.Validate(context.Background(), idp.Mint(nil)); err != nil {
				t.Fatalf("after a failed refresh: %v, want the last good set to serve", err)
			}
		})
	}
}
