//! The local control protocol between the `tether` CLI and the daemon: one JSON object per line
//! over a unix socket that only the connecting user and root may open. Its types are all here.
//!
//! # Version
//! Each request carries [`CONTROL_VERSION`] (`{"version":2,"request":"status"}`, see
//! [`Envelope`]). A daemon answers a request of another version, or of none (a tether from before
//! versions), with an error telling the user to restart it, instead of misreading it: a daemon
//! keeps running across an upgrade of the `tether` binary. Bump the version when a request or
//! response changes meaning; adding an optional field does not.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use std::net::SocketAddr;

use tether_proto::stats::MirrorCounts;
use tether_proto::{InterceptInfo, InterceptMode};

/// The control protocol version this build speaks.
///
/// 2: `intercept` may ask for a mirror (`"mirror": true`), which a daemon of version 1 would
/// silently make an intercept that takes the traffic.
pub const CONTROL_VERSION: u32 = 2;

/// A request line: the body and the sender's [`CONTROL_VERSION`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The sender's version; 0 when absent (a tether from before versions).
    #[serde(default)]
    pub version: u32,
    /// The request.
    #[serde(flatten)]
    pub body: T,
}

impl<T> Envelope<T> {
    /// `body` with this build's version.
    pub fn new(body: T) -> Envelope<T> {
        Envelope {
            version: CONTROL_VERSION,
            body,
        }
    }
}

/// The error a daemon answers a request of another version with.
pub fn version_mismatch(theirs: u32) -> String {
    format!(
        "the running tether daemon speaks control protocol {CONTROL_VERSION} and this tether {theirs}: \
         it was started by another tether version; run `tether quit` with that version (or kill \
         the daemon), then connect again"
    )
}

/// What the CLI asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// The session's state.
    Status,
    /// Disconnect, restore the machine and exit.
    Quit,
    /// Start an intercept.
    Intercept(Box<InterceptRequest>),
    /// End an intercept.
    Leave { name: String },
    /// The namespace's workloads, agents and intercepts.
    List,
    /// Wait until callers of the workload's Services reach the app, not an agent (after
    /// `tether uninstall`, which the CLI does itself).
    AwaitApp { namespace: String, workload: String },
    /// The daemon's Prometheus metrics, as text.
    Metrics,
    /// What `tether top` shows: counters, open flows and intercept counts, now.
    Top,
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "kebab-case")]
pub enum Response {
    Status(Box<StatusReport>),
    /// A step of a long request (connect, intercept, leave): any number come before the answer.
    Progress {
        stage: String,
    },
    Ok,
    Error {
        error: String,
    },
    Intercepted(Box<InterceptReport>),
    Left(Box<ActiveIntercept>),
    List(Box<ListReport>),
    /// Prometheus text format 0.0.4.
    Metrics {
        text: String,
    },
    Top(Box<TopSnapshot>),
}

/// One sample of the session for `tether top`. Counters are cumulative since the daemon started
/// (the CLI finds rates by subtracting an earlier sample); gauges and tables are as they are now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TopSnapshot {
    /// Milliseconds since the daemon started, when the sample was taken.
    pub at_ms: u64,
    pub connected: bool,
    pub namespace: String,
    pub context: String,
    /// `udp` or `port-forward`.
    pub transport: String,
    /// `None` while there is no session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<CarrierStats>,
    /// Bytes through the tunnel, each way.
    pub bytes_to_cluster: u64,
    pub bytes_to_workstation: u64,
    /// Flows open now, and started in all.
    pub flows_open: u64,
    pub flows_started: u64,
    /// DNS queries by how they were answered.
    pub dns: DnsCounts,
    /// The open flows that moved the most bytes, most first.
    pub flows: Vec<crate::flow_table::FlowRow>,
    /// This workstation's intercepts and how they route.
    pub intercepts: Vec<InterceptTop>,
}

/// DNS queries answered, by how (cumulative).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsCounts {
    /// Asked of the cluster (through the manager).
    pub cluster: u64,
    /// Asked of the machine's own resolvers.
    pub upstream: u64,
    /// Answered from the daemon's cache.
    pub cache_hit: u64,
    /// Answered NXDOMAIN.
    pub nxdomain: u64,
}

impl DnsCounts {
    /// Every query counted.
    pub fn total(&self) -> u64 {
        self.cluster + self.upstream + self.cache_hit + self.nxdomain
    }
}

/// One intercept in a [`TopSnapshot`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterceptTop {
    pub name: String,
    pub namespace: String,
    /// `Kind/name`.
    pub workload: String,
    pub app_port: u16,
    /// The filter as the user wrote it (`x-dev=ann`), empty for all traffic.
    pub filter: String,
    /// Requests it took to this machine (cumulative, over all the workload's agents).
    pub laptop: tether_proto::stats::RouteCounts,
    /// Requests on the same port that stayed with the app.
    pub app: tether_proto::stats::RouteCounts,
    /// `take` or `mirror`.
    #[serde(default)]
    pub mode: InterceptMode,
    /// A mirror's copies (cumulative, over all the workload's agents).
    #[serde(default)]
    pub mirrored: MirrorCounts,
    /// The workload's agents linked to the manager.
    pub agents: Vec<tether_proto::AgentLink>,
    /// The operations of its `--mount`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FileCounts>,
}

/// What a `--mount` asked of the pod (cumulative, since it was mounted).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileCounts {
    /// Operations sent to the pod's agent, with how long each took to be answered.
    pub ops: tether_proto::stats::RouteCounts,
    /// Bytes read from the pod, and written to it.
    pub read_bytes: u64,
    pub written_bytes: u64,
    /// Operations the pod answered with an error (a missing name is one too: `ENOENT` for a
    /// lookup is how a file system says "not there").
    pub errors: u64,
}

impl FileCounts {
    /// Counts one operation that took `took` and read `read` or wrote `written` bytes.
    pub fn record(&mut self, took: std::time::Duration, read: u64, written: u64, failed: bool) {
        self.ops.record(took);
        self.read_bytes += read;
        self.written_bytes += written;
        self.errors += u64::from(failed);
    }
}

/// `tether status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub connected: bool,
    pub namespace: String,
    pub context: String,
    pub cluster_server: String,
    /// `udp` or `port-forward`.
    pub transport: String,
    pub manager: String,
    pub session_id: String,
    pub cluster_domain: String,
    pub subnets: Vec<String>,
    pub tun_device: String,
    pub dns_server: String,
    pub reconnects: u64,
    pub daemon_pid: u32,
    /// The privileged helper's pid (root; the daemon itself is not).
    #[serde(default)]
    pub privileged_pid: u32,
    /// This workstation's intercepts.
    #[serde(default)]
    pub intercepts: Vec<ActiveIntercept>,
    /// The daemon's tether version.
    #[serde(default)]
    pub daemon_version: String,
    /// The traffic manager's tether version; empty when it has not said (older than 0.1.0's
    /// `ManagerInfo`) or the session is down.
    #[serde(default)]
    pub manager_version: String,
    /// The carrier's round-trip time and loss, as QUIC measures them; `None` while there is no
    /// session (or from a daemon older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<CarrierStats>,
    /// The namespace the traffic manager runs in.
    #[serde(default)]
    pub manager_namespace: String,
}

/// The tunnel's health as the QUIC connection measures it, since the session began (a reconnect
/// starts a new count).
///
/// Over `udp` these are the network's figures. Over `port-forward` the QUIC packets ride the API
/// server's TCP stream: the RTT includes that detour, and a loss on the way shows up as delay
/// (TCP retransmits it) rather than as lost packets, so loss stays near 0 there.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CarrierStats {
    /// The smoothed round-trip time, in microseconds.
    pub rtt_us: u64,
    /// QUIC packets sent.
    pub sent_packets: u64,
    /// QUIC packets declared lost (and resent).
    pub lost_packets: u64,
    /// The congestion window, in bytes.
    #[serde(default)]
    pub cwnd: u64,
    /// This machine's address on the path to the manager now: the source address the system
    /// gives the tunnel's packets. After a network change (another Wi-Fi, a VPN coming up) the
    /// same session goes on from the new address (QUIC connection migration), and this shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<std::net::IpAddr>,
    /// The manager's address as this machine sends to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<std::net::SocketAddr>,
}

impl CarrierStats {
    /// Lost packets as a percentage of those sent (0 before any was sent).
    pub fn loss_percent(&self) -> f64 {
        if self.sent_packets == 0 {
            return 0.0;
        }
        self.lost_packets as f64 * 100.0 / self.sent_packets as f64
    }

    /// The RTT in milliseconds.
    pub fn rtt_ms(&self) -> f64 {
        self.rtt_us as f64 / 1000.0
    }
}

/// Where the daemon's socket, log and backups live. `TETHER_RUNTIME_DIR` overrides the default so
/// that several workstations (network namespaces) can share one machine in tests.
pub fn runtime_dir() -> PathBuf {
    std::env::var_os("TETHER_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/tether"))
}

/// The socket, in the daemon's own directory (see [`crate::privileged::runtime_dir`]).
pub fn socket_path(dir: &Path) -> PathBuf {
    crate::privileged::runtime_dir::socket_path(dir)
}

/// The daemon's log, next to its socket.
pub fn log_path(dir: &Path) -> PathBuf {
    crate::privileged::runtime_dir::daemon_log_path(dir)
}

/// `tether intercept`, as the CLI sends it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterceptRequest {
    /// What to intercept: a workload or a Service (`NAME`, `KIND/NAME`, `svc/NAME`).
    pub workload: String,
    /// `--service`: which of the Services in front of the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `--workload`: which of the workloads a Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pick_workload: Option<String>,
    /// `--container`: the container whose port and environment are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// `--to-pod`: ports on 127.0.0.1 that reach the same port of an intercepted pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_pod: Vec<u16>,
    /// The intercept's name [default: the workload's name].
    pub name: Option<String>,
    /// The workstation port the traffic goes to.
    pub local_port: u16,
    /// The Service port, by name or number [default: the only one].
    pub service_port: Option<String>,
    /// Header filters `NAME=VALUE`.
    pub headers: Vec<String>,
    /// Path prefix filter.
    pub path_prefix: Option<String>,
    /// Return the intercepted container's environment.
    pub env: bool,
    /// `--mirror`: copy the matching requests to this machine instead of taking them.
    #[serde(default)]
    pub mirror: bool,
    /// `--replace`: the container leaves the workload's pods while the intercept lasts.
    #[serde(default)]
    pub replace: bool,
    /// `--also-port`: which of the replaced container's other ports come to this machine, and
    /// where (none unless named: a port in the workload's spec, which others may edit, never
    /// reaches this machine unasked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_ports: Vec<AlsoPort>,
    /// `--mount`: the container's volumes on this machine.
    #[serde(default)]
    pub mount: bool,
    /// `--mount=DIR`: where [default: a new temporary directory].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_dir: Option<std::path::PathBuf>,
}

/// What `tether intercept` reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterceptReport {
    /// The intercept.
    pub intercept: ActiveIntercept,
    /// True if this call installed the agent.
    pub installed_agent: bool,
    /// The pods whose agents follow the intercept.
    pub pods: Vec<String>,
    /// The intercepted container's environment, if asked for.
    pub env: Option<Vec<(String, String)>>,
    /// Why `--mount` failed (the intercept goes on without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_error: Option<String>,
}

/// `--mount`: where the intercepted container's volumes are on this machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountInfo {
    /// The mount point; the container's paths are under it (`TETHER_ROOT`).
    pub dir: std::path::PathBuf,
    /// The pod whose files these are.
    pub pod: String,
    /// The container paths served (the app container's volume mounts).
    pub volumes: Vec<String>,
}

/// One intercept this daemon holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActiveIntercept {
    pub name: String,
    /// The manager's id (changes when the intercept is re-created after a reconnect).
    pub id: u64,
    pub namespace: String,
    /// `Kind/name`.
    pub workload: String,
    /// The Service and its port, e.g. `orders:http`.
    pub service_port: String,
    /// The app's container and port.
    pub container: String,
    pub app_port: u16,
    /// Where intercepted traffic goes on this machine.
    pub local: SocketAddr,
    /// Header filters; empty with no path prefix: all traffic.
    pub headers: Vec<String>,
    pub path_prefix: Option<String>,
    /// `take` (the requests come here instead of the app) or `mirror` (a copy of each comes
    /// here; the app still answers).
    #[serde(default)]
    pub mode: InterceptMode,
    /// A mirror's copies so far, summed over the workload's agents: in `tether status`, once
    /// the agents have reported (`None` elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies: Option<MirrorCounts>,
    /// The Service's ClusterIP and port, where `leave` checks its effect (none: headless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_addr: Option<SocketAddr>,
    /// How many pods the Service sent to when the intercept started.
    #[serde(default)]
    pub endpoints: usize,
    /// `--to-pod`: 127.0.0.1:PORT on this machine reaches PORT of this pod (`name IP`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_pod: Vec<u16>,
    /// The pod `to_pod` reaches, as `NAME (IP)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_pod_target: Option<String>,
    /// `--mount`: where the container's volumes are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<MountInfo>,
    /// `--replace`: the replaced container's other ports that Services expose, and where each
    /// goes now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_ports: Vec<OtherPort>,
    /// For one of a replace's [`OtherPort`]s: the replace intercept it belongs to (it ends
    /// with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_of: Option<String>,
}

/// `--also-port [LOCAL:]PORT`: the replaced container's port PORT goes to 127.0.0.1:LOCAL.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct AlsoPort {
    pub local: u16,
    /// The container's port.
    pub port: u16,
}

/// A port of a `--replace`d container besides the intercepted one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OtherPort {
    /// The Service port reaching it, e.g. `worker:admin`.
    pub service_port: String,
    /// The container's port.
    pub app_port: u16,
    /// The intercept taking its traffic to `127.0.0.1:LOCAL` on this machine (`--also-port`);
    /// `None` when it is not taken (not asked for, or `why`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intercept: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// `tether list`: the namespace's workloads, their agents and intercepts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListReport {
    pub namespace: String,
    pub workloads: Vec<WorkloadRow>,
}

/// One workload in [`ListReport`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkloadRow {
    pub kind: String,
    pub name: String,
    pub replicas: i32,
    pub ready: i32,
    /// The agent is in the pod template.
    pub agent_installed: bool,
    /// The agent container's image (its tag is tether's version), if installed.
    #[serde(default)]
    pub agent_image: Option<String>,
    /// Pods whose agents are linked to the manager.
    pub agent_pods: Vec<String>,
    /// Active intercepts, whoever holds them.
    pub intercepts: Vec<InterceptInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable_json() {
        let line = serde_json::to_string(&Request::Status).unwrap();
        assert_eq!(line, r#"{"request":"status"}"#);
        let r: Response =
            serde_json::from_str(r#"{"response":"progress","stage":"dialing"}"#).unwrap();
        assert!(matches!(r, Response::Progress { stage } if stage == "dialing"));
        assert!(serde_json::from_str::<Request>(r#"{"request":"format-disk"}"#).is_err());
    }

    #[test]
    fn requests_carry_the_version() {
        let line = serde_json::to_string(&Envelope::new(Request::Status)).unwrap();
        assert_eq!(line, r#"{"version":2,"request":"status"}"#);
        let leave: Envelope<Request> =
            serde_json::from_str(r#"{"version":2,"request":"leave","name":"orders"}"#).unwrap();
        assert!(matches!(leave.body, Request::Leave { name } if name == "orders"));
        let old: Envelope<Request> = serde_json::from_str(r#"{"request":"status"}"#).unwrap();
        assert_eq!(old.version, 0);
    }
}
