// Package wristband holds Wristband's URL and issuer conventions: everything a
// service needs is derived from the application's vanity domain, the one value
// Wristband's dashboard shows (e.g. "acme.us.wristband.dev").
//
// A local IdP that imitates Wristband (the wristband-emulator service, or any
// OAuth2 server laid out the same way) is addressed by a base URL instead; its
// issuer is that base URL.
package wristband

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Paths of Wristband's OAuth2 endpoints below the vanity domain.
const (
	TokenPath = "/api/v1/oauth2/token"
	JWKSPath  = "/api/v1/oauth2/jwks"
)

// Endpoints are the three values a client or a resource server needs.
type Endpoints struct {
	TokenURL string
	JWKSURL  string
	Issuer   string
}

// FromVanityDomain derives the endpoints of a real Wristband application.
// The domain is a host with an optional port, without scheme or path; the
// result is always https: certificate checks are never turned off. Errors
// do not repeat the domain: they come from configuration, where values are
// never echoed.
func FromVanityDomain(domain string) (Endpoints, error) {
	d := strings.TrimSpace(domain)
	switch {
	case d == "":
		return Endpoints{}, errors.New("empty (e.g. acme.us.wristband.dev)")
	case strings.Contains(d, "://"):
		return Endpoints{}, errors.New("a host name without a scheme is wanted (e.g. acme.us.wristband.dev)")
	case strings.ContainsAny(d, "/?#@ "):
		return Endpoints{}, errors.New("a host name with an optional port is wanted, without path, query or credentials (e.g. acme.us.wristband.dev)")
	}
	u, err := url.Parse("https://" + d)
	if err != nil || u.Hostname() == "" {
		return Endpoints{}, errors.New("not a valid host name (e.g. acme.us.wristband.dev)")
	}
	base := "https://" + u.Host
	return Endpoints{TokenURL: base + TokenPath, JWKSURL: base + JWKSPath, Issuer: base}, nil
}

// FromBaseURL derives the endpoints of an IdP laid out like Wristband at an
// explicit base URL (http is accepted here because the URL was given
// explicitly, e.g. the emulator on a private network). The issuer is the base
// URL without a trailing slash.
func FromBaseURL(base string) (Endpoints, error) {
	b, err := CheckURL(base)
	if err != nil {
		return Endpoints{}, err
	}
	b = strings.TrimRight(b, "/")
	return Endpoints{TokenURL: b + TokenPath, JWKSURL: b + JWKSPath, Issuer: b}, nil
}

// CheckURL accepts an absolute http or https URL with a host and no
// credentials, and returns it trimmed. Errors never quote the URL: a
// mistyped one may carry a password.
func CheckURL(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", errors.New("not a valid URL (e.g. https://idp.example.com)")
	case u.User != nil:
		return "", errors.New("the URL must not carry credentials (e.g. https://idp.example.com)")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", errors.New("not an http:// or https:// URL (e.g. https://idp.example.com)")
	case u.Host == "":
		return "", errors.New("the URL has no host (e.g. https://idp.example.com)")
	}
	return s, nil
}

// Source says where the endpoints of a service come from, in order of
// precedence: explicit URLs win field by field over those derived from the
// vanity domain, which win over the emulator fallback. The fallback is what
// lets `make run` and `docker compose up` work with no account, while the
// reference demo's .env (a vanity domain) switches to real Wristband.
type Source struct {
	VanityDomain string // APPLICATION_VANITY_DOMAIN
	EmulatorURL  string // WRISTBAND_EMULATOR_URL, used only without a vanity domain
	TokenURL     string // TOKEN_URL, explicit override
	JWKSURL      string // JWKS_URL, explicit override
	Issuer       string // ISSUER, explicit override
}

// Need names an endpoint the caller cannot do without.
type Need int

// The endpoints Resolve can be asked to insist on.
const (
	NeedTokenURL Need = iota
	NeedJWKSURL
	NeedIssuer
)

// Resolve applies the precedence. Every problem is reported at once, each
// once, naming the environment variable to fix and never its value: a
// malformed value, and each needed endpoint that no source provides (unless
// it is missing only because a value given for it is malformed). Fields
// nothing provides and nobody needs stay empty.
func (s Source) Resolve(need ...Need) (Endpoints, error) {
	var base Endpoints
	var errs []error
	baseBroken := false
	switch {
	case strings.TrimSpace(s.VanityDomain) != "":
		var err error
		if base, err = FromVanityDomain(s.VanityDomain); err != nil {
			errs = append(errs, fmt.Errorf("APPLICATION_VANITY_DOMAIN: %w", err))
			baseBroken = true
		}
	case strings.TrimSpace(s.EmulatorURL) != "":
		var err error
		if base, err = FromBaseURL(s.EmulatorURL); err != nil {
			errs = append(errs, fmt.Errorf("WRISTBAND_EMULATOR_URL: %w", err))
			baseBroken = true
		}
	}
	broken := map[Need]bool{}
	override := func(dst *string, v string, n Need, name string) {
		if strings.TrimSpace(v) == "" {
			return
		}
		if n == NeedIssuer {
			*dst = strings.TrimSpace(v)
			return
		}
		u, err := CheckURL(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			broken[n] = true
			return
		}
		*dst = u
	}
	override(&base.TokenURL, s.TokenURL, NeedTokenURL, "TOKEN_URL")
	override(&base.JWKSURL, s.JWKSURL, NeedJWKSURL, "JWKS_URL")
	override(&base.Issuer, s.Issuer, NeedIssuer, "ISSUER")
	for _, n := range need {
		if broken[n] || baseBroken {
			continue
		}
		switch {
		case n == NeedTokenURL && base.TokenURL == "":
			errs = append(errs, errors.New("TOKEN_URL: no token endpoint; set APPLICATION_VANITY_DOMAIN (real Wristband, e.g. acme.us.wristband.dev), TOKEN_URL, or WRISTBAND_EMULATOR_URL (e.g. http://127.0.0.1:6003)"))
		case n == NeedJWKSURL && base.JWKSURL == "":
			errs = append(errs, errors.New("JWKS_URL: no JWKS URL; set APPLICATION_VANITY_DOMAIN (real Wristband, e.g. acme.us.wristband.dev), JWKS_URL, or WRISTBAND_EMULATOR_URL (e.g. http://127.0.0.1:6003)"))
		case n == NeedIssuer && base.Issuer == "":
			errs = append(errs, errors.New("ISSUER: no issuer; set APPLICATION_VANITY_DOMAIN (real Wristband, e.g. acme.us.wristband.dev), ISSUER, or WRISTBAND_EMULATOR_URL (e.g. http://127.0.0.1:6003)"))
		}
	}
	if len(errs) > 0 {
		return Endpoints{}, errors.Join(errs...)
	}
	return base, nil
}
