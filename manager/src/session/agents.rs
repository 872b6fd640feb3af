//! The manager's side of the agent link: one QUIC connection per sidecar agent.
//!
//! The agent opens a control stream and sends `Hello` (role agent) and [`AgentHello`]; the
//! manager answers `Welcome` and from then on sends the workload's intercepts
//! ([`AgentIntercepts`](tether_proto::AgentIntercepts)) whenever they change, and answers pings
//! (the session does: at most a few pongs wait for an agent that does not read).
//!
//! Every further bidirectional stream from the agent is one intercepted connection: it starts
//! with [`Dial`], which [`relay_dial`] passes on to the client holding the intercept, on a stream
//! the manager opens on that client's connection. The client answers [`DialResult`] once the
//! developer's process has accepted; the answer goes back to the agent and the two streams are
//! then spliced.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use tether_proto::session::Event;
use tether_proto::{
    AgentHello, AgentInfo, AgentIntercepts, Dial, DialResult, ErrorCode, Message, OpenError,
    Welcome, AGENT_TOKEN_AUDIENCE, PROTOCOL_VERSION,
};
use tether_tunnel::control::now;
use tether_tunnel::{framed, quinn};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tracing::{debug, debug_span, info, Instrument};

use super::control::{self, Ctl};
use super::{SessionError, Shared};
use crate::audit::{Action, Record};
use crate::authz::Subject;

/// How long an agent may take to send its `AgentHello` after its `Hello` (it sends both at
/// once).
const AGENT_HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long an agent's new stream may take to send its `Dial`.
const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long after an agent links the manager waits for a replace intercept on its workload to
/// come back (a daemon reconnecting after the manager restarted re-creates its intercepts well
/// within it) before it puts a replaced container back.
const ORPHANED_REPLACE_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves one agent until its connection ends.
pub(super) async fn session(
    conn: quinn::Connection,
    shared: Arc<Shared>,
    agent_id: u64,
    credential_namespace: &str,
    remote: SocketAddr,
) -> Result<(), SessionError> {
    let (mut ctl, hello) = control::accept_hello(&conn).await?;
    let received = SystemTime::now();
    // Recorded as the credential's holder: the agents of that namespace.
    let refused = |pod: &str, why: &str| {
        let agent = Subject {
            user: format!("{}/agent:{credential_namespace}", crate::audit::GROUP),
            groups: Vec::new(),
        };
        shared.state.audit.record(
            Record::new(Action::AgentRefused, &agent, received)
                .peer(remote.ip(), "")
                .object(Some(&hello.namespace), pod)
                .refused(why),
        );
    };
    // An agent credential is issued for one namespace: its agents serve no other.
    if hello.namespace != credential_namespace {
        let message = format!(
            "this agent credential is for namespace {credential_namespace}, not {}: the Secret \
             tether-agent-tls was copied from another namespace; delete it and intercept again",
            hello.namespace
        );
        refused("", &message);
        control::refuse(&mut ctl, message).await;
        return Err(SessionError::WrongNamespace {
            claimed: hello.namespace,
            credential: credential_namespace.to_owned(),
        });
    }
    let agent = agent_hello(&mut ctl).await?;
    // And the agent is the pod it says it is: the API server vouches for its pod's token.
    let review = review_token(&shared.state.client, &agent.token).await;
    if let Err(why) =
        review.and_then(|status| check_pod_token(&status, &hello.namespace, &agent.pod))
    {
        let message = format!(
            "the agent is not pod {}/{}: {why}",
            hello.namespace, agent.pod
        );
        refused(&agent.pod, &message);
        control::refuse(&mut ctl, message).await;
        return Err(SessionError::NotThePod(why));
    }
    // And the pod belongs to the workload the agent says it serves: intercepts of another
    // workload (and their holders' laptops) are none of its business.
    if let Err(why) = check_owner(&shared.state.client, &hello.namespace, &agent).await {
        let message = format!(
            "the agent's pod {}/{} is not part of {}: {why}",
            hello.namespace, agent.pod, agent.workload
        );
        refused(&agent.pod, &message);
        control::refuse(&mut ctl, message).await;
        return Err(SessionError::NotThePod(why));
    }
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        session_id: format!("agent-{agent_id}"),
        cluster_domain: shared.state.cluster_domain.clone(),
        subnets: Default::default(),
    };
    ctl.session_mut().accept(now(), welcome)?;
    let info = AgentInfo {
        namespace: hello.namespace,
        workload: agent.workload,
        pod: agent.pod,
        ports: agent.ports,
    };
    info!(namespace = %info.namespace, workload = %info.workload, pod = %info.pod, ports = ?info.ports, "Agent connected");

    // What waits for the agent is bounded: the table is only ever the latest one (it is taken
    // from the watch only while the agent reads), and the session queues a few pongs at most.
    let (table_tx, mut table_rx) = watch::channel(AgentIntercepts {
        intercepts: Vec::new(),
    });
    let workload = (info.namespace.clone(), info.workload.clone());
    shared.registry().agent_joined(agent_id, info, table_tx);
    shared.agent_conns().insert(agent_id, conn.clone());
    // Only a manager that just started can have lost a replace it knew nothing of; later, a
    // session that ends restores its own (see `super::restore_unless_replaced_again`).
    if shared.started.elapsed() < ORPHANED_REPLACE_GRACE {
        tokio::spawn(restore_orphaned_replace(shared.clone(), workload.clone()));
    }
    let dials = async {
        loop {
            let (send, recv) = conn.accept_bi().await?;
            let shared = shared.clone();
            let workload = workload.clone();
            tokio::spawn(async move {
                shared.state.metrics.relayed_connections.inc();
                if let Err(error) = relay_dial(&shared, &workload, send, recv).await {
                    debug!(%error, "Intercepted connection failed");
                }
            });
        }
    };
    tokio::pin!(dials);
    let result = loop {
        tokio::select! {
            event = ctl.next_event() => match event {
                Ok(Event::Closed(reason)) => break Err(control::ended(reason)),
                Ok(Event::Message(Message::RouteStats(stats))) => {
                    shared.registry().agent_stats(agent_id, stats)
                }
                Ok(Event::Message(other)) => debug!(kind = other.kind(), "Ignored an agent message"),
                Ok(Event::Skipped { kind, error }) => {
                    debug!(kind, %error, "Skipped a malformed agent frame")
                }
                Ok(_) => {}
                Err(error) => break Err(error.into()),
            },
            changed = table_rx.changed(), if ctl.is_writable() => match changed {
                Ok(()) => {
                    let table = table_rx.borrow_and_update().clone();
                    let _ = ctl.session_mut().send(table);
                }
                Err(_) => break Ok(()),
            },
            r = &mut dials => break r,
        }
    };
    shared.registry().agent_left(agent_id);
    shared.agent_conns().remove(&agent_id);
    conn.close(0u32.into(), b"bye");
    result
}

/// Waits (within [`AGENT_HELLO_TIMEOUT`]) for the agent's `AgentHello`, which comes right
/// behind its `Hello`.
async fn agent_hello(ctl: &mut Ctl) -> Result<AgentHello, SessionError> {
    let first = async {
        loop {
            match ctl.next_event().await? {
                Event::Message(Message::AgentHello(agent)) => return Ok(agent),
                Event::Message(_) => return Err(SessionError::NoAgentHello("another message")),
                Event::Skipped { .. } => {
                    return Err(SessionError::NoAgentHello("an undecodable frame"))
                }
                Event::Closed(_) => return Err(SessionError::NoAgentHello("nothing")),
                _ => {}
            }
        }
    };
    tokio::time::timeout(AGENT_HELLO_TIMEOUT, first)
        .await
        .unwrap_or(Err(SessionError::NoAgentHello("nothing")))
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
    let first = tokio::time::timeout(DIAL_TIMEOUT, framed::read_message(&mut agent_recv)).await;
    let dial: Dial = match first {
        Ok(Ok(Some(Message::Dial(d)))) => d,
        Ok(Err(error)) => return Err(error.into()),
        Ok(Ok(_)) | Err(_) => {
            let _ = agent_send.reset(1u32.into());
            return Err(DialError::NoDial);
        }
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
    a_send: quinn::SendStream,
    a_recv: quinn::RecvStream,
    b_send: quinn::SendStream,
    b_recv: quinn::RecvStream,
) {
    tokio::join!(pass_on(a_recv, b_send), pass_on(b_recv, a_send));
}

/// The most a relayed stream carries in one write.
const RELAY_CHUNK: usize = 64 * 1024;

/// Moves what arrives on `from` to `to`, in writes of up to [`RELAY_CHUNK`] that QUIC then sends
/// without copying them again. Not the received chunks as they are, though that would save a
/// copy: each is one packet's worth, and a stream's send buffer finds the bytes of each packet
/// it sends by walking its unacknowledged writes one by one, so thousands of small ones cost
/// more than the copy (measured on a file read through the manager: `SendBuffer::get` became
/// its hottest function). `tokio::io::copy` did both: it copied twice, 8 KiB at a time.
async fn pass_on(mut from: quinn::RecvStream, mut to: quinn::SendStream) {
    loop {
        // One read takes every chunk already received, up to the buffer's size.
        let mut buf = BytesMut::with_capacity(RELAY_CHUNK);
        match from.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = to.finish();
                return;
            }
            Ok(_) => {
                if to.write_chunk(buf.freeze()).await.is_err() {
                    let _ = from.stop(0u32.into());
                    return;
                }
            }
            Err(_) => {
                let _ = to.reset(0u32.into());
                let _ = from.stop(0u32.into());
                return;
            }
        }
    }
}

/// Asks the API server whose `token` is (audience [`AGENT_TOKEN_AUDIENCE`]).
async fn review_token(client: &kube::Client, token: &str) -> Result<TokenReviewStatus, String> {
    if token.is_empty() {
        return Err("it sent no pod token".into());
    }
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(vec![AGENT_TOKEN_AUDIENCE.to_owned()]),
        },
        ..Default::default()
    };
    let reviews: kube::Api<TokenReview> = kube::Api::all(client.clone());
    let reviewed = reviews
        .create(&kube::api::PostParams::default(), &review)
        .await
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 403 => "the traffic manager may not review tokens \
                 (its ClusterRole tether-manager lacks tokenreviews; reinstall with `tether install`)"
                .to_owned(),
            _ => format!("the token review failed: {e}"),
        })?;
    reviewed
        .status
        .ok_or_else(|| "the token review came back without a status".to_owned())
}

/// Whether `agent.pod` is a pod of `agent.workload` (`Kind/name`), by its controller owner (and,
/// for a Deployment, its ReplicaSet's).
async fn check_owner(
    client: &kube::Client,
    namespace: &str,
    agent: &AgentHello,
) -> Result<(), String> {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::Pod;
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), namespace);
    let pod = pods
        .get(&agent.pod)
        .await
        .map_err(|e| format!("reading the pod: {e}"))?;
    let pod_owner = controller(&pod.metadata);
    let replica_set_owner = match (&pod_owner, agent.workload.split_once('/')) {
        (Some(("ReplicaSet", rs)), Some(("Deployment", _))) => {
            let sets: kube::Api<ReplicaSet> = kube::Api::namespaced(client.clone(), namespace);
            let set = sets
                .get(rs)
                .await
                .map_err(|e| format!("reading its ReplicaSet {rs}: {e}"))?;
            controller(&set.metadata).map(|(k, n)| (k.to_owned(), n.to_owned()))
        }
        _ => None,
    };
    let replica_set_owner = replica_set_owner
        .as_ref()
        .map(|(k, n)| (k.as_str(), n.as_str()));
    owned_by(&agent.workload, pod_owner, replica_set_owner)
}

/// The kind and name of the controller among an object's owners.
fn controller(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<(&str, &str)> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.name.as_str()))
}

/// Whether a pod controlled by `pod_owner` (whose own controller, if it is a ReplicaSet, is
/// `replica_set_owner`) belongs to `workload`, `Kind/name`.
fn owned_by(
    workload: &str,
    pod_owner: Option<(&str, &str)>,
    replica_set_owner: Option<(&str, &str)>,
) -> Result<(), String> {
    let Some((kind, name)) = workload.split_once('/') else {
        return Err(format!("{workload:?} is not Kind/name"));
    };
    let found = match (kind, pod_owner) {
        ("Deployment", Some(("ReplicaSet", _))) => replica_set_owner,
        (_, owner) => owner,
    };
    match found {
        Some(owner) if owner == (kind, name) => Ok(()),
        Some((k, n)) => Err(format!("it belongs to {k}/{n}")),
        None => Err("it has no controller".to_owned()),
    }
}

/// The key of a reviewed user's extra that names the pod a service-account token is bound to.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// Whether a token review says the token is a service-account token of `namespace`, for
/// [`AGENT_TOKEN_AUDIENCE`], bound to the pod `pod`.
fn check_pod_token(status: &TokenReviewStatus, namespace: &str, pod: &str) -> Result<(), String> {
    if status.authenticated != Some(true) {
        return Err(match status.error.as_deref() {
            Some(error) if !error.is_empty() => format!("its token was not accepted: {error}"),
            _ => "its token was not accepted".to_owned(),
        });
    }
    // The review asked for our audience; an answer that names none (an API server or webhook
    // authenticator that ignored the question) proves nothing about it.
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == AGENT_TOKEN_AUDIENCE) {
        return Err(format!(
            "its token is not for audience {AGENT_TOKEN_AUDIENCE}"
        ));
    }
    let user = status.user.as_ref().ok_or("the review names no user")?;
    let username = user.username.as_deref().unwrap_or_default();
    let account_namespace = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, _)| ns);
    if account_namespace != Some(namespace) {
        return Err(format!(
            "its token belongs to {username}, not to a service account of namespace {namespace}"
        ));
    }
    let bound = user
        .extra
        .as_ref()
        .and_then(|extra| extra.get(POD_NAME_EXTRA))
        .map(Vec::as_slice);
    match bound {
        Some([name]) if name == pod => Ok(()),
        Some([name]) => Err(format!("its token is bound to pod {name}")),
        _ => Err("its token is not bound to a pod".to_owned()),
    }
}

/// A workload whose container was taken out by a replace intercept the manager no longer knows
/// (the manager restarted, and the daemon that held it never came back) gets the container back,
/// [`ORPHANED_REPLACE_GRACE`] after one of its agents linked (in the manager's first
/// [`ORPHANED_REPLACE_GRACE`], when agents link again after a restart), if no replace intercept
/// is on it by then. The restore only ever applies the workload's own `tether.dev/replaced` record, and
/// does nothing when there is none.
async fn restore_orphaned_replace(shared: Arc<Shared>, (namespace, workload): (String, String)) {
    tokio::time::sleep(ORPHANED_REPLACE_GRACE).await;
    let replaced = shared
        .registry()
        .on_workload(&namespace, &workload)
        .iter()
        .any(|i| i.mode == tether_proto::InterceptMode::Replace);
    if replaced {
        return;
    }
    let manager = Subject {
        user: format!("{}/manager", crate::audit::GROUP),
        groups: Vec::new(),
    };
    let record = Record::new(Action::ContainerRestored, &manager, SystemTime::now())
        .object(Some(&namespace), &workload)
        .note("workload", &workload)
        .note(
            "reason",
            "no replace intercept came back for it after the traffic manager restarted",
        );
    super::put_back_container(&shared, &namespace, &workload, record).await;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(username: &str, pod: Option<&str>, audiences: &[&str]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(username.to_owned()),
                extra: pod
                    .map(|p| BTreeMap::from([(POD_NAME_EXTRA.to_owned(), vec![p.to_owned()])])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const SA: &str = "system:serviceaccount:shop:default";

    #[test]
    fn an_agent_serves_only_its_own_pods_workload() {
        let rs = Some(("ReplicaSet", "orders-7c9"));
        let deploy = Some(("Deployment", "orders"));
        assert_eq!(owned_by("Deployment/orders", rs, deploy), Ok(()));
        assert_eq!(
            owned_by("StatefulSet/db", Some(("StatefulSet", "db")), None),
            Ok(())
        );
        assert_eq!(owned_by("ReplicaSet/orders-7c9", rs, None), Ok(()));
        let refused = |w, p, r| owned_by(w, p, r).unwrap_err();
        assert!(
            refused("Deployment/payments", rs, deploy).contains("Deployment/orders"),
            "another Deployment's pod"
        );
        assert!(refused("StatefulSet/orders", rs, None).contains("ReplicaSet/orders-7c9"));
        assert!(refused("Deployment/orders", None, None).contains("no controller"));
        // A bare ReplicaSet (no Deployment above it) is not a Deployment's.
        assert!(refused("Deployment/orders", rs, None).contains("no controller"));
        assert!(refused("orders", rs, deploy).contains("Kind/name"));
    }

    #[test]
    fn a_token_bound_to_the_pod_in_the_namespace_passes() {
        assert_eq!(
            check_pod_token(
                &status(SA, Some("orders-1"), &["tether"]),
                "shop",
                "orders-1"
            ),
            Ok(())
        );
    }

    #[test]
    fn every_other_token_is_refused() {
        let refused = |s: TokenReviewStatus| check_pod_token(&s, "shop", "orders-1").unwrap_err();
        assert!(
            refused(status(SA, Some("orders-2"), &["tether"])).contains("bound to pod orders-2")
        );
        assert!(refused(status(SA, None, &["tether"])).contains("not bound to a pod"));
        let other = "system:serviceaccount:web:default";
        assert!(refused(status(other, Some("orders-1"), &["tether"])).contains(other));
        assert!(refused(status("alice", Some("orders-1"), &["tether"])).contains("alice"));
        assert!(refused(status(SA, Some("orders-1"), &["kubernetes"])).contains("audience"));
        let mut no_audiences = status(SA, Some("orders-1"), &["tether"]);
        no_audiences.audiences = None;
        assert!(refused(no_audiences).contains("audience"));
        let mut rejected = status(SA, Some("orders-1"), &["tether"]);
        rejected.authenticated = Some(false);
        rejected.error = Some("token has expired".into());
        assert!(refused(rejected).contains("token has expired"));
    }
}
