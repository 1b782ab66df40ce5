#!/usr/bin/env bash
# Builds the Prometheus image of the compose profile `observability` from
# the binary tools/build.sh builds (and caches) from Prometheus' own Go
# module. Pulls nothing. IMAGE_PREFIX (wristband-m2m-go) and TAG (latest)
# name the image, as for the services.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
prefix=${IMAGE_PREFIX:-wristband-m2m-go}
tag=${TAG:-latest}
bin=$("$root/tools/build.sh" prometheus)
ctx=$root/deploy/.tools/images/prometheus
rm -rf "$ctx" && mkdir -p "$ctx"
cp "$bin" "$ctx/prometheus"
cp "$root/deploy/observability/Dockerfile" "$root/deploy/observability/prometheus.yml" \
  "$root/deploy/docker/passwd" "$root/deploy/docker/group" "$ctx/"
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
docker build -q -t "$prefix/prometheus:$tag" --label org.opencontainers.image.source=wristband-m2m-go "$ctx" 2>&1 |
  grep -v -e DEPRECATED -e 'legacy builder' -e 'buildx' -e '^ *$' -e 'BuildKit' -e 'environment-variable' || true
docker image inspect "$prefix/prometheus:$tag" >/dev/null
echo "images: $prefix/prometheus:$tag ($(docker image inspect -f '{{.Size}}' "$prefix/prometheus:$tag") bytes)"
