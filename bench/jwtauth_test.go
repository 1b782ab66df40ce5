package bench

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	jwtmiddleware "github.com/auth0/go-jwt-middleware/v2"
	"github.com/auth0/go-jwt-middleware/v2/jwks"
	auth0validator "github.com/auth0/go-jwt-middleware/v2/validator"
	"github.com/golang-jwt/jwt/v5"
	echojwt "github.com/labstack/echo-jwt/v4"
	"github.com/labstack/echo/v4"
	"github.com/lestrrat-go/jwx/v2/jwa"
	jwxjwt "github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth/jwtauthtest"
)

// The JWT validation benchmarks compare, on one Wristband-shaped RS256
// (2048-bit) token with an aud (auth0's validator insists on one), checking
// iss, aud and exp:
//
//	JWT/FloorRSAVerify       sha256 + rsa.VerifyPKCS1v15: the least any validator must do
//	JWT/JWXParse             jwx v2 jwt.Parse with the key, iss, aud, exp: jwx used directly
//	JWT/Jwtauth{Cold,Cached} pkg/jwtauth's Validate, cache off / on
//	JWT/JwtauthMiddleware{Cold,Cached} the same through an Echo route
//	JWT/EchoJWTKeyfunc       echo-jwt v4 + keyfunc v3 (golang-jwt v5) through an Echo route
//	JWT/Auth0Validator       auth0 go-jwt-middleware v2's validator.ValidateToken (go-jose)
//	JWT/Auth0Middleware      the same through its net/http CheckJWT

const benchAud = "bench-api"

type jwtEnv struct {
	idp   *jwtauthtest.IdP
	token string
}

func newJWTEnv(b *testing.B) jwtEnv {
	b.Helper()
	idp := jwtauthtest.NewIdP(b)
	return jwtEnv{idp: idp, token: idp.Mint(map[string]any{"aud": benchAud, "exp": time.Now().Add(24 * time.Hour).Unix()})}
}

func (env jwtEnv) validator(b *testing.B, cacheSize int) *jwtauth.Validator {
	b.Helper()
	v, err := jwtauth.New(context.Background(), jwtauth.Config{
		JWKSURL: env.idp.JWKSURL(), Issuer: env.idp.Issuer(), Audience: []string{benchAud},
		TokenType: "at+JWT", CacheSize: cacheSize,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Close)
	deadline := time.Now().Add(time.Minute)
	for v.Ready() != nil {
		if time.Now().After(deadline) {
			b.Fatal("validator not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := v.Validate(context.Background(), env.token); err != nil {
		b.Fatal(err)
	}
	return v
}

func BenchmarkJWT(b *testing.B) {
	b.Run("FloorRSAVerify", func(b *testing.B) {
		env := newJWTEnv(b)
		pub := env.idp.SigningKey().Signer.Public().(*rsa.PublicKey)
		i := strings.LastIndexByte(env.token, '.')
		in := []byte(env.token[:i])
		sig, err := base64.RawURLEncoding.DecodeString(env.token[i+1:])
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			d := sha256.Sum256(in)
			if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu)
	})
	b.Run("JWXParse", func(b *testing.B) {
		env := newJWTEnv(b)
		pub := env.idp.SigningKey().Signer.Public()
		tok := []byte(env.token)
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			if _, err := jwxjwt.Parse(tok, jwxjwt.WithKey(jwa.RS256, pub), jwxjwt.WithIssuer(env.idp.Issuer()),
				jwxjwt.WithAudience(benchAud), jwxjwt.WithRequiredClaim("exp")); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu)
	})
	validate := func(cacheSize int) func(*testing.B) {
		return func(b *testing.B) {
			env := newJWTEnv(b)
			v := env.validator(b, cacheSize)
			ctx := context.Background()
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				if _, err := v.Validate(ctx, env.token); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		}
	}
	b.Run("JwtauthCold", validate(-1))
	b.Run("JwtauthCached", validate(0))
	b.Run("JwtauthMiddlewareCold", func(b *testing.B) {
		env := newJWTEnv(b)
		benchEcho(b, env.token, env.validator(b, -1).Middleware())
	})
	b.Run("JwtauthMiddlewareCached", func(b *testing.B) {
		env := newJWTEnv(b)
		benchEcho(b, env.token, env.validator(b, 0).Middleware())
	})
	b.Run("EchoJWTKeyfunc", func(b *testing.B) {
		env := newJWTEnv(b)
		ctx, cancel := context.WithCancel(context.Background())
		b.Cleanup(cancel)
		kf, err := keyfunc.NewDefaultCtx(ctx, []string{env.idp.JWKSURL()})
		if err != nil {
			b.Fatal(err)
		}
		parser := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(env.idp.Issuer()),
			jwt.WithAudience(benchAud), jwt.WithExpirationRequired())
		mw := echojwt.WithConfig(echojwt.Config{
			ParseTokenFunc: func(_ echo.Context, auth string) (any, error) {
				return parser.Parse(auth, kf.Keyfunc)
			},
		})
		benchEcho(b, env.token, mw)
	})
	b.Run("Auth0Validator", func(b *testing.B) {
		env := newJWTEnv(b)
		v := newAuth0Validator(b, env)
		ctx := context.Background()
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			if _, err := v.ValidateToken(ctx, env.token); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu)
	})
	b.Run("Auth0Middleware", func(b *testing.B) {
		env := newJWTEnv(b)
		mw := jwtmiddleware.New(newAuth0Validator(b, env).ValidateToken)
		benchHandler(b, env.token, mw.CheckJWT(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })))
	})
}

// benchEcho serves GET /data through mw and asserts 200 each time.
func benchEcho(b *testing.B, token string, mw echo.MiddlewareFunc) {
	e := echo.New()
	e.GET("/data", func(c echo.Context) error { return c.NoContent(http.StatusOK) }, mw)
	benchHandler(b, token, e)
}

func benchHandler(b *testing.B, token string, h http.Handler) {
	req := httptest.NewRequest(http.MethodGet, "/data", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	reportCPU(b, cpu)
}

func newAuth0Validator(b *testing.B, env jwtEnv) *auth0validator.Validator {
	iss, _ := url.Parse(env.idp.Issuer())
	jwksURL, _ := url.Parse(env.idp.JWKSURL())
	p := jwks.NewCachingProvider(iss, time.Hour, jwks.WithCustomJWKSURI(jwksURL))
	v, err := auth0validator.New(p.KeyFunc, auth0validator.RS256, env.idp.Issuer(), []string{benchAud})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := v.ValidateToken(context.Background(), env.token); err != nil {
		b.Fatal(err)
	}
	return v
}

// cpuTime is this process's user+system CPU time. The benchmarks report it
// per op ("cpu-ns/op") beside the wall-clock ns/op: on a shared, busy
// machine wall time measures the queue for a core, CPU time the work (GC
// included). Run with GOMAXPROCS=1 for the cleanest figure.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}
