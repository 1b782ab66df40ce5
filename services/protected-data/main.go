// Command protected-data serves GET /api/protected/data to callers that
// present a valid Wristband (or emulator) access token.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/certgen"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/telemetry"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/wristband"
	"github.com/wristband-m2m-go/wristband-m2m-go/services/protected-data/internal/api"
)

const defaultAddr = ":6002"

type config struct {
	service.Base

	// Where the keys and the issuer come from: see wristband.Source.
	VanityDomain string `envconfig:"APPLICATION_VANITY_DOMAIN"`
	EmulatorURL  string `envconfig:"WRISTBAND_EMULATOR_URL"`
	JWKSURL      string `envconfig:"JWKS_URL"`
	Issuer       string `envconfig:"ISSUER"`

	Audience         []string      `envconfig:"AUDIENCE"`
	Algorithms       []string      `envconfig:"ALGORITHMS" default:"RS256"`
	TokenType        string        `envconfig:"REQUIRE_TOKEN_TYPE"`
	Leeway           time.Duration `envconfig:"CLOCK_LEEWAY"`
	RequiredScopes   []string      `envconfig:"REQUIRED_SCOPES"`
	AllowedClientIDs []string      `envconfig:"ALLOWED_CLIENT_IDS"`
	AllowedSubKinds  []string      `envconfig:"ALLOWED_SUB_KINDS"`                  // Wristband: "client" admits only M2M client tokens
	RefreshCooldown  time.Duration `envconfig:"JWKS_REFRESH_COOLDOWN" default:"5s"` // least gap between unknown-kid JWKS refetches
}

func main() { service.Main("protected-data", defaultAddr, run, "certgen") }

// validate reports every problem with the service's own settings at once,
// each naming its variable, never its value.
func (c config) validate() (wristband.Endpoints, []error) {
	var errs []error
	ep, err := wristband.Source{
		VanityDomain: c.VanityDomain, EmulatorURL: c.EmulatorURL,
		JWKSURL: c.JWKSURL, Issuer: c.Issuer,
	}.Resolve(wristband.NeedJWKSURL, wristband.NeedIssuer)
	if err != nil {
		errs = append(errs, err)
	}
	for _, a := range c.Algorithms {
		if !jwtauth.SupportedAlgorithm(a) {
			errs = append(errs, errors.New("ALGORITHMS: only asymmetric JWS algorithms are accepted (e.g. RS256 or RS256,ES256; also RS384/512, PS256/384/512, ES384/512, EdDSA)"))
			break
		}
	}
	if c.Leeway > jwtauth.MaxLeeway {
		errs = append(errs, fmt.Errorf("CLOCK_LEEWAY: more than %s, which would lengthen every token's life rather than absorb clock skew (e.g. 30s; a negative value means none)", jwtauth.MaxLeeway))
	}
	// jwtauth refuses these too, but in its own words, quoting the value.
	if strings.ContainsFunc(c.TokenType, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '"' || r == '\\' }) {
		errs = append(errs, errors.New("REQUIRE_TOKEN_TYPE: a media type without quotes, backslashes or control characters (e.g. at+jwt)"))
	}
	// Below a second the cooldown stops protecting the IdP: a flood of
	// tokens with random kids would become a flood of JWKS requests.
	if c.RefreshCooldown < time.Second {
		errs = append(errs, errors.New("JWKS_REFRESH_COOLDOWN: must be at least 1s (e.g. 5s)"))
	}
	return ep, errs
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "certgen" {
		// The compose TLS overlay's init step (deploy/compose/tls.yml):
		// the scratch image has no openssl.
		return certgen.Command(args[1:], os.Stdout)
	}
	var cfg config
	log, errs := service.Load(&cfg, defaultAddr)
	ep, verrs := cfg.validate()
	if err := errors.Join(append(errs, verrs...)...); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}

	tel, err := telemetry.New(ctx, "protected-data", telemetry.Settings{MetricsAddr: cfg.MetricsAddr, PProf: cfg.PProf}, log)
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	defer tel.Close() // last: flushes the spans of everything below
	log = tel.Logger(log)

	// The validator owns its background JWKS refresh; it ends with Close.
	v, err := jwtauth.New(ctx, jwtauth.Config{
		JWKSURL: ep.JWKSURL, Issuer: ep.Issuer, Audience: cfg.Audience,
		Algorithms: cfg.Algorithms, TokenType: cfg.TokenType, Leeway: cfg.Leeway,
		UnknownKIDCooldown: cfg.RefreshCooldown,
		Realm:              "protected-data", Logger: log,
	})
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	defer v.Close()

	host, _ := os.Hostname()
	log.Info("protected-data starting",
		slog.String("jwks_url", ep.JWKSURL), slog.String("issuer", ep.Issuer),
		slog.String("algorithms", cmp.Or(strings.Join(cfg.Algorithms, ","), "RS256")), slog.String("replica", host))

	var opts []jwtauth.Option
	if len(cfg.RequiredScopes) > 0 {
		opts = append(opts, jwtauth.RequireScopes(cfg.RequiredScopes...))
	}
	if len(cfg.AllowedClientIDs) > 0 {
		opts = append(opts, jwtauth.AllowClients(cfg.AllowedClientIDs...))
	}
	if len(cfg.AllowedSubKinds) > 0 {
		opts = append(opts, jwtauth.AllowSubKinds(cfg.AllowedSubKinds...))
	}
	tel.Register(telemetry.ValidatorCollector(v))
	e := service.NewEcho(log)
	tel.Instrument(e, telemetry.Internal)
	service.TrustProxies(e, cfg.Base)
	service.Health(e, log, service.Check{Name: "jwks", Fn: func(context.Context) error { return v.Ready() }})
	api.Register(e, v.Middleware(opts...), host)
	return service.Serve(ctx, log, e, cfg.Base, tel.StartAdmin)
}
