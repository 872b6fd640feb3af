//! How a [`Session`](super::Session) keeps time and what it bounds.

use std::time::Duration;

/// Timers and bounds of a [`Session`](super::Session).
///
/// [`client`](Self::client) and [`server`](Self::server) are what tether uses: the connecting
/// side (daemon, sidecar agent) pings every 5 s, the manager only answers, and either side gives
/// up after three ping intervals without a byte from the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// How often to send a [`Ping`](crate::Ping) once the session is established; `None` sends
    /// none (the peer's pings still get their [`Pong`](crate::Pong)).
    pub ping_interval: Option<Duration>,
    /// Close with [`SessionError::IdleTimedOut`](super::SessionError::IdleTimedOut) when nothing
    /// arrives for this long once the session is established; `None` waits for ever (the QUIC
    /// connection's own idle timeout still applies). Keep it a few times the peer's ping interval.
    pub idle_timeout: Option<Duration>,
    /// How long the client waits for `Welcome` (or `Error`) and the server for `Hello`. The
    /// server's application takes its own time between `Hello` and
    /// [`accept`](super::Session::accept): that wait is not bounded here.
    pub handshake_timeout: Duration,
    /// How long a [`DnsQuery`](crate::DnsQuery) waits for its answer.
    pub dns_timeout: Duration,
    /// How long every other request waits for its reply.
    pub request_timeout: Duration,
    /// Pongs queued and not yet taken by [`poll_transmit`](super::Session::poll_transmit); a
    /// `Ping` beyond them goes unanswered, so a peer that pings faster than it reads costs a
    /// bounded amount of memory.
    pub max_queued_pongs: usize,
}

/// The ping interval of tether's clients (daemon and sidecar agent) since the first release.
const PING_INTERVAL: Duration = Duration::from_secs(5);

impl SessionConfig {
    /// The connecting side: pings every 5 s; DNS queries wait 4 s, other requests 10 s (the
    /// daemon's timeouts).
    pub fn client() -> Self {
        Self {
            ping_interval: Some(PING_INTERVAL),
            ..Self::server()
        }
    }

    /// The accepting side (the manager): sends no pings, answers the client's.
    pub fn server() -> Self {
        Self {
            ping_interval: None,
            idle_timeout: Some(3 * PING_INTERVAL),
            handshake_timeout: Duration::from_secs(30),
            dns_timeout: Duration::from_secs(4),
            request_timeout: Duration::from_secs(10),
            max_queued_pongs: 8,
        }
    }
}
