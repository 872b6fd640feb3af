//! The agent's link to the traffic manager: one QUIC connection, kept up for the agent's life.
//!
//! Over its control stream the agent says who it is ([`AgentHello`]) and receives its workload's
//! intercepts ([`AgentIntercepts`]) whenever they change; [`apply`] turns each table into the
//! routing tables of the proxied ports. An intercepted connection is a new stream to the manager
//! that starts with [`Dial`] (see `remote_target`); the manager passes it to the developer's
//! machine. The other way, each stream the manager opens is a developer's mount of the pod's
//! volumes, served by [`files`](crate::files) (see `file_streams`).
//!
//! While the link is down the agent has no intercepts: every request goes to the app. That is
//! what makes a lost manager, or a lost developer, harmless to everyone else.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tether_proto::session::{CloseReason, Event, Session, SessionConfig, SessionError};
use tether_proto::{AgentHello, Dial, Hello, InterceptInfo, Message, Role, PROTOCOL_VERSION};
use tether_tunnel::backoff::Backoff;
use tether_tunnel::control::{self, Control, ControlError};
use tether_tunnel::{framed, quinn, ClientCredential};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::files::{self, Volumes};
use super::proxy::{BoxError, DialFn, Duplex, Routes, Upstream};
use super::takeover::Takeover;
use super::tally::Tally;
use tether_metrics::agent::AgentMetrics;
use tether_route::filter::{Filter, FilterSpec};
use tether_route::router::{Intercept, InterceptId};

/// Where the agent's link goes and who it says it is.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The manager's QUIC address.
    pub manager: SocketAddr,
    /// Directory holding `ca.crt`, `tls.crt` and `tls.key` (the mounted agent Secret).
    pub credentials: PathBuf,
    /// The pod's namespace.
    pub namespace: String,
    /// The workload, as `Kind/name`.
    pub workload: String,
    /// The pod's name.
    pub pod: String,
}

/// The routing table of one proxied port, with the app port that names it on the wire.
#[derive(Debug, Clone)]
pub struct PortRoutes {
    /// The app's container port.
    pub app_port: u16,
    /// The proxy's routing table.
    pub routes: Routes,
}

/// The link's current connection, shared with the intercept targets.
#[derive(Debug, Clone)]
struct Current(watch::Receiver<Option<quinn::Connection>>);

/// The control stream to the manager and its session (keep-alive every 5 s, and an end when
/// the manager falls silent for 15 s).
type Link = Control<quinn::RecvStream, quinn::SendStream>;

/// Why the manager did not take the agent.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    /// The manager refused it, in the manager's words (the agent logs them as they are).
    #[error("{0}")]
    Refused(String),
    #[error("the manager closed the link before answering")]
    NoAnswer,
    #[error("the handshake with the manager failed")]
    Handshake(#[source] SessionError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<CloseReason> for LinkError {
    fn from(reason: CloseReason) -> Self {
        match reason {
            CloseReason::Error(SessionError::Refused(error)) => Self::Refused(error.message),
            CloseReason::Error(SessionError::Ended) | CloseReason::Bye | CloseReason::Finished => {
                Self::NoAnswer
            }
            CloseReason::Error(error) => Self::Handshake(error),
            CloseReason::Local => Self::NoAnswer,
        }
    }
}

/// Pauses between connection attempts: from the first to the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));
/// The file, next to the credential, with the pod's service-account token for the manager.
const TOKEN_FILE: &str = "token";

/// Keeps the link up until the process ends; while linked, serves `files` on the streams the
/// manager opens.
pub async fn run(
    config: LinkConfig,
    ports: Vec<PortRoutes>,
    mut takeover: Takeover,
    metrics: Arc<AgentMetrics>,
    tally: Tally,
    files: Arc<Volumes>,
) {
    let (conn_tx, conn_rx) = watch::channel(None);
    let current = Current(conn_rx);
    let mut backoff = Backoff::new(BACKOFF.0, BACKOFF.1);
    // Each new reason the link cannot come up is a warning; the same one again is not.
    let mut last_error = String::new();
    loop {
        let app_ports: Vec<u16> = ports.iter().map(|p| p.app_port).collect();
        match connect(&config, &app_ports).await {
            Ok((conn, link)) => {
                info!(manager = %config.manager, "Linked to the traffic manager");
                backoff.reset();
                last_error.clear();
                let _ = conn_tx.send(Some(conn.clone()));
                metrics.links.inc();
                metrics.link_up.set(1);
                let file_server = tokio::spawn(file_streams(
                    conn.clone(),
                    files.clone(),
                    config.pod.clone(),
                ));
                let reason = serve(link, &ports, &mut takeover, &current, &metrics, &tally).await;
                file_server.abort();
                metrics.link_up.set(0);
                let _ = conn_tx.send(None);
                conn.close(0u32.into(), b"bye");
                clear(&ports);
                takeover.sync();
                metrics.intercepts.set(0);
                warn!(reason = %reason, "Lost the traffic manager; all traffic goes to the app");
            }
            Err(error) => {
                let error = tether_proto::error_chain(&*error);
                if error == last_error {
                    debug!(%error, "Cannot link to the traffic manager");
                } else {
                    warn!(%error, "Cannot link to the traffic manager; all traffic goes to the app");
                    last_error = error;
                }
            }
        }
        tokio::time::sleep(backoff.next_pause()).await;
    }
}

/// Connects, says hello and waits for the manager's `Welcome`. The credential is read anew each
/// time: the Secret is refreshed when the manager restarts with a new CA.
async fn connect(
    config: &LinkConfig,
    ports: &[u16],
) -> Result<(quinn::Connection, Link), BoxError> {
    let read = |name: &str| {
        let path = config.credentials.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))
    };
    let credential = ClientCredential {
        ca_pem: read(ClientCredential::CA_KEY)?,
        cert_pem: read(ClientCredential::CERT_KEY)?,
        key_pem: read(ClientCredential::KEY_KEY)?,
    };
    // The pod's token, which ties this agent to its pod (the kubelet renews the file).
    let token = read(TOKEN_FILE)?;
    let bind = SocketAddr::from(([0, 0, 0, 0], 0));
    let endpoint = tether_tunnel::client_endpoint(bind, &credential)?;
    let conn = endpoint
        .connect(config.manager, tether_tunnel::SERVER_NAME)?
        .await?;
    let (send, recv) = conn.open_bi().await?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        client: config.pod.clone(),
        namespace: config.namespace.clone(),
        role: Role::Agent,
    };
    let mut session = Session::client(hello, SessionConfig::client(), control::now())?;
    session.send(AgentHello {
        workload: config.workload.clone(),
        pod: config.pod.clone(),
        ports: ports.to_vec(),
        token: token.trim().to_owned(),
    })?;
    let mut link = Control::new(session, recv, send);
    loop {
        match link.next_event().await.map_err(LinkError::from)? {
            Event::Established(_) => return Ok((conn, link)),
            Event::Closed(reason) => return Err(LinkError::from(reason).into()),
            // Nothing else comes before the Welcome.
            _ => {}
        }
    }
}

/// How often the route counts are reported to the manager, when they changed.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The intercepts the ports route by now.
fn routed(ports: &[PortRoutes]) -> BTreeSet<u64> {
    ports
        .iter()
        .flat_map(|p| {
            p.routes
                .snapshot()
                .iter()
                .map(|i| i.id.0)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Follows the manager's tables and reports the route counts until the link fails; returns
/// why.
async fn serve<R, W>(
    mut link: Control<R, W>,
    ports: &[PortRoutes],
    takeover: &mut Takeover,
    current: &Current,
    metrics: &AgentMetrics,
    tally: &Tally,
) -> String
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // A new link reports the counts so far at its first tick.
    let mut reported = None;
    let mut report = tokio::time::interval(REPORT_INTERVAL);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            event = link.next_event() => event,
            _ = report.tick(), if link.is_writable() => {
                if let Some(stats) = tally.report_if_changed(&mut reported) {
                    let _ = link.session_mut().send(stats);
                }
                // What was just reported of ended intercepts was their last.
                let live = routed(ports);
                tally.retain(|id| live.contains(&id));
                continue;
            }
        };
        match event {
            Ok(Event::Message(Message::AgentIntercepts(table))) => {
                apply(&table.intercepts, ports, current);
                takeover.sync();
                let routed: usize = ports
                    .iter()
                    .map(|p| p.routes.snapshot().iter().count())
                    .sum();
                metrics.intercepts.set(routed as i64);
            }
            Ok(Event::Message(other)) => debug!(kind = other.kind(), "Ignored a manager message"),
            Ok(Event::Skipped { kind, error }) => {
                warn!(kind, %error, "Skipped a malformed frame from the manager")
            }
            Ok(Event::Closed(CloseReason::Error(error))) => {
                return tether_proto::error_chain(&error)
            }
            Ok(Event::Closed(_)) => return "the manager closed the link".to_owned(),
            Ok(_) => {}
            Err(error) => return tether_proto::error_chain(&error),
        }
    }
}

/// Makes the ports' routing tables hold exactly the intercepts of `table`.
fn apply(table: &[InterceptInfo], ports: &[PortRoutes], current: &Current) {
    for port in ports {
        let wanted: Vec<&InterceptInfo> =
            table.iter().filter(|i| i.port == port.app_port).collect();
        let wanted_ids: BTreeSet<u64> = wanted.iter().map(|i| i.id).collect();
        let have: BTreeSet<u64> = port.routes.snapshot().iter().map(|i| i.id.0).collect();
        for gone in have.difference(&wanted_ids) {
            if let Some(i) = port.routes.remove(InterceptId(*gone)) {
                info!(port = port.app_port, intercept = %i.id, owner = %i.owner, "Intercept ended");
            }
        }
        for info in wanted.into_iter().filter(|i| !have.contains(&i.id)) {
            let filter = match Filter::try_from(FilterSpec {
                headers: info.filter.headers.clone(),
                path_prefix: info.filter.path_prefix.clone(),
            }) {
                Ok(f) => f,
                Err(error) => {
                    warn!(intercept = info.id, %error, "Ignored an intercept with a bad filter");
                    continue;
                }
            };
            let target = remote_target(info.id, current.clone());
            let added = port.routes.add(Intercept {
                id: InterceptId(info.id),
                owner: info.owner.clone(),
                filter,
                mode: info.mode,
                target: Arc::new(target),
            });
            match added {
                Ok(()) => {
                    info!(port = port.app_port, intercept = info.id, owner = %info.owner, filter = ?info.filter, mode = %info.mode, "Intercept started")
                }
                Err(error) => warn!(intercept = info.id, %error, "Ignored a conflicting intercept"),
            }
        }
    }
}

/// Serves each stream the manager opens on `conn` (a developer's mount, see
/// [`files::serve_stream`]) until the connection ends; dropping it ends them all.
async fn file_streams(conn: quinn::Connection, files: Arc<Volumes>, pod: String) {
    let pod: Arc<str> = pod.into();
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let (files, pod) = (files.clone(), pod.clone());
                    streams.spawn(async move { files::serve_stream(files, &pod, send, recv).await });
                }
                Err(error) => {
                    debug!(%error, "No more streams from the manager");
                    return;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
}

/// Removes every intercept (the link is down).
fn clear(ports: &[PortRoutes]) {
    for port in ports {
        for i in port.routes.snapshot().iter() {
            port.routes.remove(i.id);
        }
    }
}

/// An intercept's target: the developer's machine, reached over streams through the manager.
fn remote_target(intercept: u64, current: Current) -> Upstream {
    let dial: DialFn = Arc::new(move || {
        let conn = current.0.borrow().clone();
        Box::pin(dial(conn, intercept))
    });
    Upstream::with_dial(&format!("intercept-{intercept}"), dial)
}

/// Opens a stream for one intercepted connection and waits until the developer's process has
/// accepted it.
async fn dial(conn: Option<quinn::Connection>, intercept: u64) -> std::io::Result<Box<dyn Duplex>> {
    let conn = conn.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "no link to the traffic manager",
        )
    })?;
    let (mut send, mut recv) = conn.open_bi().await?;
    framed::write_message(&mut send, &Message::Dial(Dial { intercept }))
        .await
        .map_err(std::io::Error::other)?;
    match framed::read_message(&mut recv)
        .await
        .map_err(std::io::Error::other)?
    {
        Some(Message::DialResult(r)) => match r.result {
            Ok(()) => Ok(Box::new(tokio::io::join(recv, send))),
            Err(e) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                e.message,
            )),
        },
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "the manager closed the stream",
        )),
    }
}

#[cfg(test)]
mod tests {
    use tether_proto::{AgentIntercepts, ErrorCode, InterceptFilter, Welcome};

    use super::*;

    fn intercept(id: u64, port: u16) -> InterceptInfo {
        InterceptInfo {
            id,
            name: format!("i-{id}"),
            namespace: "shop".into(),
            workload: "Deployment/orders".into(),
            port,
            service_port: "http".into(),
            owner: "ann@laptop".into(),
            session_id: "s-1".into(),
            filter: InterceptFilter::default(),
            mode: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_managers_tables_are_applied_until_it_ends_the_link() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let hello = Hello {
            version: PROTOCOL_VERSION,
            client: "orders-1".into(),
            namespace: "shop".into(),
            role: Role::Agent,
        };
        let agent = Session::client(hello, SessionConfig::client(), control::now()).unwrap();
        let (r, w) = tokio::io::split(a);
        let link = Control::new(agent, r, w);
        let (r, w) = tokio::io::split(b);
        let manager = Session::server(SessionConfig::server(), control::now());
        let mut manager = Control::new(manager, r, w);
        let ports = [PortRoutes {
            app_port: 8080,
            routes: Routes::default(),
        }];
        let current = Current(watch::channel(None).1);
        let table = |intercepts| AgentIntercepts { intercepts };
        let manage = async {
            assert!(matches!(manager.next_event().await, Ok(Event::Hello(_))));
            let welcome = Welcome {
                version: PROTOCOL_VERSION,
                session_id: "agent-1".into(),
                cluster_domain: "cluster.local".into(),
                subnets: Default::default(),
            };
            manager
                .session_mut()
                .accept(control::now(), welcome)
                .unwrap();
            let intercepts = vec![intercept(1, 8080), intercept(2, 9090)];
            manager.session_mut().send(table(intercepts)).unwrap();
            manager.session_mut().send(table(vec![])).unwrap();
            manager
                .session_mut()
                .send(table(vec![intercept(3, 8080)]))
                .unwrap();
            manager.finish().await.unwrap();
        };
        // The link is established when serve() takes it; here the Welcome is among its input.
        let metrics = AgentMetrics::default();
        let tally = Tally::default();
        let mut takeover = Takeover::default();
        let (reason, ()) = tokio::join!(
            serve(link, &ports, &mut takeover, &current, &metrics, &tally),
            manage
        );
        assert_eq!(reason, "the manager closed the link");
        let routes = ports[0].routes.snapshot();
        let ids: Vec<u64> = routes.iter().map(|i| i.id.0).collect();
        assert_eq!(ids, [3], "the last table, its port's part");
    }

    #[test]
    fn a_refusal_is_the_managers_words() {
        let refused = CloseReason::Error(SessionError::Refused(tether_proto::Error {
            code: ErrorCode::NotPermitted,
            message: "the agent is not pod shop/orders-1: its token was not accepted".into(),
        }));
        assert_eq!(
            LinkError::from(refused).to_string(),
            "the agent is not pod shop/orders-1: its token was not accepted"
        );
        let ended = CloseReason::Error(SessionError::Ended);
        assert_eq!(
            LinkError::from(ended).to_string(),
            "the manager closed the link before answering"
        );
    }
}
