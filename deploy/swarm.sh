#!/usr/bin/env bash
# Deploys deploy/swarm/stack.yml to a single-node swarm (initialised here if
# this engine is in no swarm), or removes it and whatever this script made.
#   deploy/swarm.sh up|down
#   STACK (m2m), GATEWAY_REPLICAS, PROTECTED_DATA_REPLICAS, GATEWAY_PORT,
#   IMAGE_PREFIX (wristband-m2m-go), TAG (latest)
#
# `down` removes the stack and waits until its tasks and networks are gone.
# If `up` initialised the swarm, `down` also leaves it and removes the
# networks that `docker swarm init` made (docker_gwbridge, ingress), which
# `docker swarm leave` leaves behind; a swarm that was there before is kept.
# The emulator's signing-key volume is kept (KEEP_VOLUMES=0 removes it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
stack=${STACK:-m2m}
prefix=${IMAGE_PREFIX:-wristband-m2m-go}
tag=${TAG:-latest}
marker=$root/.run/swarm-initialised-here

wait_gone() {
  local deadline=$((SECONDS + 90))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$stack")" ] &&
      [ -z "$(docker network ls -q --filter "label=com.docker.stack.namespace=$stack")" ]; then
      return 0
    fi
    sleep 1
  done
  echo "swarm: stack $stack not gone after 90 s" >&2
  return 1
}

case "${1:-}" in
up)
  state=$(docker info -f '{{.Swarm.LocalNodeState}}')
  if [ "$state" = inactive ]; then
    echo "swarm: initialising a single-node swarm (make swarm-down leaves it again)"
    had_gwbridge=$(docker network inspect docker_gwbridge >/dev/null 2>&1 && echo yes || echo no)
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    mkdir -p "$(dirname "$marker")"
    echo "had_gwbridge=$had_gwbridge" >"$marker"
  fi
  CLIENT_SECRET_FILE=$("$root/deploy/client-secret.sh")
  export CLIENT_SECRET_FILE
  # --resolve-image never: the images are local; asking a registry for
  # their digests would fail (or leak their names) on machines without one.
  docker stack deploy --resolve-image never -c "$root/deploy/swarm/stack.yml" "$stack"
  docker stack services "$stack"
  url=http://tasks.public-gateway:6001/api/public/data
  if [ -e /proc/sys/net/ipv4/vs ]; then
    echo "swarm: try  curl -s localhost:${GATEWAY_PORT:-6001}/api/public/data"
  else
    echo "swarm: this kernel has no IPVS, so the routing mesh (published port ${GATEWAY_PORT:-6001}) does not answer here."
  fi
  echo "swarm: from the stack's overlay network (works everywhere; the probe image is a curl for scratch):"
  echo "  docker run --rm --network ${stack}_edge $prefix/probe:$tag -url $url -body"
  ;;
down)
  if docker info -f '{{.Swarm.LocalNodeState}}' | grep -qx active; then
    docker stack rm "$stack" 2>&1 | grep -v 'Nothing found' || true
    wait_gone
  fi
  if [ "${KEEP_VOLUMES:-1}" = 0 ]; then
    docker volume ls -q --filter "label=com.docker.stack.namespace=$stack" | xargs -r docker volume rm >/dev/null
  fi
  if [ -f "$marker" ]; then
    had_gwbridge=$(sed -n 's/^had_gwbridge=//p' "$marker")
    if [ -n "$(docker stack ls -q 2>/dev/null | head -1)" ] || [ -n "$(docker service ls -q 2>/dev/null | head -1)" ]; then
      echo "swarm: other stacks or services run on this swarm; not leaving it"
    else
      echo "swarm: leaving the swarm that swarm-up initialised"
      docker swarm leave --force >/dev/null
      # ingress goes with the swarm; docker_gwbridge stays unless removed.
      if [ "$had_gwbridge" = no ]; then
        docker network rm docker_gwbridge >/dev/null 2>&1 || true
      fi
      rm -f "$marker"
    fi
  fi
  ;;
*)
  echo "usage: $0 up|down" >&2
  exit 2
  ;;
esac
