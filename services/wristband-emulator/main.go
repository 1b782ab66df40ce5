// Command wristband-emulator is a local stand-in for a Wristband
// application's M2M endpoints (token and JWKS), so that the gateway and
// protected-data run with no account and no configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
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
}

func main() { service.Main("wristband-emulator", defaultAddr, run) }

func run(ctx context.Context, _ []string) error {
	var cfg config
	log, errs := service.Load(&cfg, defaultAddr)
	clients, cerr := idp.ParseClients(cfg.Clients)
	if cerr != nil {
		// Not cerr's text: this message names CLIENTS_FILE too.
		errs = append(errs, errors.New("CLIENTS (or CLIENTS_FILE): not a comma-separated list of id:secret pairs (e.g. demo-client:demo-secret,other:s3cret)"))
	}
	if cfg.TokenLifetime < time.Second {
		errs = append(errs, errors.New("TOKEN_LIFETIME: must be at least 1s (e.g. 30m)"))
	}
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("ISSUER: empty (e.g. http://127.0.0.1:6003, the emulator's own base URL)"))
	} else if _, err := wristband.CheckURL(cfg.Issuer); err != nil {
		errs = append(errs, fmt.Errorf("ISSUER: %w", err))
	}
	key, kerr := idp.LoadOrGenerateKey(cfg.SigningKeyFile)
	if kerr != nil {
		errs = append(errs, fmt.Errorf("SIGNING_KEY_FILE: %w", kerr))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	p, err := idp.New(idp.Config{
		Issuer: cfg.Issuer, Clients: clients, Lifetime: cfg.TokenLifetime,
		AppID: cfg.AppID, TenantID: cfg.TenantID, Key: key, KeyID: cfg.KeyID,
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
	service.TrustProxies(e, cfg.Base)
	service.Health(e, log)
	p.Register(e)
	return service.Serve(ctx, log, e, cfg.Base)
}
