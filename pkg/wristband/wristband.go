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
// result is always https: certificate checks are never turned off.
func FromVanityDomain(domain string) (Endpoints, error) {
	d := strings.TrimSpace(domain)
	switch {
	case d == "":
		return Endpoints{}, errors.New("vanity domain is empty")
	case strings.Contains(d, "://"):
		return Endpoints{}, fmt.Errorf("vanity domain %q must be a host name such as acme.us.wristband.dev, without a scheme", d)
	case strings.ContainsAny(d, "/?#@ "):
		return Endpoints{}, fmt.Errorf("vanity domain %q must be a host name with an optional port, without path, query or credentials", d)
	}
	u, err := url.Parse("https://" + d)
	if err != nil || u.Hostname() == "" {
		return Endpoints{}, fmt.Errorf("vanity domain %q is not a valid host name", d)
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
	if err != nil {
		return "", errors.New("not a valid URL")
	}
	if u.User != nil {
		return "", errors.New("URL must not carry credentials")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", errors.New("must be an http:// or https:// URL")
	}
	if u.Host == "" {
		return "", errors.New("URL has no host")
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
	TokenURL     string // explicit override
	JWKSURL      string // explicit override
	Issuer       string // explicit override
}

// Resolve applies the precedence. Fields that no source provides stay empty;
// the caller decides which ones it needs.
func (s Source) Resolve() (Endpoints, error) {
	var base Endpoints
	var err error
	switch {
	case strings.TrimSpace(s.VanityDomain) != "":
		base, err = FromVanityDomain(s.VanityDomain)
	case strings.TrimSpace(s.EmulatorURL) != "":
		base, err = FromBaseURL(s.EmulatorURL)
	}
	if err != nil {
		return Endpoints{}, err
	}
	var errs []error
	override := func(dst *string, v, name string) {
		if strings.TrimSpace(v) == "" {
			return
		}
		if name == "issuer" {
			*dst = strings.TrimSpace(v)
			return
		}
		u, err := CheckURL(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			return
		}
		*dst = u
	}
	override(&base.TokenURL, s.TokenURL, "token URL")
	override(&base.JWKSURL, s.JWKSURL, "JWKS URL")
	override(&base.Issuer, s.Issuer, "issuer")
	return base, errors.Join(errs...)
}
