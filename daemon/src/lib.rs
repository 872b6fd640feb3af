//! The workstation side of tether.
//!
//! # Layout
//! - `privileged`: the root helper and the few validated things it does: the TUN device and its
//!   routes (`privileged::tun`, Linux), the resolver configuration, the route conflict check,
//!   root's files; and the channel to it.
//! - `netstack`: the userspace TCP/IP stack that terminates the connections routed into the TUN.
//! - `cluster`: Kubernetes API calls (namespace, the manager's CA and pod, port-forward).
//! - `credential`: the per-user session certificate, asked for with a CertificateSigningRequest.
//! - `connect`: the carrier choice and dialing the manager.
//! - `session`: one QUIC session with the manager (control stream, TCP and UDP flows).
//! - `traffic`: the glue between the stack and the session.
//! - `dns`: the DNS server: where names go (sans-IO), the answer cache, and replies built per
//!   query with `tether-dns`.
//! - `files`: the client of an intercepted pod's files (the file protocol, pipelined by id).
//! - `intercept`: starting, ending, listing and re-creating intercepts (workload changes are
//!   `tether-kube`'s).
//! - `plan`: which ranges to route, which resolvers stay upstream, the search list (sans-IO).
//! - `daemon`: the whole lifecycle: connect, configure, reconnect, restore.
//! - `control` / `server`: the CLI's protocol (its types) and the unix socket that serves it.

pub mod cluster;
pub mod connect;
pub mod control;
pub mod credential;
pub mod daemon;
pub mod dns;
pub mod files;
pub mod flow_table;
pub mod intercept;
pub mod netstack;
pub mod plan;
pub mod port_forward;
pub mod privileged;
pub mod process;
pub mod server;
pub mod session;
pub mod traffic;

pub use tether_proto::PROTOCOL_VERSION;

/// The TUN device's MTU. The stack terminates TCP locally, so a large MTU only means fewer,
/// larger packets between the kernel and us.
pub const TUN_MTU: u16 = 65000;
