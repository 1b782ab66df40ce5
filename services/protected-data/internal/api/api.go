// Package api holds protected-data's routes.
package api

import (
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/jwtauth"
	"github.com/wristband-m2m-go/wristband-m2m-go/pkg/service"
)

// DataResponse is the protected payload.
type DataResponse struct {
	ProtectedData string `json:"protectedData"`
}

// Register mounts GET /api/protected/data behind auth. servedBy is the
// replica's name (its hostname).
func Register(e *echo.Echo, auth echo.MiddlewareFunc, servedBy string) {
	body := DataResponse{ProtectedData: "here I am"}
	e.GET("/api/protected/data", func(c echo.Context) error {
		// Who called, for the audit trail: identifiers only, never the token.
		if cl, ok := jwtauth.ClaimsFrom(c); ok {
			service.AddLogAttrs(c, slog.String("client_id", cl.ClientID),
				slog.String("sub", cl.Subject), slog.String("jti", cl.ID))
		}
		c.Response().Header().Set(service.HeaderServedBy, servedBy)
		return c.JSON(http.StatusOK, body)
	}, auth)
}
