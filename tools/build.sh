#!/usr/bin/env bash
# Builds a third-party program from its own tools module (tools/<name>/go.mod,
# never one of the project's modules) and caches the binary OUTSIDE the clone,
# keyed by the module's go.sum, so that a second clone or a CI run reuses it.
#
#   tools/build.sh hydra        # prints the path of the cached binary
#   tools/build.sh prometheus
#   tools/build.sh staticcheck | govulncheck
#
# Cache: $WRISTBAND_TOOLS_CACHE, default ~/.cache/wristband-m2m-go/tools.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="/usr/local/go/bin:$PATH"
# Third-party tools build with the Go their own go.mod asks for (the local
# one when it is new enough), not the project's MIN_GO: their cache stays
# valid when the project moves to a new patch release.
export GOTOOLCHAIN=auto
name=${1:?usage: tools/build.sh NAME}
cache=${WRISTBAND_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wristband-m2m-go/tools}

case "$name" in
hydra)
  mod=hydra pkg=github.com/ory/hydra/v2
  env=(CGO_ENABLED=1) flags=(-tags sqlite,sqlite_omit_load_extension)
  ;;
prometheus)
  # No builtinassets tag: the module zip lacks the generated embed file
  # (web/ui/assets_embed.go: undefined: EmbedFS; it needs the npm UI build).
  # Without it the HTTP API, scraping and Grafana work; the web UI does not.
  mod=prometheus pkg=github.com/prometheus/prometheus/cmd/prometheus
  env=(CGO_ENABLED=0) flags=()
  ;;
staticcheck)
  mod=lint pkg=honnef.co/go/tools/cmd/staticcheck env=(CGO_ENABLED=0) flags=()
  ;;
govulncheck)
  mod=lint pkg=golang.org/x/vuln/cmd/govulncheck env=(CGO_ENABLED=0) flags=()
  ;;
*)
  echo "tools/build.sh: unknown tool $name" >&2
  exit 2
  ;;
esac

dir=$root/tools/$mod
key=$( (cat "$dir/go.sum" "$dir/go.mod"; go env GOVERSION) | sha256sum | cut -c1-12)
out=$cache/$name-$key
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"
echo "tools: building $pkg (module tools/$mod) into $out; this is cached" >&2
start=$SECONDS
(cd "$dir" && env GOWORK=off GOFLAGS=-mod=mod "${env[@]}" \
  go build -trimpath -ldflags='-s -w' "${flags[@]}" -o "$out.tmp.$$" "$pkg")
mv "$out.tmp.$$" "$out"
echo "tools: built $name in $((SECONDS - start)) s" >&2
echo "$out"
