//! The QUIC tunnel shared by the daemon and the agent.
//!
//! One QUIC connection per session runs from the daemon (client) to the traffic manager
//! (server). This crate owns everything below the tether protocol on that connection:
//!
//! * who may connect: the manager's CA, its server certificate, the agents' credentials and the
//!   people's short-lived session certificates it signs ([`Identity`], [`ClientCredential`],
//!   [`SessionRequest`]), checked both ways with mutual TLS (chain to the CA, not expired). The
//!   server learns the peer's [`Role`], name and groups from its verified certificate
//!   ([`peer_identity`]);
//! * how the connection is tuned ([`transport_config`]): a LAN tunnel that carries bulk
//!   transfers, thousands of flows and QUIC datagrams, and notices a dead peer within seconds;
//! * how its packets travel: straight over UDP, or through a *carrier* that relays them as
//!   `[u16 BE length][packet]` frames over a byte stream such as a Kubernetes port-forward
//!   ([`StreamCarrier`] on the daemon's side, [`serve_relay`] on the manager's).
//!
//! # Layout
//! * `identity`: rcgen CA, server certificate, client credentials and their Secret form, and
//!   reading a [`Peer`] back from a certificate.
//! * `endpoint`: rustls + quinn configuration for both sides, transport tuning, [`peer_identity`].
//! * `framed`: reading and writing tether frames on QUIC streams.
//! * `control`: the I/O half of a control stream, driving `tether_proto`'s sans-IO session.
//! * `carrier`: the stream carrier and the manager's relay; `carrier/frame.rs` is the
//!   length-prefixed packet framing, `carrier/pump.rs` the two copy loops both sides share.
//! * `relay`: a byte stream relayed over a QUIC stream both ways, with quinn's chunks instead
//!   of buffers of its own.
//! * `backoff`: the one exponential backoff of the reconnecting loops.
//! * [`install_crypto_provider`]: the one place the process's rustls provider is chosen.
#![forbid(unsafe_code)]

pub mod backoff;
mod carrier;
pub mod congestion;
pub mod control;
mod endpoint;
pub mod framed;
mod identity;
pub mod relay;

pub use carrier::{serve_relay, serve_relay_with, CarrierError, RelayLimits, StreamCarrier};
pub use endpoint::{
    client_config, client_endpoint, peer_identity, server, server_config, transport_config,
    Congestion, EndpointError, ALPN,
};
pub use identity::{
    certificate_expiry, ClientCredential, Identity, IdentityError, Peer, Role, SessionRequest,
    GROUPS_OID, SERVER_NAME,
};

// Re-exported so that users name the same quinn as this crate without a dependency of their own.
pub use quinn;

/// The rustls crypto provider this crate builds its configurations with.
///
/// Also installs it as the process default the first time it is called: rustls panics when it
/// has to pick a default and finds several providers compiled in (kube's rustls may bring in
/// another), so the process default is pinned before anyone asks for it.
pub(crate) fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<std::sync::Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let provider = rustls::crypto::ring::default_provider();
            // An error only says that some provider is installed already; that one stays the
            // default and ours is still used for every configuration built here.
            let _ = provider.clone().install_default();
            std::sync::Arc::new(provider)
        })
        .clone()
}

/// Pins ring as the process's rustls provider: the one place tether does (the Kubernetes
/// client's TLS and QUIC's both use it). Call it first thing in `main`; calling it again is free.
pub fn install_crypto_provider() {
    crypto_provider();
}

/// Socket buffer size asked for in each direction. Bulk QUIC traffic comes in bursts of
/// dozens of packets; with the default buffer (about 200 KiB) they overflow it (BBR lost most
/// of its packets that way in the throughput test). The kernel caps the size at
/// `net.core.{r,w}mem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

/// A non-blocking UDP socket bound to `bind` with large buffers; an IPv6 socket also takes
/// IPv4 where the OS allows it.
pub(crate) fn udp_socket(bind: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if bind.is_ipv6() {
        if let Err(e) = socket.set_only_v6(false) {
            tracing::debug!(error = %e, "IPv6 socket stays IPv6-only");
        }
    }
    // Best effort: a smaller buffer only costs throughput.
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "Could not enlarge UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "Could not enlarge UDP send buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&bind.into())?;
    Ok(socket.into())
}
