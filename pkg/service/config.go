package service

import (
	"cmp"
	"encoding"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Base is the configuration every service shares. Embed it in a service's
// config struct (`type config struct { service.Base; ... }`) and read the
// whole struct with Load. LISTEN_ADDR's default is the service's own port,
// given to Load and Main, so that it is written down once per service.
type Base struct {
	ListenAddr string `envconfig:"LISTEN_ADDR"`
	LogFormat  string `envconfig:"LOG_FORMAT" default:"json"`
	LogLevel   string `envconfig:"LOG_LEVEL" default:"info"`
	// MaxConnections caps concurrent connections (idle keep-alive ones
	// included); 0 means defaultMaxConnections. See limitListener.
	MaxConnections int `envconfig:"MAX_CONNECTIONS"`
	// TrustedProxies are the CIDRs (or single IPs) of proxies whose
	// X-Forwarded-For is believed for remote_ip. Empty: the peer address is
	// logged and no forwarding header is trusted.
	TrustedProxies []string `envconfig:"TRUSTED_PROXIES"`
	// MetricsAddr is the admin listener (/metrics, pprof) that the
	// telemetry package serves; empty turns it off. Never the public port.
	MetricsAddr string `envconfig:"METRICS_ADDR" default:":9090"`
	// PProf serves net/http/pprof on the admin listener.
	PProf bool `envconfig:"PPROF" default:"false"`

	proxies  []netip.Prefix  // parsed TrustedProxies
	reported map[string]bool // variables Load found wrong
}

// Reported says whether Load already reported a problem with the variable,
// so that a service's own checks do not report one mistake twice (say, an
// unreadable CLIENT_SECRET_FILE, then an empty CLIENT_SECRET).
func (b *Base) Reported(name string) bool { return b.reported[name] }

// VarError is a problem with one variable. Its message names the variable
// and never carries the value.
type VarError struct {
	Name  string // the field's variable, e.g. CLIENT_SECRET
	Label string // what the message names, if not Name (CLIENT_SECRET_FILE)
	Err   error
}

func (e *VarError) Error() string { return cmp.Or(e.Label, e.Name) + ": " + e.Err.Error() }
func (e *VarError) Unwrap() error { return e.Err }

func (b *Base) base() *Base { return b }

// Spec is a service's config struct: any struct pointer embedding Base.
type Spec interface{ base() *Base }

// maxSecretFileBytes bounds a NAME_FILE read: secrets and client lists are
// small, and a mistaken path to a big file should fail clearly.
const maxSecretFileBytes = 64 << 10

// Load reads spec from the environment, checks the shared settings and
// builds the logger they name. It returns every problem found, each naming
// its variable and never its value, so that main can add its own checks and
// report them all at once; the logger is usable even then.
//
// Fields are read from the variable in their `envconfig` tag (the upper-case
// field name without one), `default` applies when the variable is unset, and
// a field tagged `secret:"true"` may instead be read from the file named by
// NAME_FILE (Docker and Kubernetes secrets), one trailing newline trimmed.
// Supported types: string, bool, ints, uints, floats, time.Duration,
// encoding.TextUnmarshaler and slices of these (comma-separated, spaces
// around items trimmed). The environment is only read, never changed.
func Load(spec Spec, defaultAddr string) (*slog.Logger, []error) {
	errs := LoadEnv(spec)
	b := spec.base()
	b.reported = map[string]bool{}
	for _, err := range errs {
		if ve, ok := err.(*VarError); ok {
			b.reported[ve.Name] = true
		}
	}
	b.ListenAddr = cmp.Or(b.ListenAddr, defaultAddr)
	errs = append(errs, b.check()...)
	log, err := NewLogger(os.Stderr, b.LogFormat, b.LogLevel)
	if err != nil {
		// check has reported it already, naming the variable.
		log = NewDiscardLogger()
	}
	return log, errs
}

func (b *Base) check() []error {
	var errs []error
	if err := CheckListenAddr("LISTEN_ADDR", b.ListenAddr); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseLevel(b.LogLevel); err != nil {
		errs = append(errs, errors.New("LOG_LEVEL: not a log level (e.g. debug, info, warn, error)"))
	}
	if _, err := NewLogger(io.Discard, b.LogFormat, "info"); err != nil {
		errs = append(errs, errors.New("LOG_FORMAT: not a log format (e.g. json, text)"))
	}
	switch {
	case b.MetricsAddr == "":
		if b.PProf {
			errs = append(errs, errors.New("PPROF: needs the admin listener; set METRICS_ADDR (e.g. :9090) or PPROF=false"))
		}
	case CheckListenAddr("METRICS_ADDR", b.MetricsAddr) != nil:
		errs = append(errs, errors.New("METRICS_ADDR: want host:port or :port (e.g. :9090), or empty to turn metrics off"))
	case b.MetricsAddr == b.ListenAddr:
		errs = append(errs, errors.New("METRICS_ADDR: must differ from LISTEN_ADDR (e.g. :9090); metrics never share the public port"))
	}
	if b.MaxConnections < 0 {
		errs = append(errs, errors.New("MAX_CONNECTIONS: must not be negative (e.g. 1024; 0 for the default)"))
	}
	b.MaxConnections = cmp.Or(b.MaxConnections, defaultMaxConnections)
	b.proxies = b.proxies[:0]
	for _, s := range b.TrustedProxies {
		p, err := parsePrefix(s)
		if err != nil {
			errs = append(errs, errors.New("TRUSTED_PROXIES: an entry is not an IP address or CIDR (e.g. 10.0.0.0/8,192.168.1.10)"))
			break
		}
		b.proxies = append(b.proxies, p)
	}
	return errs
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// CheckListenAddr reports a listen address that net.Listen would refuse.
// The address is not echoed: it is the variable's value.
func CheckListenAddr(name, addr string) error {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return fmt.Errorf("%s: not host:port or :port (e.g. :8080, 127.0.0.1:8080)", name)
	}
	return nil
}

// LoadEnv fills spec (a struct pointer) from the environment as Load
// describes, and returns one error per variable that is wrong.
func LoadEnv(spec any) []error {
	v := reflect.ValueOf(spec)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return []error{errors.New("reading configuration: the specification must be a struct pointer")}
	}
	var errs []error
	loadStruct(v.Elem(), fieldNames(v.Elem().Type(), map[string]bool{}), &errs)
	return errs
}

// fieldNames collects the variables spec's fields name, embedded structs
// included.
func fieldNames(t reflect.Type, into map[string]bool) map[string]bool {
	for i := range t.NumField() {
		f := t.Field(i)
		switch {
		case !f.IsExported() || f.Tag.Get("ignored") == "true":
		case isEmbeddedSpec(f):
			fieldNames(f.Type, into)
		default:
			into[varName(f)] = true
		}
	}
	return into
}

func isEmbeddedSpec(f reflect.StructField) bool {
	return f.Anonymous && f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(unmarshalType)
}

func varName(f reflect.StructField) string {
	return cmp.Or(f.Tag.Get("envconfig"), strings.ToUpper(f.Name))
}

var (
	durationType  = reflect.TypeFor[time.Duration]()
	unmarshalType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// loadStruct fills v's fields. names are all the variables the spec reads:
// a spec with its own field for NAME_FILE reads that file itself, so the
// NAME_FILE convention is then off for NAME (one file, read once).
func loadStruct(v reflect.Value, names map[string]bool, errs *[]error) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		fv := v.Field(i)
		if !f.IsExported() || f.Tag.Get("ignored") == "true" {
			continue
		}
		if isEmbeddedSpec(f) {
			loadStruct(fv, names, errs)
			continue
		}
		name := varName(f)
		secret := f.Tag.Get("secret") == "true" && !names[name+"_FILE"]
		raw, set, err := lookup(name, secret)
		if err != nil {
			*errs = append(*errs, err)
			continue
		}
		def, hasDef := f.Tag.Lookup("default")
		// Set but blank counts as unset for all but text: compose passes
		// `${VAR:-}` as an empty value, and DOWNSTREAM_TIMEOUT= should
		// mean the default, while METRICS_ADDR= may mean "off".
		if k := f.Type.Kind(); set && strings.TrimSpace(raw) == "" && k != reflect.String && k != reflect.Slice {
			set = false
		}
		if !set {
			if f.Tag.Get("required") == "true" {
				*errs = append(*errs, &VarError{Name: name, Err: errors.New("required but not set")})
				continue
			}
			if !hasDef {
				continue
			}
			raw = def
		}
		if err := setField(fv, raw, def); err != nil {
			*errs = append(*errs, &VarError{Name: name, Err: err})
			// The default (or the zero value) stands in, so that the
			// service's own checks do not report the same mistake again.
			fv.SetZero()
			if hasDef {
				_ = setField(fv, def, def)
			}
		}
	}
}

// lookup returns the variable's value, or for a secret the content of the
// file NAME_FILE names. Errors (*VarError) never carry the value, the path
// or the file's content.
func lookup(name string, secret bool) (string, bool, error) {
	raw, set := os.LookupEnv(name)
	if !secret {
		return raw, set, nil
	}
	path, fromFile := os.LookupEnv(name + "_FILE")
	switch {
	case !fromFile:
		return raw, set, nil
	case set && raw != "":
		return "", false, &VarError{Name: name, Label: name + " and " + name + "_FILE",
			Err: fmt.Errorf("both set; set one of them (e.g. %s_FILE=/run/secrets/%s alone)", name, strings.ToLower(name))}
	case path == "":
		return "", false, &VarError{Name: name, Label: name + "_FILE",
			Err: fmt.Errorf("empty (e.g. /run/secrets/%s)", strings.ToLower(name))}
	}
	b, err := readSmallFile(path, name)
	if err != nil {
		return "", false, &VarError{Name: name, Label: name + "_FILE", Err: err}
	}
	return strings.TrimRight(string(b), "\r\n"), true, nil
}

func readSmallFile(path, name string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileProblem(err, name)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	if err != nil {
		return nil, fileProblem(err, name)
	}
	if len(b) > maxSecretFileBytes {
		return nil, fmt.Errorf("the file is larger than %d KiB", maxSecretFileBytes>>10)
	}
	return b, nil
}

// fileProblem names what went wrong without the path (the variable's value)
// and without anything read.
func fileProblem(err error, name string) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("the file does not exist (e.g. /run/secrets/%s)", strings.ToLower(name))
	case errors.Is(err, fs.ErrPermission):
		return errors.New("the file cannot be read: permission denied")
	default:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("the file cannot be read: %w", pe.Err)
		}
		return errors.New("the file cannot be read")
	}
}

// setField converts raw into the field's type. Errors say what was wanted
// and give an example (the default when there is one), never raw itself.
func setField(fv reflect.Value, raw, def string) error {
	if fv.CanAddr() && fv.Addr().Type().Implements(unmarshalType) {
		if err := fv.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(raw)); err != nil {
			return fmt.Errorf("not a valid value%s", example(def, ""))
		}
		return nil
	}
	t := fv.Type()
	if t == durationType {
		if strings.TrimSpace(raw) == "" {
			return nil // set but empty: the zero value, as for an unset variable without default
		}
		d, err := time.ParseDuration(strings.TrimSpace(raw))
		if err != nil {
			return fmt.Errorf("not a valid duration%s", example(def, "30s, 1m"))
		}
		fv.SetInt(int64(d))
		return nil
	}
	switch t.Kind() {
	case reflect.String:
		fv.SetString(raw)
	case reflect.Bool:
		if strings.TrimSpace(raw) == "" {
			return nil
		}
		b, err := strconv.ParseBool(strings.TrimSpace(raw))
		if err != nil {
			return errors.New("not a boolean (e.g. true, false)")
		}
		fv.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if strings.TrimSpace(raw) == "" {
			return nil
		}
		n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, t.Bits())
		if err != nil {
			return fmt.Errorf("not a whole number in range%s", example(def, "10"))
		}
		fv.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if strings.TrimSpace(raw) == "" {
			return nil
		}
		n, err := strconv.ParseUint(strings.TrimSpace(raw), 10, t.Bits())
		if err != nil {
			return fmt.Errorf("not a non-negative whole number in range%s", example(def, "10"))
		}
		fv.SetUint(n)
	case reflect.Float32, reflect.Float64:
		if strings.TrimSpace(raw) == "" {
			return nil
		}
		x, err := strconv.ParseFloat(strings.TrimSpace(raw), t.Bits())
		if err != nil {
			return fmt.Errorf("not a number%s", example(def, "0.5"))
		}
		fv.SetFloat(x)
	case reflect.Slice:
		var items []string
		for s := range strings.SplitSeq(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		out := reflect.MakeSlice(t, len(items), len(items))
		for i, s := range items {
			if err := setField(out.Index(i), s, ""); err != nil {
				return fmt.Errorf("item %d: %w", i+1, err)
			}
		}
		fv.Set(out)
	default:
		return fmt.Errorf("unsupported field type %s (a bug in the service)", t)
	}
	return nil
}

func example(def, fallback string) string {
	if def = strings.TrimSpace(def); def != "" {
		return " (e.g. " + def + ")"
	}
	if fallback != "" {
		return " (e.g. " + fallback + ")"
	}
	return ""
}
