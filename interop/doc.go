// Package interop runs the real public-gateway and protected-data binaries
// against Ory Hydra v2.3.0, an independent OAuth2 server, and checks what a
// user integrating with any standard server would meet: scopes and
// audiences, client_secret_post and private_key_jwt client authentication,
// ES256 keys, key rotation under the JWKS refetch cooldown, and recovery
// after a deleted client.
//
// The tests carry the build tag "interop" so that `make test` does not need
// Hydra; run them with `make test-interop`, which builds Hydra once in its own
// tools module (tools/build.sh hydra, cached outside the clone). Without
// Hydra the tests fail; they never skip.
//
// This module depends on no Hydra package: Hydra is a separate process
// driven through its admin REST API, as an operator would drive it.
package interop
