# Shared helpers for the local-cluster harness. Sourced, never executed.
# shellcheck shell=bash

# Run from `cargo xtask` or `cargo test`, we inherit the caller's per-package CARGO_* variables.
# A nested `cargo build` would pass them on to build scripts (ring's reruns when they change)
# and rebuild half the tree each time; drop them.
for v in $(compgen -e | grep -E '^CARGO_(PKG_|MANIFEST_|CRATE_|BIN_|PRIMARY_PACKAGE|TARGET_TMPDIR)'); do unset "$v"; done

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
    grep -q 'install ok installed' <<<"$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" || missing+=("$p")
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

PKI=$STATE/pki
CTRD_SOCK=$STATE/containerd/containerd.sock
CNI_CONF_DIR=$STATE/cni/net.d
NODE_NAME=tether-node
SERVICE_CIDR=10.96.0.0/16
CLUSTER_CIDR=10.244.0.0/16
POD_CIDR=10.244.0.0/24
API_PORT=6443
# The cluster's image registry (Debian's docker-registry, on loopback): containerd pulls
# `tether.local/NAME:TAG` from it, as a real cluster pulls from its registry.
REGISTRY_PORT=5000
REGISTRY=127.0.0.1:$REGISTRY_PORT
ADMIN_KUBECONFIG=$STATE/admin.kubeconfig
# Debian's Prometheus, scraping tether's manager and agents (the observability tests ask it).
PROMETHEUS_PORT=9090
PROMETHEUS=127.0.0.1:$PROMETHEUS_PORT
# Workstation namespaces: name, host-side veth, /30 subnet prefix (host .1, namespace .2).
# Five: the many-developers end-to-end test gives each its own machine.
WS_NAMESPACES=("tether-ws:tws0:10.250.0" "tether-ws2:tws1:10.250.1" "tether-ws3:tws2:10.250.2"
  "tether-ws4:tws3:10.250.3" "tether-ws5:tws4:10.250.4")
# The components, in start order. Each one's pid is in $RUN/<name>.pid.
COMPONENTS=(dnsmasq docker-registry etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy prometheus-sd prometheus)

# This machine's own address: the source address of the default route, else the first global one.
node_ip() {
  local ip
  ip=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n1)
  [ -n "$ip" ] || ip=$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -n1)
  [ -n "$ip" ] || die "cannot find this machine's IPv4 address (no global address)"
  echo "$ip"
}

# pid_of NAME: prints the pid of a running component we started, or nothing.
pid_of() {
  local f=$RUN/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 0
  # Guard against pid reuse: the process must be the binary we started.
  grep -q -- "$1" <<<"$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null)" && echo "$pid"
  return 0
}

kubectl_admin() { kubectl --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
