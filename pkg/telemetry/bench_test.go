package telemetry_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/telemetry"
)

// BenchmarkHTTPMetrics measures what the metrics middleware adds to one
// request through Echo (run with -benchmem; compare the two).
func BenchmarkHTTPMetrics(b *testing.B) {
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	b.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			e := echo.New()
			if on {
				tel, err := telemetry.New(b.Context(), "bench", telemetry.Settings{MetricsAddr: "127.0.0.1:0"}, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer tel.Close()
				tel.Instrument(e, telemetry.Internal)
			}
			e.GET("/api/:id", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) })
			req := httptest.NewRequest(http.MethodGet, "/api/1", nil)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				rec := httptest.NewRecorder()
				for pb.Next() {
					e.ServeHTTP(rec, req)
				}
			})
		})
	}
}
