package jwtauth

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
)

// The cold path. jwx does the work: jws.Verify parses the compact JWS and
// checks the signature with the one key and algorithm we hand it; the
// registered claims are checked by jwt.Validate (see checkRegistered). Around
// it sit the checks jwx does not make:
//
//   - before decoding: size, the base64url alphabet, three non-empty parts
//     (five is a JWE), so junk costs no JSON parsing;
//   - on the protected header jwx parsed (in the key provider, before any
//     key is chosen): "crit", "b64", "enc"/"zip" and a nested "cty": JWT are
//     refused; "alg" must be in the allow-list and equal the key's own alg;
//     "kid" is required; "typ" must match Config.TokenType when set. "jku",
//     "x5u", "jwk" and "x5c" are never read: keys come from the configured
//     JWKS only;
//   - on the claims: see checkClaims.
//
// Duplicate JSON members are resolved last-wins by every JSON parser on this
// path (jwx's header and claims decoding, and encoding/json here), as RFC
// 7515 §5.2 allows. Since the header we check is the header jws.Verify
// verifies under, and the claims we check are the claims we return, no
// second reading of the same bytes can disagree with the one we checked.

// maxNumericDate is 9999-12-31T23:59:59Z: later values are nonsense, and
// refusing them keeps time arithmetic far from overflow.
const maxNumericDate = 253402300799

// precheckShape refuses what is not a compact JWS before any decoding.
func precheckShape(tok string) *TokenError {
	dots, last := 0, -1
	for i := 0; i < len(tok); i++ {
		switch b64urlClass[tok[i]] {
		case b64urlDot:
			if i == last+1 && dots < 2 {
				return invalid(ReasonMalformed, "malformed token", errors.New("empty header or payload"))
			}
			dots, last = dots+1, i
		case b64urlNo:
			return invalid(ReasonMalformed, "malformed token", errors.New("character outside base64url"))
		}
	}
	switch {
	case dots == 4:
		return invalid(ReasonUnsupported, "encrypted tokens (JWE) are not accepted", nil)
	case dots != 2:
		return invalid(ReasonMalformed, "malformed token", errors.New("want three dot-separated parts"))
	case last == len(tok)-1:
		return invalid(ReasonSignature, "missing signature", nil)
	}
	// jws.Verify checks the signature over the header and payload as it
	// re-encodes them, not as received. Canonical base64 and a header that
	// is exactly one JSON object, no space around it (jwx's decoder keeps
	// only the object's own bytes) make the two the same bytes, so no token verifies
	// that is not, byte for byte, the token the IdP signed.
	i := strings.IndexByte(tok, '.')
	j := i + 1 + strings.IndexByte(tok[i+1:], '.')
	for _, seg := range []string{tok[:i], tok[i+1 : j], tok[j+1:]} {
		if !canonicalB64(seg) {
			return invalid(ReasonMalformed, "malformed token", errors.New("non-canonical base64"))
		}
	}
	// Headers are ~100 bytes: decoding one on the stack saves an allocation.
	var src [512]byte
	var dst [384]byte
	var hdr []byte
	var err error
	if i <= len(src) {
		var n int
		n, err = b64.Decode(dst[:], src[:copy(src[:], tok[:i])])
		hdr = dst[:n]
	} else {
		hdr, err = b64.DecodeString(tok[:i])
	}
	if err != nil || len(hdr) < 2 || hdr[0] != '{' || hdr[len(hdr)-1] != '}' || !json.Valid(hdr) {
		return invalid(ReasonMalformed, "malformed token", errors.New("header is not exactly one JSON object"))
	}
	return nil
}

// b64urlClass sorts bytes for precheckShape: the base64url alphabet, the
// dot, and everything else (a table lookup instead of five comparisons a
// byte, on ~1 KB a token).
var b64urlClass = func() (t [256]uint8) {
	for c := range t {
		switch {
		case c == '.':
			t[c] = b64urlDot
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			t[c] = b64urlYes
		}
	}
	return t
}()

const (
	b64urlNo = iota
	b64urlYes
	b64urlDot
)

var b64 = base64.RawURLEncoding.Strict()

// canonicalB64 reports whether seg (already known to hold only base64url
// characters) is the one unpadded encoding of its bytes: no impossible
// length, and zero bits after the last byte.
func canonicalB64(seg string) bool {
	if len(seg) == 0 {
		return true
	}
	v := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", seg[len(seg)-1])
	switch len(seg) % 4 {
	case 1:
		return false
	case 2:
		return v&0x0f == 0
	case 3:
		return v&0x03 == 0
	}
	return true
}

// checkHeader applies the header rules to the protected header jwx parsed.
func (v *Validator) checkHeader(h jws.Headers) (alg jwa.SignatureAlgorithm, kid string, err *TokenError) {
	if len(h.Critical()) > 0 {
		// We implement no extensions, and RFC 7515 §4.1.11 requires
		// rejecting a token whose critical extensions we do not understand.
		return "", "", invalid(ReasonUnsupported, "unsupported critical header", nil)
	}
	for _, name := range []string{"enc", "zip"} {
		if _, ok := h.Get(name); ok {
			return "", "", invalid(ReasonUnsupported, "encrypted tokens (JWE) are not accepted", nil)
		}
	}
	if _, ok := h.Get("b64"); ok {
		// RFC 7797 unencoded payloads: never in an access token, and jwx
		// would honour one even outside "crit".
		return "", "", invalid(ReasonUnsupported, "unsupported critical header", nil)
	}
	if cty := h.ContentType(); strings.EqualFold(strings.TrimPrefix(strings.ToLower(cty), "application/"), "jwt") {
		// A nested JWT (RFC 7519 §5.2) would mean trusting an inner token we
		// did not verify with our own rules.
		return "", "", invalid(ReasonUnsupported, "nested tokens are not accepted", nil)
	}
	alg = h.Algorithm()
	if alg == "" {
		return "", "", invalid(ReasonAlgorithm, "missing alg", nil)
	}
	kid = h.KeyID()
	if kid == "" {
		return "", "", invalid(ReasonMalformed, "missing kid", nil)
	}
	if !slices.Contains(v.cfg.Algorithms, alg.String()) {
		return "", "", invalid(ReasonAlgorithm, "algorithm not allowed", nil)
	}
	if tt := v.cfg.TokenType; tt != "" {
		typ := h.Type()
		if len(typ) > len("application/") && strings.EqualFold(typ[:len("application/")], "application/") {
			typ = typ[len("application/"):]
		}
		if !strings.EqualFold(typ, tt) {
			return "", "", invalid(ReasonType, "wrong token type", nil)
		}
	}
	return alg, kid, nil
}

// keyFor finds the key for kid and alg, refetching the JWKS once (per
// cooldown) for a kid we have never seen.
func (v *Validator) keyFor(ctx context.Context, kid string, alg jwa.SignatureAlgorithm) (*verifyKey, error) {
	ks := v.keys.Load()
	if ks == nil {
		return nil, ErrNotReady
	}
	cands, ok := ks.keys[kid]
	if !ok {
		// Unknown, or refused at load (say, no alg): the IdP may have
		// published or fixed it since. Both refetch behind the same
		// limiter, so neither becomes a JWKS flood.
		if fresh := v.refetch(ctx); fresh != nil {
			ks = fresh
			cands, ok = ks.keys[kid]
		}
		if !ok {
			if why, refused := ks.refused[kid]; refused {
				return nil, invalid(ReasonKeyUnusable, "key not usable", errors.New(why))
			}
			return nil, invalid(ReasonUnknownKID, "unknown kid", nil)
		}
	}
	for _, k := range cands {
		if k.alg == alg {
			return k, nil
		}
	}
	return nil, invalid(ReasonAlgorithm, "key does not match algorithm", nil)
}

// withCompact is built once: options are values, and this one carries no
// per-call state.
var withCompact = jws.WithCompact()

// validateCold is everything after a cache miss.
func (v *Validator) validateCold(ctx context.Context, token string, now time.Time) (cl *Claims, key *verifyKey, err error) {
	ctx, span := v.tracer.Start(ctx, "jwtauth.validate")
	defer func() {
		if err != nil {
			reason := ReasonNotReady
			var te *TokenError
			if errors.As(err, &te) {
				reason = te.Reason
			}
			span.SetAttributes(attribute.String("jwtauth.failure", reason))
			span.SetStatus(codes.Error, reason)
		}
		span.End()
	}()
	if te := precheckShape(token); te != nil {
		return nil, nil, te
	}
	payload, err := jws.Verify([]byte(token), withCompact, jws.WithContext(ctx),
		jws.WithKeyProvider(jws.KeyProviderFunc(func(ctx context.Context, sink jws.KeySink, sig *jws.Signature, _ *jws.Message) error {
			alg, kid, te := v.checkHeader(sig.ProtectedHeaders())
			if te != nil {
				return te
			}
			k, err := v.keyFor(ctx, kid, alg)
			if err != nil {
				return err
			}
			key = k
			v.stats.verifications.Add(1)
			sink.Key(k.alg, k.pub)
			return nil
		})))
	if err != nil {
		var te *TokenError
		switch {
		case errors.As(err, &te):
			return nil, nil, te
		case errors.Is(err, ErrNotReady):
			return nil, nil, ErrNotReady
		case key == nil: // jwx could not parse it: no key was ever asked for
			return nil, nil, invalid(ReasonMalformed, "malformed token", err)
		default:
			return nil, nil, invalid(ReasonSignature, "invalid signature", err)
		}
	}
	cl, te := v.checkClaims(payload)
	if te != nil {
		return nil, nil, te
	}
	return cl, key, nil
}

// checkClaims decodes and checks the verified payload.
//
// The claims are decoded with encoding/json, on exact member names (a
// struct would let "EXP" fill exp), with strict types; jwx's own token
// decoder is not used for them, because it accepts "exp" as a numeric
// string or an RFC 3339 date, and costs ~130 allocations a token. The
// registered claims are then checked by jwx's jwt.Validate (see
// checkRegistered): iss (exact), exp (required), nbf, iat, aud, with the
// leeway and our clock.
func (v *Validator) checkClaims(payload []byte) (*Claims, *TokenError) {
	var raw rawClaims
	if err := raw.decode(payload); err != nil {
		return nil, invalid(ReasonMalformed, "malformed token", errors.New("claims are not a JSON object"))
	}
	c := &Claims{}
	var scope, azp, cid string
	var hasScope bool
	var scp []string
	for i, name := range claimNames { // a fixed order: the same token always gets the same answer
		if !raw.has[i] {
			continue
		}
		r := &raw.v[i]
		var err error
		switch i {
		case claimIss:
			err = jsonString(r, &c.Issuer)
		case claimSub:
			err = jsonString(r, &c.Subject)
		case claimJti:
			err = jsonString(r, &c.ID)
		case claimClientID:
			err = jsonString(r, &c.ClientID)
		case claimAzp:
			err = jsonString(r, &azp)
		case claimCid: // Okta
			err = jsonString(r, &cid)
		case claimAppID:
			err = jsonString(r, &c.AppID)
		case claimTntID:
			err = jsonString(r, &c.TenantID)
		case claimSubKind:
			err = jsonString(r, &c.SubKind)
		case claimScope:
			hasScope = true
			err = jsonString(r, &scope)
		case claimScp: // Hydra's array
			err = jsonStrings(r, &scp)
		case claimAud:
			err = jsonStrings(r, &c.Audience)
		case claimExp:
			if err = numericDate(r, &c.ExpiresAt); err == nil && c.ExpiresAt.Unix() < 1 {
				err = errors.New("out of range") // jwx would take exp 0 as absent
			}
		case claimNbf:
			err = numericDate(r, &c.NotBefore)
		case claimIat:
			err = numericDate(r, &c.IssuedAt)
		}
		if err != nil {
			return nil, invalid(ReasonClaims, "invalid "+name+" claim", err)
		}
	}
	if te := v.checkRegistered(c, raw.has[claimIss], raw.has[claimAud]); te != nil {
		return nil, te
	}
	if hasScope {
		c.Scopes = strings.Fields(scope)
	} else {
		c.Scopes = scp
	}
	// client_id (RFC 9068, Wristband, Hydra), else azp (Auth0, Keycloak),
	// else cid (Okta): the one field AllowClients compares.
	c.ClientID = cmp.Or(c.ClientID, azp, cid)
	return c, nil
}

// checkRegistered has jwx's jwt.Validate check the registered claims: iat,
// exp, nbf with the leeway and our clock, iss (present and equal), exp
// present, and aud (one of Audience, when set). The claims were decoded
// strictly above (exact names, numeric dates), so jwx sees only what we
// read. Building the jwt.Token costs ~5% of the cold path; a library check
// that security reviewers know is worth it (issue 9).
func (v *Validator) checkRegistered(c *Claims, hasIss, hasAud bool) *TokenError {
	tok := jwt.New()
	if hasIss {
		_ = tok.Set(jwt.IssuerKey, c.Issuer)
	}
	if hasAud {
		_ = tok.Set(jwt.AudienceKey, c.Audience)
	}
	if !c.ExpiresAt.IsZero() {
		_ = tok.Set(jwt.ExpirationKey, c.ExpiresAt)
	}
	if !c.NotBefore.IsZero() {
		_ = tok.Set(jwt.NotBeforeKey, c.NotBefore)
	}
	if !c.IssuedAt.IsZero() {
		_ = tok.Set(jwt.IssuedAtKey, c.IssuedAt)
	}
	err := jwt.Validate(tok, v.registeredOpts...)
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
		// Which issuer came is what tells a user "trailing slash" or
		// "http vs https" (issue 8.6); neither value is secret, and the
		// token's was signed by a key we trust.
		return invalid(ReasonIssuer, "wrong issuer", fmt.Errorf("expected %q, got %q", v.cfg.Issuer, clip(c.Issuer, 256)))
	case errors.Is(err, jwt.ErrInvalidAudience()):
		return invalid(ReasonAudience, "wrong audience", nil)
	case errors.Is(err, jwt.ErrRequiredClaim()):
		return invalid(ReasonClaims, "missing exp claim", nil)
	default:
		return invalid(ReasonOther, "invalid token", err)
	}
}

// registeredOptions are jwt.Validate's options for this Validator, built
// once.
func (v *Validator) registeredOptions() []jwt.ValidateOption {
	opts := []jwt.ValidateOption{
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return v.clock.Now() })),
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
	return opts
}

// claimNames are the claims this package reads, in the order they are
// checked; the claim* constants index them.
var claimNames = [...]string{"iss", "sub", "jti", "client_id", "azp", "cid", "app_id", "tnt_id", "sub_kind", "scope", "scp", "aud", "exp", "nbf", "iat"}

const (
	claimIss = iota
	claimSub
	claimJti
	claimClientID
	claimAzp
	claimCid
	claimAppID
	claimTntID
	claimSubKind
	claimScope
	claimScp
	claimAud
	claimExp
	claimNbf
	claimIat
)

// rawClaims holds the value of each claim in claimNames, and whether it
// was present.
type rawClaims struct {
	v   [len(claimNames)]claimValue
	has [len(claimNames)]bool
}

// claimValue is one member's value as decoded into the claims map: a plain
// string (no escapes, valid UTF-8: nearly every claim) is kept as its
// content, so that it is copied once and not twice (RawMessage, then
// string); anything else as a copy of its raw JSON, which jsonString,
// jsonStrings and numericDate then check as before.
type claimValue struct {
	raw []byte
	s   string
	str bool
}

func (cv *claimValue) UnmarshalJSON(data []byte) error {
	if len(data) >= 2 && data[0] == '"' {
		if in := data[1 : len(data)-1]; bytes.IndexByte(in, '\\') < 0 && utf8.Valid(in) {
			*cv = claimValue{s: string(in), str: true}
			return nil
		}
	}
	*cv = claimValue{raw: bytes.Clone(data)}
	return nil
}

// claimKey is a member name decoded as its index in claimNames (-1 for
// every other name): encoding/json hands it the unquoted name, exactly as
// it would build a string key, and the map then needs no key string per
// member.
type claimKey int8

func (k *claimKey) UnmarshalText(name []byte) error {
	*k = -1
	for i, n := range claimNames {
		if n == string(name) { // exact: no case folding
			*k = claimKey(i)
			break
		}
	}
	return nil
}

// claimMaps recycles the maps the claims are decoded into: a fresh map
// and its growth were ~10% of checkClaims' allocations.
var claimMaps = sync.Pool{New: func() any {
	m := make(map[claimKey]claimValue, len(claimNames)+1)
	return &m
}}

// decode unmarshals the payload into a map on exact member names (a later
// duplicate overwrites an earlier one: last wins) and keeps the value of
// each member named in claimNames.
func (r *rawClaims) decode(payload []byte) error {
	m := claimMaps.Get().(*map[claimKey]claimValue)
	defer func() {
		if *m == nil { // "null" sets the map to nil
			*m = make(map[claimKey]claimValue, len(claimNames)+1)
		}
		clear(*m)
		claimMaps.Put(m)
	}()
	if err := json.Unmarshal(payload, m); err != nil || *m == nil {
		return errors.New("not an object")
	}
	for k, cv := range *m {
		if k >= 0 { // values hold no reference to the map: it may go back to the pool
			r.v[k], r.has[k] = cv, true
		}
	}
	return nil
}

// jsonString decodes a string member of the (already validated) claims.
func jsonString(cv *claimValue, dst *string) error {
	if cv.str {
		*dst = cv.s
		return nil
	}
	return jsonStringRaw(cv.raw, dst)
}

func jsonStringRaw(raw json.RawMessage, dst *string) error {
	if len(raw) < 2 || raw[0] != '"' {
		return errors.New("not a string")
	}
	// Without escapes a valid JSON string is its own content; this skips a
	// json.Unmarshal (and its allocations) for nearly every claim.
	if in := raw[1 : len(raw)-1]; bytes.IndexByte(in, '\\') < 0 && utf8.Valid(in) {
		*dst = string(in)
		return nil
	}
	return jsonUnquote(raw, dst)
}

// jsonUnquote is jsonString's slow path, apart so that only a string with
// escapes costs a heap variable.
func jsonUnquote(raw json.RawMessage, dst *string) error {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return errors.New("not a string")
	}
	*dst = s
	return nil
}

// jsonStrings takes a string or an array of strings (aud, scp).
func jsonStrings(cv *claimValue, dst *[]string) error {
	if cv.str {
		*dst = []string{cv.s}
		return nil
	}
	raw := cv.raw
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return errors.New("not a string")
		}
		*dst = []string{s}
		return nil
	}
	var ss []string
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &ss) != nil {
		return errors.New("not a string or an array of strings")
	}
	*dst = ss
	return nil
}

// numericDate takes a JSON number of seconds (RFC 7519 NumericDate), and
// nothing else: no string, no null, nothing past year 9999.
func numericDate(cv *claimValue, dst *time.Time) error {
	raw := cv.raw // nil for a string
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return errors.New("not a number")
	}
	f, err := strconv.ParseFloat(string(raw), 64) // a valid JSON number: the decoder checked
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return errors.New("out of range")
	}
	sec, frac := math.Modf(f)
	*dst = time.Unix(int64(sec), int64(frac*1e9))
	return nil
}

// clip shortens s for a log line.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
