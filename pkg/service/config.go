package service

import (
	"cmp"
	"encoding"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/kelseyhightower/envconfig"
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
	// TLS: with a certificate and key the service serves HTTPS only
	// (TLS 1.2+), re-reading the files when they change. With a client CA
	// every client must present a certificate that CA signed (mTLS). See
	// tls.go.
	TLSCertFile     string `envconfig:"TLS_CERT_FILE"`
	TLSKeyFile      string `envconfig:"TLS_KEY_FILE"`
	TLSClientCAFile string `envconfig:"TLS_CLIENT_CA_FILE"`

	proxies  []netip.Prefix  // parsed TrustedProxies
	tls      *serverTLS      // nil: plain HTTP
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
// Fields are read with envconfig's tags and conversions (envconfig,
// default, required, split_words, ignored; Decoder, Setter,
// TextUnmarshaler, durations, numbers, slices, maps), one field at a time
// so that every mistake is reported. On top of envconfig: a variable set
// but blank counts as unset except for text, list items are trimmed, and a
// field tagged `secret:"true"` may instead be read from the file named by
// NAME_FILE (Docker and Kubernetes secrets), one trailing newline trimmed.
// The environment is only read, never changed.
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
	out, err := logOutput()
	if err != nil {
		errs = append(errs, err)
	}
	log, err := NewLogger(out, b.LogFormat, b.LogLevel)
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
	tlsCfg, tlsErrs := b.loadServerTLS()
	b.tls = tlsCfg
	errs = append(errs, tlsErrs...)
	return errs
}

// TLS says whether the service serves HTTPS (TLS_CERT_FILE set and valid)
// and whether it requires client certificates (TLS_CLIENT_CA_FILE).
func (b *Base) TLS() (on, mutual bool) {
	return b.tls != nil, b.tls != nil && b.tls.clientCA != nil
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
	vars, err := gather(spec)
	if err != nil {
		return []error{fmt.Errorf("reading configuration: %w", err)}
	}
	names := map[string]bool{}
	for _, v := range vars {
		names[v.key] = true
	}
	var errs []error
	for _, v := range vars {
		if err := v.load(names); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// envVar is one field of a spec, as envconfig names it.
type envVar struct {
	key   string
	tags  reflect.StructTag
	field reflect.Value
}

// gather lists spec's fields as envconfig itself does (envconfig tag or
// field name, split_words, ignored, embedded and nested structs). envconfig
// v1.4.0 (the latest) exports that list only as the data of a usage
// template (Key, Tags, Field), so a template function collects it.
func gather(spec any) ([]envVar, error) {
	var vars []envVar
	tmpl := template.Must(template.New("").Funcs(template.FuncMap{
		"add": func(key string, tags reflect.StructTag, field reflect.Value) string {
			vars = append(vars, envVar{key, tags, field})
			return ""
		},
	}).Parse(`{{range .}}{{add .Key .Tags .Field}}{{end}}`))
	err := envconfig.Usaget("", spec, io.Discard, tmpl)
	return vars, err
}

// load reads one field. names are all the variables the spec reads: a spec
// with its own field for NAME_FILE reads that file itself, so the NAME_FILE
// convention is then off for NAME (one file, read once).
func (v envVar) load(names map[string]bool) error {
	name, t := v.key, v.field.Type()
	raw, set, err := lookup(name, v.tags.Get("secret") == "true" && !names[name+"_FILE"])
	if err != nil {
		return err
	}
	list := t.Kind() == reflect.Slice && t.Elem().Kind() != reflect.Uint8 && !custom(t)
	switch {
	case t.Kind() == reflect.String:
		// Text: empty means empty (METRICS_ADDR= may mean "off").
	case list:
		raw = trimItems(raw)
	default:
		// Set but blank counts as unset: compose passes `${VAR:-}` as an
		// empty value, and DOWNSTREAM_TIMEOUT= should mean the default.
		raw = strings.TrimSpace(raw)
		set = set && raw != ""
	}
	def := v.tags.Get("default") // envconfig's rules: "" is no default
	if !set {
		if def == "" {
			if isTrue(v.tags.Get("required")) {
				return &VarError{Name: name, Err: errors.New("required but not set")}
			}
			return nil
		}
		raw = def
	}
	if convert(v.field, raw) == nil && finite(v.field) {
		return nil
	}
	// The default (or the zero value) stands in, so that the service's own
	// checks do not report the same mistake again.
	v.field.SetZero()
	_ = convert(v.field, def)
	if list {
		for i, item := range strings.Split(raw, ",") {
			if e := reflect.New(t.Elem()).Elem(); convert(e, item) != nil || !finite(e) {
				return &VarError{Name: name, Err: fmt.Errorf("item %d: %w", i+1, problem(t.Elem(), ""))}
			}
		}
	}
	return &VarError{Name: name, Err: problem(t, def)}
}

// convert sets field from raw by envconfig's own per-field processing
// (Decoder, Setter, TextUnmarshaler, durations, numbers, slices, maps):
// Process on a one-field struct of the field's type whose only source is
// its default tag, under a key no environment can hold (a name stops at its
// first '='). Its *ParseError is dropped unread: its text quotes the value.
func convert(field reflect.Value, raw string) error {
	one := reflect.New(reflect.StructOf([]reflect.StructField{{
		Name: "V", Type: field.Type(),
		Tag: reflect.StructTag(`envconfig:"=" default:` + strconv.Quote(raw)),
	}}))
	if err := envconfig.Process("", one.Interface()); err != nil {
		return err
	}
	field.Set(one.Elem().Field(0))
	return nil
}

// finite refuses the NaN and Inf that strconv.ParseFloat (and so envconfig)
// accepts: no rate, ratio or timeout setting means them, and NaN passes
// every range check (NaN < 0 and NaN > 0 are both false).
func finite(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		f := v.Float()
		return !math.IsNaN(f) && !math.IsInf(f, 0)
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if !finite(v.Index(i)) {
				return false
			}
		}
	case reflect.Pointer:
		return v.IsNil() || finite(v.Elem())
	}
	return true
}

// trimItems trims the spaces around a list's items and drops empty ones
// ("RS256, ES256," is two items).
func trimItems(raw string) string {
	var items []string
	for s := range strings.SplitSeq(raw, ",") {
		if s = strings.TrimSpace(s); s != "" {
			items = append(items, s)
		}
	}
	return strings.Join(items, ",")
}

func isTrue(s string) bool { b, _ := strconv.ParseBool(s); return b }

var customTypes = []reflect.Type{
	reflect.TypeFor[envconfig.Decoder](), reflect.TypeFor[envconfig.Setter](),
	reflect.TypeFor[encoding.TextUnmarshaler](), reflect.TypeFor[encoding.BinaryUnmarshaler](),
}

// custom says whether envconfig hands t's values to t's own method.
func custom(t reflect.Type) bool {
	return slices.ContainsFunc(customTypes, func(i reflect.Type) bool {
		return t.Implements(i) || reflect.PointerTo(t).Implements(i)
	})
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
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		// Else the service would report NAME empty, which the user did not
		// set: e.g. a command that was to write the file failed.
		return "", false, &VarError{Name: name, Label: name + "_FILE",
			Err: fmt.Errorf("the file is empty; it should hold what %s would (wrong file, or the command that was to write it failed?)", name)}
	}
	return v, true, nil
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

// problem says what a field of type t wants, with an example (the default
// when there is one), never the value.
func problem(t reflect.Type, def string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	eg := func(fallback string) string {
		if e := cmp.Or(strings.TrimSpace(def), fallback); e != "" {
			return " (e.g. " + e + ")"
		}
		return ""
	}
	switch {
	case custom(t):
		return errors.New("not a valid value" + eg(""))
	case t == reflect.TypeFor[time.Duration]():
		return errors.New("not a valid duration" + eg("30s, 1m"))
	case t.Kind() == reflect.Bool:
		return errors.New("not a boolean (e.g. true, false)")
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return errors.New("not a whole number in range" + eg("10"))
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uintptr:
		return errors.New("not a non-negative whole number in range" + eg("10"))
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return errors.New("not a number" + eg("0.5"))
	case t.Kind() == reflect.Map:
		return errors.New("not a comma-separated list of key:value pairs" + eg("a:1,b:2"))
	}
	return errors.New("not a valid value" + eg(""))
}
