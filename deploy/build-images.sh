#!/usr/bin/env bash
# Offline images: copies host-built static binaries (bin/, from `make build`)
# into FROM scratch images. Pulls nothing, so it works without a registry.
#
#   deploy/build-images.sh                  # the three services
#   deploy/build-images.sh probe            # the test probe (deploy/composetest/probe)
# IMAGE_PREFIX (wristband-m2m-go) and TAG (latest) name the images.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${IMAGE_PREFIX:-wristband-m2m-go}
tag=${TAG:-latest}
stage=$root/deploy/.tools/images
# The classic builder suffices for a COPY-only Dockerfile; without the buildx
# plugin the docker CLI uses it anyway.
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0

build_one() { # name binary
  local name=$1 bin=$2 ctx=$stage/$1
  if [ ! -x "$bin" ]; then
    echo "images: $bin missing (run make build)" >&2
    exit 1
  fi
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp "$bin" "$ctx/app"
  mkdir "$ctx/data"
  cp "$root/deploy/docker/passwd" "$root/deploy/docker/group" "$root/deploy/docker/Dockerfile.prebuilt" "$ctx/"
  if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
  else
    echo "images: no /etc/ssl/certs/ca-certificates.crt on the host (apt-get install ca-certificates): TLS to a real Wristband will fail" >&2
    : >"$ctx/ca-certificates.crt"
  fi
  docker build -q -f "$ctx/Dockerfile.prebuilt" -t "$prefix/$name:$tag" \
    --label org.opencontainers.image.source=wristband-m2m-go "$ctx" 2>&1 |
    grep -v -e DEPRECATED -e 'legacy builder' -e 'buildx' -e '^ *$' -e 'BuildKit' -e 'environment-variable' || true
  docker image inspect "$prefix/$name:$tag" >/dev/null
  echo "images: $prefix/$name:$tag ($(docker image inspect -f '{{.Size}}' "$prefix/$name:$tag") bytes)"
}

if [ "${1:-}" = probe ]; then
  mkdir -p "$stage"
  (cd "$root/deploy" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$stage/probe.bin" ./composetest/probe)
  build_one probe "$stage/probe.bin"
  exit 0
fi
for svc in public-gateway protected-data wristband-emulator; do
  build_one "$svc" "$root/bin/$svc"
done
