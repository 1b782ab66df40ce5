package jwtauth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// This file parses compact JWS by hand instead of through jws.Verify: the
// token format is three base64url strings, and doing it here lets us be
// stricter than the libraries (duplicate JSON members rejected, RFC 7515
// §5.2; exact-case member names, where encoding/json would let "ALG" fill
// "alg"; canonical base64 only) and verify against keys parsed once per
// JWKS fetch rather than once per request. The cryptography is the
// standard library's.

var b64 = base64.RawURLEncoding.Strict()

// header is the JOSE header fields we act on.
type header struct {
	alg, kid, typ string
}

// splitCompact checks the token's alphabet and shape and returns its parts.
func splitCompact(tok string) (h, p, s string, err error) {
	dots := 0
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case c == '.':
			dots++
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return "", "", "", invalid("malformed token", errors.New("character outside base64url"))
		}
	}
	switch dots {
	case 2:
	case 4:
		return "", "", "", invalid("encrypted tokens (JWE) are not accepted", nil)
	default:
		return "", "", "", invalid("malformed token", errors.New("want three dot-separated parts"))
	}
	i := strings.IndexByte(tok, '.')
	j := i + 1 + strings.IndexByte(tok[i+1:], '.')
	h, p, s = tok[:i], tok[i+1:j], tok[j+1:]
	if h == "" || p == "" {
		return "", "", "", invalid("malformed token", errors.New("empty header or payload"))
	}
	if s == "" {
		return "", "", "", invalid("missing signature", nil)
	}
	return h, p, s, nil
}

func decodeSegment(seg, what string) ([]byte, error) {
	b, err := b64.DecodeString(seg)
	if err != nil {
		return nil, invalid("malformed token", errors.New("bad base64 in "+what))
	}
	return b, nil
}

// parseHeader decodes the JOSE header strictly.
func parseHeader(seg string) (header, error) {
	var h header
	raw, err := decodeSegment(seg, "header")
	if err != nil {
		return h, err
	}
	if !json.Valid(raw) {
		return h, invalid("malformed token", errors.New("header is not JSON"))
	}
	var sawAlg, sawKid bool
	err = objectMembers(raw, func(key string, val []byte) error {
		var err error
		switch key {
		case "alg":
			sawAlg = true
			h.alg, err = jsonString(val)
		case "kid":
			sawKid = true
			h.kid, err = jsonString(val)
		case "typ":
			h.typ, err = jsonString(val)
		case "cty":
			// A nested JWT (RFC 7519 §5.2) would mean trusting an inner
			// token we did not verify with our own rules.
			var cty string
			if cty, err = jsonString(val); err == nil && strings.EqualFold(strings.TrimPrefix(strings.ToLower(cty), "application/"), "jwt") {
				return invalid("nested tokens are not accepted", nil)
			}
		case "crit":
			// We implement no extensions, and RFC 7515 §4.1.11 requires
			// rejecting a token whose critical extensions we do not understand.
			return invalid("unsupported critical header", nil)
		case "enc", "zip":
			return invalid("encrypted tokens (JWE) are not accepted", nil)
		}
		if err != nil {
			return invalid("malformed token", errors.New("header member "+strconv.Quote(key)+" has the wrong type"))
		}
		return nil
	})
	if err != nil {
		return h, err
	}
	if !sawAlg || h.alg == "" {
		return h, invalid("missing alg", nil)
	}
	if !sawKid || h.kid == "" {
		return h, invalid("missing kid", nil)
	}
	return h, nil
}

// rawClaims is the payload as decoded, before the checks.
type rawClaims struct {
	Claims
	hasExp, hasNbf, hasIat, hasIss bool
	scopeSet                       bool
	scpScopes                      []string
	azp                            string
}

func parseClaims(seg string) (*rawClaims, error) {
	raw, err := decodeSegment(seg, "payload")
	if err != nil {
		return nil, err
	}
	if !json.Valid(raw) {
		return nil, invalid("malformed token", errors.New("payload is not JSON"))
	}
	rc := &rawClaims{}
	c := &rc.Claims
	err = objectMembers(raw, func(key string, val []byte) error {
		var err error
		switch key {
		case "iss":
			rc.hasIss = true
			c.Issuer, err = jsonString(val)
		case "sub":
			c.Subject, err = jsonString(val)
		case "client_id":
			c.ClientID, err = jsonString(val)
		case "azp":
			rc.azp, err = jsonString(val)
		case "app_id":
			c.AppID, err = jsonString(val)
		case "tnt_id":
			c.TenantID, err = jsonString(val)
		case "sub_kind":
			c.SubKind, err = jsonString(val)
		case "jti":
			c.ID, err = jsonString(val)
		case "aud":
			c.Audience, err = jsonStrings(val)
		case "scope":
			var s string
			s, err = jsonString(val)
			c.Scopes, rc.scopeSet = strings.Fields(s), true
		case "scp":
			rc.scpScopes, err = jsonStrings(val)
		case "exp":
			rc.hasExp = true
			c.ExpiresAt, err = numericDate(val)
		case "nbf":
			rc.hasNbf = true
			c.NotBefore, err = numericDate(val)
		case "iat":
			rc.hasIat = true
			c.IssuedAt, err = numericDate(val)
		}
		if err != nil {
			return invalid("invalid "+key+" claim", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !rc.scopeSet {
		c.Scopes = rc.scpScopes // Hydra's "scp" array
	}
	if c.ClientID == "" {
		c.ClientID = rc.azp
	}
	return rc, nil
}

// maxNumericDate is 9999-12-31T23:59:59Z: later values are nonsense, and
// refusing them keeps time arithmetic far from overflow.
const maxNumericDate = 253402300799

func numericDate(val []byte) (time.Time, error) {
	if len(val) == 0 || (val[0] != '-' && (val[0] < '0' || val[0] > '9')) {
		return time.Time{}, errors.New("not a number")
	}
	f, err := strconv.ParseFloat(string(val), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return time.Time{}, errors.New("out of range")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), nil
}

func jsonString(val []byte) (string, error) {
	if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
		inner := val[1 : len(val)-1]
		if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
			return string(inner), nil
		}
	}
	var s string
	if err := json.Unmarshal(val, &s); err != nil {
		return "", errors.New("not a string")
	}
	return s, nil
}

// jsonStrings accepts a string or an array of strings (aud, scp).
func jsonStrings(val []byte) ([]string, error) {
	if len(val) > 0 && val[0] == '"' {
		s, err := jsonString(val)
		if err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
	var ss []string
	if err := json.Unmarshal(val, &ss); err != nil || ss == nil {
		return nil, errors.New("not a string or array of strings")
	}
	return ss, nil
}

// objectMembers calls fn with each member of the JSON object b, which must
// already have passed json.Valid, and fails on duplicate names (compared
// after unescaping, so "\u0061lg" duplicates "alg").
func objectMembers(b []byte, fn func(key string, val []byte) error) error {
	errShape := invalid("malformed token", errors.New("JSON is not an object"))
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errShape
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	var seenArr [16]string
	seen := seenArr[:0]
	var seenMap map[string]struct{}
	for i < len(b) {
		if b[i] != '"' {
			return errShape
		}
		end := scanString(b, i)
		if end < 0 {
			return errShape
		}
		var key string
		// Escaped or invalid UTF-8 names go through encoding/json so that a
		// name compares as every other JSON parser decodes it.
		if bytes.IndexByte(b[i:end], '\\') >= 0 || !utf8.Valid(b[i+1:end-1]) {
			if err := json.Unmarshal(b[i:end], &key); err != nil {
				return errShape
			}
		} else {
			key = unsafeString(b[i+1 : end-1])
		}
		if seenMap != nil {
			if _, dup := seenMap[key]; dup {
				return invalid("malformed token", errors.New("duplicate JSON member "+strconv.Quote(key)))
			}
			seenMap[key] = struct{}{}
		} else {
			for _, k := range seen {
				if k == key {
					return invalid("malformed token", errors.New("duplicate JSON member "+strconv.Quote(key)))
				}
			}
			if len(seen) < cap(seen) {
				seen = append(seen, key)
			} else {
				seenMap = make(map[string]struct{}, 2*len(seen))
				for _, k := range seen {
					seenMap[k] = struct{}{}
				}
				seenMap[key] = struct{}{}
			}
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return errShape
		}
		i = skipWS(b, i+1)
		vend := scanValue(b, i)
		if vend < 0 {
			return errShape
		}
		if err := fn(key, b[i:vend]); err != nil {
			return err
		}
		i = skipWS(b, vend)
		if i >= len(b) {
			return errShape
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return nil
		default:
			return errShape
		}
	}
	return errShape
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the index just past the string starting at b[i]=='"',
// or -1.
func scanString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// scanValue returns the index just past the JSON value starting at b[i], or -1.
func scanValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return scanString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := scanString(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default:
		j := i
		for j < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[j])) {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}

// verifySignature checks sig over signingInput with key under alg. The
// caller has already matched alg against the allow-list and the key.
func verifySignature(k *verifyKey, alg, signingInput string, sig []byte) error {
	in := unsafeBytes(signingInput)
	var h crypto.Hash
	switch alg[2:] {
	case "256":
		h = crypto.SHA256
	case "384":
		h = crypto.SHA384
	case "512":
		h = crypto.SHA512
	}
	var digest []byte
	switch h {
	case crypto.SHA256:
		d := sha256.Sum256(in)
		digest = d[:]
	case crypto.SHA384:
		d := sha512.Sum384(in)
		digest = d[:]
	case crypto.SHA512:
		d := sha512.Sum512(in)
		digest = d[:]
	}
	switch {
	case alg[:2] == "RS" && k.rsa != nil:
		return rsa.VerifyPKCS1v15(k.rsa, h, digest, sig)
	case alg[:2] == "PS" && k.rsa != nil:
		return rsa.VerifyPSS(k.rsa, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case alg[:2] == "ES" && k.ec != nil:
		size := (k.ec.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return errors.New("ecdsa signature has the wrong length")
		}
		r := new(big.Int).SetBytes(sig[:size])
		s := new(big.Int).SetBytes(sig[size:])
		if !ecdsa.Verify(k.ec, digest, r, s) {
			return errors.New("ecdsa verification failed")
		}
		return nil
	case alg == "EdDSA" && k.ed != nil:
		if !ed25519.Verify(k.ed, in, sig) {
			return errors.New("ed25519 verification failed")
		}
		return nil
	}
	return errors.New("key cannot verify " + alg)
}

// unsafeBytes views s as bytes without copying; callers only read it.
// It keeps hashing a ~1 KB token allocation-free on every request.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// unsafeString views b as a string; b must not change while it is used.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
