//! Flows: the manager dials TCP and UDP destinations on a session's behalf.
//!
//! * TCP: the client opens a bidirectional stream and sends `Open`; the manager connects, answers
//!   `OpenResult`, and the stream then carries the connection's bytes. A client FIN finishes the
//!   stream and shuts down the socket's write half, and the other way round.
//! * UDP: opened the same way; the datagrams then travel as QUIC datagrams tagged with the flow
//!   id, or as `UdpPacket` frames on the flow's stream when too big for a datagram. The flow ends
//!   when its stream ends or it has been idle for [`UDP_IDLE`].

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use bytes::BytesMut;
use tether_metrics::manager::{DialFailure, Direction, ManagerMetrics, Protocol as Proto};
use tether_metrics::Metered;
use tether_proto::{
    ErrorCode, Message, Open, OpenError, OpenFiles, OpenFilesResult, OpenResult, Protocol,
    UdpPacket,
};
use tether_tunnel::{framed, quinn};
use tokio::net::{TcpStream, UdpSocket};
use tracing::{debug, debug_span, info, Instrument};

use super::requests::Asker;
use crate::audit::{Action, AuditLog};

/// How long a TCP dial may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a UDP flow lives without traffic.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// How long a new flow stream may take to send its `Open`. The client sends it with the
/// stream's first bytes, so only a stuck or hostile client waits this long; its stream is then
/// reset and its slot (of the connection's concurrent streams) freed.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a file stream ended early.
#[derive(Debug, thiserror::Error)]
enum FilesError {
    #[error("stream")]
    Framed(#[from] framed::FrameIoError),
    #[error("agent connection")]
    Connection(#[from] quinn::ConnectionError),
}

/// The UDP flows of one session, by flow id.
#[derive(Debug, Clone)]
pub struct Flows {
    conn: quinn::Connection,
    policy: Arc<crate::dial_policy::DialPolicy>,
    udp: Arc<Mutex<HashMap<u64, Arc<UdpSocket>>>>,
    metrics: Arc<ManagerMetrics>,
    /// Where a refused dial is recorded, as `asker`'s.
    audit: AuditLog,
    asker: Arc<Asker>,
    files: FileRoute,
}

/// Finds the agent connections that may serve the files of one of the session's intercepts,
/// the most recently linked first (see
/// [`Registry::file_agents`](crate::registry::Registry::file_agents)), or says why none does.
#[derive(Clone)]
pub struct FileRoute(Arc<dyn Fn(u64) -> Result<Vec<quinn::Connection>, String> + Send + Sync>);

impl FileRoute {
    pub fn new(
        route: impl Fn(u64) -> Result<Vec<quinn::Connection>, String> + Send + Sync + 'static,
    ) -> Self {
        FileRoute(Arc::new(route))
    }
}

/// How long one agent may take to answer a file stream's [`OpenFiles`] before the next is
/// tried: an agent of a pod that is going away (a rollout) may still be linked but no longer
/// serve.
const FILES_AGENT_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens a file stream on `agent` and returns its answer with the stream, or `None` if it did not
/// answer in time.
async fn ask_agent(
    agent: &quinn::Connection,
    open: &OpenFiles,
) -> Option<(OpenFilesResult, quinn::SendStream, quinn::RecvStream)> {
    let asked = async {
        let (mut send, mut recv) = agent.open_bi().await.ok()?;
        framed::write_message(&mut send, &Message::OpenFiles(open.clone()))
            .await
            .ok()?;
        match framed::read_message(&mut recv).await {
            Ok(Some(Message::OpenFilesResult(answer))) => Some((answer, send, recv)),
            _ => None,
        }
    };
    tokio::time::timeout(FILES_AGENT_TIMEOUT, asked)
        .await
        .ok()
        .flatten()
}

impl std::fmt::Debug for FileRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileRoute")
    }
}

impl Flows {
    pub fn new(
        conn: quinn::Connection,
        policy: Arc<crate::dial_policy::DialPolicy>,
        metrics: Arc<ManagerMetrics>,
        audit: AuditLog,
        asker: Arc<Asker>,
        files: FileRoute,
    ) -> Self {
        Flows {
            conn,
            policy,
            udp: Arc::default(),
            metrics,
            audit,
            asker,
            files,
        }
    }

    pub fn close_all(&self) {
        self.udp_map().clear();
    }

    fn udp_map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<UdpSocket>>> {
        // A poisoned lock only means a flow task panicked; the map itself is still consistent.
        self.udp.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts flow streams until the connection ends.
    pub async fn accept_loop(self) -> quinn::ConnectionError {
        loop {
            match self.conn.accept_bi().await {
                Ok((send, recv)) => {
                    let flows = self.clone();
                    tokio::spawn(async move { flows.flow(send, recv).await });
                }
                Err(e) => return e,
            }
        }
    }

    /// Delivers incoming datagrams to their UDP flows until the connection ends.
    pub async fn datagram_loop(self) -> quinn::ConnectionError {
        loop {
            let datagram = match self.conn.read_datagram().await {
                Ok(d) => d,
                Err(e) => return e,
            };
            let Ok((flow, payload)) = tether_proto::decode_datagram(&datagram) else {
                debug!("Dropped a malformed datagram");
                continue;
            };
            let socket = self.udp_map().get(&flow).cloned();
            match socket {
                Some(socket) => {
                    let n = payload.len() as u64;
                    self.metrics.flows.bytes(Direction::to_cluster).inc_by(n);
                    let _ = socket.send(payload).await;
                }
                None => debug!(flow, "Dropped a datagram for an unknown flow"),
            }
        }
    }

    /// Passes a file stream on to an agent of the intercept, once it is the session's own.
    async fn files(
        &self,
        open: OpenFiles,
        mut send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> Result<(), FilesError> {
        let refuse = |code, message: String| OpenFilesResult {
            result: Err(OpenError { code, message }),
        };
        let object = format!("intercept-{}", open.intercept);
        let audit = |action| {
            self.asker
                .record(action, SystemTime::now())
                .object(None, &object)
        };
        let agents = match (self.files.0)(open.intercept) {
            Ok(agents) => agents,
            Err(message) => {
                info!(intercept = open.intercept, %message, "File stream refused");
                self.audit
                    .record(audit(Action::FilesRefused).refused(message.clone()));
                let answer = refuse(ErrorCode::NotPermitted, message);
                framed::write_message(&mut send, &Message::OpenFilesResult(answer)).await?;
                let _ = send.finish();
                return Ok(());
            }
        };
        let mut answered = None;
        for agent in &agents {
            if let Some(got) = ask_agent(agent, &open).await {
                answered = Some(got);
                break;
            }
        }
        let (answer, agent_send, agent_recv) = match answered {
            Some((answer, send, recv)) => (answer, Some(send), Some(recv)),
            None => (
                refuse(
                    ErrorCode::Other,
                    "no traffic agent of the workload serves files (an older agent? uninstall \
                     and intercept again)"
                        .to_owned(),
                ),
                None,
                None,
            ),
        };
        let ok = answer.result.is_ok();
        self.audit.record(match &answer.result {
            Ok(info) => audit(Action::FilesOpened)
                .note("pod", &info.pod)
                .note("container", &open.container)
                .note("volumes", info.mounts.join(",")),
            Err(error) => audit(Action::FilesRefused).refused(error.message.clone()),
        });
        framed::write_message(&mut send, &Message::OpenFilesResult(answer)).await?;
        match (ok, agent_send, agent_recv) {
            (true, Some(agent_send), Some(agent_recv)) => {
                super::agents::splice(send, recv, agent_send, agent_recv).await;
            }
            (_, agent_send, _) => {
                let _ = send.finish();
                if let Some(mut agent_send) = agent_send {
                    let _ = agent_send.reset(0u32.into());
                }
            }
        }
        Ok(())
    }

    async fn flow(self, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let open = match tokio::time::timeout(OPEN_TIMEOUT, framed::read_message(&mut recv)).await {
            Ok(Ok(Some(Message::Open(open)))) => open,
            Ok(Ok(Some(Message::OpenFiles(open)))) => {
                let span = debug_span!("files", intercept = open.intercept);
                if let Err(error) = self.files(open, send, recv).instrument(span).await {
                    debug!(%error, "File stream failed");
                }
                return;
            }
            Ok(Ok(other)) => {
                debug!(?other, "A flow stream did not start with Open");
                let _ = send.reset(1u32.into());
                let _ = recv.stop(1u32.into());
                return;
            }
            Ok(Err(error)) => {
                debug!(%error, "Bad flow stream");
                let _ = send.reset(1u32.into());
                let _ = recv.stop(1u32.into());
                return;
            }
            Err(_) => {
                debug!("A flow stream sent no Open within {OPEN_TIMEOUT:?}");
                let _ = send.reset(1u32.into());
                let _ = recv.stop(1u32.into());
                return;
            }
        };
        let span = debug_span!("flow", id = open.flow, proto = ?open.protocol, dst = %open.dst);
        if let Err(message) = self.policy.check(open.dst) {
            info!(flow = open.flow, dst = %open.dst, %message, "Dial refused");
            self.metrics.dial_failed(DialFailure::policy);
            self.audit.record(
                self.asker
                    .record(Action::DialRefused, SystemTime::now())
                    .object(None, &open.dst.to_string())
                    .note("protocol", format!("{:?}", open.protocol).to_lowercase())
                    .refused(message.clone()),
            );
            let err = OpenError {
                code: ErrorCode::NotPermitted,
                message,
            };
            let _ = reply(&mut send, open.flow, Err(err)).await;
            let _ = send.finish();
            return;
        }
        match open.protocol {
            Protocol::Tcp => tcp(open, send, recv, &self.metrics).instrument(span).await,
            Protocol::Udp => self.udp(open, send, recv).instrument(span).await,
        }
    }

    async fn udp(self, open: Open, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let socket = match bind_udp(open.dst).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                self.metrics.dial_failed(failure(&e));
                let _ = reply(&mut send, open.flow, Err(open_error(&e))).await;
                let _ = send.finish();
                return;
            }
        };
        if reply(&mut send, open.flow, Ok(())).await.is_err() {
            return;
        }
        let _open = self.metrics.flows.flow(Proto::udp);
        self.udp_map().insert(open.flow, socket.clone());
        debug!("UDP flow open");
        let flow = open.flow;
        let conn = self.conn.clone();
        let from_dst = async {
            let mut buf = vec![0u8; 65536];
            loop {
                let n = match tokio::time::timeout(UDP_IDLE, socket.recv(&mut buf)).await {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let payload = &buf[..n];
                self.metrics
                    .flows
                    .bytes(Direction::to_workstation)
                    .inc_by(n as u64);
                let fits = conn.max_datagram_size().is_some_and(|max| {
                    payload.len() + tether_proto::datagram_overhead(flow) <= max
                });
                if fits {
                    let mut d = BytesMut::with_capacity(payload.len() + 8);
                    if tether_proto::encode_datagram(flow, payload, &mut d).is_ok() {
                        let _ = conn.send_datagram(d.freeze());
                    }
                } else {
                    let msg = Message::UdpPacket(UdpPacket {
                        flow,
                        payload: payload.to_vec(),
                    });
                    if framed::write_message(&mut send, &msg).await.is_err() {
                        return;
                    }
                }
            }
        };
        // Oversized datagrams from the client arrive as frames on the stream; its end ends the flow.
        let from_client = async {
            while let Ok(Some(msg)) = framed::read_message(&mut recv).await {
                if let Message::UdpPacket(p) = msg {
                    self.metrics
                        .flows
                        .bytes(Direction::to_cluster)
                        .inc_by(p.payload.len() as u64);
                    let _ = socket.send(&p.payload).await;
                }
            }
        };
        tokio::select! {
            _ = from_dst => {}
            _ = from_client => {}
        }
        self.udp_map().remove(&flow);
        debug!("UDP flow closed");
    }
}

async fn tcp(
    open: Open,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    metrics: &ManagerMetrics,
) {
    let stream = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(open.dst)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(error = %e, "Dial failed");
            metrics.dial_failed(failure(&e));
            let _ = reply(&mut send, open.flow, Err(open_error(&e))).await;
            let _ = send.finish();
            return;
        }
        Err(_) => {
            metrics.dial_failed(DialFailure::timeout);
            let err = OpenError {
                code: ErrorCode::TimedOut,
                message: format!("no answer from {} within {DIAL_TIMEOUT:?}", open.dst),
            };
            let _ = reply(&mut send, open.flow, Err(err)).await;
            let _ = send.finish();
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    if reply(&mut send, open.flow, Ok(())).await.is_err() {
        return;
    }
    debug!("TCP flow open");
    let _open = metrics.flows.flow(Proto::tcp);
    // Read from the destination: to the workstation; written to it: to the cluster.
    let stream = Metered::new(
        stream,
        metrics.flows.bytes(Direction::to_workstation),
        metrics.flows.bytes(Direction::to_cluster),
    );
    match tether_tunnel::relay::relay(stream, &mut send, &mut recv, 64 << 10).await {
        Ok((down, up)) => debug!(up, down, "TCP flow closed"),
        Err(error) => {
            debug!(%error, "TCP flow aborted");
            let _ = send.reset(2u32.into());
        }
    }
}

async fn reply(
    send: &mut quinn::SendStream,
    flow: u64,
    result: Result<(), OpenError>,
) -> Result<(), framed::FrameIoError> {
    framed::write_message(send, &Message::OpenResult(OpenResult { flow, result })).await
}

async fn bind_udp(dst: SocketAddr) -> std::io::Result<UdpSocket> {
    let bind: SocketAddr = if dst.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(dst).await?;
    Ok(socket)
}

/// A failed dial's reason, for the metrics.
fn failure(e: &std::io::Error) -> DialFailure {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => DialFailure::refused,
        K::TimedOut => DialFailure::timeout,
        K::HostUnreachable | K::NetworkUnreachable => DialFailure::unreachable,
        _ => DialFailure::other,
    }
}

fn open_error(e: &std::io::Error) -> OpenError {
    use std::io::ErrorKind as K;
    let code = match e.kind() {
        K::ConnectionRefused => ErrorCode::ConnectionRefused,
        K::TimedOut => ErrorCode::TimedOut,
        K::PermissionDenied => ErrorCode::NotPermitted,
        K::HostUnreachable | K::NetworkUnreachable => ErrorCode::HostUnreachable,
        _ => ErrorCode::Other,
    };
    OpenError {
        code,
        message: e.to_string(),
    }
}
