//! rustls and quinn configuration for both ends of the tunnel.
//!
//! The server requires a client certificate chained to its CA; the client trusts only that CA
//! and expects the name [`SERVER_NAME`](crate::SERVER_NAME). Certificates carry extended key usages, so a client
//! credential cannot serve and the server certificate cannot act as a client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::congestion::{BbrConfig, CubicConfig};
use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::identity::{ClientCredential, Identity, Peer};

/// ALPN protocol id of the tunnel; bumped when the tunnel's use of QUIC changes incompatibly.
pub const ALPN: &[u8] = b"tether/1";

/// Keep-alive interval: also how often a quiet path is probed.
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// A peer silent for this long is dead; short, so the daemon reconnects within seconds.
const IDLE_TIMEOUT: VarInt = VarInt::from_u32(5_000);
/// Bytes in flight per stream before the sender blocks; several LAN bandwidth-delay products.
const STREAM_WINDOW: u32 = 8 << 20;
/// Bytes in flight across the connection.
const CONNECTION_WINDOW: u32 = 16 << 20;
/// Concurrent flows (one bidirectional stream each) per session.
const MAX_STREAMS: u32 = 4096;
/// Buffered incoming datagrams (UDP flows) before the oldest are dropped.
const DATAGRAM_BUFFER: usize = 4 << 20;
/// First guess at the round-trip time, before any sample: a LAN, not the internet.
const INITIAL_RTT: Duration = Duration::from_millis(100);
/// Errors from building a configuration or binding an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// A PEM certificate or key could not be parsed.
    #[error("invalid PEM in credential")]
    Pem(#[source] rustls_pki_types::pem::Error),
    /// A certificate or key was rejected by rustls.
    #[error("TLS configuration rejected")]
    Tls(#[source] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("building the client certificate verifier failed")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// The crypto provider offers no cipher suite QUIC can use for initial packets.
    #[error("no QUIC initial cipher suite")]
    CipherSuite(#[source] NoInitialCipherSuite),
    /// The UDP socket could not be bound.
    #[error("binding UDP socket {addr} failed")]
    Bind {
        /// Address that was asked for.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Congestion controller of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Congestion {
    /// quinn's CUBIC, told of congestion only when the path shows it (see
    /// [`congestion`](crate::congestion)): random loss does not shrink the window.
    #[default]
    Tolerant,
    /// CUBIC (quinn's default): loss-based.
    Cubic,
    /// BBR: model-based, less sensitive to random loss; experimental in quinn.
    Bbr,
}

/// Transport parameters for a LAN tunnel with bulk transfers, many flows and datagrams.
pub fn transport_config(congestion: Congestion) -> TransportConfig {
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW))
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_BUFFER)
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(IdleTimeout::from(IDLE_TIMEOUT)))
        .initial_rtt(INITIAL_RTT);
    // Path MTU discovery keeps quinn's defaults (up to 1452 bytes). Larger packets would save
    // relay work on the stream carrier, but in the loopback throughput test 8 KiB packets were
    // lost in bursts: quinn's black-hole detection fell back to 1200 bytes, and with the MTU
    // pinned at 8 KiB throughput collapsed to a few MB/s.
    match congestion {
        Congestion::Cubic => {
            transport.congestion_controller_factory(Arc::new(CubicConfig::default()))
        }
        Congestion::Bbr => transport.congestion_controller_factory(Arc::new(BbrConfig::default())),
        Congestion::Tolerant => transport
            .congestion_controller_factory(Arc::new(crate::congestion::TolerantConfig::default())),
    };
    transport
}

/// The manager's QUIC server configuration: mutual TLS against `identity`'s CA, ALPN [`ALPN`],
/// transport from [`transport_config`] with the default [`Congestion`].
pub fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, EndpointError> {
    let provider = crate::crypto_provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(identity.ca_der().clone())
        .map_err(EndpointError::Tls)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(EndpointError::Verifier)?;
    let (chain, key) = identity.server_cert();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(EndpointError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(EndpointError::Tls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // 0-RTT data could be replayed; sessions are long-lived, so it would save nothing.
    tls.max_early_data_size = 0;

    let crypto = QuicServerConfig::try_from(tls).map_err(EndpointError::CipherSuite)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(Congestion::default())));
    Ok(config)
}

/// Binds the manager's QUIC endpoint on `bind`. Must be called within a tokio runtime.
pub fn server(bind: SocketAddr, identity: &Identity) -> Result<quinn::Endpoint, EndpointError> {
    let config = server_config(identity)?;
    bind_endpoint(bind, Some(config)).map_err(|source| EndpointError::Bind { addr: bind, source })
}

/// The daemon's (or an agent's) client configuration: trusts only the credential's CA,
/// presents its certificate, and expects the server to be [`SERVER_NAME`](crate::SERVER_NAME)
/// (pass that name to [`quinn::Endpoint::connect`]).
pub fn client_config(credential: &ClientCredential) -> Result<quinn::ClientConfig, EndpointError> {
    let provider = crate::crypto_provider();
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(credential.ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(EndpointError::Pem)?)
            .map_err(EndpointError::Tls)?;
    }
    let chain = CertificateDer::pem_slice_iter(credential.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(EndpointError::Pem)?;
    let key =
        PrivateKeyDer::from_pem_slice(credential.key_pem.as_bytes()).map_err(EndpointError::Pem)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(EndpointError::Tls)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(EndpointError::Tls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];

    let crypto = QuicClientConfig::try_from(tls).map_err(EndpointError::CipherSuite)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(Congestion::default())));
    Ok(config)
}

/// Binds a client endpoint on `bind` (usually `0.0.0.0:0` or `127.0.0.1:0`) whose default
/// client configuration is [`client_config`]. Must be called within a tokio runtime.
pub fn client_endpoint(
    bind: SocketAddr,
    credential: &ClientCredential,
) -> Result<quinn::Endpoint, EndpointError> {
    let config = client_config(credential)?;
    let mut endpoint =
        bind_endpoint(bind, None).map_err(|source| EndpointError::Bind { addr: bind, source })?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Like quinn's `Endpoint::server`/`client`, but with the socket from [`crate::udp_socket`].
fn bind_endpoint(
    bind: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let socket = crate::udp_socket(bind)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("not within a tokio runtime"))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)
}

/// Who the peer of a server-side connection is, read from the client certificate that the
/// handshake verified. `None` before the handshake completes or for a certificate that names
/// no role (which the CA never issues).
pub fn peer_identity(connection: &quinn::Connection) -> Option<Peer> {
    let chain = connection
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    Peer::from_certificate(chain.first()?)
}
