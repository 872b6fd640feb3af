//! The manager's side of the agent link: one QUIC connection per sidecar agent.
//!
//! The agent opens a control stream and sends `Hello` (role agent) and [`AgentHello`]; the
//! manager answers `Welcome` and from then on sends the workload's intercepts
//! ([`AgentIntercepts`](tether_proto::AgentIntercepts)) whenever they change, and answers pings.
//!
//! Every further bidirectional stream from the agent is one intercepted connection: it starts
//! with [`Dial`], which [`relay_dial`] passes on to the client holding the intercept, on a stream
//! the manager opens on that client's connection. The client answers [`DialResult`] once the
//! developer's process has accepted; the answer goes back to the agent and the two streams are
//! then spliced.

use std::sync::Arc;

use tether_proto::{
    AgentHello, AgentInfo, Dial, DialResult, ErrorCode, Message, OpenError, Pong, Welcome,
    PROTOCOL_VERSION,
};
use tether_tunnel::{framed, quinn};
use tokio::sync::mpsc;
use tracing::{debug, debug_span, info, Instrument};

use super::{SessionError, Shared};

/// Serves one agent until its connection ends.
pub(super) async fn session(
    conn: quinn::Connection,
    shared: Arc<Shared>,
    agent_id: u64,
    credential_namespace: &str,
) -> Result<(), SessionError> {
    let (mut ctl_send, mut ctl_recv, hello) = super::accept_hello(&conn).await?;
    // An agent credential is issued for one namespace: its agents serve no other.
    if hello.namespace != credential_namespace {
        let error = Message::Error(tether_proto::Error {
            code: ErrorCode::NotPermitted,
            message: format!(
                "this agent credential is for namespace {credential_namespace}, not {}: \
                 the Secret tether-agent-tls was copied from another namespace; delete it and \
                 intercept again",
                hello.namespace
            ),
        });
        let _ = framed::write_message(&mut ctl_send, &error).await;
        let _ = ctl_send.finish();
        // Let the answer arrive before the connection goes.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ctl_send.stopped()).await;
        return Err(SessionError::WrongNamespace {
            claimed: hello.namespace,
            credential: credential_namespace.to_owned(),
        });
    }
    let agent: AgentHello = match framed::read_message(&mut ctl_recv).await? {
        Some(Message::AgentHello(a)) => a,
        Some(_) => return Err(SessionError::NoAgentHello("another message")),
        None => return Err(SessionError::NoAgentHello("nothing")),
    };
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        session_id: format!("agent-{agent_id}"),
        cluster_domain: shared.state.cluster_domain.clone(),
        subnets: Default::default(),
    };
    framed::write_message(&mut ctl_send, &Message::Welcome(welcome)).await?;
    let info = AgentInfo {
        namespace: hello.namespace,
        workload: agent.workload,
        pod: agent.pod,
        ports: agent.ports,
    };
    info!(namespace = %info.namespace, workload = %info.workload, pod = %info.pod, ports = ?info.ports, "Agent connected");

    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let workload = (info.namespace.clone(), info.workload.clone());
    shared.registry().agent_joined(agent_id, info, tx.clone());
    let writer = async move {
        while let Some(msg) = rx.recv().await {
            if framed::write_message(&mut ctl_send, &msg).await.is_err() {
                break;
            }
        }
    };
    let control = async {
        loop {
            match framed::read_message(&mut ctl_recv).await? {
                None | Some(Message::Bye(_)) => return Err::<(), _>(SessionError::Bye),
                Some(Message::Ping(p)) => {
                    let _ = tx.send(Message::Pong(Pong { seq: p.seq }));
                }
                Some(other) => debug!(kind = other.kind(), "Ignored an agent message"),
            }
        }
    };
    let dials = async {
        loop {
            let (send, recv) = conn.accept_bi().await?;
            let shared = shared.clone();
            let workload = workload.clone();
            tokio::spawn(async move {
                if let Err(error) = relay_dial(&shared, &workload, send, recv).await {
                    debug!(%error, "Intercepted connection failed");
                }
            });
        }
    };
    let result = tokio::select! {
        r = control => r,
        r = dials => r,
        () = writer => Ok(()),
    };
    shared.registry().agent_left(agent_id);
    conn.close(0u32.into(), b"bye");
    result
}

/// Why an intercepted connection could not be passed on.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("stream")]
    Frame(#[from] framed::FrameIoError),
    #[error("the agent sent no Dial")]
    NoDial,
    #[error("client connection")]
    Connection(#[from] quinn::ConnectionError),
}

/// Passes one intercepted connection from an agent to the client holding the intercept. An
/// agent reaches only the intercepts of the workload it said it serves.
async fn relay_dial(
    shared: &Shared,
    workload: &(String, String),
    mut agent_send: quinn::SendStream,
    mut agent_recv: quinn::RecvStream,
) -> Result<(), DialError> {
    let dial: Dial = match framed::read_message(&mut agent_recv).await? {
        Some(Message::Dial(d)) => d,
        _ => return Err(DialError::NoDial),
    };
    let client = {
        let session = shared
            .registry()
            .get(dial.intercept)
            .filter(|i| (&i.namespace, &i.workload) == (&workload.0, &workload.1))
            .map(|i| i.session_id.clone());
        session.and_then(|s| shared.clients().get(&s).cloned())
    };
    let Some(client) = client else {
        // The intercept ended while the agent was dialing: the agent sends the request to the
        // app instead.
        let refused = DialResult {
            result: Err(OpenError {
                code: ErrorCode::HostUnreachable,
                message: format!("intercept {} has ended", dial.intercept),
            }),
        };
        framed::write_message(&mut agent_send, &Message::DialResult(refused)).await?;
        let _ = agent_send.finish();
        return Ok(());
    };
    let span = debug_span!("dial", intercept = dial.intercept);
    async move {
        let (mut client_send, mut client_recv) = client.open_bi().await?;
        framed::write_message(&mut client_send, &Message::Dial(dial)).await?;
        let answer = match framed::read_message(&mut client_recv).await? {
            Some(Message::DialResult(r)) => r,
            _ => DialResult {
                result: Err(OpenError {
                    code: ErrorCode::Other,
                    message: "the client closed the stream".to_owned(),
                }),
            },
        };
        let ok = answer.result.is_ok();
        framed::write_message(&mut agent_send, &Message::DialResult(answer)).await?;
        if !ok {
            let _ = agent_send.finish();
            return Ok(());
        }
        splice(agent_send, agent_recv, client_send, client_recv).await;
        Ok(())
    }
    .instrument(span)
    .await
}

/// Copies both ways between two streams; an end (FIN) is passed on as an end, a failure as a
/// reset.
pub(super) async fn splice(
    mut a_send: quinn::SendStream,
    mut a_recv: quinn::RecvStream,
    mut b_send: quinn::SendStream,
    mut b_recv: quinn::RecvStream,
) {
    let forward = async {
        match tokio::io::copy(&mut a_recv, &mut b_send).await {
            Ok(_) => {
                let _ = b_send.finish();
            }
            Err(_) => {
                let _ = b_send.reset(0u32.into());
                let _ = a_recv.stop(0u32.into());
            }
        }
    };
    let backward = async {
        match tokio::io::copy(&mut b_recv, &mut a_send).await {
            Ok(_) => {
                let _ = a_send.finish();
            }
            Err(_) => {
                let _ = a_send.reset(0u32.into());
                let _ = b_recv.stop(0u32.into());
            }
        }
    };
    tokio::join!(forward, backward);
}
