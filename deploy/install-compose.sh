#!/usr/bin/env bash
# Makes `docker compose` (Compose v2) work on a machine whose docker CLI has
# no compose plugin: builds it from its Go module (only the Go module proxy
# is needed) into a cache OUTSIDE the clone, so that a second clone or a CI
# run reuses it, and links it into ~/.docker/cli-plugins, where the docker
# CLI finds plugins. 12 minutes measured cold on 2 cores busy with other
# builds; instant when cached.
#
#   deploy/install-compose.sh          # build if missing, link, print the path
#   COMPOSE_V2_VERSION=v2.40.3         # which release
#   WRISTBAND_TOOLS_CACHE              # cache folder (as tools/build.sh)
#   COMPOSE_PLUGIN_LINK=0              # build only, do not touch ~/.docker
set -euo pipefail
export PATH="/usr/local/go/bin:$PATH"
version=${COMPOSE_V2_VERSION:-v2.40.3}
cache=${WRISTBAND_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wristband-m2m-go/tools}
out=$cache/docker-compose-$version-$(go env GOOS)-$(go env GOARCH)
plugins=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins

if [ ! -x "$out" ]; then
  mkdir -p "$cache"
  echo "install-compose: building github.com/docker/compose/v2@$version into $out (several minutes cold; cached after)" >&2
  start=$SECONDS
  # `go install mod@version` refuses compose (its go.mod has exclude/replace
  # directives), so build it as the main module from the module cache.
  dir=$(GOWORK=off GOFLAGS=-mod=mod go mod download -json "github.com/docker/compose/v2@$version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  if [ -z "$dir" ] || [ ! -d "$dir" ]; then
    echo "install-compose: could not download github.com/docker/compose/v2@$version from the Go module proxy" >&2
    exit 1
  fi
  (cd "$dir" && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$version" \
    -o "$out.tmp.$$" ./cmd)
  mv "$out.tmp.$$" "$out"
  echo "install-compose: built in $((SECONDS - start)) s" >&2
fi

if [ "${COMPOSE_PLUGIN_LINK:-1}" = 1 ]; then
  cur=$(readlink "$plugins/docker-compose" 2>/dev/null || true)
  if [ "$cur" != "$out" ]; then
    if [ -e "$plugins/docker-compose" ] && [ ! -L "$plugins/docker-compose" ]; then
      echo "install-compose: $plugins/docker-compose exists and is not ours; leaving it" >&2
    else
      mkdir -p "$plugins"
      ln -sfn "$out" "$plugins/docker-compose"
      echo "install-compose: linked $plugins/docker-compose -> $out (docker compose now works)" >&2
    fi
  fi
fi
echo "$out"
