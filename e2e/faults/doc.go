// Package faults runs the real gateway, protected-data and emulator binaries
// with a fault-injecting proxy on each link (gateway -> token endpoint,
// protected-data -> JWKS, gateway -> protected-data) and checks what each
// fault does to callers, plus a soak with 5-second tokens. The table of
// cases and outcomes is docs/reliability.md.
//
// The tests take minutes, so they sit behind the "faults" build tag and
// run with `make test-faults` rather than in `make test`:
//
//	go test -tags faults -count=1 ./e2e/faults
package faults
