# The README's commands. Everything here installs what it needs itself.
SHELL    := /bin/bash
GO       ?= go
SERVICES := public-gateway protected-data wristband-emulator
BINS     := $(addprefix bin/,$(SERVICES))
# Every module of the workspace (go test ./... does not cross modules).
MODULE_DIRS = $(shell $(GO) list -m -f '{{.Dir}}')

export CGO_ENABLED ?= 0

# Go patch releases carry security fixes that govulncheck (make lint) finds
# reachable in our binaries: build and test with at least MIN_GO. A machine
# with an older Go fetches MIN_GO once through the Go module proxy (~10 s);
# a newer local Go is used as it is. `make GOTOOLCHAIN=local ...` opts out.
MIN_GO := go1.26.10
export GOTOOLCHAIN := $(shell v=$$(GOTOOLCHAIN=local $(GO) env GOVERSION 2>/dev/null); \
  if printf '%s\n%s\n' "$$v" $(MIN_GO) | sort -V -C; then echo $(MIN_GO); else echo local; fi)

.PHONY: all build run test lint bench clean help

all: build

## help: the targets, from the `## target:` comments in Makefile, deploy/deploy.mk and mk/*.mk
help:
	@echo "make <target>   (make with no target = make build)"
	@awk '/^## [A-Za-z0-9_.-]+: / { t = substr($$0, 4); n = t; sub(/: .*/, "", n); d = t; sub(/^[^:]*: /, "", d); \
	        printf "  %-18s %s\n", n, d; more = 1; next } \
	      /^## / && more { printf "  %-18s %s\n", "", substr($$0, 4); next } \
	      { more = 0 }' $(MAKEFILE_LIST)

## build: the three static binaries in bin/
build: $(BINS)

# Always rebuilt (go's cache makes that cheap), static, no cgo.
bin/%: FORCE
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $@ ./services/$*

FORCE:

## run: all three services in the foreground (emulator as the IdP); Ctrl-C stops them
run: build
	./deploy/run-local.sh

## test: every module's tests with -race, the end-to-end test included
test:
	CGO_ENABLED=1 $(GO) test -race -count=1 $(addsuffix /...,$(MODULE_DIRS))

## lint: go vet, gofmt, staticcheck and govulncheck (tools cached outside the clone; fails on a reachable vulnerability not in tools/govulncheck-accepted.txt)
lint:
	./tools/lint.sh

## clean: remove bin/ (images: make clean-images)
clean:
	rm -rf bin

-include deploy/deploy.mk
# Each area's targets live beside it (mk/*.mk: interop, faults, ...).
-include mk/*.mk
