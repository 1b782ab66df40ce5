// Package bench holds the comparison benchmarks: this project's packages
// side by side with the libraries a user might pick instead (keyfunc +
// golang-jwt + echo-jwt, auth0's go-jwt-middleware, x/oauth2's
// clientcredentials). It is its own module so that those libraries are
// dependencies of the benchmarks only, never of pkg (which lists only what
// production code imports).
//
// Run (also part of `make bench`):
//
//	go test -run '^$' -bench . -benchmem ./bench/
package bench
