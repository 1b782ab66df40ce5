#!/usr/bin/env bash
# Prints the absolute path of the file that holds the gateway's client
# secret, for compose and Swarm, which hand it to the gateway as a secret
# (/run/secrets/client_secret, CLIENT_SECRET_FILE):
#   - CLIENT_SECRET_FILE (shell, else .env): that file;
#   - else CLIENT_SECRET (shell, else .env; the reference demo's way): written
#     to .run/client_secret (git- and docker-ignored), mode 0640, group 65532
#     so that the containers' user can read it and nobody else;
#   - else the emulator's demo secret (deploy/compose/demo-client-secret).
# The secret itself is never printed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

from_env_file() { # NAME: the value in .env, as compose reads it (no expansion)
  [ -f .env ] || return 0
  sed -n "s/^[[:space:]]*$1=//p" .env | tail -1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"
}

file=${CLIENT_SECRET_FILE:-$(from_env_file CLIENT_SECRET_FILE)}
if [ -n "$file" ]; then
  if [ ! -r "$file" ]; then
    echo "client-secret: CLIENT_SECRET_FILE names a file that is not readable here (e.g. CLIENT_SECRET_FILE=secrets/client_secret)" >&2
    exit 1
  fi
  realpath "$file"
  exit 0
fi
secret=${CLIENT_SECRET:-$(from_env_file CLIENT_SECRET)}
if [ -n "$secret" ]; then
  mkdir -p .run && chmod 700 .run
  umask 077
  out=.run/client_secret
  printf '%s' "$secret" >"$out.tmp"
  chgrp 65532 "$out.tmp" 2>/dev/null && chmod 0640 "$out.tmp" || chmod 0644 "$out.tmp"
  mv "$out.tmp" "$out"
  realpath "$out"
  exit 0
fi
realpath deploy/compose/demo-client-secret
