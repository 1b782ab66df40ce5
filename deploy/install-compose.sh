#!/usr/bin/env bash
# Builds Docker Compose v2 from its Go module into deploy/.tools/bin, for
# machines whose docker CLI has no compose plugin (only the Go module proxy
# is needed: ~1.5 min cold on 2 cores, then cached). The binary works
# standalone (deploy/.tools/bin/docker-compose up) and, linked into
# ~/.docker/cli-plugins/, as `docker compose`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=${COMPOSE_V2_VERSION:-v2.40.3}
out=$root/deploy/.tools/bin/docker-compose
if [ -x "$out" ] && "$out" version 2>/dev/null | grep -q "${version#v}"; then
  exit 0
fi
echo "install-compose: building github.com/docker/compose/v2@$version into $out" >&2
# `go install mod@version` refuses compose (its go.mod has exclude/replace
# directives), so build it as the main module from the module cache.
dir=$(GOWORK=off GOFLAGS=-mod=mod go mod download -json "github.com/docker/compose/v2@$version" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
  echo "install-compose: could not download github.com/docker/compose/v2@$version" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
(cd "$dir" && GOWORK=off CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$version" \
  -o "$out.tmp" ./cmd)
mv "$out.tmp" "$out"
"$out" version >&2
