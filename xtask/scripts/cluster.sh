#!/usr/bin/env bash
# The local single-node Kubernetes cluster: `cluster.sh up | down | status | env | check-clean`.
#
# Every daemon is a plain background process (no systemd here) whose pid, log and state live
# under $STATE, so `down` can remove exactly what `up` made, even after a run was killed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

usage() { die "usage: cluster.sh deps|up|down|status|env|check-clean"; }

# ---------------------------------------------------------------- prerequisites
require_root() { [ "$(id -u)" -eq 0 ] || die "the local cluster needs root (it runs kubelet, containerd and iptables)"; }

install_deps() {
  mkdir -p "$CACHE_ROOT/logs"
  apt_install etcd-server containerd runc containernetworking-plugins iptables conntrack socat \
    curl openssl iproute2 dnsmasq-base busybox-static gcc libc6-dev procps psmisc kmod python3
  # The DNS end-to-end tests resolve with musl (a static program built with musl-gcc), Go's pure
  # resolver (built with the cluster build's Go) and dig.
  apt_install musl-tools dnsutils golang-1.19-go
  # The image registry the cluster pulls from, and the client that pushes to it.
  apt_install docker-registry skopeo
  # The CLI tests: completions in a real bash under tmux, man pages through man.
  apt_install tmux man-db zsh fish
  # The observability tests: a real Prometheus scraping the cluster, and promtool.
  apt_install prometheus
  command -v kubectl >/dev/null || apt_install kubernetes-client
  # kubectl must exist either way (Debian's kubernetes-client ships it).
  command -v kubectl >/dev/null || die "kubectl not found and Debian's kubernetes-client did not provide it"
}

# The cache is built when absent. A cache that exists but does not work is an error that names the
# broken file: rebuilding silently would hide a real problem and take 10 minutes.
check_k8s_cache() {
  local b
  if [ ! -d "$K8S_BIN" ]; then
    "$here/build-k8s.sh"
    return
  fi
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    if [ ! -x "$K8S_BIN/$b" ] || ! grep -q "v$K8S_VERSION" <<<"$("$K8S_BIN/$b" --version 2>/dev/null)"; then
      die "the cached $b at $K8S_BIN/$b is missing or broken (it does not run as v$K8S_VERSION). Remove $K8S_BIN and run \`cargo xtask cluster up\` again to rebuild it."
    fi
  done
}

# Ports the cluster binds. A port in use by something that is not ours is reported by name.
PORTS=("$REGISTRY_PORT:docker-registry" "$PROMETHEUS_PORT:prometheus" "2379:etcd" "2380:etcd (peer)" "$API_PORT:kube-apiserver" "10250:kubelet" "10257:kube-controller-manager" "10259:kube-scheduler" "10249:kube-proxy (metrics)" "10256:kube-proxy (healthz)")
check_ports() {
  local entry port what holder
  for entry in "${PORTS[@]}"; do
    port=${entry%%:*} what=${entry#*:}
    holder=$(ss -Htlnp "sport = :$port" 2>/dev/null | head -n1)
    if [ -n "$holder" ]; then
      holder=$(echo "$holder" | sed -n 's/.*users:((\(.*\)))/\1/p')
      die "port $port, needed by $what, is already in use by ${holder:-another process}. Stop that process and run \`cargo xtask cluster up\` again."
    fi
  done
}

# ---------------------------------------------------------------- PKI
gen_pki() {
  [ -f "$PKI/.done" ] && return 0
  local ip=$1
  rm -rf "$PKI" && mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=tether-local-ca"
    cert() { # name CN O [SANs]
      local name=$1 cn=$2 o=$3 sans=${4:-}
      local subj="/CN=$cn"
      [ -n "$o" ] && subj="/O=$o/CN=$cn"
      openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj"
      {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=serverAuth,clientAuth"
        [ -n "$sans" ] && echo "subjectAltName=$sans"
      } >"$name.ext"
      openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" -days 3650 -extfile "$name.ext"
    }
    cert apiserver kube-apiserver "" "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:10.96.0.1,IP:127.0.0.1,IP:$ip"
    cert admin admin system:masters
    cert controller-manager system:kube-controller-manager ""
    cert scheduler system:kube-scheduler ""
    cert kube-proxy system:kube-proxy ""
    cert kubelet "system:node:$NODE_NAME" system:nodes "DNS:$NODE_NAME,IP:$ip"
    cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
  ) >>"$LOGS/pki.log" 2>&1 || die "generating certificates failed (see $LOGS/pki.log)"
  touch "$PKI/.done"
}

kubeconfig() { # file user cert server
  local f=$1 user=$2 cert=$3 server=$4
  cat >"$f" <<KC
apiVersion: v1
kind: Config
clusters:
- name: tether-local
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$cert.crt")
    client-key-data: $(base64 -w0 "$PKI/$cert.key")
contexts:
- name: tether-local
  context: {cluster: tether-local, user: $user, namespace: default}
current-context: tether-local
KC
}

# ---------------------------------------------------------------- processes
# start NAME CMD...: starts a daemon in its own session, output to $LOGS/NAME.log.
start() {
  local name=$1
  shift
  if [ -n "$(pid_of "$name")" ]; then return 0; fi
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  local pid=$! i
  echo "$pid" >"$RUN/$name.pid"
  # Until it execs, the child is a fork of this script, whose command line pid_of does not
  # recognise: on a busy machine wait_for's first look could then take a component that has not
  # started yet for one that died (CI saw "etcd exited while waiting for etcd" with an empty log).
  # Wait for the exec, or for the child to be gone, before anyone looks.
  for ((i = 0; i < 400; i++)); do
    [ -d "/proc/$pid" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ] || break
    grep -q -- "$name" <<<"$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null)" && break
    sleep 0.05
  done
}

# wait_for WHAT SECONDS LOGNAME CMD...: polls CMD until it succeeds.
wait_for() {
  local what=$1 secs=$2 logname=$3 i
  shift 3
  for ((i = 0; i < secs * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    if [ -n "$logname" ] && [ -z "$(pid_of "$logname")" ]; then
      printf '\033[31m[cluster] %s exited while waiting for %s\033[0m; last lines of %s:\n' "$logname" "$what" "$LOGS/$logname.log" >&2
      tail -n 25 "$LOGS/$logname.log" >&2
      exit 1
    fi
    sleep 0.25
  done
  printf '\033[31m[cluster] timed out after %ss waiting for %s\033[0m\n' "$secs" "$what" >&2
  [ -n "$logname" ] && tail -n 25 "$LOGS/$logname.log" >&2
  exit 1
}

write_configs() {
  local ip=$1
  mkdir -p "$CNI_CONF_DIR" "$STATE/cni/ipam" "$STATE/containerd" "$STATE/kubelet" "$STATE/config"
  kubeconfig "$ADMIN_KUBECONFIG" admin admin "https://$ip:$API_PORT"
  kubeconfig "$STATE/config/controller-manager.kubeconfig" cm controller-manager "https://127.0.0.1:$API_PORT"
  kubeconfig "$STATE/config/scheduler.kubeconfig" scheduler scheduler "https://127.0.0.1:$API_PORT"
  kubeconfig "$STATE/config/kube-proxy.kubeconfig" kube-proxy kube-proxy "https://$ip:$API_PORT"
  kubeconfig "$STATE/config/kubelet.kubeconfig" kubelet kubelet "https://$ip:$API_PORT"
  # The API server's audit policy: who wrote which workload, Service, Secret or session request
  # (Metadata: no bodies), nothing else, so the log stays small. The end-to-end tests read it
  # ($LOGS/kube-apiserver-audit.log, JSON lines) to find tether's workload changes under the
  # developer's own name.
  cat >"$STATE/config/audit-policy.yaml" <<C
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete]
    resources:
      - {group: apps, resources: [deployments, statefulsets, replicasets, daemonsets]}
      - {group: "", resources: [services, secrets]}
      - {group: certificates.k8s.io, resources: [certificatesigningrequests]}
  - level: None
C
  cat >"$STATE/config/containerd.toml" <<C
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$CTRD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "tether.local/pause:3"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_CONF_DIR"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."tether.local"]
    endpoint = ["http://$REGISTRY"]
C
  # Debian's Prometheus, as a platform team runs one, scraping tether's manager and agents every
  # 2 s so the tests see changes soon. Debian builds it without Kubernetes discovery, so
  # prometheus-sd.py finds the pods' ports named tether-metrics with the admin kubeconfig and
  # hands them over as a file_sd list, labelled as kubernetes_sd_configs would be.
  echo '[]' >"$STATE/config/prometheus-targets.json"
  cat >"$STATE/config/prometheus.yml" <<C
global: {scrape_interval: 2s, scrape_timeout: 1s, evaluation_interval: 2s}
scrape_configs:
  - job_name: tether
    file_sd_configs:
      - files: [$STATE/config/prometheus-targets.json]
        refresh_interval: 2s
C
  cat >"$STATE/config/registry.yml" <<C
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $STATE/registry}
  delete: {enabled: true}
http:
  addr: $REGISTRY
C
  cat >"$CNI_CONF_DIR/10-tether.conflist" <<C
{
  "cniVersion": "0.4.0",
  "name": "tether",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
C
  # Pods resolve through the host's resolver on the first workstation link (dnsmasq).
  echo "nameserver ${WS_NAMESPACES[0]##*:}.1" >"$STATE/config/pod-resolv.conf"
  cat >"$STATE/config/kubelet.yaml" <<C
kind: KubeletConfiguration
apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failSwapOn: false
clusterDomain: cluster.local
resolvConf: "$STATE/config/pod-resolv.conf"
tlsCertFile: "$PKI/kubelet.crt"
tlsPrivateKeyFile: "$PKI/kubelet.key"
readOnlyPort: 0
serializeImagePulls: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
C
}

# Workstation namespaces: reach only the node address (API server, NodePorts) and the host-side
# resolver, never the pod or service networks.
ws_up() {
  local ip=$1 entry name veth net
  for entry in "${WS_NAMESPACES[@]}"; do
    IFS=: read -r name veth net <<<"$entry"
    if ! grep -qw "^$name" <<<"$(ip netns list)"; then
      ip netns add "$name"
    fi
    if ! ip link show "$veth" >/dev/null 2>&1; then
      ip link add "$veth" type veth peer name eth0 netns "$name"
      ip addr add "$net.1/30" dev "$veth"
      ip link set "$veth" up
      ip -n "$name" addr add "$net.2/30" dev eth0
      ip -n "$name" link set eth0 up
      ip -n "$name" link set lo up
      ip -n "$name" route add "$ip/32" via "$net.1"
    fi
    mkdir -p "/etc/netns/$name"
    echo "nameserver $net.1" >"/etc/netns/$name/resolv.conf"
  done
}

start_dnsmasq() {
  local addrs=() entry net
  for entry in "${WS_NAMESPACES[@]}"; do
    net=${entry##*:}
    addrs+=("--listen-address=$net.1")
  done
  # The workstation's "original" resolver: knows a few names outside the cluster and nothing else.
  # Its answers carry a TTL, as real ones do (dnsmasq's default for its own names is 0).
  start dnsmasq dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
    --except-interface=lo "${addrs[@]}" --pid-file="$RUN/dnsmasq.real.pid" --local-ttl=30 \
    --address=/outside.tether.test/198.51.100.7 --address=/www.example.test/198.51.100.8 \
    --log-facility=- --log-queries
}

cmd_up() {
  require_root
  local t0=$SECONDS
  install_deps
  check_k8s_cache
  recover_if_needed
  # Checked before anything is written, so a refused `up` changes nothing.
  cluster_running || check_ports
  mkdir -p "$LOGS" "$RUN"
  local ip
  ip=$(node_ip)
  if cluster_running; then
    log "cluster already up"
  else
    log "starting cluster on $ip (state: $STATE, logs: $LOGS)"
    sysctl -qw net.ipv4.ip_forward=1
    modprobe br_netfilter 2>/dev/null || true
    [ -f /proc/sys/net/bridge/bridge-nf-call-iptables ] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
    gen_pki "$ip"
    write_configs "$ip"
    ws_up "$ip"
    start_dnsmasq
    start docker-registry docker-registry serve "$STATE/config/registry.yml"
    wait_for "image registry" 30 docker-registry curl -fsS "http://$REGISTRY/v2/"
    start etcd etcd --name tether --data-dir "$STATE/etcd" \
      --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
      --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
      --initial-cluster tether=http://127.0.0.1:2380 --listen-metrics-urls=
    wait_for "etcd" 30 etcd curl -fsS http://127.0.0.1:2379/health
    start kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
      --bind-address=0.0.0.0 --secure-port=$API_PORT --advertise-address="$ip" --insecure-port=0 \
      --service-cluster-ip-range=$SERVICE_CIDR --service-node-port-range=30000-32767 \
      --authorization-mode=Node,RBAC --allow-privileged=true \
      --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
      --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
      --kubelet-preferred-address-types=InternalIP \
      --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --enable-admission-plugins=NodeRestriction,ServiceAccount \
      --audit-policy-file="$STATE/config/audit-policy.yaml" --audit-log-path="$LOGS/kube-apiserver-audit.log" \
      --audit-log-format=json --audit-log-maxsize=100 --audit-log-maxbackup=1
    wait_for "kube-apiserver" 60 kube-apiserver \
      curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "https://$ip:$API_PORT/readyz"
    start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
      --kubeconfig="$STATE/config/controller-manager.kubeconfig" --leader-elect=false \
      --bind-address=127.0.0.1 --allocate-node-cidrs --cluster-cidr=$CLUSTER_CIDR --node-cidr-mask-size=24 \
      --service-cluster-ip-range=$SERVICE_CIDR --service-account-private-key-file="$PKI/sa.key" \
      --root-ca-file="$PKI/ca.crt" --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
      --use-service-account-credentials
    start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$STATE/config/scheduler.kubeconfig" \
      --leader-elect=false --bind-address=127.0.0.1
    start containerd containerd --config "$STATE/config/containerd.toml"
    wait_for "containerd" 30 containerd ctr -a "$CTRD_SOCK" version
    "$here/images.sh" pause
    start kubelet "$K8S_BIN/kubelet" --config="$STATE/config/kubelet.yaml" \
      --kubeconfig="$STATE/config/kubelet.kubeconfig" --container-runtime=remote \
      --container-runtime-endpoint="unix://$CTRD_SOCK" --root-dir="$STATE/kubelet" \
      --cert-dir="$STATE/kubelet/pki" --hostname-override=$NODE_NAME --node-ip="$ip" --v=1
    start kube-proxy "$K8S_BIN/kube-proxy" --kubeconfig="$STATE/config/kube-proxy.kubeconfig" \
      --proxy-mode=iptables --cluster-cidr=$CLUSTER_CIDR --hostname-override=$NODE_NAME \
      --masquerade-all --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 \
      --conntrack-tcp-timeout-close-wait=0 --bind-address="$ip"
    wait_for "node $NODE_NAME Ready" 90 kubelet \
      sh -c "kubectl --kubeconfig '$ADMIN_KUBECONFIG' get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
    wait_for "default service account" 30 kube-controller-manager \
      kubectl --kubeconfig "$ADMIN_KUBECONFIG" -n default get serviceaccount default
    start prometheus-sd python3 "$here/prometheus-sd.py" "$ADMIN_KUBECONFIG" \
      "$STATE/config/prometheus-targets.json"
    start prometheus prometheus --config.file="$STATE/config/prometheus.yml" \
      --storage.tsdb.path="$STATE/prometheus" --web.listen-address="$PROMETHEUS" \
      --storage.tsdb.retention.time=1d
    wait_for "prometheus" 30 prometheus curl -fsS "http://$PROMETHEUS/-/ready"
  fi
  "$here/images.sh" all
  log "cluster ready in $((SECONDS - t0))s; $(cmd_env)"
}

cluster_running() {
  local c
  for c in "${COMPONENTS[@]}"; do
    [ -n "$(pid_of "$c")" ] || return 1
  done
  kubectl_admin get --raw /readyz >/dev/null 2>&1
}

# If any component of an earlier run is dead (killed from outside, a crash, a reboot), tear the
# whole thing down and start clean: a half-alive control plane is not worth repairing.
recover_if_needed() {
  local c alive=0 dead=0
  for c in "${COMPONENTS[@]}"; do
    if [ -n "$(pid_of "$c")" ]; then alive=$((alive + 1)); else dead=$((dead + 1)); fi
  done
  if [ $alive -gt 0 ] && [ $dead -eq 0 ] && kubectl_admin get --raw /readyz >/dev/null 2>&1; then
    return 0
  fi
  if [ $alive -gt 0 ] || [ -d "$STATE" ] || leftovers >/dev/null; then
    log "recovering from an earlier run ($alive component(s) alive, $dead dead): cleaning up first"
    teardown
  fi
}

# ---------------------------------------------------------------- teardown
kill_pid() { # pid: TERM, then KILL after 5 s
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 20; i++)); do
    [ -d "/proc/$pid" ] || return 0
    sleep 0.25
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# Container shims (and so the containers) outlive a killed containerd: find ours by the socket
# address on their command line.
our_shims() {
  local p
  for p in /proc/[0-9]*; do
    grep -q "containerd-shim.*-address $CTRD_SOCK" <<<"$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null)" && echo "${p#/proc/}"
  done
  return 0
}

# Processes inside the kubelet's pod cgroups.
pod_pids() {
  local d
  for d in /sys/fs/cgroup/*/kubepods; do
    [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done
  return 0
}

our_mounts() { awk -v s="$STATE" '$2 ~ "^"s {print $2}' /proc/self/mounts | sort -r; }

teardown() {
  local c pid p entry name veth net
  # Emulators first: each removes its own rules on SIGTERM.
  for p in $(our_emulators); do kill_pid "$p"; done
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c=${COMPONENTS[$i]}
    pid=$(pid_of "$c")
    [ -n "$pid" ] && kill_pid "$pid"
  done
  for p in $(our_shims) $(pod_pids); do kill -KILL "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in $(pod_pids); do kill -KILL "$p" 2>/dev/null || true; done
  # Pod cgroups (deepest first).
  for d in /sys/fs/cgroup/*/kubepods; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  # Pod network namespaces made by CNI (containerd names them cni-<uuid>).
  for name in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' || true); do
    ip netns delete "$name" 2>/dev/null || true
  done
  for m in $(our_mounts); do umount -l "$m" 2>/dev/null || true; done
  # The workstations' mount namespaces (workstation.sh), and the private mount they are bound in.
  for m in /run/tether-ws/*.mnt; do
    [ -e "$m" ] || continue
    umount -l "$m" 2>/dev/null || true
    rm -f "$m"
  done
  umount -l /run/tether-ws 2>/dev/null || true
  for entry in "${WS_NAMESPACES[@]}"; do
    IFS=: read -r name veth net <<<"$entry"
    ip netns delete "$name" 2>/dev/null || true
    ip link delete "$veth" 2>/dev/null || true
    rm -rf "/etc/netns/$name"
  done
  ip link delete cni0 2>/dev/null || true
  for l in $(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^veth' || true); do
    # veths of pods: their peer lived in a cni- namespace that is gone by now.
    ip link delete "$l" 2>/dev/null || true
  done
  ip link delete kube-ipvs0 2>/dev/null || true
  clean_iptables
  rm -rf "$STATE"
}

# Drops every chain and rule that kube-proxy or the CNI plugins made (KUBE-*, CNI-*), and the
# NFQUEUE rules of a link emulator (`tether-linkemu`, `cargo xtask bench --profile`) that could
# not remove its own, leaving every other rule alone.
OUR_RULES='KUBE-|CNI-|tether-linkemu'
clean_iptables() {
  local cmd
  for cmd in iptables ip6tables; do
    command -v "$cmd-save" >/dev/null || continue
    grep -q -E "$OUR_RULES" <<<"$("$cmd-save" 2>/dev/null)" || continue
    "$cmd-save" | grep -v -E "$OUR_RULES" | "$cmd-restore" || log "warning: could not clean $cmd rules"
  done
}

# Link emulators (tether-linkemu) running on a workstation namespace's link: a benchmark killed
# outright leaves its emulator behind.
our_emulators() {
  local p entry name veth net cmdline
  for p in /proc/[0-9]*; do
    [[ "$(readlink "$p/exe" 2>/dev/null)" == */tether-linkemu ]] || continue
    cmdline=$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
    for entry in "${WS_NAMESPACES[@]}"; do
      IFS=: read -r name veth net <<<"$entry"
      grep -q -- "--netns $name " <<<"$cmdline " && echo "${p#/proc/}"
    done
  done
  return 0
}

leftovers() {
  local found=0 c entry name veth net
  for c in "${COMPONENTS[@]}"; do
    [ -n "$(pid_of "$c")" ] && { echo "process $c (pid $(pid_of "$c"))"; found=1; }
  done
  [ -n "$(our_shims)" ] && { echo "containerd shims: $(our_shims | tr '\n' ' ')"; found=1; }
  [ -n "$(pod_pids)" ] && { echo "pod processes: $(pod_pids | tr '\n' ' ')"; found=1; }
  [ -n "$(our_mounts)" ] && { echo "mounts: $(our_mounts | tr '\n' ' ')"; found=1; }
  for entry in "${WS_NAMESPACES[@]}"; do
    IFS=: read -r name veth net <<<"$entry"
    grep -qw "^$name" <<<"$(ip netns list 2>/dev/null)" && { echo "network namespace $name"; found=1; }
    ip link show "$veth" >/dev/null 2>&1 && { echo "interface $veth"; found=1; }
    [ -e "/etc/netns/$name" ] && { echo "/etc/netns/$name"; found=1; }
  done
  grep -q '^cni-' <<<"$(ip netns list 2>/dev/null)" && { echo "pod network namespaces: $(ip netns list | grep '^cni-' | awk '{print $1}' | tr '\n' ' ')"; found=1; }
  ip link show cni0 >/dev/null 2>&1 && { echo "interface cni0"; found=1; }
  grep -q -E 'KUBE-|CNI-' <<<"$(iptables-save 2>/dev/null)" && { echo "iptables chains: $(iptables-save | grep -o -E '^:(KUBE|CNI)-[^ ]*' | head -n 5 | tr '\n' ' ')..."; found=1; }
  grep -q 'tether-linkemu' <<<"$(iptables-save -t mangle 2>/dev/null)" && { echo "iptables rules of tether-linkemu: $(iptables-save -t mangle | grep 'tether-linkemu' | head -n 2 | tr '\n' ' ')"; found=1; }
  [ -n "$(our_emulators)" ] && { echo "tether-linkemu processes: $(our_emulators | tr '\n' ' ')"; found=1; }
  for d in /sys/fs/cgroup/*/kubepods; do [ -d "$d" ] && { echo "cgroup $d"; found=1; }; done
  [ -d "$STATE" ] && { echo "state directory $STATE"; found=1; }
  [ $found -eq 1 ]
}

cmd_down() {
  require_root
  teardown
  if leftovers >/dev/null; then
    log "warning: some things could not be removed:"
    leftovers >&2 || true
    exit 1
  fi
  log "cluster down; nothing left behind"
}

cmd_check_clean() {
  if leftovers; then
    die "the cluster left the above behind"
  fi
  log "clean: no process, namespace, interface, iptables chain or rule, mount, cgroup or state directory left"
}

cmd_status() {
  local c pid
  for c in "${COMPONENTS[@]}"; do
    pid=$(pid_of "$c")
    if [ -n "$pid" ]; then
      printf '%-24s running (pid %s)\n' "$c" "$pid"
    else
      printf '%-24s stopped\n' "$c"
    fi
  done
  if [ -f "$ADMIN_KUBECONFIG" ] && kubectl_admin get --raw /readyz >/dev/null 2>&1; then
    kubectl_admin get nodes -o wide
  else
    echo "API server: not reachable"
    return 1
  fi
}

# Everything `tether` needs by hand: the kubeconfig, and the agent image the cluster has (so a
# plain `tether install` works).
cmd_env() {
  echo "export KUBECONFIG=$ADMIN_KUBECONFIG"
  if [ -f "$STATE/images.env" ]; then
    sed -n 's/^TETHER_AGENT_IMAGE=\(.*\)$/export TETHER_AGENT_IMAGE=\1/p' "$STATE/images.env"
  fi
}

case "${1:-}" in
  # The packages the cluster and the tests use (`up` installs them too); the integration tests
  # that need root tools (iptables for the link emulator) run before the cluster comes up.
  deps) require_root; install_deps ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  check-clean) cmd_check_clean ;;
  *) usage ;;
esac
