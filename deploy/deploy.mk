# Containers, Swarm and Kubernetes. Included from the top-level Makefile,
# which provides `build` (static bin/*). Every target installs what it needs:
# Compose v2 is built from the Go module proxy into deploy/.tools when the
# docker CLI has no compose plugin (deploy/compose.sh picks the best one).
IMAGE_PREFIX ?= wristband-m2m-go
TAG          ?= latest
export IMAGE_PREFIX TAG

COMPOSE_SH := ./deploy/compose.sh
# A real Wristband application in .env needs the egress overlay (see
# docker-compose.yml); an explicit COMPOSE_FILE (shell or .env) wins.
WRISTBAND_IN_ENV := $(shell test -f .env && grep -Eq '^[[:space:]]*APPLICATION_VANITY_DOMAIN=[^[:space:]]' .env && ! grep -Eq '^[[:space:]]*COMPOSE_FILE=' .env && echo yes)
COMPOSE_FILES := $(if $(COMPOSE_FILE),,$(if $(WRISTBAND_IN_ENV),-f docker-compose.yml -f deploy/compose/wristband.yml))

.PHONY: images images-probe compose-tool up down test-compose compose-test-run test-k8s swarm-up swarm-down

## images: the three FROM scratch images from host-built binaries (pulls nothing)
images: build
	./deploy/build-images.sh

images-probe:
	./deploy/build-images.sh probe

## compose-tool: Docker Compose v2 into deploy/.tools/bin unless the docker CLI has it
compose-tool:
	@$(COMPOSE_SH) which

## up: images, then docker compose up -d (offline path) and wait until healthy
up: images compose-tool
	$(COMPOSE_SH) $(COMPOSE_FILES) up -d --no-build --remove-orphans
	$(COMPOSE_SH) wait-healthy 120
	@echo "up: try  curl -s localhost:$${GATEWAY_PUBLISH:-6001}/api/public/data"

## down: stop and remove the compose project (containers and networks)
down: compose-tool
	$(COMPOSE_SH) $(COMPOSE_FILES) down --remove-orphans

# The compose tests run against real containers in a project of their own;
# the trap removes it (and their swarm stack) even if the test binary dies.
# Without a Docker engine they fail under CI=true and skip otherwise.
COMPOSE_TEST_PROJECT := m2mtest$(shell date +%s)
COMPOSE_TEST_TIMEOUT ?= 15m

## test-compose: end-to-end tests against the containers (compose, scaling, kill, restart, swarm)
test-compose:
	@if ! docker info >/dev/null 2>&1; then \
	  if [ "$$CI" = true ]; then echo "test-compose: FAIL: no Docker engine reachable (CI=true)"; exit 1; fi; \
	  echo "test-compose: SKIP: no Docker engine reachable"; exit 0; \
	fi; \
	$(MAKE) --no-print-directory images images-probe images-prometheus compose-tool && \
	$(MAKE) --no-print-directory compose-test-run

compose-test-run:
	@set -e; p=$(COMPOSE_TEST_PROJECT); \
	cleanup() { \
	  COMPOSE_PROJECT_NAME=$$p $(COMPOSE_SH) -f docker-compose.yml down --remove-orphans --timeout 5 >/dev/null 2>&1 || true; \
	  docker stack rm $$p >/dev/null 2>&1 || true; \
	}; \
	trap cleanup EXIT INT TERM; \
	cd deploy && COMPOSE="$$(./compose.sh which)" COMPOSE_TEST_PROJECT=$$p \
	  CGO_ENABLED=1 $(GO) test -tags composetest -race -count=1 -v -timeout $(COMPOSE_TEST_TIMEOUT) ./composetest/

## test-k8s: render the kustomize overlays and strictly decode every object
test-k8s:
	cd deploy && $(GO) test -count=1 ./kubernetes/...

## swarm-up / swarm-down: the stack on a (single-node) swarm; STACK=m2m
swarm-up: images
	./deploy/swarm.sh up

swarm-down:
	./deploy/swarm.sh down
