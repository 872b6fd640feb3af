//! The sans-IO core of the stack: a smoltcp interface, its TCP sockets and the flow table.
//!
//! Packets go in with [`Core::ingest`], outgoing packets come out of [`Core::take_tx`], and time is
//! always passed in. No tokio, no device: the driver in `netstack.rs` is the glue.
//!
//! A SYN for a new flow does not reach smoltcp at once. It is parked in `pending` and reported as
//! [`Ingress::TcpRequest`]; the owner then calls [`Core::accept`], which creates a socket listening
//! on exactly that destination and replays the SYN into it, or [`Core::refuse`], which replays it
//! with no socket there, so smoltcp answers with a RST. This lets the caller dial upstream first
//! and refuse the connection the way a real server would.

use std::collections::HashMap;
use std::net::SocketAddr;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{Socket, SocketBuffer, State};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};

use super::packet::{classify, Classified};
use super::phy::{Phy, TxQueue};

/// A flow as the client sees it: (client address, destination address).
pub(crate) type FlowKey = (SocketAddr, SocketAddr);

/// How long a socket whose stream was dropped may take to finish closing before it is reset.
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(30);

/// Socket sizes and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CoreConfig {
    /// MTU of the device, in bytes.
    pub mtu: usize,
    /// Receive buffer per TCP socket (the advertised window).
    pub tcp_rx_buffer: usize,
    /// Send buffer per TCP socket.
    pub tcp_tx_buffer: usize,
    /// Most SYNs waiting for accept or refuse; more are refused at once.
    pub max_pending: usize,
}

/// Counters of what the core did with packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets dropped as malformed (bad header, length or checksum).
    pub malformed: u64,
    /// Well-formed packets of a kind we do not carry (ICMP, fragments, ...), dropped.
    pub ignored: u64,
    /// Connection requests reported to the caller.
    pub tcp_requests: u64,
    /// Connection requests answered with a RST (refused).
    pub tcp_refused: u64,
    /// SYNs dropped unanswered because too many requests were pending (the client resends).
    pub tcp_backlog_dropped: u64,
    /// UDP datagrams received.
    pub udp_received: u64,
    /// UDP datagrams dropped because the receiver was not keeping up (counted by the driver).
    pub udp_dropped: u64,
}

/// What an ingested packet means for the owner of the core.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ingress<'a> {
    /// Nothing to do (consumed by smoltcp, or dropped).
    None,
    /// A new TCP connection request; answer with [`Core::accept`] or [`Core::refuse`].
    TcpRequest(FlowKey),
    /// A UDP datagram.
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'a [u8],
    },
}

/// See the module documentation.
pub(crate) struct Core {
    iface: Interface,
    sockets: SocketSet<'static>,
    tx: TxQueue,
    config: CoreConfig,
    /// Accepted flows. A socket leaves this map when it is reaped or replaced by a new SYN.
    flows: HashMap<FlowKey, SocketHandle>,
    /// SYNs waiting for the owner's decision.
    pending: HashMap<FlowKey, Vec<u8>>,
    /// Sockets whose stream was dropped, with the time they are reset if still open.
    orphans: Vec<(SocketHandle, FlowKey, Instant)>,
    pub(crate) counters: Counters,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("flows", &self.flows.len())
            .field("pending", &self.pending.len())
            .field("orphans", &self.orphans.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl Core {
    /// A core with no flows. `seed` randomises initial sequence numbers.
    pub(crate) fn new(config: CoreConfig, seed: u64, now: Instant) -> Core {
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = seed;
        let mut tx = TxQueue::default();
        let mut phy = Phy::new(None, &mut tx, config.mtu);
        let mut iface = Interface::new(iface_config, &mut phy, now);
        // "Any IP": accept packets for every destination. The /0 addresses only exist so that
        // smoltcp finds a route back to every source; they are never used as a source themselves
        // (a socket always answers from the address the client dialled).
        iface.set_any_ip(true);
        iface.update_ip_addrs(|addrs| {
            for cidr in [
                IpCidr::new(IpAddress::v4(192, 0, 2, 1), 0),
                IpCidr::new(IpAddress::v6(0x100, 0, 0, 0, 0, 0, 0, 1), 0),
            ] {
                // Capacity is IFACE_MAX_ADDR_COUNT (2 by default): both fit.
                let _ = addrs.push(cidr);
            }
        });
        Core {
            iface,
            sockets: SocketSet::new(Vec::new()),
            tx,
            config,
            flows: HashMap::new(),
            pending: HashMap::new(),
            orphans: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// Takes one packet read from the device.
    pub(crate) fn ingest<'a>(&mut self, now: Instant, packet: &'a [u8]) -> Ingress<'a> {
        match classify(packet) {
            Err(why) => {
                self.counters.malformed += 1;
                tracing::trace!(%why, len = packet.len(), "Dropped malformed packet");
                Ingress::None
            }
            Ok(Classified::Other) => {
                self.counters.ignored += 1;
                Ingress::None
            }
            Ok(Classified::Udp { src, dst, payload }) => {
                self.counters.udp_received += 1;
                Ingress::Udp { src, dst, payload }
            }
            Ok(Classified::Tcp { src, dst, syn }) => self.ingest_tcp(now, (src, dst), syn, packet),
        }
    }

    fn ingest_tcp<'a>(
        &mut self,
        now: Instant,
        key: FlowKey,
        syn: bool,
        packet: &[u8],
    ) -> Ingress<'a> {
        if self.pending.contains_key(&key) {
            // A retransmitted SYN (or junk) while the owner decides: the first SYN is kept.
            return Ingress::None;
        }
        if syn {
            if let Some(&handle) = self.flows.get(&key) {
                let state = self.sockets.get::<Socket>(handle).state();
                if !matches!(state, State::Closed | State::TimeWait) {
                    self.feed(now, packet);
                    return Ingress::None;
                }
                // The client reuses the ports of a finished connection: that one is history.
                self.flows.remove(&key);
            }
            if self.pending.len() >= self.config.max_pending {
                // As a kernel with a full SYN queue does: no answer, so the client sends the
                // SYN again (after 1 s) instead of taking a RST for a refusal. Refusing made a
                // burst of 2,000 connections fail by the thousand (`bench --only scale`).
                self.counters.tcp_backlog_dropped += 1;
                return Ingress::None;
            }
            self.counters.tcp_requests += 1;
            self.pending.insert(key, packet.to_vec());
            return Ingress::TcpRequest(key);
        }
        self.feed(now, packet);
        Ingress::None
    }

    /// Accepts a pending request: the handshake completes on the next [`Core::poll`]. `None` if
    /// the request is unknown or smoltcp would not take the SYN (e.g. destination port 0).
    pub(crate) fn accept(&mut self, now: Instant, key: FlowKey) -> Option<SocketHandle> {
        let syn = self.pending.remove(&key)?;
        let mut socket = Socket::new(
            SocketBuffer::new(vec![0; self.config.tcp_rx_buffer]),
            SocketBuffer::new(vec![0; self.config.tcp_tx_buffer]),
        );
        // The bytes come from a stream that already batches; holding back small writes would
        // only add latency.
        socket.set_nagle_enabled(false);
        let endpoint = IpListenEndpoint {
            addr: Some(key.1.ip().into()),
            port: key.1.port(),
        };
        if socket.listen(endpoint).is_err() {
            self.counters.tcp_refused += 1;
            self.feed(now, &syn);
            return None;
        }
        let handle = self.sockets.add(socket);
        self.feed(now, &syn);
        if self.sockets.get::<Socket>(handle).state() != State::SynReceived {
            self.sockets.remove(handle);
            return None;
        }
        self.flows.insert(key, handle);
        Some(handle)
    }

    /// Refuses a pending request with a RST.
    pub(crate) fn refuse(&mut self, now: Instant, key: FlowKey) {
        if let Some(syn) = self.pending.remove(&key) {
            self.counters.tcp_refused += 1;
            // No socket listens there, so smoltcp answers the SYN with a RST.
            self.feed(now, &syn);
        }
    }

    /// The socket behind an accepted flow.
    pub(crate) fn socket(&mut self, handle: SocketHandle) -> &mut Socket<'static> {
        self.sockets.get_mut::<Socket>(handle)
    }

    /// The stream for `handle` is gone: close the socket (reset it if data was left unread) and
    /// reap it once closed.
    pub(crate) fn release(&mut self, now: Instant, handle: SocketHandle, key: FlowKey) {
        let socket = self.sockets.get_mut::<Socket>(handle);
        if socket.recv_queue() > 0 {
            socket.abort();
        } else {
            socket.close();
        }
        self.orphans.push((handle, key, now + ORPHAN_TIMEOUT));
    }

    /// Resets every connection and forgets pending requests (the stack is shutting down).
    pub(crate) fn abort_all(&mut self) {
        for (_, socket) in self.sockets.iter_mut() {
            // Only TCP sockets exist here; the `if let` stays refutable should another crate
            // in the build enable more smoltcp socket kinds.
            #[allow(irrefutable_let_patterns)]
            if let smoltcp::socket::Socket::Tcp(tcp) = socket {
                tcp.abort();
            }
        }
        self.pending.clear();
    }

    /// Runs timers and sends what sockets have queued; reaps closed orphans.
    pub(crate) fn poll(&mut self, now: Instant) {
        self.reap(now);
        let mut phy = Phy::new(None, &mut self.tx, self.config.mtu);
        self.iface.poll(now, &mut phy, &mut self.sockets);
    }

    /// How long until [`Core::poll`] must run again (`None`: only when a packet arrives).
    pub(crate) fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        let sockets = self.iface.poll_delay(now, &self.sockets);
        let orphans = self
            .orphans
            .iter()
            .map(|&(_, _, deadline)| {
                if deadline > now {
                    deadline - now
                } else {
                    Duration::ZERO
                }
            })
            .min();
        match (sockets, orphans) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves the packets to write to the device into `out` (which should be empty).
    pub(crate) fn take_tx(&mut self, out: &mut Vec<Vec<u8>>) {
        self.tx.take(out);
    }

    /// Gives written packet buffers back for reuse.
    pub(crate) fn recycle(&mut self, written: &mut Vec<Vec<u8>>) {
        self.tx.recycle(written);
    }

    /// Number of TCP sockets alive (accepted and not yet reaped).
    pub(crate) fn socket_count(&self) -> usize {
        self.sockets.iter().count()
    }

    fn feed(&mut self, now: Instant, packet: &[u8]) {
        let mut phy = Phy::new(Some(packet), &mut self.tx, self.config.mtu);
        self.iface
            .poll_ingress_single(now, &mut phy, &mut self.sockets);
    }

    fn reap(&mut self, now: Instant) {
        let (sockets, flows) = (&mut self.sockets, &mut self.flows);
        self.orphans.retain(|&(handle, key, deadline)| {
            let socket = sockets.get_mut::<Socket>(handle);
            match socket.state() {
                // Already sent its RST or FIN exchange is complete; TIME_WAIT protects nothing
                // here, the other end is the local kernel.
                State::Closed | State::TimeWait => {
                    sockets.remove(handle);
                    if flows.get(&key) == Some(&handle) {
                        flows.remove(&key);
                    }
                    false
                }
                _ if now >= deadline => {
                    // Reset now; reaped on the next poll, after the RST went out.
                    socket.abort();
                    true
                }
                _ => true,
            }
        });
    }
}

#[cfg(test)]
mod tests;
