package jwtauth_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth/jwtauthtest"
)

// A protected route: build the Validator once at start-up, mount its
// middleware, read the claims in the handler.
func ExampleValidator_Middleware() {
	idp := jwtauthtest.Start() // stands in for https://<vanity domain>
	defer idp.Close()

	v, err := jwtauth.New(context.Background(), jwtauth.Config{
		JWKSURL:   idp.JWKSURL(), // https://<vanity>/api/v1/oauth2/jwks
		Issuer:    idp.Issuer(),  // https://<vanity>
		TokenType: "at+JWT",
		Realm:     "protected-data",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer v.Close()
	// Readiness probes should use v.Ready(); here we just wait for the keys.
	for v.Ready() != nil {
		time.Sleep(10 * time.Millisecond)
	}

	e := echo.New()
	e.GET("/api/protected/data", func(c echo.Context) error {
		claims, _ := jwtauth.ClaimsFrom(c)
		return c.String(http.StatusOK, "hello "+claims.ClientID)
	}, v.Middleware(jwtauth.AllowClients("client-1")))

	for _, auth := range []string{"Bearer " + idp.Mint(nil), "Bearer " + idp.Mint(map[string]any{"exp": 1}), ""} {
		req := httptest.NewRequest(http.MethodGet, "/api/protected/data", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if ch := rec.Header().Get("WWW-Authenticate"); ch != "" {
			fmt.Println(rec.Code, ch)
		} else {
			fmt.Println(rec.Code)
		}
		fmt.Println(rec.Body.String())
	}
	// Output:
	// 200
	// hello client-1
	// 401 Bearer realm="protected-data", error="invalid_token", error_description="token expired"
	// {"error":"invalid_token","error_description":"token expired"}
	//
	// 401 Bearer realm="protected-data"
	// {"error":"unauthorized","error_description":"missing bearer token"}
}
