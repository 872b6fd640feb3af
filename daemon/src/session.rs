//! The daemon's side of one QUIC session with the traffic manager: the control stream (version
//! handshake, DNS, keep-alives, subnet and namespace updates; see [`control`]) and opening TCP
//! and UDP flows.

mod control;

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use tether_proto::session::{Reply, Request};
use tether_proto::{AgentCredential, AgentCredentialRequest};
use tether_proto::{
    CreateIntercept, DialResult, DnsQuery, ErrorCode, Hello, InterceptState, InterceptStats,
    ListIntercepts, Message, Open, OpenError, Protocol, RemoveIntercept, Subnets, UdpPacket,
    Welcome, PROTOCOL_VERSION,
};
use tether_tunnel::control::Control;
use tether_tunnel::{framed, quinn};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

/// How long a new flow (or a DNS query for the cluster) waits for a session while the daemon
/// reconnects.
const SESSION_WAIT: Duration = Duration::from_secs(8);

/// The daemon's current session: `None` while it reconnects.
pub type SessionRx = watch::Receiver<Option<Session>>;

/// The session to use now, waiting a little while there is none (a reconnect is under way).
pub async fn current(session_rx: &SessionRx) -> Option<Session> {
    let mut rx = session_rx.clone();
    let result = tokio::time::timeout(SESSION_WAIT, async {
        rx.wait_for(|s| s.as_ref().is_some_and(|s| !s.is_closed()))
            .await
            .ok()
            .and_then(|s| s.clone())
    })
    .await;
    result.ok().flatten()
}

/// How long a DNS query may wait for the manager.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(4);
/// How long opening a flow may take (the manager's own dial timeout is 5 s).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(7);

/// Errors of a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The QUIC connection could not be made or was lost.
    #[error("tunnel connection")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC connection failed.
    #[error("tunnel connection lost")]
    Connection(#[from] quinn::ConnectionError),
    /// A frame could not be read or written.
    #[error("tunnel protocol")]
    Frame(#[from] framed::FrameIoError),
    /// The control stream failed.
    #[error(transparent)]
    Control(#[from] tether_tunnel::control::ControlError),
    /// The manager refused the session.
    #[error("the traffic manager refused the session: {0}")]
    Refused(String),
    /// The handshake went wrong otherwise (no `Welcome` in time, one of another version).
    #[error("the handshake with the traffic manager failed")]
    Handshake(#[source] tether_proto::session::SessionError),
    /// The manager closed the stream before answering.
    #[error("the traffic manager closed the stream before answering")]
    NoAnswer,
    /// The destination could not be reached.
    #[error("{}", .0.message)]
    Open(OpenError),
    /// No answer in time.
    #[error("timed out")]
    TimedOut,
    /// The manager refused a request (an intercept, an agent credential).
    #[error("{0}")]
    Intercept(String),
}

/// Where the daemon sends the intercepted connections the manager passes on: intercept id →
/// the developer's local address. Shared by the sessions (it outlives reconnects).
pub type DialTable = Arc<Mutex<HashMap<u64, SocketAddr>>>;

/// How long an intercept request may wait for the manager.
pub const INTERCEPT_TIMEOUT: Duration = Duration::from_secs(10);

type UdpFlows = Arc<Mutex<HashMap<u64, mpsc::Sender<Bytes>>>>;

/// A connected session.
#[derive(Debug, Clone)]
pub struct Session {
    conn: quinn::Connection,
    /// The control task, which owns the control stream.
    requests: control::Requests,
    udp_flows: UdpFlows,
    next_flow: Arc<AtomicU64>,
    /// What the manager said at the start.
    pub welcome: Arc<Welcome>,
    /// Current subnets (updated by the manager).
    pub subnets_rx: watch::Receiver<Subnets>,
    /// The cluster's namespaces (empty until the manager says; an older one never does).
    pub namespaces_rx: watch::Receiver<Arc<BTreeSet<String>>>,
    /// The manager's tether version (`None` until it says; an older one never does).
    pub manager_version_rx: watch::Receiver<Option<String>>,
    /// How the session's intercepts route, as the manager last said (empty until it does).
    pub intercept_stats_rx: watch::Receiver<Arc<InterceptStats>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a task panicked while holding it; the maps stay consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// Connects, says `Hello` and waits for `Welcome`.
    pub async fn establish(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        client: String,
        namespace: String,
        dials: DialTable,
    ) -> Result<Session, SessionError> {
        let conn = endpoint.connect(addr, tether_tunnel::SERVER_NAME)?.await?;
        let (send, recv) = conn.open_bi().await?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            client,
            namespace,
            role: tether_proto::Role::Client,
        };
        let machine = tether_proto::session::Session::client(
            hello,
            control::config(),
            tether_tunnel::control::now(),
        )
        .map_err(framed::FrameIoError::from)?;
        let mut ctl = Control::new(machine, recv, send);
        let welcome = control::handshake(&mut ctl).await?;
        let (subnets, subnets_rx) = watch::channel(welcome.subnets.clone());
        let (namespaces, namespaces_rx) = watch::channel(Arc::default());
        let (manager_version, manager_version_rx) = watch::channel(None);
        let (intercept_stats, intercept_stats_rx) = watch::channel(Arc::default());
        let (requests, commands) = control::Requests::new();
        let session = Session {
            conn: conn.clone(),
            requests,
            udp_flows: Arc::default(),
            next_flow: Arc::new(AtomicU64::new(1)),
            welcome: Arc::new(welcome),
            subnets_rx,
            namespaces_rx,
            manager_version_rx,
            intercept_stats_rx,
        };
        // The control stream: requests, their answers, updates, keep-alive. Its end is the
        // session's.
        let ctl_conn = conn.clone();
        tokio::spawn(async move {
            let updates = control::Updates {
                subnets,
                namespaces,
                manager_version,
                intercept_stats,
            };
            if control::run(ctl, commands, updates).await {
                // The manager's close, with its reason (a refusal, say), is due: let it be the
                // one the session reports.
                let _ = tokio::time::timeout(control::LINGER, ctl_conn.closed()).await;
            }
            ctl_conn.close(0u32.into(), b"control stream ended");
        });
        // Datagrams: replies of UDP flows.
        let flows = session.udp_flows.clone();
        let dconn = conn.clone();
        tokio::spawn(async move {
            while let Ok(d) = dconn.read_datagram().await {
                let Ok((flow, payload)) = tether_proto::decode_datagram(&d) else {
                    continue;
                };
                let tx = lock(&flows).get(&flow).cloned();
                if let Some(tx) = tx {
                    let _ = tx.try_send(d.slice(d.len() - payload.len()..));
                }
            }
        });
        // Intercepted connections the manager passes on.
        let dial_conn = conn.clone();
        tokio::spawn(async move {
            while let Ok((send, recv)) = dial_conn.accept_bi().await {
                let dials = dials.clone();
                tokio::spawn(async move {
                    if let Err(error) = intercepted(send, recv, &dials).await {
                        debug!(%error, "Intercepted connection failed");
                    }
                });
            }
        });
        Ok(session)
    }

    /// Resolves once the session is over.
    pub async fn closed(&self) -> quinn::ConnectionError {
        self.conn.closed().await
    }

    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    pub fn close(&self) {
        self.requests.close();
        self.conn.close(0u32.into(), b"quit");
    }

    /// The QUIC connection's RTT and loss (see [`CarrierStats`](crate::control::CarrierStats)).
    pub fn carrier_stats(&self) -> crate::control::CarrierStats {
        let path = self.conn.stats().path;
        let remote = self.conn.remote_address();
        crate::control::CarrierStats {
            rtt_us: u64::try_from(path.rtt.as_micros()).unwrap_or(u64::MAX),
            sent_packets: path.sent_packets,
            lost_packets: path.lost_packets,
            cwnd: path.cwnd,
            local: source_address(remote),
            remote: Some(remote),
        }
    }

    /// The QUIC connection itself, for tools that speak the protocol below this API (the
    /// trust tests' hostile client).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    pub fn remote(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Asks the manager a DNS question (raw wire message in and out).
    pub async fn dns(&self, packet: Vec<u8>) -> Result<Vec<u8>, SessionError> {
        match self.requests.ask(DnsQuery { id: 0, packet }).await? {
            Reply::DnsAnswer(answer) => Ok(answer.packet),
            _ => Err(SessionError::NoAnswer),
        }
    }

    /// Sends an intercept request and waits for the manager's reply.
    async fn intercept_request(
        &self,
        request: impl Into<Request>,
    ) -> Result<InterceptState, SessionError> {
        match self.requests.ask(request).await? {
            Reply::InterceptReply(r) => r.result.map_err(|e| SessionError::Intercept(e.message)),
            _ => Err(SessionError::NoAnswer),
        }
    }

    /// Asks the manager for a credential for the agents of `namespace`; `nonce` must already be
    /// in that namespace's agent Secret (see `workload::request_agent_credential`).
    pub async fn agent_credential(
        &self,
        namespace: &str,
        nonce: String,
    ) -> Result<AgentCredential, SessionError> {
        let request = AgentCredentialRequest {
            req: 0,
            namespace: namespace.to_owned(),
            nonce,
        };
        match self.requests.ask(request).await? {
            Reply::AgentCredentialReply(r) => {
                r.result.map_err(|e| SessionError::Intercept(e.message))
            }
            _ => Err(SessionError::NoAnswer),
        }
    }

    /// Asks the manager to start an intercept (`req` is filled in).
    pub async fn create_intercept(
        &self,
        create: CreateIntercept,
    ) -> Result<tether_proto::InterceptInfo, SessionError> {
        let state = self.intercept_request(create).await?;
        state
            .intercepts
            .into_iter()
            .next()
            .ok_or(SessionError::NoAnswer)
    }

    /// Ends one of this session's intercepts.
    pub async fn remove_intercept(&self, name: &str) -> Result<(), SessionError> {
        let remove = RemoveIntercept {
            req: 0,
            name: name.to_owned(),
        };
        self.intercept_request(remove).await.map(drop)
    }

    /// Every intercept and agent in `namespace`.
    pub async fn list_intercepts(&self, namespace: &str) -> Result<InterceptState, SessionError> {
        let list = ListIntercepts {
            req: 0,
            namespace: namespace.to_owned(),
        };
        self.intercept_request(list).await
    }

    async fn open(
        &self,
        protocol: Protocol,
        dst: SocketAddr,
    ) -> Result<(u64, quinn::SendStream, quinn::RecvStream), SessionError> {
        let flow = self.next_flow.fetch_add(1, Ordering::Relaxed);
        let fut = async {
            let (mut send, mut recv) = self.conn.open_bi().await?;
            framed::write_message(
                &mut send,
                &Message::Open(Open {
                    flow,
                    protocol,
                    dst,
                }),
            )
            .await?;
            match framed::read_message(&mut recv).await? {
                Some(Message::OpenResult(r)) => match r.result {
                    Ok(()) => Ok((flow, send, recv)),
                    Err(e) => Err(SessionError::Open(e)),
                },
                _ => Err(SessionError::NoAnswer),
            }
        };
        tokio::time::timeout(OPEN_TIMEOUT, fut)
            .await
            .map_err(|_| SessionError::TimedOut)?
    }

    /// Starts a TCP flow to `dst` without waiting for the manager's dial: the stream may carry
    /// the connection's first bytes at once (the manager reads them after it has dialed). Follow
    /// with [`Session::opened`] on the receive half before reading from it.
    pub async fn start_tcp(
        &self,
        dst: SocketAddr,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), SessionError> {
        let flow = self.next_flow.fetch_add(1, Ordering::Relaxed);
        let (mut send, recv) = self.conn.open_bi().await?;
        let open = Message::Open(Open {
            flow,
            protocol: Protocol::Tcp,
            dst,
        });
        framed::write_message(&mut send, &open).await?;
        Ok((send, recv))
    }

    /// The manager's answer to a [`Session::start_tcp`].
    pub async fn opened(recv: &mut quinn::RecvStream) -> Result<(), SessionError> {
        let answer = async {
            match framed::read_message(recv).await? {
                Some(Message::OpenResult(r)) => r.result.map_err(SessionError::Open),
                _ => Err(SessionError::NoAnswer),
            }
        };
        tokio::time::timeout(OPEN_TIMEOUT, answer)
            .await
            .map_err(|_| SessionError::TimedOut)?
    }

    /// Opens a TCP flow to `dst` through the manager.
    pub async fn open_tcp(
        &self,
        dst: SocketAddr,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), SessionError> {
        let (_, send, recv) = self.open(Protocol::Tcp, dst).await?;
        Ok((send, recv))
    }

    /// Opens a UDP flow to `dst` through the manager.
    pub async fn open_udp(&self, dst: SocketAddr) -> Result<UdpFlow, SessionError> {
        let (flow, send, mut recv) = self.open(Protocol::Udp, dst).await?;
        let (tx, rx) = mpsc::channel(256);
        lock(&self.udp_flows).insert(flow, tx.clone());
        // Replies too big for a datagram come as frames on the stream.
        let flows = self.udp_flows.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = framed::read_message(&mut recv).await {
                if let Message::UdpPacket(p) = msg {
                    let _ = tx.send(Bytes::from(p.payload)).await;
                }
            }
            lock(&flows).remove(&flow);
        });
        Ok(UdpFlow {
            id: flow,
            conn: self.conn.clone(),
            send: tokio::sync::Mutex::new(send),
            replies: tokio::sync::Mutex::new(rx),
            flows: self.udp_flows.clone(),
        })
    }
}

/// Serves one intercepted connection: connects to the developer's local port for the intercept
/// and splices. Only intercepts this daemon created are dialed, and only to the address it chose.
async fn intercepted(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    dials: &DialTable,
) -> Result<(), SessionError> {
    let dial = match framed::read_message(&mut recv).await? {
        Some(Message::Dial(d)) => d,
        _ => return Err(SessionError::NoAnswer),
    };
    let target = lock(dials).get(&dial.intercept).copied();
    let connected = match target {
        None => Err(OpenError {
            code: ErrorCode::NotPermitted,
            message: format!("this workstation holds no intercept {}", dial.intercept),
        }),
        Some(addr) => {
            match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => Err(OpenError {
                    code: if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        ErrorCode::ConnectionRefused
                    } else {
                        ErrorCode::Other
                    },
                    message: format!("nothing answers on {addr} on the workstation: {e}"),
                }),
                Err(_) => Err(OpenError {
                    code: ErrorCode::TimedOut,
                    message: format!("connecting to {addr} on the workstation timed out"),
                }),
            }
        }
    };
    let (stream, result) = match connected {
        Ok(stream) => (Some(stream), Ok(())),
        Err(e) => (None, Err(e)),
    };
    framed::write_message(&mut send, &Message::DialResult(DialResult { result })).await?;
    let Some(mut stream) = stream else {
        let _ = send.finish();
        return Ok(());
    };
    let _ = stream.set_nodelay(true);
    let mut quic = tokio::io::join(recv, send);
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut quic).await;
    let (_, mut send) = quic.into_inner();
    let _ = send.finish();
    Ok(())
}

/// A UDP flow through the manager.
#[derive(Debug)]
pub struct UdpFlow {
    id: u64,
    conn: quinn::Connection,
    send: tokio::sync::Mutex<quinn::SendStream>,
    replies: tokio::sync::Mutex<mpsc::Receiver<Bytes>>,
    flows: UdpFlows,
}

impl UdpFlow {
    /// Sends one datagram: as a QUIC datagram when it fits, else as a frame on the flow's stream.
    pub async fn send(&self, payload: &[u8]) -> Result<(), SessionError> {
        let fits = self
            .conn
            .max_datagram_size()
            .is_some_and(|max| payload.len() + tether_proto::datagram_overhead(self.id) <= max);
        if fits {
            let mut d = BytesMut::with_capacity(payload.len() + 8);
            if tether_proto::encode_datagram(self.id, payload, &mut d).is_ok() {
                if let Err(e) = self.conn.send_datagram(d.freeze()) {
                    warn!(error = %e, "Datagram not sent");
                }
            }
            return Ok(());
        }
        let msg = Message::UdpPacket(UdpPacket {
            flow: self.id,
            payload: payload.to_vec(),
        });
        framed::write_message(&mut *self.send.lock().await, &msg).await?;
        Ok(())
    }

    /// The next reply; `None` when the flow is over.
    pub async fn recv(&self) -> Option<Bytes> {
        self.replies.lock().await.recv().await
    }
}

impl Drop for UdpFlow {
    fn drop(&mut self) {
        lock(&self.flows).remove(&self.id);
        if let Ok(mut send) = self.send.try_lock() {
            let _ = send.finish();
        }
    }
}

/// The source address the system picks for packets to `remote` now (the tunnel's socket is bound
/// to the wildcard address, so each packet gets the one the routes give at the time). A
/// client's QUIC connection does not learn its own address, so the kernel is asked: a UDP
/// socket's `connect` chooses the route and sends nothing.
fn source_address(remote: SocketAddr) -> Option<std::net::IpAddr> {
    let unspecified: SocketAddr = if remote.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(unspecified).ok()?;
    socket.connect(remote).ok()?;
    Some(socket.local_addr().ok()?.ip())
}
