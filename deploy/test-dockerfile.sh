#!/usr/bin/env bash
# Builds one service with the multi-stage deploy/docker/Dockerfile (the
# `docker compose up --build` path) and checks the image: it starts, Docker's
# health check (the binary's own `healthcheck`) turns healthy, it runs as
# 65532, and it holds no shell. Needs a golang:1.26 image (a registry's, or
# `make golang-standin`). Cold, the build downloads every module (several
# minutes on 2 cores); not part of CI for that reason.
#   SERVICE=wristband-emulator (default) | protected-data | public-gateway
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
svc=${SERVICE:-wristband-emulator}
img=wristband-m2m-go/$svc:dockerfile-test
cid=
cleanup() {
  [ -n "$cid" ] && docker rm -f "$cid" >/dev/null 2>&1
  docker rmi "$img" >/dev/null 2>&1 || true
}
trap cleanup EXIT
start=$SECONDS
docker build -q -f "$root/deploy/docker/Dockerfile" --build-arg SERVICE="$svc" -t "$img" "$root" >/dev/null
echo "dockerfile: built $img in $((SECONDS - start)) s, $(docker image inspect -f '{{.Size}}' "$img") bytes"
fail=0
user=$(docker image inspect -f '{{.Config.User}}' "$img")
[ "$user" = 65532:65532 ] || { echo "dockerfile: FAIL: user $user, want 65532:65532"; fail=1; }
if docker run --rm --entrypoint /bin/sh "$img" -c true >/dev/null 2>&1; then
  echo "dockerfile: FAIL: the image has a shell"
  fail=1
fi
# The emulator runs alone; the others need their IdP, so only the emulator
# is checked for health.
if [ "$svc" = wristband-emulator ]; then
  cid=$(docker run -d --read-only --cap-drop ALL "$img")
  deadline=$((SECONDS + 60))
  until [ "$(docker inspect -f '{{.State.Health.Status}}' "$cid")" = healthy ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "dockerfile: FAIL: not healthy within 60 s"
      docker logs "$cid" | tail -5
      fail=1
      break
    fi
    sleep 1
  done
fi
if [ "$fail" = 0 ]; then echo "dockerfile: ok"; else exit 1; fi
