package service

import (
	"fmt"
	"net"

	"github.com/kelseyhightower/envconfig"
)

// LoadConfig fills spec from the environment (envconfig tags, defaults in
// tags). Validation is the caller's: it knows which combinations are wrong.
func LoadConfig(spec any) error {
	if err := envconfig.Process("", spec); err != nil {
		return fmt.Errorf("reading configuration: %w", err)
	}
	return nil
}

// CheckListenAddr reports a listen address that net.Listen would refuse.
func CheckListenAddr(name, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s %q: want host:port or :port", name, addr)
	}
	return nil
}
