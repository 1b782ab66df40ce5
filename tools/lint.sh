#!/usr/bin/env bash
# `make lint`: go vet, gofmt, staticcheck and govulncheck over every module
# of the workspace. The tools are built from tools/lint (pinned) and cached
# outside the clone by tools/build.sh.
#
# govulncheck (over the three services: what ships) needs its vulnerability database (tools/vulndb.sh: GOVULNDB,
# else vuln.go.dev, else a local copy built from the golang.org/x/vulndb
# module). If none can be had, lint says so plainly and does not fail: a
# missing network is not a lint error. Reachable vulnerabilities are
# reported; they fail lint only with VULNCHECK=strict, because some need a
# newer Go toolchain or have no fix yet, which no change here can cure.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="/usr/local/go/bin:$PATH"
mapfile -t mods < <(go list -m -f '{{.Dir}}')
pkgs=()
for m in "${mods[@]}"; do pkgs+=("$m/..."); done
fail=0
step() { echo "lint: $*"; }

step "go vet"
go vet "${pkgs[@]}" || fail=1

step "gofmt"
out=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$out" ]; then
  echo "gofmt would change:"
  echo "$out"
  fail=1
fi

step "staticcheck"
if sc=$(tools/build.sh staticcheck); then
  "$sc" "${pkgs[@]}" || fail=1
else
  echo "lint: FAIL: could not build staticcheck (tools/build.sh staticcheck)"
  fail=1
fi

step "govulncheck"
if ! gv=$(tools/build.sh govulncheck); then
  echo "lint: FAIL: could not build govulncheck (tools/build.sh govulncheck)"
  fail=1
elif ! db=$(tools/vulndb.sh); then
  echo "lint: govulncheck NOT RUN: no vulnerability database (vuln.go.dev unreachable and no local copy could be built; set GOVULNDB to a copy). Not a lint failure."
else
  echo "lint: govulncheck database: $db"
  # What ships: the three services (their reachable code includes pkg/).
  # govulncheck works per module; exit 3 = vulnerabilities found.
  st=0
  for svc in services/*/; do
    echo "lint: govulncheck ${svc%/}"
    "$gv" -db "$db" -C "$svc" ./...
    s=$?
    if [ "$s" = 3 ] && [ "$st" = 0 ]; then st=3; elif [ "$s" != 0 ] && [ "$s" != 3 ]; then st=$s; fi
  done
  case "$st" in
  0) ;;
  3)
    if [ "${VULNCHECK:-}" = strict ]; then
      echo "lint: FAIL: govulncheck found reachable vulnerabilities (VULNCHECK=strict)"
      fail=1
    else
      echo "lint: WARNING: govulncheck found reachable vulnerabilities (listed above); VULNCHECK=strict makes this fail"
    fi
    ;;
  *)
    echo "lint: FAIL: govulncheck could not run (exit $st)"
    fail=1
    ;;
  esac
fi

if [ "$fail" = 0 ]; then echo "lint: ok"; else echo "lint: FAILED"; fi
exit "$fail"
