// Package servicetest helps the services' configuration tests.
package servicetest

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// SetEnv makes the environment, for this test, exactly env ("NAME=value")
// as far as spec (a config struct, or a pointer to one) is concerned: every
// variable spec reads, and its NAME_FILE form, is unset first, so that the
// developer's own environment cannot change the outcome. t.Setenv restores
// everything after the test.
func SetEnv(t testing.TB, spec any, env ...string) {
	t.Helper()
	typ := reflect.TypeOf(spec)
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	unsetAll(t, typ)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

func unsetAll(t testing.TB, typ reflect.Type) {
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			unsetAll(t, f.Type)
			continue
		}
		name := f.Tag.Get("envconfig")
		if name == "" {
			continue
		}
		for _, n := range []string{name, name + "_FILE"} {
			if _, set := os.LookupEnv(n); set {
				t.Setenv(n, "") // registers the restore
				os.Unsetenv(n)
			}
		}
	}
}
