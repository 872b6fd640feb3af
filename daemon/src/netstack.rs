//! A userspace TCP/IP stack over the TUN device.
//!
//! Every packet the kernel routes into the TUN device ends here. TCP connections to *any*
//! address are terminated locally and handed to the caller as byte streams, so the caller can
//! carry them over the tunnel; UDP datagrams are handed over with their addresses; everything
//! else (ICMP, fragments, ...) is dropped, and malformed packets are dropped and counted.
//!
//! ```text
//!  TUN fd ──read──▶ driver ──▶ Core (sans-IO: classify, smoltcp) ──▶ TcpRequest / UdpDatagram
//!         ◀─write── driver ◀── Core ◀── TcpStream reads/writes (shared under a mutex)
//!         ◀─write── UdpSender (replies go straight to the device)
//! ```
//!
//! TCP is smoltcp's, with one socket per accepted flow listening on exactly the dialled
//! address. Connection requests are answered by the caller ([`TcpRequest::accept`] /
//! [`TcpRequest::refuse`]), so a failed upstream dial becomes "connection refused" locally.
//!
//! # Layout
//! - `packet`: sans-IO classification of raw packets, and UDP packet building.
//! - `core`: sans-IO smoltcp interface, sockets and flow table.
//! - `phy`: the smoltcp device over the core's packet queues.
//! - `driver`: the task that moves packets between the TUN device and the core.
//! - `tcp`, `udp`: the public handles.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use thiserror::Error;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tun_rs::AsyncDevice;

mod core;
mod driver;
mod packet;
mod phy;
mod tcp;
mod udp;

pub use self::core::Counters;
use self::core::{Core, CoreConfig};
pub use self::packet::BuildError;
pub use self::tcp::{Aborter, TcpListener, TcpRequest, TcpStream};
pub use self::udp::{UdpDatagram, UdpSender, UdpSocket};

/// Errors from the stack and its handles.
#[derive(Debug, Error)]
pub enum NetStackError {
    /// Reading from or writing to the TUN device failed; the stack stops.
    #[error("TUN device I/O failed")]
    Device(#[source] std::io::Error),
    /// The request was answered already, or the stack stopped, or smoltcp would not take the
    /// SYN (destination port 0).
    #[error("connection request to {0} is no longer pending")]
    RequestGone(SocketAddr),
    /// A UDP reply could not be built.
    #[error("cannot send UDP datagram")]
    Udp(#[from] BuildError),
    /// The driver task panicked or was cancelled.
    #[error("the stack's task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
}

/// Sizes and limits of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetStackConfig {
    /// The device's MTU. Must match the TUN device.
    pub mtu: u16,
    /// Receive buffer (window) per TCP connection. Memory is only touched as it fills.
    pub tcp_rx_buffer: usize,
    /// Send buffer per TCP connection.
    pub tcp_tx_buffer: usize,
    /// Most connection requests waiting for an answer; further SYNs are refused.
    pub max_pending: usize,
    /// UDP datagrams queued for the caller before new ones are dropped.
    pub udp_queue: usize,
}

impl NetStackConfig {
    /// Defaults for a device of the given MTU.
    pub fn new(mtu: u16) -> Self {
        NetStackConfig {
            mtu,
            tcp_rx_buffer: 1 << 20,
            tcp_tx_buffer: 1 << 20,
            max_pending: 1024,
            // As many as the TUN queues: a burst the kernel held for the stack is not dropped
            // here instead (1,024 lost half of 2,000 datagrams sent at once).
            udp_queue: crate::privileged::tun::TX_QUEUE_LEN as usize,
        }
    }
}

/// A snapshot of the stack's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Packet counters.
    pub counters: Counters,
    /// TCP connections alive (including closing ones).
    pub tcp_sockets: usize,
}

/// State shared by the driver and the handles.
pub(crate) struct Shared {
    core: Mutex<Core>,
    start: std::time::Instant,
    poll_needed: Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// Locks the core. A panic while holding the lock leaves smoltcp's state as it was at the
    /// panic, which is no worse than any other state, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stack's clock.
    pub(crate) fn now(&self) -> smoltcp::time::Instant {
        let micros = i64::try_from(self.start.elapsed().as_micros()).unwrap_or(i64::MAX);
        smoltcp::time::Instant::from_micros(micros)
    }

    /// Asks the driver to poll the core soon (something was queued or a window opened).
    pub(crate) fn kick(&self) {
        self.poll_needed.notify_one();
    }
}

/// The running stack. Dropping it stops the driver and resets every open connection.
#[derive(Debug)]
pub struct NetStack {
    shared: Arc<Shared>,
    driver: JoinHandle<Result<(), NetStackError>>,
}

impl NetStack {
    /// Starts the stack on `device` (in the current tokio runtime). The driver runs until the
    /// device fails, the `NetStack` is dropped, or both the listener and the UDP socket are
    /// dropped.
    pub fn spawn(
        device: AsyncDevice,
        config: NetStackConfig,
    ) -> (NetStack, TcpListener, UdpSocket) {
        let mtu = usize::from(config.mtu);
        let core_config = CoreConfig {
            mtu,
            tcp_rx_buffer: config.tcp_rx_buffer,
            tcp_tx_buffer: config.tcp_tx_buffer,
            max_pending: config.max_pending,
        };
        let start = std::time::Instant::now();
        let shared = Arc::new(Shared {
            core: Mutex::new(Core::new(
                core_config,
                random_seed(),
                smoltcp::time::Instant::ZERO,
            )),
            start,
            poll_needed: Notify::new(),
        });
        let device = Arc::new(device);
        let (requests_tx, requests_rx) = mpsc::channel(config.max_pending.max(1));
        let (datagrams_tx, datagrams_rx) = mpsc::channel(config.udp_queue.max(1));
        let driver = tokio::spawn(driver::run(
            device.clone(),
            shared.clone(),
            requests_tx,
            datagrams_tx,
            mtu,
        ));
        let udp = UdpSocket {
            datagrams_rx,
            sender: UdpSender { device, mtu },
        };
        (
            NetStack { shared, driver },
            TcpListener { requests_rx },
            udp,
        )
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let core = self.shared.lock();
        Stats {
            counters: core.counters,
            tcp_sockets: core.socket_count(),
        }
    }

    /// Waits until the driver stops, and says why.
    pub async fn stopped(&mut self) -> Result<(), NetStackError> {
        (&mut self.driver).await.map_err(NetStackError::Task)?
    }
}

impl Drop for NetStack {
    fn drop(&mut self) {
        self.driver.abort();
        self.shared.lock().abort_all();
    }
}

/// A seed for initial sequence numbers, from the standard library's per-process random keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
