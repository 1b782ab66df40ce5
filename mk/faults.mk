# Fault and soak suite (docs/reliability.md): the real binaries behind a
# fault-injecting proxy. Behind a build tag so that `make test` stays fast.
.PHONY: test-faults

## test-faults: fault injection and 5-second-token soak against the real binaries (about 3 min on 2 cores)
test-faults:
	$(GO) vet -tags faults ./e2e/faults
	CGO_ENABLED=1 $(GO) test -tags faults -race -count=1 -timeout 10m -v ./e2e/faults
