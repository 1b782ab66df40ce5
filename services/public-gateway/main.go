// Command public-gateway serves GET /api/public/data by calling
// protected-data with a machine-to-machine access token obtained from
// Wristband (or the emulator) with the client-credentials grant.
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/lb"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/m2m"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/telemetry"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/wristband"
	"github.com/wristband-m2m-go/wristband-m2m-go/services/public-gateway/internal/gateway"
)

const defaultAddr = ":6001"

// maxDownstreamTimeout stays under the HTTP server's write timeout.
const maxDownstreamTimeout = 25 * time.Second

type config struct {
	service.Base

	// The reference demo's .env, unchanged. The secret may come from the
	// file CLIENT_SECRET_FILE names instead (Docker/Kubernetes secrets).
	VanityDomain string `envconfig:"APPLICATION_VANITY_DOMAIN"`
	ClientID     string `envconfig:"CLIENT_ID"`
	ClientSecret string `envconfig:"CLIENT_SECRET" secret:"true"`

	// Overrides and the emulator fallback: see wristband.Source.
	TokenURL    string `envconfig:"TOKEN_URL"`
	EmulatorURL string `envconfig:"WRISTBAND_EMULATOR_URL"`

	ProtectedDataURL  string        `envconfig:"PROTECTED_DATA_URL" default:"http://127.0.0.1:6002"`
	DownstreamTimeout time.Duration `envconfig:"DOWNSTREAM_TIMEOUT" default:"5s"`
	// One attempt on one replica; 0 means half of DOWNSTREAM_TIMEOUT, so a
	// replica that went silent leaves time for a retry on another.
	DownstreamAttemptTimeout time.Duration `envconfig:"DOWNSTREAM_ATTEMPT_TIMEOUT"`
	// Pass protected-data's X-Served-By (replica name) on to callers: handy
	// to watch load spreading, off by default because it names internal hosts.
	ExposeServedBy bool `envconfig:"EXPOSE_SERVED_BY"`
	// TLS to protected-data (https:// in PROTECTED_DATA_URL): the CA that
	// signed its certificate (empty: the system roots), and the client
	// certificate to present when it requires one (mTLS).
	ProtectedDataCAFile         string        `envconfig:"PROTECTED_DATA_CA_FILE"`
	ProtectedDataClientCertFile string        `envconfig:"PROTECTED_DATA_CLIENT_CERT_FILE"`
	ProtectedDataClientKeyFile  string        `envconfig:"PROTECTED_DATA_CLIENT_KEY_FILE"`
	TokenTimeout                time.Duration `envconfig:"TOKEN_TIMEOUT" default:"10s"`
	TokenMargin                 time.Duration `envconfig:"TOKEN_MARGIN"`

	// Scopes, audience, client authentication method: see tokens.go.
	TokenEnv
}

func main() { service.Main("public-gateway", defaultAddr, run, "jwks") }

// validate reports every problem with the gateway's own settings at once,
// each naming its variable, never its value. The secret is checked for
// presence only.
func (c config) validate(log *slog.Logger) (wristband.Endpoints, m2m.Config, *tls.Config, []error) {
	var errs []error
	ep, err := wristband.Source{VanityDomain: c.VanityDomain, EmulatorURL: c.EmulatorURL, TokenURL: c.TokenURL}.Resolve(wristband.NeedTokenURL)
	if err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(c.ClientID) == "" {
		errs = append(errs, errors.New("CLIENT_ID: empty; the M2M client's ID from the Wristband dashboard (e.g. demo-client with the emulator)"))
	}
	tc, tokenErrs := c.tokenConfig(c.ClientSecret, c.Reported("CLIENT_SECRET"))
	errs = append(errs, tokenErrs...)
	if _, err := wristband.CheckURL(c.ProtectedDataURL); err != nil {
		errs = append(errs, fmt.Errorf("PROTECTED_DATA_URL: %w", err))
	}
	tlsCfg, tlsErrs := c.downstreamTLS(log)
	errs = append(errs, tlsErrs...)
	// The server's write timeout (30s) must not cut an answer short.
	downstreamOK := c.DownstreamTimeout > 0 && c.DownstreamTimeout <= maxDownstreamTimeout
	if !downstreamOK {
		errs = append(errs, fmt.Errorf("DOWNSTREAM_TIMEOUT: must be above 0 and at most %s (e.g. 5s)", maxDownstreamTimeout))
	}
	// Compared with DOWNSTREAM_TIMEOUT only when that one is valid: one
	// mistake, one message.
	if c.DownstreamAttemptTimeout < 0 || downstreamOK && c.DownstreamAttemptTimeout > c.DownstreamTimeout {
		errs = append(errs, errors.New("DOWNSTREAM_ATTEMPT_TIMEOUT: must be between 0 (half of DOWNSTREAM_TIMEOUT) and DOWNSTREAM_TIMEOUT (e.g. 2s)"))
	}
	if c.TokenTimeout <= 0 {
		errs = append(errs, errors.New("TOKEN_TIMEOUT: must be above 0 (e.g. 10s)"))
	}
	if c.TokenMargin < 0 {
		errs = append(errs, errors.New("TOKEN_MARGIN: must not be negative (e.g. 1m; 0 for the default)"))
	}
	return ep, tc, tlsCfg, errs
}

// downstreamTLS is the TLS configuration for protected-data: nil for an
// http:// URL. The certificate is checked against the URL's host name, not
// the replica's IP that pkg/lb dials.
func (c config) downstreamTLS(log *slog.Logger) (*tls.Config, []error) {
	files := []string{c.ProtectedDataCAFile, c.ProtectedDataClientCertFile, c.ProtectedDataClientKeyFile}
	if !strings.HasPrefix(strings.ToLower(c.ProtectedDataURL), "https://") {
		if slices.ContainsFunc(files, func(f string) bool { return f != "" }) {
			return nil, []error{errors.New("PROTECTED_DATA_CA_FILE, PROTECTED_DATA_CLIENT_CERT_FILE, PROTECTED_DATA_CLIENT_KEY_FILE: set, but PROTECTED_DATA_URL is not https:// (e.g. https://protected-data:6002)")}
		}
		return nil, nil
	}
	host := ""
	if u, err := url.Parse(c.ProtectedDataURL); err == nil {
		host = u.Hostname()
	}
	return service.ClientTLSConfig(log, host,
		service.FileVar{Name: "PROTECTED_DATA_CA_FILE", Path: c.ProtectedDataCAFile},
		service.FileVar{Name: "PROTECTED_DATA_CLIENT_CERT_FILE", Path: c.ProtectedDataClientCertFile},
		service.FileVar{Name: "PROTECTED_DATA_CLIENT_KEY_FILE", Path: c.ProtectedDataClientKeyFile})
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "jwks" {
		return jwksCommand(os.Stdout)
	}
	var cfg config
	log, errs := service.Load(&cfg, defaultAddr)
	ep, tc, downTLS, verrs := cfg.validate(log)
	if err := errors.Join(append(errs, verrs...)...); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	tel, err := telemetry.New(ctx, "public-gateway", telemetry.Settings{MetricsAddr: cfg.MetricsAddr, PProf: cfg.PProf}, log)
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	defer tel.Close() // last: flushes the spans of everything below
	log = tel.Logger(log)

	tc.TokenURL, tc.ClientID = ep.TokenURL, cfg.ClientID
	// No HTTPClient: the source's own, timing out after TOKEN_TIMEOUT, on
	// a transport of its own that Close releases.
	tc.RequestTimeout, tc.Margin, tc.Logger = cfg.TokenTimeout, cfg.TokenMargin, log
	tokens, err := m2m.New(tc)
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	// The first token is fetched in the background: the listener is up at
	// once, and /readyz says when a token is held.
	tokens.Start()
	defer tokens.Close()

	log.Info("public-gateway starting",
		slog.String("token_url", ep.TokenURL), slog.String("client_id", cfg.ClientID),
		slog.String("token_auth_method", string(cmp.Or(tc.AuthMethod, m2m.ClientSecretBasic))),
		slog.Any("token_scopes", tc.Scopes), slog.Any("token_params", slices.Sorted(maps.Keys(tc.EndpointParams))),
		slog.String("protected_data_url", cfg.ProtectedDataURL),
		slog.Bool("protected_data_client_cert", cfg.ProtectedDataClientCertFile != ""))

	// Client-side balancing over every address protected-data's name resolves
	// to (compose --scale, Swarm dnsrr, a Kubernetes headless Service), with
	// passive health and retries of the idempotent GET on another replica.
	// A killed container often sends no reset, only silence: a per-attempt
	// bound under DOWNSTREAM_TIMEOUT leaves time to retry elsewhere.
	attempt := cmp.Or(cfg.DownstreamAttemptTimeout, cfg.DownstreamTimeout/2)
	tr, err := lb.NewTransport(lb.Config{Logger: log, AttemptTimeout: attempt, TLSClientConfig: downTLS})
	if err != nil {
		return fmt.Errorf("downstream transport: %w", err)
	}
	defer tr.Close()

	tel.Register(telemetry.TokenSourceCollector(tokens), telemetry.DownstreamCollector(tr))

	e := service.NewEcho(log)
	tel.Instrument(e, telemetry.Edge)
	service.TrustProxies(e, cfg.Base)
	service.Health(e, log, service.Check{Name: "token", Fn: func(context.Context) error { return tokens.Ready() }})
	gateway.New(gateway.Config{
		ProtectedDataURL: cfg.ProtectedDataURL,
		Timeout:          cfg.DownstreamTimeout,
		ExposeServedBy:   cfg.ExposeServedBy,
		Transport:        tel.Transport(tr),
		Tokens:           tokens,
		Log:              log,
	}).Register(e)
	return service.Serve(ctx, log, e, cfg.Base, tel.StartAdmin)
}
