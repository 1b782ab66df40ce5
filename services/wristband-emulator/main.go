// Command wristband-emulator is a local stand-in for a Wristband
// application's M2M endpoints (token and JWKS), so that the gateway and
// protected-data run with no account and no configuration.
package main

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"golang.org/x/time/rate"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/telemetry"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/wristband"
	"github.com/wristband-m2m-go/wristband-m2m-go/services/wristband-emulator/internal/idp"
)

const defaultAddr = ":6003"

type config struct {
	service.Base

	Issuer string `envconfig:"ISSUER" default:"http://127.0.0.1:6003"`
	// id:secret pairs; CLIENTS_FILE may name a file holding them instead.
	Clients        string        `envconfig:"CLIENTS" default:"demo-client:demo-secret" secret:"true"`
	TokenLifetime  time.Duration `envconfig:"TOKEN_LIFETIME" default:"30m"`
	SigningKeyFile string        `envconfig:"SIGNING_KEY_FILE"`
	KeyID          string        `envconfig:"KEY_ID"`
	AppID          string        `envconfig:"APP_ID" default:"emulated-app"`
	TenantID       string        `envconfig:"TENANT_ID" default:"emulated-tenant"`
	// Token endpoint rate limits (requests per second and burst; 0 = off).
	RatePerClient  float64 `envconfig:"TOKEN_RATE_PER_CLIENT" default:"20"`
	BurstPerClient int     `envconfig:"TOKEN_BURST_PER_CLIENT" default:"40"`
	RatePerSource  float64 `envconfig:"TOKEN_RATE_PER_SOURCE" default:"50"`
	BurstPerSource int     `envconfig:"TOKEN_BURST_PER_SOURCE" default:"100"`
}

func main() { service.Main("wristband-emulator", defaultAddr, run) }

func run(ctx context.Context, _ []string) error {
	var cfg config
	log, errs := service.Load(&cfg, defaultAddr)
	clients, key, verrs := cfg.validate()
	if err := errors.Join(append(errs, verrs...)...); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	tel, err := telemetry.New(ctx, "wristband-emulator", telemetry.Settings{MetricsAddr: cfg.MetricsAddr, PProf: cfg.PProf}, log)
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	defer tel.Close() // last: flushes the spans of everything below
	log = tel.Logger(log)

	p, err := idp.New(idp.Config{
		Issuer: cfg.Issuer, Clients: clients, Lifetime: cfg.TokenLifetime,
		AppID: cfg.AppID, TenantID: cfg.TenantID, Key: key, KeyID: cfg.KeyID,
		Limits: idp.Limits{
			PerClient: rate.Limit(cfg.RatePerClient), PerClientBurst: cfg.BurstPerClient,
			PerSource: rate.Limit(cfg.RatePerSource), PerSourceBurst: cfg.BurstPerSource,
		},
	})
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	ids := make([]string, 0, len(clients))
	for id := range clients {
		ids = append(ids, id)
	}
	log.Info("wristband-emulator starting",
		slog.String("issuer", cfg.Issuer), slog.Any("client_ids", ids),
		slog.String("token_lifetime", cfg.TokenLifetime.String()), slog.String("kid", p.KeyID()),
		slog.Bool("key_from_file", cfg.SigningKeyFile != ""))

	e := service.NewEcho(log)
	tel.Instrument(e, telemetry.Internal)
	service.TrustProxies(e, cfg.Base)
	service.Health(e, log)
	p.Register(e)
	return service.Serve(ctx, log, e, cfg.Base, tel.StartAdmin)
}

// validate checks what Load cannot, one message per mistake, none echoing
// a value or a path.
func (c config) validate() (map[string]string, *rsa.PrivateKey, []error) {
	var errs []error
	clients, err := idp.ParseClients(c.Clients)
	if err != nil && !c.Reported("CLIENTS") { // an unreadable CLIENTS_FILE is reported already
		// Not err's text: this message names CLIENTS_FILE too.
		errs = append(errs, errors.New("CLIENTS (or CLIENTS_FILE): not a comma-separated list of id:secret pairs (e.g. demo-client:demo-secret,other:s3cret)"))
	}
	if c.TokenLifetime < time.Second {
		errs = append(errs, errors.New("TOKEN_LIFETIME: must be at least 1s (e.g. 30m)"))
	}
	if c.Issuer == "" {
		errs = append(errs, errors.New("ISSUER: empty (e.g. http://127.0.0.1:6003, the emulator's own base URL)"))
	} else if _, err := wristband.CheckURL(c.Issuer); err != nil {
		errs = append(errs, fmt.Errorf("ISSUER: %w", err))
	}
	if c.RatePerClient < 0 {
		errs = append(errs, errors.New("TOKEN_RATE_PER_CLIENT: must not be negative (e.g. 20 per second; 0 = no limit)"))
	} else if c.RatePerClient > 0 && c.BurstPerClient < 1 {
		errs = append(errs, errors.New("TOKEN_BURST_PER_CLIENT: must be at least 1 while TOKEN_RATE_PER_CLIENT is on (e.g. 40)"))
	}
	if c.RatePerSource < 0 {
		errs = append(errs, errors.New("TOKEN_RATE_PER_SOURCE: must not be negative (e.g. 50 per second; 0 = no limit)"))
	} else if c.RatePerSource > 0 && c.BurstPerSource < 1 {
		errs = append(errs, errors.New("TOKEN_BURST_PER_SOURCE: must be at least 1 while TOKEN_RATE_PER_SOURCE is on (e.g. 100)"))
	}
	// A missing file is created (with a new key), so that a volume alone
	// keeps the key across restarts; a missing folder is not.
	key, err := idp.LoadOrGenerateKey(c.SigningKeyFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		errs = append(errs, errors.New("SIGNING_KEY_FILE: its folder does not exist, so the key cannot be kept there (e.g. /var/lib/emulator/signing_key.pem on a volume; unset for a new key at each start)"))
	case err != nil: // its text names the path
		errs = append(errs, errors.New("SIGNING_KEY_FILE: not a readable RSA private key in PEM, PKCS#1 or PKCS#8 (e.g. from openssl genpkey -algorithm RSA)"))
	}
	return clients, key, errs
}
