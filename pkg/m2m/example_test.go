package m2m_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/go-resty/resty/v2"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/m2m"
)

func Example() {
	// A stand-in for Wristband's token endpoint and a protected API.
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"eyJ.example.token","token_type":"Bearer","expires_in":1800}`)
	}))
	defer idp.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer eyJ.example.token" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"protectedData":"here I am"}`)
	}))
	defer api.Close()

	tokens, err := m2m.New(m2m.Config{
		TokenURL:     idp.URL + "/api/v1/oauth2/token",
		ClientID:     "my-client",
		ClientSecret: "my-secret",
		HTTPClient:   &http.Client{Timeout: 10 * time.Second},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	tokens.Start() // first fetch now, renewals ahead of expiry
	defer tokens.Close()

	client := resty.New().SetBaseURL(api.URL)
	tokens.Attach(client) // token per request, one retry after a 401

	resp, err := client.R().SetContext(context.Background()).Get("/api/protected/data")
	switch {
	case errors.Is(err, m2m.ErrTokenUnavailable):
		fmt.Println("no token: answer 503")
	case err != nil:
		fmt.Println("downstream failed:", err)
	default:
		fmt.Println(resp.StatusCode(), resp.String())
	}
	// Output: 200 {"protectedData":"here I am"}
}
