//! The workstation side of tether.
//!
//! # Layout
//! - `tun` (Linux): the TUN device and the routes into it; the privileged part.
//! - `netstack`: the userspace TCP/IP stack that terminates the connections routed into the TUN.
//! - `privileged`: the few validated things that need root besides the TUN device: the resolver
//!   configuration and the route conflict check.
//! - `cluster`: Kubernetes API calls (namespace, the manager's CA and pod, port-forward).
//! - `credential`: the per-user session certificate, asked for with a CertificateSigningRequest.
//! - `connect`: the carrier choice and dialing the manager.
//! - `session`: one QUIC session with the manager (control stream, TCP and UDP flows).
//! - `traffic`: the glue between the stack and the session.
//! - `dns`: the DNS server: where names go (sans-IO), the answer cache, and replies built per
//!   query with `tether-dns`.
//! - `daemon`: the whole lifecycle: connect, configure, reconnect, restore.
//! - `control` / `server`: the CLI's protocol and the unix socket that serves it.

pub mod cluster;
pub mod connect;
pub mod control;
pub mod credential;
pub mod daemon;
pub mod dns;
pub mod intercept;
pub mod netstack;
pub mod privileged;
pub mod server;
pub mod session;
pub mod traffic;
#[cfg(target_os = "linux")]
pub mod tun;

pub use tether_proto::PROTOCOL_VERSION;

/// The TUN device's MTU. The stack terminates TCP locally, so a large MTU only means fewer,
/// larger packets between the kernel and us.
pub const TUN_MTU: u16 = 65000;
