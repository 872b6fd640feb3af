#!/usr/bin/env bash
# Builds the cluster's images locally and pushes them (skopeo) to the cluster's registry, from
# which containerd pulls them as `tether.local/NAME:TAG` like any cluster pulls its images.
# `images.sh pause` does the sandbox image only; `images.sh all` also builds the project's
# release binaries and packs `tether-agent` and `testapp`.
#
# An image is a docker-archive tar: one layer, a config whose diff_id is the layer's sha256 (with
# OCI labels: version and source revision), and a manifest naming the tag. Each image is tagged
# `:dev` and with its layer's hash; the refs in use are written to $STATE/images.env for the tests
# and the demo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
repo=$(cd "$here/../.." && pwd)
work=$STATE/images


# build_tar NAME ROOTFS ENTRYPOINT_JSON: writes $work/NAME.tar (a docker-archive tagged
# tether.local/NAME:TAG and :dev) and sets TAG to its layer's hash.
build_tar() {
  local name=$1 rootfs=$2 entry=$3
  local dir=$work/$name.oci
  rm -rf "$dir" && mkdir -p "$dir"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$dir/layer.tar" .
  local diff
  diff=$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)
  TAG=${diff:0:12}
  local ref=tether.local/$name version revision
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
  revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
  cat >"$dir/config.json" <<J
{"architecture":"amd64","os":"linux","config":{"Entrypoint":$entry,"Env":["PATH=/usr/local/bin:/bin:/usr/bin"],"WorkingDir":"/","Labels":{"org.opencontainers.image.title":"$name","org.opencontainers.image.version":"$version","org.opencontainers.image.revision":"$revision","org.opencontainers.image.source":"tether"}},"rootfs":{"type":"layers","diff_ids":["sha256:$diff"]}}
J
  cat >"$dir/manifest.json" <<J
[{"Config":"config.json","RepoTags":["$ref:$TAG","$ref:dev"],"Layers":["layer.tar"]}]
J
  tar -C "$dir" -cf "$work/$name.tar" manifest.json config.json layer.tar
  rm -rf "$dir"
}

# pack NAME ROOTFS ENTRYPOINT_JSON: builds NAME's image, pushes it to the cluster's registry
# (unless the registry has that tag already) and records its ref.
pack() {
  local name=$1
  build_tar "$@"
  local ref=tether.local/$name
  if ! skopeo inspect --tls-verify=false --raw "docker://$REGISTRY/$name:$TAG" >/dev/null 2>&1; then
    local t
    for t in "$TAG" dev; do
      step "push image $name:$t" "$LOGS/images.log" skopeo copy --quiet --dest-tls-verify=false \
        "docker-archive:$work/$name.tar" "docker://$REGISTRY/$name:$t"
    done
    log "image $ref:$TAG pushed to the cluster's registry"
  fi
  rm -f "$work/$name.tar"
  record "$name" "$ref:$TAG"
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
  # Stripped: the release profile keeps debug info for profiling, which the image need not carry.
  install -D -m 0755 -s "$bin" "$rootfs/usr/local/bin/$(basename "$bin")"
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
  local pause
  pause=$(grep ^PAUSE_IMAGE "$STATE/images.env" | cut -d= -f2)
  step "tag the sandbox image" "$LOGS/images.log" skopeo copy --quiet --src-tls-verify=false \
    --dest-tls-verify=false "docker://$REGISTRY/pause:${pause##*:}" "docker://$REGISTRY/pause:3"
}

build_binaries() {
  log "building release binaries for the images"
  (cd "$repo" && step "cargo build --release (images)" "$LOGS/images.log" \
    cargo build --release -p tether-agent -p tether-testapp -p tether-cli)
}

agent_rootfs() {
  local r=$work/agent.rootfs
  rm -rf "$r" && mkdir -p "$r/tmp"
  copy_bin "$r" "$repo/target/release/tether-agent"
  echo "$r"
}

build_project() {
  build_binaries
  pack tether-agent "$(agent_rootfs)" '["/usr/local/bin/tether-agent"]'

  r=$work/testapp.rootfs
  rm -rf "$r" && mkdir -p "$r/bin" "$r/tmp"
  copy_bin "$r" "$repo/target/release/tether-testapp"
  install -m 0755 /bin/busybox "$r/bin/busybox"
  # tar: `kubectl cp` runs it in the container.
  for a in sh wget nc cat echo sleep ls env nslookup printf grep tar; do ln -sf busybox "$r/bin/$a"; done
  pack testapp "$r" '["/usr/local/bin/tether-testapp"]'
}

# push DEST: the tether-agent image to any registry (REGISTRY/REPO[:TAG]; the tag defaults to the
# version), with the credentials skopeo finds (docker's config.json, containers' auth.json).
push() {
  local dest=$1
  [ -n "$dest" ] || die "usage: cargo xtask image push REGISTRY/REPO[:TAG]"
  local version
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
  [[ "${dest##*/}" == *:* ]] || dest=$dest:$version
  build_binaries
  build_tar tether-agent "$(agent_rootfs)" '["/usr/local/bin/tether-agent"]'
  local tls=()
  # Plain HTTP only for a registry on this machine.
  case "$dest" in localhost:* | localhost/* | 127.*) tls=(--dest-tls-verify=false) ;; esac
  step "push tether-agent to $dest" "$LOGS/images.log" skopeo copy "${tls[@]}" \
    "docker-archive:$work/tether-agent.tar" "docker://$dest"
  local size
  size=$(du -h "$work/tether-agent.tar" | cut -f1)
  rm -f "$work/tether-agent.tar"
  log "pushed tether-agent ($size uncompressed) to $dest"
}

mkdir -p "$work" "$LOGS"
if [ "${1:-}" = push ]; then
  push "${2:-}"
  exit 0
fi

curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1 || die "the cluster's image registry ($REGISTRY) is not running: run \`cargo xtask cluster up\` (it pushes the images itself)"

case "${1:-all}" in
  pause) build_pause ;;
  all)
    build_pause
    build_project
    ;;
  *) die "usage: images.sh pause|all|push DEST" ;;
esac
