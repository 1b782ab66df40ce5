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
	v := newValidator(t, idp, func(c *jwtauth.Config) { c.RefreshInterval = time.Second })
	waitReady(t, v)
	e := newServer(v)
	idp.SetDown(true)
	// Let the background refresh fail a few times.
	before := idp.Fetches()
	eventually(t, "background refreshes against the down IdP", func() bool { return idp.Fetches() >= before+2 })
	if err := v.Ready(); err != nil {
		t.Fatalf("Ready = %v while warm, want nil", err)
	}
	if s := v.Stats(); s.JWKSFetchErrors == 0 {
		t.Fatalf("stats = %+v, want fetch errors", s)
	}
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

func TestUnknownKIDRefetchAgainAfterCooldown(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, func(c *jwtauth.Config) { c.UnknownKIDCooldown = time.Nanosecond })
	waitReady(t, v)
	k := idp.SigningKey()
	for i := range 3 {
		tok := jwtauthtest.Sign(k, map[string]any{"alg": "RS256", "kid": fmt.Sprint("gone-", i), "typ": "at+JWT"}, idp.Claims())
		if _, err := v.Validate(context.Background(), tok); err == nil {
			t.Fatal("unknown kid accepted")
		}
	}
	if s := v.Stats(); s.UnknownKIDRefetches != 3 {
		t.Fatalf("UnknownKIDRefetches = %d, want 3 once the cooldown has passed each time", s.UnknownKIDRefetches)
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
	v := newValidator(t, idp, func(c *jwtauth.Config) { c.RefreshInterval = time.Second })
	waitReady(t, v)
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
	v := newValidator(t, idp, func(c *jwtauth.Config) { c.Leeway = -1 })
	waitReady(t, v)
	// At least 2 s of life: a first use that fails is a bug, not slowness.
	exp := time.Now().Add(3 * time.Second).Truncate(time.Second)
	tok := idp.Mint(map[string]any{"exp": exp.Unix()})
	if _, err := v.Validate(context.Background(), tok); err != nil {
		t.Fatalf("valid token refused before exp: %v", err)
	}
	for !time.Now().After(exp) {
		time.Sleep(50 * time.Millisecond)
	}
	_, err := v.Validate(context.Background(), tok)
	var te *jwtauth.TokenError
	if !errors.As(err, &te) || te.Description != "token expired" {
		t.Fatalf("after exp: %v, want token expired", err)
	}
	if s := v.Stats(); s.Verifications != 1 || s.CacheEntries != 0 {
		t.Fatalf("stats = %+v, want 1 verification and the entry gone", s)
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

// TestKeyWithoutAlg: Wristband's JWKs may lack "alg"; jwx skips such keys
// unless told to infer it. We infer it from the key type.
func TestKeyWithoutAlg(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	idp.SigningKey().OmitAlg = true
	idp.SigningKey().Use = "-"
	v := newValidator(t, idp, nil)
	waitReady(t, v)
	if _, err := v.Validate(context.Background(), idp.Mint(nil)); err != nil {
		t.Fatalf("key without alg/use: %v", err)
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

// TestEmptyJWKSKeepsLastGoodSet: a JWKS with no usable key is treated as a
// failed fetch.
func TestEmptyJWKSKeepsLastGoodSet(t *testing.T) {
	idp := jwtauthtest.NewIdP(t)
	v := newValidator(t, idp, func(c *jwtauth.Config) { c.RefreshInterval = time.Second })
	waitReady(t, v)
	k := idp.SigningKey()
	idp.RemoveKey(k.KID)
	before := idp.Fetches()
	eventually(t, "refreshes of the empty JWKS", func() bool { return idp.Fetches() >= before+2 })
	if _, err := v.Validate(context.Background(), idp.Mint(nil)); err != nil {
		t.Fatalf("after an empty JWKS: %v, want the last good set to serve", err)
	}
}
