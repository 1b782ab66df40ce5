#!/usr/bin/env bash
# Makes a local stand-in for the `golang:<version>` builder image that
# deploy/docker/Dockerfile starts FROM, on machines that reach no container
# registry but do reach a Debian mirror: a minimal Debian (debootstrap, with
# CA roots) plus this machine's Go toolchain (/usr/local/go), imported with
# `docker import`. With it, `docker compose up --build` (the multi-stage
# Dockerfile) works here as on a machine with a registry.
#
#   deploy/golang-standin.sh            # tag golang:$GO_VERSION unless it exists
#   GO_VERSION=1.26 GOROOT_SRC=/usr/local/go DEBIAN_SUITE=bookworm
#   GOLANG_STANDIN_REBUILD=1            # remake it (only if it is ours)
#
# It never replaces an existing golang image (a real one, pulled, wins). The
# Debian root file system is cached outside the clone
# (~/.cache/wristband-m2m-go/rootfs-<suite>), so a second run takes seconds.
# Needs root (debootstrap) and the debootstrap package (installed if missing).
set -euo pipefail
export PATH="/usr/local/go/bin:$PATH"
GO_VERSION=${GO_VERSION:-1.26}
GOROOT_SRC=${GOROOT_SRC:-$(go env GOROOT 2>/dev/null || echo /usr/local/go)}
suite=${DEBIAN_SUITE:-bookworm}
image=golang:$GO_VERSION
cache=${WRISTBAND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wristband-m2m-go}
rootfs=$cache/rootfs-$suite

label=org.wristband-m2m-go.golang-standin
if docker image inspect "$image" >/dev/null 2>&1; then
  ours=$(docker image inspect -f "{{index .Config.Labels \"$label\"}}" "$image" 2>/dev/null || true)
  if [ -z "$ours" ] || [ "${GOLANG_STANDIN_REBUILD:-0}" != 1 ]; then
    echo "golang-standin: $image exists; leaving it${ours:+ (ours: GOLANG_STANDIN_REBUILD=1 remakes it)}"
    exit 0
  fi
fi
have=$("$GOROOT_SRC/bin/go" env GOVERSION)
case "$have" in
go"$GO_VERSION" | go"$GO_VERSION".*) ;;
*)
  echo "golang-standin: $GOROOT_SRC is $have, not Go $GO_VERSION; set GOROOT_SRC" >&2
  exit 1
  ;;
esac
if [ ! -x "$rootfs/bin/sh" ] || [ ! -s "$rootfs/etc/ssl/certs/ca-certificates.crt" ]; then
  if ! command -v debootstrap >/dev/null; then
    echo "golang-standin: installing debootstrap" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "golang-standin: debootstrap $suite (minbase + ca-certificates) from $mirror into $rootfs" >&2
  rm -rf "$rootfs.tmp"
  mkdir -p "$cache"
  debootstrap --variant=minbase --include=ca-certificates "$suite" "$rootfs.tmp" "$mirror" >"$cache/debootstrap-$suite.log" 2>&1 || {
    echo "golang-standin: debootstrap failed; see $cache/debootstrap-$suite.log" >&2
    exit 1
  }
  # Smaller image: package lists and caches are not needed to build Go.
  rm -rf "$rootfs.tmp"/var/cache/apt/archives/*.deb "$rootfs.tmp"/var/lib/apt/lists/*
  rm -rf "$rootfs" && mv "$rootfs.tmp" "$rootfs"
fi

# The host's CA roots, not only Debian's: where the way out to the Go module
# proxy goes through a TLS-inspecting gateway, its CA is in the host's
# bundle, and `go build` inside the image must trust it as the host does.
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
fi
echo "golang-standin: importing $image ($suite + $have from $GOROOT_SRC)" >&2
# The official image's layout: Go in /usr/local/go, GOPATH /go.
# One tar stream: the Debian tree, then the Go tree renamed to usr/local/go
# (the S flag leaves symlink targets alone).
mapfile -t top < <(cd "$rootfs" && ls -A | grep -vx -e proc -e sys -e dev)
gobase=$(basename "$GOROOT_SRC")
tar -cf - -C "$rootfs" "${top[@]}" \
  --transform "s,^$gobase\(/\|\$\),usr/local/go\1,S" -C "$(dirname "$GOROOT_SRC")" "$gobase" |
  docker import \
    --change 'ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV GOPATH=/go' \
    --change "ENV GOLANG_VERSION=${have#go}" \
    --change 'WORKDIR /go' \
    --change 'CMD ["bash"]' \
    --change "LABEL $label=$suite" \
    --message "local stand-in for golang:$GO_VERSION ($suite minbase + host Go); deploy/golang-standin.sh" \
    - "$image" >/dev/null
docker run --rm "$image" go version
