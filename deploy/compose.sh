#!/usr/bin/env bash
# Runs Docker Compose, whichever one this machine has, so that the Makefile
# and the tests work with the Compose v2 plugin (`docker compose`) or with
# the old Python docker-compose 1.29. docker-compose.yml is written for both.
#
#   deploy/compose.sh which          # print the command that will be used
#   deploy/compose.sh <compose args> # run it
#   deploy/compose.sh wait-healthy [seconds]  # wait for the project's containers
#
# Order: $COMPOSE if set; `docker compose`; else deploy/install-compose.sh
# builds the v2 plugin (cached outside the clone) and links it into
# ~/.docker/cli-plugins, after which `docker compose` works (unless
# COMPOSE_INSTALL=0); else docker-compose.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

find_compose() {
  if [ -n "${COMPOSE:-}" ]; then echo "$COMPOSE"; return 0; fi
  if docker compose version >/dev/null 2>&1; then echo "docker compose"; return 0; fi
  if [ "${COMPOSE_INSTALL:-1}" = 1 ] && bin=$("$root/deploy/install-compose.sh"); then
    # Linked as a plugin: `docker compose`; if the link was refused, the binary.
    if docker compose version >/dev/null 2>&1; then echo "docker compose"; else echo "$bin"; fi
    return 0
  fi
  if command -v docker-compose >/dev/null 2>&1; then echo "docker-compose"; return 0; fi
  echo "compose: no Docker Compose found (docker compose, docker-compose), and building the v2 plugin failed" >&2
  return 1
}

cd "$root"
cmd=$(find_compose)
case "${1:-}" in
which)
  echo "$cmd"
  ;;
wait-healthy)
  # Both Compose generations understand `ps -q`; health comes from docker.
  limit=${2:-120}
  deadline=$((SECONDS + limit))
  while :; do
    ids=$($cmd ps -q)
    pending=0
    for id in $ids; do
      st=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
      case "$st" in healthy | running) ;; *) pending=$((pending + 1)) ;; esac
    done
    if [ -n "$ids" ] && [ "$pending" = 0 ]; then
      echo "compose: all $(echo "$ids" | wc -w) containers healthy"
      exit 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "compose: containers not healthy after ${limit}s" >&2
      $cmd ps >&2 || true
      exit 1
    fi
    sleep 1
  done
  ;;
*)
  # shellcheck disable=SC2086 # $cmd may be two words ("docker compose")
  exec $cmd "$@"
  ;;
esac
