//! The manager's tunnel server: one QUIC session per connected workstation.
//!
//! A session starts with the control stream (the first bidirectional stream the client opens):
//! `Hello` in, `Welcome` out, then DNS queries, keep-alives and subnet updates. The session on it
//! is `tether_proto`'s machine (see [`control`]); the client's requests are answered beside the
//! stream's loop, bounded per session (see [`requests`]). Every further bidirectional stream is
//! a flow (see [`flows`]).
//!
//! Only clients that present a certificate from the manager's own CA get here (mutual TLS in
//! `tether-tunnel`): a person's short-lived session certificate, which the [`signer`](crate::signer)
//! issued to the Kubernetes user the API server authenticated. The session acts as that user:
//! it starts only if RBAC lets the user `create sessions.tether.dev`, is re-checked every
//! [`RECHECK_INTERVAL`] and closed once the right is gone, and every intercept request is checked
//! against RBAC for that user ([`crate::authz`]). `Hello.client` is only a hint shown next to the
//! user's name.
//!
//! Sidecar agents connect to the same endpoint with an agent certificate (see [`agents`]). A
//! client's control stream also carries its intercept requests, which the [`Registry`] decides;
//! an intercepted connection arrives from an agent and is passed to the holding client on a
//! stream the manager opens (see [`agents::relay_dial`]).

mod agents;
mod control;
mod flows;
mod requests;
mod secret;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use tether_proto::session::Event;
use tether_proto::{
    AgentCredential, AgentCredentialRequest, InterceptStats, ManagerInfo, Namespaces, Welcome,
    PROTOCOL_VERSION,
};
use tether_tunnel::{control::now, quinn, Identity, Role};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::announce::{self, Announcer};
use crate::audit::{Action, Record};
use crate::authz::{self, review::ApiReviewer, Access, Subject};
use crate::manager::ManagerState;
use crate::registry::Registry;
use tether_metrics::manager::Carrier;

pub use requests::MAX_INTERCEPT_REQUESTS_WAITING;
pub use secret::{
    check_agent_request, AgentRequestError, AGENT_SECRET_NAME, CA_SECRET_NAME, SECRET_NAME,
};

/// DNS queries one session may have in flight; a query beyond it is dropped (the client's
/// resolver retries), so a flood costs its own session answers and no one else's.
pub const MAX_DNS_IN_FLIGHT: usize = 64;

/// Agent credential requests (each a few API calls) one session may have in flight; more are
/// refused with a reason.
pub const MAX_CREDENTIALS_IN_FLIGHT: usize = 4;

/// How often a live session's right to exist is asked again: a removed binding ends access
/// within this (plus the answer cache), not only when the certificate expires.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(60);

/// How often a session's intercept counts are looked at, and sent if they changed (agents report
/// theirs as often).
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// What every session shares: the cluster state, the intercept registry and the connected
/// clients (to pass intercepted connections to).
#[derive(Debug)]
struct Shared {
    state: ManagerState,
    /// Signs agent credentials and session certificates.
    identity: Arc<Identity>,
    /// Asks the API server whether a session's user may do something.
    reviewer: ApiReviewer,
    registry: Mutex<Registry>,
    clients: Mutex<HashMap<String, quinn::Connection>>,
    /// The agents' connections, by agent id (the registry's `conn_id`): file streams go there.
    agent_conns: Mutex<HashMap<u64, quinn::Connection>>,
    /// Tells intercepts on their workloads (Events, the annotation).
    announcer: Announcer,
    /// When this manager began serving: the agents that link within a minute of it are
    /// re-linking after a restart (see `agents::restore_orphaned_replace`).
    started: std::time::Instant,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Registry methods do not panic midway; a poisoned lock still holds consistent data.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn clients(&self) -> MutexGuard<'_, HashMap<String, quinn::Connection>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn agent_conns(&self) -> MutexGuard<'_, HashMap<u64, quinn::Connection>> {
        self.agent_conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connections of the agents that may serve the files of `session_id`'s intercept `id`,
    /// the most recently linked first: after a rollout, the new pod's (the old pod's agent may
    /// still be linked while its pod goes away).
    fn file_agent(&self, id: u64, session_id: &str) -> Result<Vec<quinn::Connection>, String> {
        let agents = self.registry().file_agents(id, session_id)?;
        let conns = self.agent_conns();
        let linked: Vec<quinn::Connection> = agents
            .iter()
            .rev()
            .filter_map(|agent| conns.get(agent).cloned())
            .collect();
        if linked.is_empty() {
            return Err(format!("the agents of intercept {id} are not linked"));
        }
        Ok(linked)
    }
}

/// Errors that stop the tunnel server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The CA or a certificate could not be made.
    #[error("creating the tunnel identity")]
    Identity(#[from] tether_tunnel::IdentityError),
    /// The QUIC endpoint could not be bound.
    #[error("binding the QUIC endpoint")]
    Endpoint(#[from] tether_tunnel::EndpointError),
    /// The relay or health port could not be bound.
    #[error("binding TCP port {port}")]
    Listen {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// Publishing the CA certificate failed.
    #[error("publishing the CA certificate")]
    Secret(#[from] kube::Error),
}

/// Runs the QUIC endpoint and the port-forward relay until the process ends.
pub async fn serve(state: ManagerState) -> Result<(), ServeError> {
    let identity = match secret::previous_ca(&state.client, &state.config.namespace).await {
        Some((ca, key)) => match Identity::from_ca(&ca, &key) {
            Ok(identity) => {
                info!("Kept the CA of the previous manager");
                identity
            }
            Err(error) => {
                warn!(%error, "The published CA is unusable; making a new one");
                Identity::generate()?
            }
        },
        None => Identity::generate()?,
    };
    let quic_addr = SocketAddr::from(([0, 0, 0, 0], state.config.quic_port));
    let endpoint = tether_tunnel::server(quic_addr, &identity)?;
    // The relay listens on loopback only: port-forwards arrive there (the container runtime
    // dials localhost in the pod's network namespace), so reaching it takes the
    // `pods/portforward` right in the manager's namespace; the pod network cannot.
    let relay_port = state.config.relay_port;
    let relay = tokio::net::TcpListener::bind(("127.0.0.1", relay_port))
        .await
        .map_err(|source| ServeError::Listen {
            port: relay_port,
            source,
        })?;
    let health_port = state.config.health_port;
    let health = tokio::net::TcpListener::bind(("0.0.0.0", health_port))
        .await
        .map_err(|source| ServeError::Listen {
            port: health_port,
            source,
        })?;
    // The relay hands packets to the QUIC socket over loopback.
    tokio::spawn(tether_tunnel::serve_relay(
        relay,
        SocketAddr::from(([127, 0, 0, 1], state.config.quic_port)),
    ));
    secret::publish(
        &state.client,
        &state.config.namespace,
        identity.ca_pem(),
        identity.ca_key_pem(),
    )
    .await?;
    let identity = Arc::new(identity);
    tokio::spawn(crate::signer::run(
        state.client.clone(),
        identity.clone(),
        state.config.session_cert_lifetime,
        state.audit.clone(),
    ));
    tokio::spawn(crate::manager::serve_health(health));
    info!(quic = %quic_addr, relay = relay_port, health = health_port, "Tunnel server ready");

    // On SIGTERM (a rollout, a deleted pod) close every connection with a reason, so clients and
    // agents reconnect to the next manager at once instead of after the idle timeout.
    let closer = endpoint.clone();
    let terminating = state.terminating.clone();
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        term.recv().await;
        info!("Terminated: closing every session");
        terminating.store(true, std::sync::atomic::Ordering::SeqCst);
        closer.close(0u32.into(), b"the manager is restarting");
    });
    serve_endpoint(endpoint, state, identity).await;
    Ok(())
}

/// Serves clients and agents on a bound `endpoint` until it is closed, signing agent
/// credentials with `identity`. [`serve`] runs it once the cluster-side set-up is done; an
/// in-process test runs it on its own endpoint, with a state it built.
pub async fn serve_endpoint(
    endpoint: quinn::Endpoint,
    state: ManagerState,
    identity: Arc<Identity>,
) {
    let shared = Arc::new(Shared {
        reviewer: ApiReviewer::new(state.client.clone()),
        announcer: Announcer::new(state.client.clone(), state.config.pod_name.clone()),
        state,
        identity,
        registry: Mutex::new(Registry::new()),
        clients: Mutex::default(),
        agent_conns: Mutex::default(),
        started: std::time::Instant::now(),
    });
    tokio::spawn(count_registry(Arc::downgrade(&shared)));
    let mut next_agent = 0u64;
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        next_agent += 1;
        let agent_id = next_agent;
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(error) => {
                    debug!(%remote, %error, "Handshake failed");
                    return;
                }
            };
            let Some(peer) = tether_tunnel::peer_identity(&conn) else {
                conn.close(1u32.into(), b"no client identity");
                return;
            };
            if peer.role == Role::Agent {
                let span = info_span!("agent", %remote);
                if let Err(error) = agents::session(conn, shared, agent_id, &peer.name, remote)
                    .instrument(span.clone())
                    .await
                {
                    span.in_scope(|| info!(%error, "Agent left"));
                }
                return;
            }
            let subject = Subject {
                user: peer.name,
                groups: peer.groups,
            };
            let span = info_span!("session", %remote, user = %subject.user);
            if let Err(error) = session(conn, shared, subject, remote)
                .instrument(span.clone())
                .await
            {
                span.in_scope(|| info!(%error, "Session ended"));
            }
        });
    }
    // Closed: let the CONNECTION_CLOSE frames go out before the process exits.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// Keeps the intercept and agent gauges current (every second) while the endpoint serves.
async fn count_registry(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (intercepts, agents) = shared.registry().counts();
        shared.state.metrics.set_registry(&intercepts, &agents);
    }
}

/// How a connection reached the manager: the port-forward relay dials it from the pod's
/// loopback, anything else came over UDP.
fn carrier(remote: SocketAddr) -> Carrier {
    if remote.ip().is_loopback() {
        Carrier::port_forward
    } else {
        Carrier::udp
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connection lost")]
    Connection(#[from] quinn::ConnectionError),
    #[error("control stream")]
    Stream(#[from] tether_tunnel::control::ControlError),
    #[error("control session")]
    Control(#[source] tether_proto::session::SessionError),
    #[error("answering on the control stream")]
    Send(#[from] tether_proto::session::SendError),
    #[error("client sent {0} before Hello")]
    NoHello(&'static str),
    #[error("client speaks protocol version {0}, this manager {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("client closed the session")]
    Bye,
    #[error("agent sent {0} instead of AgentHello")]
    NoAgentHello(&'static str),
    #[error("agent claims namespace {claimed} with a credential for {credential}")]
    WrongNamespace { claimed: String, credential: String },
    #[error("agent refused: {0}")]
    NotThePod(String),
    #[error("refused: {0}")]
    Forbidden(String),
}

async fn session(
    conn: quinn::Connection,
    shared: Arc<Shared>,
    subject: Subject,
    remote: SocketAddr,
) -> Result<(), SessionError> {
    let state = &shared.state;
    let (mut ctl, hello) = control::accept_hello(&conn).await?;
    let received = SystemTime::now();
    let audit = &state.audit;
    // The certificate may be older than a removed binding (or be a credential of an older
    // manager of this CA): the right to a session is asked now, not only at signing.
    let session_access = Access::create_session();
    let allowed = shared.reviewer.review_now(&subject, &session_access).await;
    if !matches!(allowed, Ok(true)) {
        let message = match allowed {
            Ok(_) => authz::refusal(&subject, &session_access),
            Err(error) => format!(
                "could not check whether user {:?} may {session_access}: {error}",
                subject.user
            ),
        };
        audit.record(
            Record::new(Action::SessionRefused, &subject, received)
                .peer(remote.ip(), &hello.client)
                .refused(message.clone()),
        );
        control::refuse(&mut ctl, message.clone()).await;
        conn.close(2u32.into(), message.as_bytes());
        return Err(SessionError::Forbidden(message));
    }
    let owner = authz::owner(&subject, &hello.client);
    let session_id = format!("{:016x}", rand_u64());
    let mut subnets_rx = state.subnets_rx.clone();
    let welcome = Welcome {
        version: PROTOCOL_VERSION,
        session_id: session_id.clone(),
        cluster_domain: state.cluster_domain.clone(),
        subnets: subnets_rx.borrow_and_update().clone(),
    };
    ctl.session_mut().accept(now(), welcome)?;
    // Right behind the Welcome, so the client knows them before it configures DNS.
    let mut namespaces_rx = state.namespaces_rx.clone();
    let names = namespaces_rx.borrow_and_update().clone();
    ctl.session_mut().send(Namespaces { names })?;
    ctl.session_mut().send(ManagerInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })?;
    info!(%owner, groups = ?subject.groups, namespace = %hello.namespace, session = %session_id, "Session started");
    let _open = state
        .metrics
        .session(&subject.user, carrier(conn.remote_address()));
    let asker = requests::Asker {
        subject: subject.clone(),
        namespace: hello.namespace,
        session_id: session_id.clone(),
        owner,
        source: remote.ip(),
        client: hello.client,
    };
    audit.record(
        asker
            .record(Action::SessionStarted, received)
            .object(None, &session_id)
            .note("namespace", &asker.namespace),
    );
    shared.clients().insert(session_id.clone(), conn.clone());

    let asker = Arc::new(asker);
    let (requests, mut answers) = requests::Requests::start(shared.clone(), asker.clone());
    let files = {
        let shared = shared.clone();
        let session_id = session_id.clone();
        flows::FileRoute::new(move |intercept| shared.file_agent(intercept, &session_id))
    };
    let flows = flows::Flows::new(
        conn.clone(),
        shared.state.dial_policy.clone(),
        shared.state.metrics.clone(),
        audit.clone(),
        asker.clone(),
        files,
    );
    let flow_acceptor = flows.clone().accept_loop();
    let datagrams = flows.clone().datagram_loop();
    // A removed binding ends the session within RECHECK_INTERVAL. A failed question keeps it
    // (the API server may be restarting); the next one decides.
    let recheck = async {
        loop {
            tokio::time::sleep(RECHECK_INTERVAL).await;
            match shared.reviewer.review_now(&subject, &session_access).await {
                Ok(true) => {}
                Ok(false) => return authz::refusal(&subject, &session_access),
                Err(error) => warn!(%error, "Cannot re-check the session's right to exist"),
            }
        }
    };
    tokio::pin!(flow_acceptor, datagrams, recheck);
    // Updates wait while the client does not read (only the latest of each is sent).
    let (mut subnets_open, mut namespaces_open) = (true, true);
    // How the session's intercepts route, sent when it changes (nothing while it holds none).
    let mut stats_sent = InterceptStats::default();
    let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            _ = stats_tick.tick(), if ctl.is_writable() => {
                let stats = shared.registry().session_stats(&session_id);
                if stats != stats_sent {
                    let _ = ctl.session_mut().send(stats.clone());
                    stats_sent = stats;
                }
            }
            event = ctl.next_event() => match event {
                Ok(Event::Message(msg)) => requests.on_message(msg, ctl.session_mut()),
                Ok(Event::Skipped { kind, error }) => {
                    debug!(kind, %error, "Skipped a malformed control frame")
                }
                Ok(Event::Closed(reason)) => break Err(control::ended(reason)),
                Ok(_) => {}
                Err(error) => break Err(error.into()),
            },
            Some(answer) = answers.recv(), if ctl.is_writable() => {
                let _ = ctl.session_mut().send(answer);
            }
            changed = subnets_rx.changed(), if subnets_open && ctl.is_writable() => match changed {
                Ok(()) => {
                    let subnets = subnets_rx.borrow_and_update().clone();
                    info!(?subnets, "Subnets changed");
                    let _ = ctl.session_mut().send(subnets);
                }
                Err(_) => subnets_open = false,
            },
            changed = namespaces_rx.changed(), if namespaces_open && ctl.is_writable() => {
                match changed {
                    Ok(()) => {
                        let names = namespaces_rx.borrow_and_update().clone();
                        debug!(count = names.len(), "Namespaces changed");
                        let _ = ctl.session_mut().send(Namespaces { names });
                    }
                    Err(_) => namespaces_open = false,
                }
            }
            refusal = &mut recheck => {
                info!(%refusal, "Session closed: its user lost the right to it");
                control::refuse(&mut ctl, refusal.clone()).await;
                conn.close(2u32.into(), refusal.as_bytes());
                break Err(SessionError::Forbidden(refusal));
            }
            e = &mut flow_acceptor => break Err(SessionError::Connection(e)),
            e = &mut datagrams => break Err(SessionError::Connection(e)),
        }
    };
    requests.stop().await;
    flows.close_all();
    conn.close(0u32.into(), b"bye");
    shared.clients().remove(&session_id);
    let why = match &result {
        Ok(()) | Err(SessionError::Bye) => "closed by the client".to_owned(),
        Err(error) => tether_proto::error_chain(error),
    };
    let ended = SystemTime::now();
    let gone = shared.registry().end_session(&session_id);
    for i in &gone {
        info!(name = %i.name, id = i.id, "Intercept ended with its session");
        audit.record(
            asker
                .record(Action::InterceptEnded, ended)
                .intercept(i)
                .note("reason", "its session ended"),
        );
    }
    audit.record(
        asker
            .record(Action::SessionEnded, ended)
            .object(None, &session_id)
            .note("reason", why),
    );
    if !gone.is_empty() {
        // Nobody waits for these: the session is gone. A session lost (not closed by its
        // daemon) may come back: the laptop's link dropped, and the daemon reconnects and
        // re-creates its intercepts. A replaced container is then left out for a while, so that
        // the workload is not rolled out twice and its app does not run in between (a queue
        // consumer would consume meanwhile).
        let lost = !matches!(result, Ok(()) | Err(SessionError::Bye));
        let shared = shared.clone();
        let asker = asker.clone();
        tokio::spawn(async move {
            for i in gone {
                if lost && i.mode == tether_proto::InterceptMode::Replace {
                    tokio::spawn(restore_unless_replaced_again(
                        shared.clone(),
                        asker.clone(),
                        i.clone(),
                    ));
                    announce_ended(&shared, &i, "its session ended").await;
                } else {
                    intercept_ended(&shared, &asker, &i, "its session ended").await;
                }
            }
        });
    }
    result
}

/// How long a replaced container stays out after its session was lost, for the daemon to
/// reconnect and take the replace up again: well beyond a reconnect after the link returns,
/// short enough that a laptop gone for good gives the workload back in about a minute.
const RECONNECT_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Puts back the container of replace intercept `i`, whose session was lost, unless a replace
/// was made on its workload within [`RECONNECT_GRACE`] (the daemon came back, or someone else
/// replaced it since).
async fn restore_unless_replaced_again(
    shared: Arc<Shared>,
    asker: Arc<requests::Asker>,
    i: tether_proto::InterceptInfo,
) {
    tokio::time::sleep(RECONNECT_GRACE).await;
    // A replace made on the workload since (the daemon's own, re-created after it reconnected,
    // or anyone's later one) owns the container now: it stays out while that lasts, and that
    // one's end puts it back.
    let latest = shared.registry().latest_replace(&i.namespace, &i.workload);
    if latest != Some(i.id) {
        info!(name = %i.name, workload = %i.workload, "A replace came after this one's session was lost; the container is that one's now");
        return;
    }
    restore_replaced(
        &shared,
        &asker,
        &i,
        "its session was lost, and no replace came back for it",
    )
    .await;
}

/// Announces on `i`'s workload that it started (the registry holds it now).
async fn announce_started(shared: &Shared, i: &tether_proto::InterceptInfo) {
    let _one_at_a_time = shared.announcer.lock().await;
    let active = shared.registry().on_workload(&i.namespace, &i.workload);
    let message = announce::started_message(i);
    if let Err(error) = shared
        .announcer
        .announce(i, &active, announce::STARTED, message)
        .await
    {
        announce::log_failure(&error);
    }
}

/// What the manager does when intercept `i` of `asker`'s session ends (`why`): a replace
/// intercept's container is put back in its workload, then the end is announced on the workload.
/// The daemon puts the container back too when it leaves; one of the two finds nothing to do.
async fn intercept_ended(
    shared: &Shared,
    asker: &requests::Asker,
    i: &tether_proto::InterceptInfo,
    why: &str,
) {
    restore_replaced(shared, asker, i, why).await;
    announce_ended(shared, i, why).await;
}

/// Puts a replace intercept's container back in its workload, with an audit record when the
/// manager did write the workload.
async fn restore_replaced(
    shared: &Shared,
    asker: &requests::Asker,
    i: &tether_proto::InterceptInfo,
    why: &str,
) {
    if i.mode != tether_proto::InterceptMode::Replace {
        return;
    }
    // A manager going away leaves the container out: the daemon re-creates its replace on the
    // next manager, and if it never does, the next manager puts the container back (see
    // `agents::restore_orphaned_replace`). Putting it back here would roll the workload out
    // twice for nothing.
    if shared
        .state
        .terminating
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return;
    }
    let record = asker
        .record(Action::ContainerRestored, SystemTime::now())
        .intercept(i)
        .note("reason", why);
    put_back_container(shared, &i.namespace, &i.workload, record).await;
}

/// Puts a replaced container back in `workload` from its own `tether.dev/replaced` record, and
/// audits `record` if that wrote the workload (nothing was replaced: nothing to do).
async fn put_back_container(shared: &Shared, namespace: &str, workload: &str, record: Record) {
    let client = &shared.state.client;
    match tether_kube::workload::restore_container(client, namespace, workload).await {
        Ok(true) => {
            info!(%workload, %namespace, "Replaced container restored");
            shared.state.audit.record(record);
        }
        Ok(false) => {}
        Err(error) => warn!(
            %workload,
            %namespace,
            error = %tether_proto::error_chain(&error),
            "Could not restore the replaced container"
        ),
    }
}

/// Announces on `i`'s workload that it ended (`why`); the registry no longer holds it.
async fn announce_ended(shared: &Shared, i: &tether_proto::InterceptInfo, why: &str) {
    let _one_at_a_time = shared.announcer.lock().await;
    let active = shared.registry().on_workload(&i.namespace, &i.workload);
    let message = announce::ended_message(i, why);
    if let Err(error) = shared
        .announcer
        .announce(i, &active, announce::ENDED, message)
        .await
    {
        announce::log_failure(&error);
    }
}

/// An agent credential for `r.namespace`, once RBAC lets the session's user create intercepts
/// there and the namespace's agent Secret holds the request's nonce (which only someone who may
/// write Secrets there can have put there).
async fn issue_agent_credential(
    shared: &Shared,
    asker: &requests::Asker,
    r: AgentCredentialRequest,
) -> Result<AgentCredential, String> {
    let record = asker
        .record(Action::AgentCredentialIssued, SystemTime::now())
        .object(Some(&r.namespace), AGENT_SECRET_NAME);
    let issued = credential_for(shared, &asker.subject, &r).await;
    match &issued {
        Ok(_) => shared.state.audit.record(record),
        Err(why) => {
            let record = Record {
                action: Action::AgentCredentialRefused,
                ..record
            };
            shared.state.audit.record(record.refused(why.clone()));
        }
    }
    issued
}

async fn credential_for(
    shared: &Shared,
    subject: &Subject,
    r: &AgentCredentialRequest,
) -> Result<AgentCredential, String> {
    authz::check(
        &shared.reviewer,
        subject,
        &Access::create_intercept(&r.namespace),
    )
    .await?;
    let found = secret::agent_secret(&shared.state.client, &r.namespace)
        .await
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 403 => format!(
                "the traffic manager may not read Secret {AGENT_SECRET_NAME} in namespace {} \
                 (its ClusterRole tether-manager lacks it; reinstall with `tether install`)",
                r.namespace
            ),
            _ => format!(
                "reading Secret {AGENT_SECRET_NAME} in namespace {}: {e}",
                r.namespace
            ),
        })?;
    if let Err(error) = check_agent_request(&r.namespace, found.as_ref(), &r.nonce) {
        info!(namespace = %r.namespace, %error, "Agent credential refused");
        return Err(error.to_string());
    }
    let credential = shared
        .identity
        .issue_client(Role::Agent, &r.namespace)
        .map_err(|e| format!("issuing the agent credential: {e}"))?;
    info!(namespace = %r.namespace, "Agent credential issued");
    Ok(AgentCredential {
        ca_pem: credential.ca_pem,
        cert_pem: credential.cert_pem,
        key_pem: credential.key_pem,
    })
}

/// A random id from the OS (no extra dependency: `RandomState` is seeded from it).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}
