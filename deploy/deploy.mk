# Containers, Swarm and Kubernetes. Included from the top-level Makefile,
# which provides `build` (static bin/*). Every target installs what it needs:
# when the docker CLI has no Compose v2 plugin, deploy/install-compose.sh
# builds one (cached in ~/.cache/wristband-m2m-go, outside the clone) and
# links it into ~/.docker/cli-plugins, so that `docker compose` works as the
# README writes it.
IMAGE_PREFIX ?= wristband-m2m-go
TAG          ?= latest
export IMAGE_PREFIX TAG

COMPOSE_SH := ./deploy/compose.sh
# A real Wristband application in .env needs the egress overlay (see
# docker-compose.yml); an explicit COMPOSE_FILE (shell or .env) wins.
WRISTBAND_IN_ENV := $(shell test -f .env && grep -Eq '^[[:space:]]*APPLICATION_VANITY_DOMAIN=[^[:space:]]' .env && ! grep -Eq '^[[:space:]]*COMPOSE_FILE=' .env && echo yes)
COMPOSE_FILES := $(if $(COMPOSE_FILE),,$(if $(WRISTBAND_IN_ENV),-f docker-compose.yml -f deploy/compose/wristband.yml))
# down names every profile: a service started only under a profile (the
# observability Prometheus) is otherwise left running, and with it both
# networks ("Resource is still in use"), while down still exits 0.
DOWN_PROFILES := --profile observability
PROJECT_IMAGES = $(foreach s,public-gateway protected-data wristband-emulator probe prometheus,$(IMAGE_PREFIX)/$(s):$(TAG))

.PHONY: images images-probe compose-tool golang-standin up down clean-images clean-docker \
	test-compose compose-test-run test-k8s test-dockerignore test-dockerfile test-run-local swarm-up swarm-down

## images: the three FROM scratch images from host-built binaries (pulls nothing)
images: build
	./deploy/build-images.sh

images-probe:
	./deploy/build-images.sh probe

## compose-tool: make `docker compose` (v2) work: build the plugin once (~12 min cold on 2 busy cores, cached outside the clone)
compose-tool:
	@$(COMPOSE_SH) which >/dev/null

## golang-standin: a local golang:1.26 image (Debian + this machine's Go) for `docker compose up --build` without a registry
golang-standin:
	./deploy/golang-standin.sh

## up: images, then docker compose up -d (no registry needed) and wait until healthy
# docker-compose 1.29 creates the networks before it starts anything: a
# failed `up` is followed by `down`, so nothing is left behind.
up: images compose-tool
	@secret=$$(./deploy/client-secret.sh) && \
	if ! CLIENT_SECRET_FILE=$$secret $(COMPOSE_SH) $(COMPOSE_FILES) up -d --no-build --remove-orphans || \
	   ! $(COMPOSE_SH) wait-healthy 120; then \
	  echo "up: failed; removing what it created (docker compose down)" >&2; \
	  CLIENT_SECRET_FILE=$$secret $(COMPOSE_SH) $(COMPOSE_FILES) $(DOWN_PROFILES) down --remove-orphans >/dev/null 2>&1; exit 1; \
	fi
	@p=$${GATEWAY_PUBLISH:-6001}; case $$p in *:*) ;; *) p=localhost:$$p ;; esac; \
	echo "up: ready: curl -s $${p%%-*}/api/public/data"

## down: stop and remove the containers and networks (keeps images and the emulator's key volume)
down: compose-tool
	CLIENT_SECRET_FILE=$$(./deploy/client-secret.sh) $(COMPOSE_SH) $(COMPOSE_FILES) $(DOWN_PROFILES) down --remove-orphans

## clean-images: remove the images `make images` built (IMAGE_PREFIX/*:TAG, probe and prometheus included)
clean-images:
	@for i in $(PROJECT_IMAGES); do \
	  if docker image inspect $$i >/dev/null 2>&1; then docker rmi $$i >/dev/null && echo "removed $$i"; fi; \
	done
	@docker image prune -f --filter label=org.opencontainers.image.source=wristband-m2m-go >/dev/null

## clean-docker: down with volumes (the emulator's key), swarm-down, then clean-images
clean-docker: compose-tool
	CLIENT_SECRET_FILE=$$(./deploy/client-secret.sh) $(COMPOSE_SH) $(COMPOSE_FILES) $(DOWN_PROFILES) down --remove-orphans --volumes
	KEEP_VOLUMES=0 ./deploy/swarm.sh down
	$(MAKE) --no-print-directory clean-images

# The compose tests run against real containers in a project of their own;
# the trap removes it (and their swarm stack) even if the test binary dies.
# Without a Docker engine they fail under CI=true and skip otherwise.
COMPOSE_TEST_PROJECT := m2mtest$(shell date +%s)
COMPOSE_TEST_TIMEOUT ?= 20m

## test-compose: end-to-end tests against the containers (compose, scaling, kill, restart, flood, mTLS overlay, Prometheus profile, swarm)
test-compose:
	@if ! docker info >/dev/null 2>&1; then \
	  if [ "$$CI" = true ]; then echo "test-compose: FAIL: no Docker engine reachable (CI=true)"; exit 1; fi; \
	  echo "test-compose: SKIP: no Docker engine reachable"; exit 0; \
	fi; \
	$(MAKE) --no-print-directory images images-probe images-prometheus compose-tool test-dockerignore && \
	$(MAKE) --no-print-directory compose-test-run

compose-test-run:
	@set -e; p=$(COMPOSE_TEST_PROJECT); \
	cleanup() { \
	  COMPOSE_PROJECT_NAME=$$p $(COMPOSE_SH) -f docker-compose.yml $(DOWN_PROFILES) down --remove-orphans --volumes --timeout 5 >/dev/null 2>&1 || true; \
	  docker stack rm $$p >/dev/null 2>&1 || true; \
	}; \
	trap cleanup EXIT INT TERM; \
	cd deploy && COMPOSE="$$(./compose.sh which)" COMPOSE_TEST_PROJECT=$$p \
	  CGO_ENABLED=1 $(GO) test -tags composetest -race -count=1 -v -timeout $(COMPOSE_TEST_TIMEOUT) ./composetest/ $(if $(COMPOSE_TEST_RUN),-run '$(COMPOSE_TEST_RUN)')

## test-dockerignore: no env, key or secret file reaches a docker build context
test-dockerignore:
	./deploy/test-dockerignore.sh

## test-run-local: make run under a terminal: ready line, Ctrl-C exits 0 quietly, a crashed or killed service stops all, non-zero
test-run-local: build
	./deploy/test-run-local.sh

## test-dockerfile: the multi-stage Dockerfile builds an image that runs healthy (needs golang:1.26: a registry or make golang-standin)
test-dockerfile:
	./deploy/test-dockerfile.sh

## test-k8s: render the kustomize overlays and strictly decode every object
test-k8s:
	cd deploy && $(GO) test -count=1 ./kubernetes/...

## swarm-up: the stack on a (single-node) swarm (STACK=m2m); prints a command to call it
swarm-up: images images-probe
	./deploy/swarm.sh up

## swarm-down: remove the stack; leave the swarm (and its networks) if swarm-up made it
swarm-down:
	./deploy/swarm.sh down
