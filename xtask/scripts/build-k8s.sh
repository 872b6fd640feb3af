#!/usr/bin/env bash
# Builds the Kubernetes server binaries from Debian's source package into the version-keyed
# cache. Does nothing when the cache is complete. Verifies the cache and rebuilds a broken one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

cache_ok() {
  local b
  for b in "${BINS[@]}"; do
    [ -x "$K8S_BIN/$b" ] || return 1
    # A truncated or corrupt binary must not pass: it has to run and report the right version.
    grep -q "v$K8S_VERSION" <<<"$("$K8S_BIN/$b" --version 2>/dev/null)" || return 1
  done
}

if cache_ok; then
  exit 0
fi
if [ -d "$K8S_BIN" ]; then
  log "kubernetes binary cache at $K8S_BIN is incomplete or broken; rebuilding"
  rm -rf "$K8S_BIN"
fi

mkdir -p "$CACHE_ROOT/logs"
blog=$CACHE_ROOT/logs/k8s-build.log
: >"$blog"
if [ ! -f /etc/apt/sources.list.d/tether-deb-src.sources ]; then
  cat >/etc/apt/sources.list.d/tether-deb-src.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  APT_UPDATED=0
  step "apt-get update (deb-src)" "$blog" apt-get update
  APT_UPDATED=1
fi
apt_install golang-1.19-go rsync dpkg-dev make gcc

src=$K8S_CACHE/src
if [ ! -f "$src/.unpacked" ]; then
  log "fetching Debian source package kubernetes ($K8S_VERSION)"
  rm -rf "$src" && mkdir -p "$src"
  # Only the upstream tarball is needed (it carries vendor/); Debian's patches are not applied,
  # so the build is upstream 1.20.2.
  (cd "$src" && step "apt-get source kubernetes" "$blog" apt-get source --download-only kubernetes)
  orig=$(ls "$src"/kubernetes_*.orig.tar.* | head -n1)
  [ -n "$orig" ] || die "no orig tarball in $src (see $blog)"
  mkdir -p "$src/tree"
  step "unpack $orig" "$blog" tar -C "$src/tree" --strip-components=1 -xf "$orig"
  touch "$src/.unpacked"
fi

tree=$src/tree
mkdir -p "$tree/.go/src/k8s.io"
ln -sfn ../../.. "$tree/.go/src/k8s.io/kubernetes"
log "building kubernetes server binaries (first time: ~10 min on 2 cores; log: $blog)"
what="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy"
(
  cd "$tree/.go/src/k8s.io/kubernetes"
  export GOPATH=$tree/.go GO111MODULE=off GOFLAGS= CGO_ENABLED=0 PATH=$GO_BIN:$PATH
  export KUBE_GIT_VERSION=v$K8S_VERSION KUBE_GIT_TREE_STATE=clean GOCACHE=$K8S_CACHE/gocache
  step "make WHAT=..." "$blog" make WHAT="$what"
)
mkdir -p "$K8S_BIN"
for b in "${BINS[@]}"; do
  install -m 0755 "$tree/_output/local/bin/linux/amd64/$b" "$K8S_BIN/$b" 2>/dev/null \
    || install -m 0755 "$tree/_output/bin/$b" "$K8S_BIN/$b"
done
cache_ok || die "built binaries fail their version check (see $blog)"
log "kubernetes binaries cached in $K8S_BIN"
