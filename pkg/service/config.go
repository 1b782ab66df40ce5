package service

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/kelseyhightower/envconfig"
)

// LoadConfig fills spec from the environment (envconfig tags, defaults in
// tags) and reports every value that does not parse, not just the first:
// envconfig stops at the first, so the offending variable is dropped from
// this process's environment (start-up only, before any goroutine) and the
// rest is read again with its default. Values are never echoed: the error
// could otherwise carry a secret. Validation of the parsed values is the
// caller's: it knows which combinations are wrong.
func LoadConfig(spec any) error {
	var errs []error
	for range 100 {
		err := envconfig.Process("", spec)
		if err == nil {
			break
		}
		var pe *envconfig.ParseError
		if !errors.As(err, &pe) {
			errs = append(errs, errors.New("reading configuration: malformed specification"))
			break
		}
		errs = append(errs, fmt.Errorf("%s: not a valid %s", pe.KeyName, typeWord(pe.TypeName)))
		if os.Unsetenv(pe.KeyName) != nil {
			break
		}
	}
	return errors.Join(errs...)
}

func typeWord(t string) string {
	switch t {
	case "Duration":
		return "duration (e.g. 5s, 1m30s)"
	case "bool":
		return "boolean (true or false)"
	case "int", "int64", "uint", "uint64":
		return "whole number"
	default:
		return t
	}
}

// CheckListenAddr reports a listen address that net.Listen would refuse.
func CheckListenAddr(name, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s %q: want host:port or :port", name, addr)
	}
	return nil
}

// Load reads spec from the environment and builds the logger from the
// format and level it names (pointers into spec, read after loading). It
// returns every problem found so far, so that main can add its own checks
// and report them all at once; the logger is usable even then.
func Load(spec any, format, level *string) (*slog.Logger, []error) {
	var errs []error
	if err := LoadConfig(spec); err != nil {
		errs = append(errs, err)
	}
	out, err := logOutput()
	if err != nil {
		errs = append(errs, err)
	}
	log, err := NewLogger(out, *format, *level)
	if err != nil {
		errs = append(errs, fmt.Errorf("LOG_FORMAT/LOG_LEVEL: %w", err))
		log = NewDiscardLogger()
	}
	return log, errs
}
