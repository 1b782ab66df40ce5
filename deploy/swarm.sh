#!/usr/bin/env bash
# Deploys deploy/swarm/stack.yml to a single-node swarm (initialised here if
# this engine is in no swarm), or removes it.
#   deploy/swarm.sh up|down     STACK (m2m), GATEWAY_REPLICAS, PROTECTED_DATA_REPLICAS, GATEWAY_PORT
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
stack=${STACK:-m2m}
case "${1:-}" in
up)
  state=$(docker info -f '{{.Swarm.LocalNodeState}}')
  if [ "$state" = inactive ]; then
    echo "swarm: initialising a single-node swarm (undo: docker swarm leave --force)"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  fi
  # --resolve-image never: the images are local; asking a registry for
  # their digests would fail (or leak their names) on machines without one.
  docker stack deploy --resolve-image never -c "$root/deploy/swarm/stack.yml" "$stack"
  if [ ! -e /proc/sys/net/ipv4/vs ]; then
    echo "swarm: this kernel has no IPVS, so the routing mesh (published port) will not answer here;"
    echo "       reach the gateways from the overlay: docker run --rm --network ${stack}_edge <image> ... http://tasks.public-gateway:6001"
  fi
  docker stack services "$stack"
  ;;
down)
  docker stack rm "$stack" || true
  ;;
*)
  echo "usage: $0 up|down" >&2
  exit 2
  ;;
esac
