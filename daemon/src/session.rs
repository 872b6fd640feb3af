//! The daemon's side of one QUIC session with the traffic manager: the control stream (version
//! handshake, DNS, keep-alives, subnet and namespace updates) and opening TCP and UDP flows.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use tether_proto::{AgentCredential, AgentCredentialRequest};
use tether_proto::{
    CreateIntercept, DialResult, DnsQuery, ErrorCode, Hello, InterceptState, ListIntercepts,
    Message, Open, OpenError, Ping, Protocol, RemoveIntercept, Subnets, UdpPacket, Welcome,
    PROTOCOL_VERSION,
};
use tether_tunnel::{framed, quinn};
use tokio::sync::{mpsc, oneshot, watch};
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
    /// The manager refused the session.
    #[error("the traffic manager refused the session: {0}")]
    Refused(String),
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

type Pending<T> = Arc<Mutex<HashMap<u32, oneshot::Sender<T>>>>;
type UdpFlows = Arc<Mutex<HashMap<u64, mpsc::Sender<Bytes>>>>;

/// A connected session.
#[derive(Debug, Clone)]
pub struct Session {
    conn: quinn::Connection,
    ctl_tx: mpsc::Sender<Message>,
    dns_pending: Pending<Vec<u8>>,
    intercept_pending: Pending<Result<InterceptState, tether_proto::Error>>,
    credential_pending: Pending<Result<AgentCredential, tether_proto::Error>>,
    udp_flows: UdpFlows,
    next_flow: Arc<AtomicU64>,
    /// Ids of control-stream requests (DNS queries, intercept requests).
    next_request: Arc<AtomicU32>,
    /// What the manager said at the start.
    pub welcome: Arc<Welcome>,
    /// Current subnets (updated by the manager).
    pub subnets_rx: watch::Receiver<Subnets>,
    /// The cluster's namespaces (empty until the manager says; an older one never does).
    pub namespaces_rx: watch::Receiver<Arc<BTreeSet<String>>>,
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
        let (mut send, mut recv) = conn.open_bi().await?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            client,
            namespace,
            role: tether_proto::Role::Client,
        };
        framed::write_message(&mut send, &Message::Hello(hello)).await?;
        let welcome = match framed::read_message(&mut recv).await? {
            Some(Message::Welcome(w)) => w,
            Some(Message::Error(e)) => return Err(SessionError::Refused(e.message)),
            _ => return Err(SessionError::NoAnswer),
        };
        let (subnets_tx, subnets_rx) = watch::channel(welcome.subnets.clone());
        let (namespaces_tx, namespaces_rx) = watch::channel(Arc::default());
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<Message>(256);
        let session = Session {
            conn: conn.clone(),
            ctl_tx,
            dns_pending: Arc::default(),
            intercept_pending: Arc::default(),
            credential_pending: Arc::default(),
            udp_flows: Arc::default(),
            next_flow: Arc::new(AtomicU64::new(1)),
            next_request: Arc::new(AtomicU32::new(1)),
            welcome: Arc::new(welcome),
            subnets_rx,
            namespaces_rx,
        };
        // Writer: the only user of the control stream's send half.
        tokio::spawn(async move {
            while let Some(msg) = ctl_rx.recv().await {
                if framed::write_message(&mut send, &msg).await.is_err() {
                    break;
                }
            }
        });
        // Reader: DNS answers, intercept replies, subnet and namespace updates.
        let pending = session.dns_pending.clone();
        let intercept_pending = session.intercept_pending.clone();
        let credential_pending = session.credential_pending.clone();
        let reader_conn = conn.clone();
        tokio::spawn(async move {
            loop {
                match framed::read_message(&mut recv).await {
                    Ok(Some(Message::DnsAnswer(a))) => {
                        if let Some(tx) = lock(&pending).remove(&a.id) {
                            let _ = tx.send(a.packet);
                        }
                    }
                    Ok(Some(Message::Subnets(s))) => {
                        let _ = subnets_tx.send(s);
                    }
                    Ok(Some(Message::Namespaces(n))) => {
                        let _ = namespaces_tx.send(Arc::new(n.names.into_iter().collect()));
                    }
                    Ok(Some(Message::InterceptReply(r))) => {
                        if let Some(tx) = lock(&intercept_pending).remove(&r.req) {
                            let _ = tx.send(r.result);
                        }
                    }
                    Ok(Some(Message::AgentCredentialReply(r))) => {
                        if let Some(tx) = lock(&credential_pending).remove(&r.req) {
                            let _ = tx.send(r.result);
                        }
                    }
                    Ok(Some(Message::Pong(_))) => {}
                    Ok(Some(other)) => debug!(kind = other.kind(), "Ignored a control message"),
                    Ok(None) | Err(_) => {
                        reader_conn.close(0u32.into(), b"control stream ended");
                        break;
                    }
                }
            }
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
        // Keep-alive on the control stream (QUIC keeps the path alive; this checks the manager).
        let ping_tx = session.ctl_tx.clone();
        tokio::spawn(async move {
            let mut seq = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                seq += 1;
                if ping_tx.send(Message::Ping(Ping { seq })).await.is_err() {
                    break;
                }
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
        let _ = self.ctl_tx.try_send(Message::Bye(tether_proto::Bye {}));
        self.conn.close(0u32.into(), b"quit");
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
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.dns_pending).insert(id, tx);
        let sent = self
            .ctl_tx
            .send(Message::DnsQuery(DnsQuery { id, packet }))
            .await;
        let result = match sent {
            Err(_) => Err(SessionError::NoAnswer),
            Ok(()) => match tokio::time::timeout(DNS_TIMEOUT, rx).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(SessionError::NoAnswer),
                Err(_) => Err(SessionError::TimedOut),
            },
        };
        lock(&self.dns_pending).remove(&id);
        result
    }

    /// Sends a control-stream request and waits for the manager's reply, which the reader task
    /// delivers through `pending`.
    async fn request<T>(
        &self,
        pending: &Pending<Result<T, tether_proto::Error>>,
        make: impl FnOnce(u32) -> Message,
    ) -> Result<T, SessionError> {
        let req = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(pending).insert(req, tx);
        let result = match self.ctl_tx.send(make(req)).await {
            Err(_) => Err(SessionError::NoAnswer),
            Ok(()) => match tokio::time::timeout(INTERCEPT_TIMEOUT, rx).await {
                Ok(Ok(Ok(answer))) => Ok(answer),
                Ok(Ok(Err(e))) => Err(SessionError::Intercept(e.message)),
                Ok(Err(_)) => Err(SessionError::NoAnswer),
                Err(_) => Err(SessionError::TimedOut),
            },
        };
        lock(pending).remove(&req);
        result
    }

    async fn intercept_request(
        &self,
        make: impl FnOnce(u32) -> Message,
    ) -> Result<InterceptState, SessionError> {
        self.request(&self.intercept_pending, make).await
    }

    /// Asks the manager for a credential for the agents of `namespace`; `nonce` must already be
    /// in that namespace's agent Secret (see `workload::request_agent_credential`).
    pub async fn agent_credential(
        &self,
        namespace: &str,
        nonce: String,
    ) -> Result<AgentCredential, SessionError> {
        self.request(&self.credential_pending, |req| {
            Message::AgentCredentialRequest(AgentCredentialRequest {
                req,
                namespace: namespace.to_owned(),
                nonce,
            })
        })
        .await
    }

    /// Asks the manager to start an intercept (`req` is filled in).
    pub async fn create_intercept(
        &self,
        mut create: CreateIntercept,
    ) -> Result<tether_proto::InterceptInfo, SessionError> {
        let state = self
            .intercept_request(|req| {
                create.req = req;
                Message::CreateIntercept(create)
            })
            .await?;
        state
            .intercepts
            .into_iter()
            .next()
            .ok_or(SessionError::NoAnswer)
    }

    /// Ends one of this session's intercepts.
    pub async fn remove_intercept(&self, name: &str) -> Result<(), SessionError> {
        self.intercept_request(|req| {
            Message::RemoveIntercept(RemoveIntercept {
                req,
                name: name.to_owned(),
            })
        })
        .await
        .map(drop)
    }

    /// Every intercept and agent in `namespace`.
    pub async fn list_intercepts(&self, namespace: &str) -> Result<InterceptState, SessionError> {
        self.intercept_request(|req| {
            Message::ListIntercepts(ListIntercepts {
                req,
                namespace: namespace.to_owned(),
            })
        })
        .await
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
