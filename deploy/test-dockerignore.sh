#!/usr/bin/env bash
# Proves that .dockerignore keeps env, key and secret files out of the build
# context, with the real docker builder: a copy of the repository's files
# plus planted canaries (.env, *.pem, *.key, secrets/, client.env, .run/) is
# sent as a build context to a FROM scratch image that copies the whole
# context; the image's file list must hold none of the canaries and every
# file the multi-stage build needs. Pulls nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
tmp=$(mktemp -d)
img=wristband-m2m-go/dockerignore-test:$$
cid=
cleanup() {
  [ -n "$cid" ] && docker rm -f "$cid" >/dev/null 2>&1
  docker rmi -f "$img" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

ctx=$tmp/ctx
mkdir -p "$ctx"
(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$ctx" 2>/dev/null) || true
cp "$root/.dockerignore" "$ctx/"
canaries=(
  .env .env.local .env.production services/public-gateway/.env
  deploy/kubernetes/overlays/prod/client.env prod.env
  signing-key.pem deploy/tls/server.key services/protected-data/tls.crt id_rsa
  secrets/client_secret deploy/secrets/token deploy/compose/demo-client-secret my_client_secret.txt
  .run/emulator-signing-key.pem .git/config bin/public-gateway
)
for f in "${canaries[@]}"; do mkdir -p "$ctx/$(dirname "$f")" && echo canary >"$ctx/$f"; done
need=(go.work .env.example services/public-gateway/main.go services/protected-data/main.go
  services/wristband-emulator/main.go pkg/go.mod deploy/go.mod deploy/docker/Dockerfile)

printf 'FROM scratch\nCOPY . /ctx/\n' | docker build -q -f - -t "$img" "$ctx" >/dev/null
cid=$(docker create "$img" /none)
docker export "$cid" | tar -t | sed -n 's,^ctx/,,p' | grep -v '/$' | sort >"$tmp/list"

fail=0
for f in "${canaries[@]}"; do
  if grep -qxF "$f" "$tmp/list"; then echo "dockerignore: FAIL: $f reached the build context"; fail=1; fi
done
for f in "${need[@]}"; do
  if ! grep -qxF "$f" "$tmp/list"; then echo "dockerignore: FAIL: $f (needed to build) is missing from the context"; fail=1; fi
done
# Nothing that looks like a key or env file, canary or not.
if grep -E '(^|/)(\.env($|\.)|[^/]*\.(pem|key)$|secrets/)' "$tmp/list" | grep -vxF .env.example; then
  echo "dockerignore: FAIL: the files above reached the build context"
  fail=1
fi
n=$(wc -l <"$tmp/list")
if [ "$fail" = 0 ]; then
  echo "dockerignore: ok: $n files in the context, none of ${#canaries[@]} planted env/key/secret files"
fi
exit "$fail"
