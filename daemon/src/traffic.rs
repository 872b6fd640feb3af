//! The traffic glue: connections and datagrams that the userspace stack terminates become
//! flows through the current tunnel session; queries to the DNS address go to [`Dns`].

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tether_dns::Transport;
use tether_metrics::workstation::{Direction, Protocol, WorkstationMetrics};
use tether_metrics::{Counter, Metered};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
    task::JoinHandle,
};
use tracing::{debug, debug_span, Instrument};

use crate::{
    dns::Dns,
    flow_table::{FlowProtocol, FlowTable},
    netstack::{NetStack, NetStackConfig, TcpRequest, UdpSender},
    privileged::tun::Tun,
    session::{current, Session, SessionRx},
};

/// Copy buffer per direction of a TCP flow.
const COPY_BUF: usize = 64 << 10;
/// How long a UDP flow lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// Starts the stack on the TUN device and serves it. Aborting the task drops the device, which
/// takes its routes with it.
pub fn spawn(
    tun: Tun,
    dns_addr: SocketAddr,
    dns: Dns,
    session_rx: SessionRx,
    metrics: Arc<WorkstationMetrics>,
    table: Arc<FlowTable>,
) -> JoinHandle<()> {
    let mtu = tun.mtu();
    let (stack, mut tcp, mut udp) = NetStack::spawn(tun.into_device(), NetStackConfig::new(mtu));
    let dns = Arc::new(dns);
    tokio::spawn(async move {
        let _stack: NetStack = stack;
        let tcp_session = session_rx.clone();
        let tcp_dns = dns.clone();
        let known = Arc::new(KnownOpen::default());
        let tcp_metrics = metrics.clone();
        let tcp_table = table.clone();
        let tcp_loop = async move {
            while let Some(req) = tcp.accept().await {
                let span = debug_span!("tcp", src = %req.src(), dst = %req.dst());
                if req.dst() == dns_addr {
                    tokio::spawn(dns_over_tcp(req, tcp_dns.clone()).instrument(span));
                } else {
                    let counted = Counted {
                        metrics: tcp_metrics.clone(),
                        table: tcp_table.clone(),
                    };
                    let flow = tcp_flow(req, tcp_session.clone(), known.clone(), counted);
                    tokio::spawn(flow.instrument(span));
                }
            }
        };
        let udp_loop = async move {
            let sender = udp.sender();
            let mut flows: HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Bytes>> = HashMap::new();
            while let Some(d) = udp.recv().await {
                if d.dst == dns_addr {
                    let (dns, sender) = (dns.clone(), sender.clone());
                    tokio::spawn(async move {
                        if let Some(answer) = dns.handle(&d.payload, Transport::Udp).await {
                            let _ = sender.send(d.dst, d.src, &answer).await;
                        }
                    });
                    continue;
                }
                let key = (d.src, d.dst);
                if let Some(tx) = flows.get(&key) {
                    if tx.try_send(d.payload.clone()).is_ok() {
                        continue;
                    }
                    if !tx.is_closed() {
                        continue; // queue full: drop, as a network would
                    }
                }
                flows.retain(|_, tx| !tx.is_closed());
                let (tx, rx) = mpsc::channel(256);
                let _ = tx.try_send(d.payload);
                flows.insert(key, tx);
                let span = debug_span!("udp", src = %d.src, dst = %d.dst);
                let flow = udp_flow(
                    (d.src, d.dst),
                    rx,
                    sender.clone(),
                    session_rx.clone(),
                    Counted {
                        metrics: metrics.clone(),
                        table: table.clone(),
                    },
                );
                tokio::spawn(flow.instrument(span));
            }
        };
        tokio::join!(tcp_loop, udp_loop);
    })
}

/// Destinations a dial recently reached, where a new connection is accepted before the
/// manager's dial (saving the client a tunnel round trip). Elsewhere the SYN waits for the dial,
/// so that a closed port is refused (RST) exactly as it would be without tether.
#[derive(Debug, Default)]
pub struct KnownOpen(Mutex<HashMap<SocketAddr, Instant>>);

/// How long a successful dial vouches for its destination.
const KNOWN_OPEN_TTL: Duration = Duration::from_secs(30);
/// Most destinations remembered.
const KNOWN_OPEN_MAX: usize = 4096;

impl KnownOpen {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Instant>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn contains(&self, dst: SocketAddr) -> bool {
        self.lock()
            .get(&dst)
            .is_some_and(|at| at.elapsed() < KNOWN_OPEN_TTL)
    }

    fn remember(&self, dst: SocketAddr) {
        let mut map = self.lock();
        if map.len() >= KNOWN_OPEN_MAX {
            map.retain(|_, at| at.elapsed() < KNOWN_OPEN_TTL);
            if map.len() >= KNOWN_OPEN_MAX {
                map.clear();
            }
        }
        map.insert(dst, Instant::now());
    }

    fn forget(&self, dst: SocketAddr) {
        self.lock().remove(&dst);
    }
}

/// Where flows are counted: in total (the metrics) and each (the flow table).
struct Counted {
    metrics: Arc<WorkstationMetrics>,
    table: Arc<FlowTable>,
}

async fn tcp_flow(req: TcpRequest, session_rx: SessionRx, known: Arc<KnownOpen>, counted: Counted) {
    let Some(session) = current(&session_rx).await else {
        debug!("No tunnel; refusing");
        req.refuse();
        return;
    };
    let dst = req.dst();
    if known.contains(dst) {
        return early_tcp_flow(req, session, known, &counted).await;
    }
    let started = Instant::now();
    let (mut send, mut recv) = match session.open_tcp(dst).await {
        Ok(s) => s,
        Err(error) => {
            log_open_failure(&error, dst, "Open failed; refusing");
            req.refuse();
            return;
        }
    };
    known.remember(dst);
    debug!(open_us = started.elapsed().as_micros() as u64, "Opened");
    let Ok(stream) = req.accept() else { return };
    let aborter = stream.aborter();
    let metrics = &counted.metrics;
    let _open = metrics.flows.flow(Protocol::tcp);
    let flow = counted.table.open(FlowProtocol::Tcp, dst);
    // Read from the client: to the cluster; written to it: to the workstation.
    let stream = Metered::new(
        stream,
        metrics.flows.bytes(Direction::to_cluster),
        metrics.flows.bytes(Direction::to_workstation),
    )
    .and(flow.bytes_out(), flow.bytes_in());
    match tether_tunnel::relay::relay(stream, &mut send, &mut recv, COPY_BUF).await {
        Ok((up, down)) => debug!(up, down, "Closed"),
        // A reset stream, or the tunnel lost: the client must not take the end for a FIN (a
        // download would look complete), so it gets a RST.
        Err(error) => {
            debug!(%error, "Aborted; resetting");
            aborter.abort();
        }
    }
}

/// A connection to a [`KnownOpen`] destination: the handshake completes at once and the client's
/// first bytes travel with the flow's `Open`; if the dial fails after all, the client gets a RST.
async fn early_tcp_flow(
    req: TcpRequest,
    session: Session,
    known: Arc<KnownOpen>,
    counted: &Counted,
) {
    let dst = req.dst();
    let metrics = &counted.metrics;
    // The SYN-ACK first: the stack's task runs before the tunnel's, so the client's handshake
    // and the manager's dial (started by the Open below) overlap instead of queueing.
    let Ok(stream) = req.accept() else { return };
    let aborter = stream.aborter();
    let (send, mut recv) = match session.start_tcp(dst).await {
        Ok(s) => s,
        Err(error) => {
            debug!(%error, "Open failed after an early accept; resetting");
            known.forget(dst);
            aborter.abort();
            return;
        }
    };
    let _open = metrics.flows.flow(Protocol::tcp);
    let flow = counted.table.open(FlowProtocol::Tcp, dst);
    let mut send = Metered::new(
        send,
        Counter::default(),
        metrics.flows.bytes(Direction::to_cluster),
    )
    .and(Counter::default(), flow.bytes_out());
    let (mut client_rx, client_tx) = tokio::io::split(stream);
    let up = async {
        let mut from_client = tokio::io::BufReader::with_capacity(COPY_BUF, &mut client_rx);
        let copied = tokio::io::copy_buf(&mut from_client, &mut send).await;
        let _ = send.get_mut().finish();
        copied
    };
    tokio::pin!(up);
    let mut up_result = None;
    let opened = {
        let answer = Session::opened(&mut recv);
        tokio::pin!(answer);
        loop {
            tokio::select! {
                r = &mut answer => break r,
                r = &mut up, if up_result.is_none() => up_result = Some(r),
            }
        }
    };
    if let Err(error) = opened {
        debug!(%error, "Open failed after an early accept; resetting");
        known.forget(dst);
        aborter.abort();
        return;
    }
    known.remember(dst);
    let mut client_tx = Metered::new(
        client_tx,
        Counter::default(),
        metrics.flows.bytes(Direction::to_workstation),
    )
    .and(Counter::default(), flow.bytes_in());
    let down = async {
        let copied = tether_tunnel::relay::from_quic(&mut recv, &mut client_tx, COPY_BUF).await;
        // As in `tcp_flow`: a broken stream is a RST, never a FIN (`from_quic` shuts the
        // client's side down only after the stream's end).
        if copied.is_err() {
            aborter.abort();
        }
        copied
    };
    let (up, down) = match up_result {
        Some(up) => (up, down.await),
        None => tokio::join!(up, down),
    };
    debug!(?up, ?down, "Closed");
}

async fn udp_flow(
    (src, dst): (SocketAddr, SocketAddr),
    mut rx: mpsc::Receiver<Bytes>,
    sender: UdpSender,
    session_rx: SessionRx,
    counted: Counted,
) {
    let Some(session) = current(&session_rx).await else {
        return;
    };
    let metrics = &counted.metrics;
    let flow = match session.open_udp(dst).await {
        Ok(f) => f,
        Err(error) => {
            log_open_failure(&error, dst, "UDP open failed");
            return;
        }
    };
    let _open = metrics.flows.flow(Protocol::udp);
    let table = counted.table.open(FlowProtocol::Udp, dst);
    let to_cluster = metrics.flows.bytes(Direction::to_cluster);
    let to_workstation = metrics.flows.bytes(Direction::to_workstation);
    let (flow_out, flow_in) = (table.bytes_out(), table.bytes_in());
    loop {
        tokio::select! {
            out = tokio::time::timeout(UDP_IDLE, rx.recv()) => match out {
                Ok(Some(payload)) => {
                    to_cluster.inc_by(payload.len() as u64);
                    flow_out.inc_by(payload.len() as u64);
                    let _ = flow.send(&payload).await;
                }
                _ => break,
            },
            reply = flow.recv() => match reply {
                Some(payload) => {
                    to_workstation.inc_by(payload.len() as u64);
                    flow_in.inc_by(payload.len() as u64);
                    let _ = sender.send(dst, src, &payload).await;
                }
                None => break,
            },
        }
    }
    debug!("UDP flow closed");
}

async fn dns_over_tcp(req: TcpRequest, dns: Arc<Dns>) {
    let Ok(mut stream) = req.accept() else { return };
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut query = vec![0u8; u16::from_be_bytes(len).into()];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(answer) = dns.handle(&query, Transport::Stream).await else {
            return;
        };
        let Ok(n) = u16::try_from(answer.len()) else {
            return;
        };
        if stream.write_all(&n.to_be_bytes()).await.is_err()
            || stream.write_all(&answer).await.is_err()
        {
            return;
        }
    }
}

/// A refusal by the manager's dial policy is the user's to see (`warn`, with its reason); other
/// failures (refused, unreachable) are ordinary and debug only.
fn log_open_failure(error: &crate::session::SessionError, dst: std::net::SocketAddr, what: &str) {
    match error {
        crate::session::SessionError::Open(e)
            if e.code == tether_proto::ErrorCode::NotPermitted =>
        {
            tracing::warn!(%dst, reason = %e.message, "Refused by the traffic manager")
        }
        _ => debug!(%error, %dst, "{what}"),
    }
}
