# Shared helpers for the local-cluster harness. Sourced, never executed.
# shellcheck shell=bash

K8S_VERSION=1.20.2
GO_BIN=/usr/lib/go-1.19/bin
# Everything the harness builds is cached outside the repo, keyed by version.
CACHE_ROOT=${TETHER_CACHE:-/var/cache/tether}
K8S_CACHE=$CACHE_ROOT/kubernetes-$K8S_VERSION
K8S_BIN=$K8S_CACHE/bin
# Everything the running cluster owns lives under STATE; `down` removes it whole.
STATE=${TETHER_CLUSTER_STATE:-/var/lib/tether-cluster}
LOGS=$STATE/logs
RUN=$STATE/run

log() { printf '\033[1m[cluster]\033[0m %s\n' "$*" >&2; }
die() {
  printf '\033[31m[cluster] error:\033[0m %s\n' "$*" >&2
  exit 1
}

# step NAME LOGFILE CMD...: runs a step with its output in LOGFILE; on failure names the step
# and shows the tail of the log.
step() {
  local name=$1 logf=$2
  shift 2
  mkdir -p "$(dirname "$logf")"
  if ! "$@" >>"$logf" 2>&1; then
    printf '\033[31m[cluster] step "%s" failed\033[0m; last lines of %s:\n' "$name" "$logf" >&2
    tail -n 25 "$logf" >&2
    exit 1
  fi
}

APT_UPDATED=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ $APT_UPDATED -eq 0 ]; then
    step "apt-get update" "$CACHE_ROOT/logs/apt.log" apt-get update
    APT_UPDATED=1
  fi
  step "apt-get install ${missing[*]}" "$CACHE_ROOT/logs/apt.log" \
    env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}
