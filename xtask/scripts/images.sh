#!/usr/bin/env bash
# Builds the cluster's images locally and imports them into the cluster's containerd (there is no
# registry). `images.sh pause` does the sandbox image only; `images.sh all` also builds the
# project's release binaries and packs `tether-agent` and `testapp`.
#
# An image is a docker-archive tar: one layer, a config whose diff_id is the layer's sha256, and a
# manifest naming the tag. Each image is tagged `:dev` and with its content hash; the refs in use
# are written to $STATE/images.env for the tests and the demo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
repo=$(cd "$here/../.." && pwd)
work=$STATE/images

ctr_() { ctr -a "$CTRD_SOCK" -n k8s.io "$@"; }

# pack NAME ROOTFS ENTRYPOINT_JSON: writes $work/NAME.tar, imports it, records NAME's ref.
pack() {
  local name=$1 rootfs=$2 entry=$3
  local dir=$work/$name.oci
  rm -rf "$dir" && mkdir -p "$dir"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$dir/layer.tar" .
  local diff
  diff=$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)
  local tag=${diff:0:12} ref=tether.local/$name
  if grep -qx "$ref:$tag" <<<"$(ctr_ images ls -q 2>/dev/null)"; then
    record "$name" "$ref:$tag"
    return 0
  fi
  cat >"$dir/config.json" <<J
{"architecture":"amd64","os":"linux","config":{"Entrypoint":$entry,"Env":["PATH=/usr/local/bin:/bin:/usr/bin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff"]}}
J
  cat >"$dir/manifest.json" <<J
[{"Config":"config.json","RepoTags":["$ref:$tag","$ref:dev"],"Layers":["layer.tar"]}]
J
  tar -C "$dir" -cf "$work/$name.tar" manifest.json config.json layer.tar
  step "import image $ref:$tag" "$LOGS/images.log" ctr_ images import --no-unpack=false "$work/$name.tar"
  rm -rf "$dir" "$work/$name.tar"
  record "$name" "$ref:$tag"
  log "image $ref:$tag imported"
}

record() {
  local var
  var=$(echo "$1" | tr 'a-z-' 'A-Z_')_IMAGE
  touch "$STATE/images.env"
  sed -i "/^$var=/d" "$STATE/images.env"
  echo "$var=$2" >>"$STATE/images.env"
}

# copy_bin ROOTFS BIN: the binary and the shared libraries it links, at their own paths.
copy_bin() {
  local rootfs=$1 bin=$2 lib
  install -D -m 0755 "$bin" "$rootfs/usr/local/bin/$(basename "$bin")"
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    install -D -m 0755 "$lib" "$rootfs$lib"
  done
}

build_pause() {
  local r=$work/pause.rootfs
  rm -rf "$r" && mkdir -p "$r"
  gcc -static -O2 -o "$r/pause" "$repo/xtask/images/pause.c"
  pack pause "$r" '["/pause"]'
  # The CRI's sandbox image name (see containerd.toml).
  ctr_ images tag --force "$(grep ^PAUSE_IMAGE "$STATE/images.env" | cut -d= -f2)" tether.local/pause:3 >/dev/null
}

build_project() {
  log "building release binaries for the images"
  (cd "$repo" && step "cargo build --release (images)" "$LOGS/images.log" \
    cargo build --release -p tether-agent -p tether-testapp -p tether-cli)
  local r=$work/agent.rootfs
  rm -rf "$r" && mkdir -p "$r/tmp"
  copy_bin "$r" "$repo/target/release/tether-agent"
  pack tether-agent "$r" '["/usr/local/bin/tether-agent"]'

  r=$work/testapp.rootfs
  rm -rf "$r" && mkdir -p "$r/bin" "$r/tmp"
  copy_bin "$r" "$repo/target/release/tether-testapp"
  install -m 0755 /bin/busybox "$r/bin/busybox"
  for a in sh wget nc cat echo sleep ls env nslookup printf grep; do ln -sf busybox "$r/bin/$a"; done
  pack testapp "$r" '["/usr/local/bin/tether-testapp"]'
}

[ -n "$(pid_of containerd)" ] || die "the cluster's containerd is not running: run \`cargo xtask cluster up\` (it loads the images itself)"

mkdir -p "$work"

case "${1:-all}" in
  pause) build_pause ;;
  all)
    build_pause
    build_project
    ;;
  *) die "usage: images.sh pause|all" ;;
esac
