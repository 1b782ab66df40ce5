#!/usr/bin/env bash
# Prints the -db argument for govulncheck: where its vulnerability database
# is, or nothing (exit 1, reason on stderr) when there is none to be had.
#
#   1. GOVULNDB, if set: a URL (https://..., file:///...) or a local folder.
#   2. https://vuln.go.dev, govulncheck's default, when it answers.
#   3. Otherwise a local copy built from the golang.org/x/vulndb module (the
#      database's source: its data/osv folder holds every report as OSV
#      JSON) with that module's own cmd/indexdb, which writes the v1 layout
#      govulncheck reads (index/db.json, index/modules.json, ID/*.json).
#      Only the Go module proxy is needed. Cached outside the clone, keyed
#      by the module version (VULNDB_VERSION): ~4 min cold, then instant.
#      The copy is as fresh as that version; bump it to get newer reports.
set -euo pipefail
export PATH="/usr/local/go/bin:$PATH"
version=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
cache=${WRISTBAND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wristband-m2m-go}
db=$cache/vulndb-$version

if [ -n "${GOVULNDB:-}" ]; then
  case "$GOVULNDB" in
  *://*) echo "$GOVULNDB" ;;
  *) echo "file://$(realpath "$GOVULNDB")" ;;
  esac
  exit 0
fi
if command -v curl >/dev/null && curl -fsS -m 5 -o /dev/null https://vuln.go.dev/index/db.json 2>/dev/null; then
  echo https://vuln.go.dev
  exit 0
fi
if [ -s "$db/index/db.json" ]; then
  echo "file://$db"
  exit 0
fi
echo "vulndb: vuln.go.dev unreachable; building a local database from golang.org/x/vulndb@$version (cached in $db)" >&2
dir=$(GOWORK=off GOFLAGS=-mod=mod go mod download -json "golang.org/x/vulndb@$version" 2>/dev/null |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || true
if [ -z "$dir" ] || [ ! -d "$dir/data/osv" ]; then
  echo "vulndb: golang.org/x/vulndb@$version not available from the Go module proxy" >&2
  exit 1
fi
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/vulndb.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$dir" && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$tmp/indexdb" ./cmd/indexdb) >&2 ||
  ! "$tmp/indexdb" -vulns "$dir/data/osv" -out "$tmp/db" >&2; then
  echo "vulndb: building the local database failed" >&2
  exit 1
fi
rm -rf "$db" && mv "$tmp/db" "$db"
echo "file://$db"
