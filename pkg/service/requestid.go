package service

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/labstack/echo/v4"
)

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sanitizeRequestID replaces an incoming X-Request-Id that is empty, longer
// than 64 bytes or not made of [A-Za-z0-9._-] with a fresh one, so callers
// cannot forge log lines or bloat headers.
func sanitizeRequestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Response().Header().Get(HeaderRequestID)
		if !validRequestID(id) {
			id = newRequestID()
			c.Response().Header().Set(HeaderRequestID, id)
		}
		c.Request().Header.Set(HeaderRequestID, id)
		return next(c)
	}
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			return false
		}
	}
	return true
}
