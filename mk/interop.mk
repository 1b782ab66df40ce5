# Interop with a real, independent OAuth2 server: Ory Hydra v2.3.0, built
# once from its own tools module (tools/hydra) and cached outside the clone
# (tools/build.sh). The tests carry the build tag "interop" so that
# `make test` does not need Hydra; here they fail, never skip, without it.
.PHONY: test-interop

## test-interop: the real gateway and protected-data against Ory Hydra v2.3.0 (Hydra built once and cached)
test-interop:
	@hydra=$$(tools/build.sh hydra) || { echo "test-interop: FAIL: could not build Ory Hydra (tools/build.sh hydra)" >&2; exit 1; }; \
	set -x; \
	$(GO) vet -tags interop ./interop/... && \
	HYDRA_BIN="$$hydra" CGO_ENABLED=1 $(GO) test -tags interop -race -count=1 -timeout 10m -v ./interop/...
