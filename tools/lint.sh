#!/usr/bin/env bash
# `make lint`: go vet, gofmt, staticcheck and govulncheck over every module
# of the workspace. The tools are built from tools/lint (pinned) and cached
# outside the clone by tools/build.sh.
#
# govulncheck (over the three services: what ships) needs its vulnerability database (tools/vulndb.sh: GOVULNDB,
# else vuln.go.dev, else a local copy built from the golang.org/x/vulndb
# module). If none can be had, lint says so plainly and does not fail: a
# missing network is not a lint error. A reachable vulnerability fails lint
# unless tools/govulncheck-accepted.txt names it with a reason (some have no
# fix yet and concern code we do not use). The Makefile builds with at least
# MIN_GO, the Go patch release that fixes the standard library's findings.
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
  # govulncheck works per module; exit 3 = vulnerabilities found. A
  # reachable vulnerability fails lint unless tools/govulncheck-accepted.txt
  # names it with the reason it does not apply to us.
  accepted=$(grep -Eo '^GO-[0-9]+-[0-9]+' tools/govulncheck-accepted.txt 2>/dev/null | sort -u)
  for svc in services/*/; do
    echo "lint: govulncheck ${svc%/}"
    out=$("$gv" -db "$db" -C "$svc" ./... 2>&1)
    s=$?
    echo "$out"
    case "$s" in
    0) ;;
    3)
      found=$(grep -Eo '^Vulnerability #[0-9]+: GO-[0-9]+-[0-9]+' <<<"$out" | grep -Eo 'GO-[0-9]+-[0-9]+' | sort -u)
      new=$(comm -23 <(echo "$found") <(echo "$accepted") | grep . || true)
      if [ -n "$new" ]; then
        echo "lint: FAIL: reachable vulnerabilities in ${svc%/}: $(echo $new) (fix them, or add each to tools/govulncheck-accepted.txt with the reason it does not apply)"
        fail=1
      else
        echo "lint: ${svc%/}: only accepted findings ($(echo $found)); see tools/govulncheck-accepted.txt"
      fi
      ;;
    *)
      echo "lint: FAIL: govulncheck could not run on ${svc%/} (exit $s)"
      fail=1
      ;;
    esac
  done
fi

if [ "$fail" = 0 ]; then echo "lint: ok"; else echo "lint: FAILED"; fi
exit "$fail"
