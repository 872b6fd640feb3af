//! The messages carried in frames: plain data, postcard-encoded.
//!
//! Each [`Message`] variant wraps a struct of the same name, and each has a frame *kind* (a `u16`)
//! fixed forever by the `messages!` table below. To add a message: define its struct, add one line
//! to that table with the next free kind, and one row to the kind table in the crate doc.

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::files::{FileReply, FileRequest, OpenFiles, OpenFilesResult};
use crate::stats::{MirrorCounts, RouteCounts};

/// Which end of a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A workstation daemon.
    Client,
    /// A sidecar agent in the cluster.
    Agent,
}

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// A TCP connection: the flow's stream carries its bytes.
    Tcp,
    /// UDP datagrams: they ride QUIC datagrams, or [`UdpPacket`] frames when too big.
    Udp,
}

/// Why something failed. Append-only: on the wire it is a number, and a number this build does
/// not know decodes as [`ErrorCode::Other`], so a newer peer's code never breaks an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
pub enum ErrorCode {
    /// Anything not listed below.
    Other = 0,
    /// The destination actively refused the connection.
    ConnectionRefused = 1,
    /// No route to the destination host.
    HostUnreachable = 2,
    /// The destination did not answer in time.
    TimedOut = 3,
    /// Policy forbids this operation.
    NotPermitted = 4,
}

impl From<u16> for ErrorCode {
    fn from(code: u16) -> Self {
        match code {
            1 => Self::ConnectionRefused,
            2 => Self::HostUnreachable,
            3 => Self::TimedOut,
            4 => Self::NotPermitted,
            _ => Self::Other,
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> Self {
        code as u16
    }
}

/// First frame from the client on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
    pub version: u16,
    /// Who is connecting, as `user@host`.
    pub client: String,
    /// The Kubernetes namespace the session works in.
    pub namespace: String,
    /// What kind of peer this is.
    pub role: Role,
}

/// The manager's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The manager's [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
    pub version: u16,
    /// Names this session in logs on both sides.
    pub session_id: String,
    /// The cluster's DNS domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// The address ranges to route into the cluster.
    pub subnets: Subnets,
}

/// The cluster's address ranges; sent in [`Welcome`] and again whenever they change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnets {
    /// Service (ClusterIP) ranges.
    pub service: Vec<IpNet>,
    /// Pod ranges.
    pub pod: Vec<IpNet>,
}

/// The cluster's namespaces; sent after [`Welcome`] and again whenever one comes or goes. The
/// workstation routes names whose last label is one of them (`svc.ns`) to the cluster. A client
/// that never gets one (an older manager) routes only the cluster domain and single labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    /// The namespace names, sorted.
    pub names: Vec<String>,
}

/// Which tether the manager is; sent right after [`Welcome`] (which cannot grow a field: its
/// encoding is fixed). A client that never gets one talks to a manager older than this message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerInfo {
    /// The manager's tether version (`0.1.0`).
    pub version: String,
}

/// A DNS query to resolve in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsQuery {
    /// Matches the [`DnsAnswer`]; chosen by the sender, unique among its pending queries.
    pub id: u32,
    /// The raw DNS message.
    #[serde(with = "serde_bytes")]
    pub packet: Vec<u8>,
}

/// The answer to the [`DnsQuery`] with the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAnswer {
    /// The query's id.
    pub id: u32,
    /// The raw DNS message.
    #[serde(with = "serde_bytes")]
    pub packet: Vec<u8>,
}

/// Keep-alive request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed in the [`Pong`].
    pub seq: u64,
}

/// Keep-alive answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The [`Ping`]'s sequence number.
    pub seq: u64,
}

/// First frame on a flow's stream: dial `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    /// The flow's id, chosen by the client; QUIC datagrams of a UDP flow carry it.
    pub flow: u64,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Where to connect, inside the cluster.
    pub dst: SocketAddr,
}

/// The answer to [`Open`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenResult {
    /// The flow's id.
    pub flow: u64,
    /// `Ok` once the destination is connected (TCP) or bound (UDP).
    pub result: Result<(), OpenError>,
}

/// Why an [`Open`] failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenError {
    /// The kind of failure.
    pub code: ErrorCode,
    /// A human-readable detail.
    pub message: String,
}

/// A UDP datagram too big for a QUIC datagram, sent on its flow's stream instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpPacket {
    /// The flow's id.
    pub flow: u64,
    /// The datagram's payload.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// A failure that concerns the whole stream it is sent on, e.g. a version mismatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    /// The kind of failure.
    pub code: ErrorCode,
    /// A human-readable detail.
    pub message: String,
}

/// The sender is closing the session on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bye;

/// An intercept's HTTP filter as the user typed it; the manager and the agent compile it (an
/// empty filter takes all traffic: a *global* intercept).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptFilter {
    /// Header constraints, each `NAME=VALUE`.
    pub headers: Vec<String>,
    /// A path prefix, starting with `/`.
    pub path_prefix: Option<String>,
}

/// What an intercept does with the requests its filter matches. Append-only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterceptMode {
    /// The requests go to the developer's machine instead of the app, which answers the caller.
    #[default]
    Take,
    /// The requests still go where they would have gone (the app, or another developer's
    /// intercept), which answers the caller; a copy of each goes to the developer's machine,
    /// whose answer is discarded. Copies are best effort: queued up to a bound per mirror,
    /// dropped (and counted) beyond it, so a slow or absent laptop never holds up callers.
    Mirror,
    /// [`Take`](InterceptMode::Take) of all the requests, with the app container removed from
    /// the workload's pods while it lasts (`--replace`): nothing of the app runs in the cluster.
    /// No other intercept may share the workload.
    Replace,
}

impl InterceptMode {
    /// True for [`InterceptMode::Take`] (what serde leaves out of JSON).
    pub fn is_take(&self) -> bool {
        *self == InterceptMode::Take
    }

    /// `take`, `mirror` or `replace`, as the user sees it.
    pub fn as_str(self) -> &'static str {
        match self {
            InterceptMode::Take => "take",
            InterceptMode::Mirror => "mirror",
            InterceptMode::Replace => "replace",
        }
    }
}

impl std::fmt::Display for InterceptMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One intercept, as the manager knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptInfo {
    /// Assigned by the manager; unique while it runs.
    pub id: u64,
    /// Chosen by the client; unique within its session.
    pub name: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload, as `Kind/name`.
    pub workload: String,
    /// The app's container port whose traffic is intercepted.
    pub port: u16,
    /// The Service port as the user named it (for display).
    pub service_port: String,
    /// Who holds it (`user@host`).
    pub owner: String,
    /// The holder's session.
    pub session_id: String,
    /// The requests it takes (or copies).
    pub filter: InterceptFilter,
    /// Whether it takes the requests or copies them.
    pub mode: InterceptMode,
}

/// Client to manager: start an intercept (answered with an [`InterceptReply`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateIntercept {
    /// Matches the reply.
    pub req: u32,
    /// The intercept's name, unique within the session.
    pub name: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload, as `Kind/name`.
    pub workload: String,
    /// The app's container port.
    pub port: u16,
    /// The Service port as the user named it.
    pub service_port: String,
    /// The requests to take (or copy).
    pub filter: InterceptFilter,
    /// Take the requests, or copy them.
    pub mode: InterceptMode,
}

/// Client to manager: end one of the session's intercepts (answered with an [`InterceptReply`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveIntercept {
    /// Matches the reply.
    pub req: u32,
    /// The intercept's name.
    pub name: String,
}

/// Client to manager: every intercept and agent in a namespace (answered with an
/// [`InterceptReply`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListIntercepts {
    /// Matches the reply.
    pub req: u32,
    /// The namespace.
    pub namespace: String,
}

/// A connected agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The pod's namespace.
    pub namespace: String,
    /// The workload, as `Kind/name`.
    pub workload: String,
    /// The pod the agent runs in.
    pub pod: String,
    /// The app ports it forwards.
    pub ports: Vec<u16>,
}

/// What an [`InterceptReply`] carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptState {
    /// The intercepts created, removed or listed.
    pub intercepts: Vec<InterceptInfo>,
    /// The agents (for a list; else empty).
    pub agents: Vec<AgentInfo>,
}

/// Manager to client: the answer to a [`CreateIntercept`], [`RemoveIntercept`] or
/// [`ListIntercepts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptReply {
    /// The request's `req`.
    pub req: u32,
    /// What was done, or why not.
    pub result: Result<InterceptState, Error>,
}

/// Agent to manager, after [`Hello`]: who it is.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHello {
    /// The workload, as `Kind/name`.
    pub workload: String,
    /// The agent's pod.
    pub pod: String,
    /// The app ports it forwards.
    pub ports: Vec<u16>,
    /// A service-account token the kubelet issued for the agent's pod (audience
    /// [`AGENT_TOKEN_AUDIENCE`]): the manager has the API server confirm that it belongs to
    /// `pod` in the namespace of the agent's credential.
    pub token: String,
}

/// The audience of the token in [`AgentHello`].
pub const AGENT_TOKEN_AUDIENCE: &str = "tether";

impl std::fmt::Debug for AgentHello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never in logs.
        f.debug_struct("AgentHello")
            .field("workload", &self.workload)
            .field("pod", &self.pod)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

/// Manager to agent: every intercept of its workload, sent on connect and on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentIntercepts {
    /// The intercepts.
    pub intercepts: Vec<InterceptInfo>,
}

/// First frame of a stream carrying one intercepted connection: agent to manager, then manager
/// to the client holding the intercept. Answered with a [`DialResult`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dial {
    /// The intercept.
    pub intercept: u64,
}

/// The answer to a [`Dial`]: `Ok` once the developer's process accepted the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialResult {
    /// The outcome.
    pub result: Result<(), OpenError>,
}

/// Client to manager: a credential for the traffic agents of one namespace (answered with an
/// [`AgentCredentialReply`]).
///
/// The client proves that it may write Secrets in that namespace: it first stores `nonce` in the
/// Secret `tether-agent-tls` there, under [`AgentCredentialRequest::secret_key`], and the manager
/// reads it back. So a user who may only connect gets no agent credential, and one who may
/// intercept in a namespace gets one that is good for that namespace only. Each request has its
/// own key, so that clients asking at the same time do not overwrite each other's proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCredentialRequest {
    /// Matches the reply.
    pub req: u32,
    /// The namespace the agents run in.
    pub namespace: String,
    /// What the client stored in the namespace's agent Secret.
    pub nonce: String,
}

impl AgentCredentialRequest {
    /// The key of the namespace's agent Secret that holds `nonce` while the request is checked.
    pub fn secret_key(nonce: &str) -> String {
        let id: String = nonce
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(16)
            .collect();
        format!("request-{id}")
    }
}

/// An agent credential: the CA to trust and the agent's certificate and key, PEM-encoded.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCredential {
    /// The manager's CA certificate.
    pub ca_pem: String,
    /// The agent certificate (its name is the namespace).
    pub cert_pem: String,
    /// The certificate's private key.
    pub key_pem: String,
}

impl std::fmt::Debug for AgentCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never in logs.
        f.debug_struct("AgentCredential")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Manager to client: the answer to an [`AgentCredentialRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCredentialReply {
    /// The request's `req`.
    pub req: u32,
    /// The credential, or why not.
    pub result: Result<AgentCredential, Error>,
}

/// One route's counts on one port of an agent, in a [`RouteStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStat {
    /// The app's container port.
    pub port: u16,
    /// The intercept that took these requests; `None` for those that went to the app.
    pub intercept: Option<u64>,
    /// Cumulative since the agent started.
    pub counts: RouteCounts,
    /// For a mirror: its copies sent and dropped, cumulative (its `counts` stay empty: the
    /// requests it copied are counted where they went).
    pub mirrored: MirrorCounts,
}

/// Agent to manager, about once a second while its counts change: what each of its ports routed
/// where, since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStats {
    /// Per port and route.
    pub routes: Vec<RouteStat>,
}

/// An agent that follows an intercept's workload, in an [`InterceptStat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLink {
    /// The agent's pod.
    pub pod: String,
    /// Whether it has reported its counts yet.
    pub reporting: bool,
}

/// How one intercept routes, summed over the workload's agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptStat {
    /// The intercept's id.
    pub id: u64,
    /// Its name in the session.
    pub name: String,
    /// Requests it took to the laptop.
    pub laptop: RouteCounts,
    /// Requests on the same port that went to the app (nobody's, or another intercept's filter
    /// did not match either).
    pub app: RouteCounts,
    /// For a mirror: the copies sent to the laptop and dropped.
    pub mirrored: MirrorCounts,
    /// The agents linked to the manager for its workload now.
    pub agents: Vec<AgentLink>,
}

/// Manager to client, about once a second while they change: how the session's intercepts
/// route. Empty once the session holds none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptStats {
    /// One per intercept the session holds.
    pub intercepts: Vec<InterceptStat>,
}

/// Declares [`Message`] from a table of `kind => Variant`, each variant wrapping the struct of the
/// same name, and derives everything the codec needs from that one table. A kind used twice makes
/// an unreachable match arm, which `clippy -D warnings` rejects.
macro_rules! messages {
    ($($(#[$doc:meta])* $kind:literal => $name:ident,)*) => {
        /// Every message of the protocol.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum Message {
            $($(#[$doc])* $name($name),)*
        }

        impl Message {
            /// The frame kind that carries this message.
            pub fn kind(&self) -> u16 {
                match self {
                    $(Self::$name(_) => $kind,)*
                }
            }

            /// Every frame kind this build knows.
            pub const KINDS: &'static [u16] = &[$($kind),*];

            /// Writes the payload (without frame header).
            pub(crate) fn write_payload<W: std::io::Write>(&self, w: W) -> postcard::Result<W> {
                match self {
                    $(Self::$name(m) => postcard::to_io(m, w),)*
                }
            }

            /// Reads the payload of a frame of kind `kind`; `None` for an unknown kind. The
            /// payload must be consumed exactly: trailing bytes are a malformed payload.
            pub(crate) fn read_payload(
                kind: u16,
                payload: &[u8],
            ) -> Option<Result<Self, PayloadError>> {
                Some(match kind {
                    $($kind => read_exact(payload).map(Self::$name),)*
                    _ => return None,
                })
            }
        }

        $(
            impl From<$name> for Message {
                fn from(m: $name) -> Self {
                    Self::$name(m)
                }
            }
        )*
    };
}

messages! {
    /// Handshake, client to manager.
    1 => Hello,
    /// Handshake, manager to client.
    2 => Welcome,
    /// Cluster address ranges changed.
    3 => Subnets,
    /// DNS query, client to manager.
    4 => DnsQuery,
    /// DNS answer, manager to client.
    5 => DnsAnswer,
    /// Keep-alive request.
    6 => Ping,
    /// Keep-alive answer.
    7 => Pong,
    /// Open a flow.
    8 => Open,
    /// Outcome of opening a flow.
    9 => OpenResult,
    /// Oversized UDP datagram on a flow's stream.
    10 => UdpPacket,
    /// Stream-level failure.
    11 => Error,
    /// Orderly shutdown.
    12 => Bye,
    /// Start an intercept.
    13 => CreateIntercept,
    /// End an intercept.
    14 => RemoveIntercept,
    /// List intercepts and agents.
    15 => ListIntercepts,
    /// Answer to an intercept request.
    16 => InterceptReply,
    /// Agent handshake.
    17 => AgentHello,
    /// An agent's intercept table.
    18 => AgentIntercepts,
    /// An intercepted connection.
    19 => Dial,
    /// Outcome of a dial.
    20 => DialResult,
    /// Ask for an agent credential.
    21 => AgentCredentialRequest,
    /// Answer to an agent credential request.
    22 => AgentCredentialReply,
    /// The cluster's namespaces changed.
    23 => Namespaces,
    /// Which tether the manager is.
    24 => ManagerInfo,
    /// An agent's route counts.
    25 => RouteStats,
    /// How the session's intercepts route.
    26 => InterceptStats,
    /// Open a stream to an intercepted pod's files.
    27 => OpenFiles,
    /// Answer to `OpenFiles`.
    28 => OpenFilesResult,
    /// A file operation.
    29 => FileRequest,
    /// Answer to a file operation.
    30 => FileReply,
}

/// Why a payload did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The payload is not a valid postcard encoding of the message.
    #[error("invalid encoding")]
    Invalid(#[source] postcard::Error),
    /// The message ended before the payload did.
    #[error("{0} unexpected bytes after the message")]
    Trailing(usize),
}

fn read_exact<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, PayloadError> {
    let (value, rest) = postcard::take_from_bytes(payload).map_err(PayloadError::Invalid)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(PayloadError::Trailing(rest.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::AgentCredentialRequest;

    #[test]
    fn each_request_has_its_own_secret_key() {
        let key = AgentCredentialRequest::secret_key;
        assert_eq!(key("0123456789abcdef0123"), "request-0123456789abcdef");
        assert_ne!(key("0123456789abcdef"), key("fedcba9876543210"));
        // Whatever a client sends, the key stays a valid Secret data key.
        assert_eq!(key("../x y\n"), "request-xy");
    }
}
