//! Carriers: QUIC packets relayed over a byte stream, such as a Kubernetes port-forward.
//!
//! ```text
//! quinn (daemon) ⇄ UDP ⇄ StreamCarrier ⇄ [u16 len][packet]… ⇄ serve_relay ⇄ UDP ⇄ quinn (manager)
//! ```
//!
//! Each side turns packets from a loopback UDP socket into frames on the stream and frames from
//! the stream into packets, so neither quinn endpoint knows it is not talking UDP directly.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info_span, warn, Instrument};

mod frame;
mod pump;

/// Limits of the manager's end of the relay. The relay port carries QUIC, which authenticates
/// only once packets flow, so whoever reaches the port can open relays: these bound what that
/// costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Relays served at once; a connection beyond it is closed as soon as it is accepted.
    pub max_connections: usize,
    /// How long a relay may carry no frame from its stream. A live tunnel sends a keep-alive
    /// every second, so a relay this quiet is dead or was never a tunnel. Until its first
    /// frame a connection holds no buffers and no UDP socket.
    pub idle: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_connections: 256,
            idle: Duration::from_secs(15),
        }
    }
}

/// Why a relay ended other than by its stream closing cleanly.
#[derive(Debug, thiserror::Error)]
pub enum CarrierError {
    /// Reading or writing the stream or the UDP socket failed (or the stream ended mid-frame).
    #[error("relay I/O failed")]
    Io(#[from] io::Error),
    /// The stream carried a frame of length zero, which no packet has.
    #[error("received a zero-length frame")]
    EmptyFrame,
}

/// The daemon's end of the stream carrier.
#[derive(Debug)]
pub struct StreamCarrier;

impl StreamCarrier {
    /// Relays QUIC packets over `io`, such as a port-forward to the manager's relay port.
    ///
    /// Binds a UDP socket on loopback and returns its address: connect quinn to that address
    /// instead of the manager's. Every packet quinn sends there is written to `io` as a frame,
    /// and every frame read from `io` is sent back to quinn's socket (the source of the first
    /// packet; packets from other sources are dropped). The returned task ends when `io`
    /// ends (`Ok`), breaks or carries a malformed frame; aborting it closes the carrier.
    ///
    /// Must be called within a tokio runtime.
    pub fn spawn<S>(io: S) -> io::Result<(SocketAddr, JoinHandle<Result<(), CarrierError>>)>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let udp = UdpSocket::from_std(crate::udp_socket((Ipv4Addr::LOCALHOST, 0).into())?)?;
        let addr = udp.local_addr()?;
        let task = tokio::spawn(
            relay(io, udp, None, None).instrument(info_span!("stream_carrier", udp = %addr)),
        );
        Ok((addr, task))
    }
}

/// The manager's end of the stream carrier: relays every connection accepted on `listener` to
/// the QUIC endpoint at `quic_addr`, each through a fresh loopback UDP socket (so the endpoint
/// sees each carrier as its own peer).
///
/// Runs until dropped; dropping it closes every relay it started. A broken or malformed
/// connection ends only that connection's relay. [`RelayLimits::default`] applies.
pub async fn serve_relay(listener: TcpListener, quic_addr: SocketAddr) {
    serve_relay_with(listener, quic_addr, RelayLimits::default()).await
}

/// [`serve_relay`] with the given limits.
pub async fn serve_relay_with(listener: TcpListener, quic_addr: SocketAddr, limits: RelayLimits) {
    let quic_addr = local_target(quic_addr);
    let mut relays = JoinSet::new();
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors or a connection reset before accept:
                    // both pass, so back off instead of spinning.
                    warn!(error = %e, "Relay accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            // Reap finished relays so the set does not grow with every connection.
            Some(_) = relays.join_next() => continue,
        };
        while relays.try_join_next().is_some() {}
        if relays.len() >= limits.max_connections {
            warn!(%client, limit = limits.max_connections, "Relay refused: too many relays");
            drop(stream);
            continue;
        }
        relays.spawn(
            relay_connection(stream, quic_addr, limits.idle)
                .instrument(info_span!("relay", %client)),
        );
    }
}

async fn relay_connection(stream: TcpStream, quic_addr: SocketAddr, idle: Duration) {
    // Nothing is allocated for a connection that never sends.
    if tokio::time::timeout(idle, stream.readable()).await.is_err() {
        debug!("Relay closed: nothing received");
        return;
    }
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "Could not disable Nagle");
    }
    let bind = SocketAddr::new(
        if quic_addr.ip().is_loopback() {
            quic_addr.ip()
        } else if quic_addr.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        },
        0,
    );
    let udp = match crate::udp_socket(bind).and_then(UdpSocket::from_std) {
        Ok(udp) => udp,
        Err(e) => {
            warn!(error = %e, "Relay could not bind a UDP socket");
            return;
        }
    };
    debug!("Relay opened");
    match relay(stream, udp, Some(quic_addr), Some(idle)).await {
        Ok(()) => debug!("Relay closed"),
        Err(e) => debug!(error = %e, "Relay failed"),
    }
}

/// An endpoint bound to all addresses is reached through loopback.
fn local_target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Runs both pumps between `io` and `udp` until either ends; `peer` is the UDP peer if known.
/// With `idle`, the relay also ends once no frame has come from `io` for that long.
async fn relay<S>(
    io: S,
    udp: UdpSocket,
    peer: Option<SocketAddr>,
    idle: Option<Duration>,
) -> Result<(), CarrierError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let udp = std::sync::Arc::new(udp);
    let (reader, writer) = tokio::io::split(io);
    let (peer_tx, peer_rx) = watch::channel(peer);
    // Two tasks rather than one select!, so both directions can run on different cores.
    // Dropping the set (on return, or when this task is aborted) aborts whichever is left.
    let mut pumps = JoinSet::new();
    let frames = std::sync::Arc::new(AtomicU64::new(0));
    if let Some(idle) = idle {
        let frames = frames.clone();
        pumps.spawn(async move { watchdog(&frames, idle).await });
    }
    let up_udp = udp.clone();
    pumps.spawn(
        async move { pump::udp_to_stream(&up_udp, &peer_tx, writer).await }
            .instrument(tracing::Span::current()),
    );
    pumps.spawn(
        async move { pump::stream_to_udp(reader, &udp, peer_rx, &frames).await }
            .instrument(tracing::Span::current()),
    );
    match pumps.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: only by this function's JoinSet, which is not dropped yet.
        Some(Err(_)) | None => Ok(()),
    }
}

/// Ends (with [`io::ErrorKind::TimedOut`]) once `frames` has not moved for `idle`. One counter
/// bump per batch on the hot path instead of a timer per frame.
async fn watchdog(frames: &AtomicU64, idle: Duration) -> Result<(), CarrierError> {
    let mut seen = frames.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(idle).await;
        let now = frames.load(Ordering::Relaxed);
        if now == seen {
            debug!(?idle, "Relay idle");
            return Err(io::Error::new(io::ErrorKind::TimedOut, "relay idle").into());
        }
        seen = now;
    }
}
