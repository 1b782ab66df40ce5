package jwtauth

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"go.opentelemetry.io/otel"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth/jwtauthtest"
)

// BenchmarkColdParts times the pieces of the cold path on the benchmark
// token, to show where its time goes beyond the RSA verify.
func BenchmarkColdParts(b *testing.B) {
	idp := jwtauthtest.NewIdP(b)
	tok := idp.Mint(map[string]any{"aud": "bench-api", "exp": time.Now().Add(24 * time.Hour).Unix()})
	v := &Validator{cfg: Config{Issuer: idp.Issuer(), Audience: []string{"bench-api"}, Leeway: DefaultLeeway, clock: realClock{}}, clock: realClock{}}
	i := strings.IndexByte(tok, '.')
	j := i + 1 + strings.IndexByte(tok[i+1:], '.')
	payload, _ := b64.DecodeString(tok[i+1 : j])
	pub := idp.SigningKey().Signer.Public()
	b.Run("precheckShape", func(b *testing.B) {
		for b.Loop() {
			if precheckShape(tok) != nil {
				b.Fatal("refused")
			}
		}
	})
	b.Run("checkClaims", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.checkClaims(payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("jwsParse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := jws.Parse([]byte(tok)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("jwsVerify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := jws.Verify([]byte(tok), jws.WithKey(jwa.RS256, pub)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("span", func(b *testing.B) {
		b.ReportAllocs()
		v.tracer = otel.Tracer(tracerName)
		for b.Loop() {
			_, s := v.tracer.Start(context.Background(), "x")
			s.End()
		}
	})
}
