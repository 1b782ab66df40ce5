package jwtauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwt"
)

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }
func (c fixedClock) After(time.Duration) (<-chan time.Time, func()) {
	return nil, func() {}
}

// jwxRegistered is what checkClaims did before checkRegistered: the
// registered claims set on a jwt.Token and checked by jwx's jwt.Validate,
// its errors mapped to ours. checkRegistered must answer the same.
func jwxRegistered(v *Validator, c *Claims, hasIss, hasAud bool) *TokenError {
	tok := jwt.New()
	if hasIss {
		_ = tok.Set(jwt.IssuerKey, c.Issuer)
	}
	if hasAud {
		_ = tok.Set(jwt.AudienceKey, c.Audience)
	}
	for k, t := range map[string]time.Time{jwt.ExpirationKey: c.ExpiresAt, jwt.NotBeforeKey: c.NotBefore, jwt.IssuedAtKey: c.IssuedAt} {
		if !t.IsZero() {
			_ = tok.Set(k, t)
		}
	}
	opts := []jwt.ValidateOption{
		jwt.WithClock(jwt.ClockFunc(v.clock.Now)),
		jwt.WithAcceptableSkew(v.cfg.Leeway),
		jwt.WithIssuer(v.cfg.Issuer),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
	}
	if aud := v.cfg.Audience; len(aud) > 0 {
		opts = append(opts, jwt.WithValidator(jwt.ValidatorFunc(func(_ context.Context, t jwt.Token) jwt.ValidationError {
			if slices.ContainsFunc(t.Audience(), func(a string) bool { return slices.Contains(aud, a) }) {
				return nil
			}
			return jwt.ErrInvalidAudience()
		})))
	}
	err := jwt.Validate(tok, opts...)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jwt.ErrTokenExpired()):
		return invalid(ReasonExpired, "token expired", nil)
	case errors.Is(err, jwt.ErrTokenNotYetValid()):
		return invalid(ReasonNotYetValid, "token not yet valid", nil)
	case errors.Is(err, jwt.ErrInvalidIssuedAt()):
		return invalid(ReasonNotYetValid, "token issued in the future", nil)
	case errors.Is(err, jwt.ErrInvalidIssuer()):
		return invalid(ReasonIssuer, "wrong issuer", fmt.Errorf("expected %q, got %q", v.cfg.Issuer, clip(c.Issuer, 256)))
	case errors.Is(err, jwt.ErrInvalidAudience()):
		return invalid(ReasonAudience, "wrong audience", nil)
	case errors.Is(err, jwt.ErrRequiredClaim()):
		return invalid(ReasonClaims, "missing exp claim", nil)
	default:
		return invalid(ReasonOther, "invalid token", err)
	}
}

// TestRegisteredClaimsMatchJWX runs checkRegistered and jwx's jwt.Validate
// over a grid of times around every boundary (whole and fractional
// seconds, each side of the leeway), issuers and audiences, and wants the
// same answer, reason and description from both.
func TestRegisteredClaimsMatchJWX(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	var times []time.Time // zero: claim absent
	times = append(times, time.Time{}, time.Unix(0, 0), time.Unix(0, 5e8), time.Unix(1, 0))
	for _, d := range []time.Duration{-31, -30, -29, -1, 0, 1, 29, 30, 31} {
		for _, frac := range []time.Duration{0, 1, 5e8, 999_999_999} {
			times = append(times, base.Add(d*time.Second+frac))
		}
	}
	var sparse []time.Time // nbf and iat: absent, zero, and each side of the leeway
	for i, t := range times {
		if i < 4 || i%3 == 0 {
			sparse = append(sparse, t)
		}
	}
	nows := []time.Time{base, base.Add(1), base.Add(5e8), base.Add(-1)}
	type issCase struct {
		has bool
		iss string
	}
	isss := []issCase{{true, "https://idp"}, {true, "https://idp/"}, {true, ""}, {false, ""}}
	type audCase struct {
		has bool
		aud []string
	}
	auds := []audCase{{false, nil}, {true, []string{}}, {true, []string{"api"}}, {true, []string{"other", "api"}}, {true, []string{"other"}}}
	n := 0
	for _, leeway := range []time.Duration{0, 30 * time.Second} {
		for _, cfgAud := range [][]string{nil, {"api", "api2"}} {
			for _, now := range nows {
				v := &Validator{cfg: Config{Issuer: "https://idp", Audience: cfgAud, Leeway: leeway}, clock: fixedClock{now}}
				for _, exp := range times {
					for _, nbf := range sparse {
						for _, iat := range sparse {
							{ // issuer and audience cases rotate through the time grid
								is, au := isss[n%len(isss)], auds[(n/len(isss))%len(auds)]
								{
									c := &Claims{Issuer: is.iss, Audience: au.aud, ExpiresAt: exp, NotBefore: nbf, IssuedAt: iat}
									got, want := v.checkRegistered(c, is.has), jwxRegistered(v, c, is.has, au.has)
									n++
									if (got == nil) != (want == nil) || got != nil && (got.Reason != want.Reason || got.Description != want.Description || fmt.Sprint(got.Err) != fmt.Sprint(want.Err)) {
										t.Fatalf("leeway %s, aud %v, now %s, exp %s, nbf %s, iat %s, iss %+v, aud %+v: got %v, jwx %v",
											leeway, cfgAud, now, exp, nbf, iat, is, au, got, want)
									}
								}
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d cases agree", n)
}

// FuzzClaimsDecode holds rawClaims.decode to json.Unmarshal into a
// map[string]json.RawMessage (what checkClaims decoded into before): the
// same payloads refused, the same members found (exact names, last
// duplicate wins), and each value the same (a plain string's content, or
// the raw JSON).
func FuzzClaimsDecode(f *testing.F) {
	for _, s := range []string{
		`{"iss":"a","exp":1700000000,"aud":["x","y"]}`, `{"EXP":1,"exp":2}`, `{"exp":1,"exp":"2"}`,
		`{"iss":"a\u0062","sub":"\ud800","tnt_id":"é","app_id":null}`, `null`, `[]`, `{}`, ` {"a":{}} `,
		`{"a":1}x`, `{"a":1,}`, `{"\u0069ss":"x","ſub":"y","scope":"a b"}`, "{\"iss\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		var want map[string]json.RawMessage
		wantErr := json.Unmarshal(payload, &want) != nil || want == nil
		var got rawClaims
		gotErr := got.decode(payload) != nil
		if gotErr != wantErr {
			t.Fatalf("%q: decode error %v, json.Unmarshal error %v", payload, gotErr, wantErr)
		}
		if gotErr {
			return
		}
		for i, name := range claimNames {
			raw, ok := want[name]
			if got.has[i] != ok {
				t.Fatalf("%q: %s present %v, want %v", payload, name, got.has[i], ok)
			}
			if !ok {
				continue
			}
			cv := got.v[i]
			if !cv.str {
				if !bytes.Equal(cv.raw, raw) {
					t.Fatalf("%q: %s raw %q, want %q", payload, name, cv.raw, raw)
				}
				continue
			}
			var s string
			if raw[0] != '"' || json.Unmarshal(raw, &s) != nil || s != cv.s {
				t.Fatalf("%q: %s string %q, want %s", payload, name, cv.s, raw)
			}
		}
	})
}
