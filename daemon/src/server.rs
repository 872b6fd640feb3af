//! The control socket: a unix socket in the daemon's own directory (`<runtime>/user`, mode 0700,
//! the daemon's user's), so that no one else can reach it from the moment it is bound; the
//! daemon also checks each client's credentials (`SO_PEERCRED`): root and its own user only.
//! One JSON request per line, one JSON response per line.

use std::{
    collections::HashMap,
    net::IpAddr,
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tether_metrics::workstation::{Direction, DnsKind, WorkstationMetrics};
use tether_metrics::Registry;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::watch,
};
use tracing::{debug, warn};

use crate::{
    control::{
        self, DnsCounts, Envelope, InterceptTop, Request, Response, StatusReport, TopSnapshot,
    },
    flow_table::{FlowRow, FlowTable},
    intercept::{Progress, SharedIntercepts},
};

/// What the daemon shares with the control socket's clients.
#[derive(Debug)]
pub struct Shared {
    pub status: Mutex<StatusReport>,
    /// Set once connected.
    pub intercepts: std::sync::OnceLock<SharedIntercepts>,
    /// What the daemon counts.
    pub metrics: Arc<WorkstationMetrics>,
    /// The families of `metrics`, for `tether status --metrics`.
    registry: Registry,
    /// The open flows, for `tether top`.
    pub flows: Arc<FlowTable>,
    /// Cluster names of flow destinations, looked up for `tether top`.
    names: tokio::sync::Mutex<Names>,
    started: Instant,
}

/// Reverse-lookup results, kept for [`NAME_TTL`] (misses too).
type Names = HashMap<IpAddr, (Option<String>, Instant)>;

/// How long a destination's name is kept.
const NAME_TTL: Duration = Duration::from_secs(60);
/// How long a name lookup for `tether top` may take.
const NAME_TIMEOUT: Duration = Duration::from_millis(500);
/// The most flows a [`TopSnapshot`] lists.
pub const TOP_FLOWS: usize = 50;

impl Default for Shared {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Arc::new(WorkstationMetrics::register(&mut registry));
        Shared {
            status: Mutex::default(),
            intercepts: std::sync::OnceLock::new(),
            metrics,
            registry,
            flows: Arc::default(),
            names: tokio::sync::Mutex::default(),
            started: Instant::now(),
        }
    }
}

impl Shared {
    /// The metrics as text, with the QUIC path's figures read now.
    pub fn metrics_text(&self) -> String {
        let carrier = self.intercepts.get().and_then(|i| i.carrier());
        let m = &self.metrics;
        m.connected.set(i64::from(carrier.is_some()));
        if let Some(c) = carrier {
            m.rtt.set(c.rtt_us as f64 / 1e6);
            m.cwnd.set(i64::try_from(c.cwnd).unwrap_or(i64::MAX));
            m.lost_packets
                .set(i64::try_from(c.lost_packets).unwrap_or(i64::MAX));
            m.sent_packets
                .set(i64::try_from(c.sent_packets).unwrap_or(i64::MAX));
        }
        tether_metrics::encode(&self.registry, tether_metrics::Format::Prometheus)
    }
}

impl Shared {
    /// One sample for `tether top`.
    pub async fn top(&self) -> TopSnapshot {
        let status = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let m = &self.metrics;
        let (flows_open, flows_started) = m.flows.counts();
        let mut top = TopSnapshot {
            at_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            connected: status.connected,
            namespace: status.namespace,
            context: status.context,
            transport: status.transport,
            carrier: None,
            bytes_to_cluster: m.flows.bytes(Direction::to_cluster).get(),
            bytes_to_workstation: m.flows.bytes(Direction::to_workstation).get(),
            flows_open,
            flows_started,
            dns: DnsCounts {
                cluster: m.dns_count(DnsKind::cluster),
                upstream: m.dns_count(DnsKind::upstream),
                cache_hit: m.dns_count(DnsKind::cache_hit),
                nxdomain: m.dns_count(DnsKind::nxdomain),
            },
            flows: self.flows.top(TOP_FLOWS),
            intercepts: Vec::new(),
        };
        let Some(intercepts) = self.intercepts.get() else {
            return top;
        };
        top.carrier = intercepts.carrier();
        top.connected = top.carrier.is_some();
        let stats = intercepts.stats().unwrap_or_default();
        top.intercepts = intercepts
            .list_active()
            .into_iter()
            .map(|a| {
                let stat = stats.intercepts.iter().find(|s| s.id == a.id);
                let mut filter = a.headers.join(",");
                if let Some(prefix) = &a.path_prefix {
                    filter = if filter.is_empty() {
                        format!("path={prefix}")
                    } else {
                        format!("{filter},path={prefix}")
                    };
                }
                InterceptTop {
                    files: intercepts.file_counts(&a.name),
                    name: a.name,
                    namespace: a.namespace,
                    workload: a.workload,
                    app_port: a.app_port,
                    filter,
                    laptop: stat.map(|s| s.laptop.clone()).unwrap_or_default(),
                    app: stat.map(|s| s.app.clone()).unwrap_or_default(),
                    mode: a.mode,
                    mirrored: stat.map(|s| s.mirrored).unwrap_or_default(),
                    agents: stat.map(|s| s.agents.clone()).unwrap_or_default(),
                }
            })
            .collect();
        self.name_flows(intercepts, &mut top.flows).await;
        top
    }

    /// Fills in the flows' destination names: from the cache, else by reverse lookups through
    /// the manager, all at once and each within [`NAME_TIMEOUT`].
    async fn name_flows(&self, intercepts: &SharedIntercepts, flows: &mut [FlowRow]) {
        let mut names = self.names.lock().await;
        let now = Instant::now();
        names.retain(|_, (_, at)| now.duration_since(*at) < NAME_TTL);
        let mut unknown: Vec<IpAddr> = flows
            .iter()
            .map(|f| f.destination.ip())
            .filter(|ip| !names.contains_key(ip))
            .collect();
        unknown.sort();
        unknown.dedup();
        let lookups = unknown.into_iter().map(|ip| async move {
            let name = tokio::time::timeout(NAME_TIMEOUT, intercepts.cluster_name(ip)).await;
            (ip, name.ok().flatten())
        });
        for (ip, name) in futures::future::join_all(lookups).await {
            names.insert(ip, (name, now));
        }
        for flow in flows {
            flow.name = names
                .get(&flow.destination.ip())
                .and_then(|(name, _)| name.clone());
        }
    }
}

/// Why the control socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("already connected (daemon pid {0}); run `tether quit` first")]
    AlreadyRunning(u32),
    #[error("the control socket")]
    Socket(#[source] std::io::Error),
}

/// Binds the socket, refusing if a live daemon already owns it.
pub async fn bind(dir: &Path) -> Result<UnixListener, ServerError> {
    let path = control::socket_path(dir);
    if path.exists() {
        if let Ok(mut stream) = UnixStream::connect(&path).await {
            let pid = match roundtrip(&mut stream, &Request::Status).await {
                Some(Response::Status(s)) => s.daemon_pid,
                _ => 0,
            };
            return Err(ServerError::AlreadyRunning(pid));
        }
        // Left by a daemon that died: nobody listens.
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path).map_err(ServerError::Socket)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(ServerError::Socket)?;
    Ok(listener)
}

pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(control::socket_path(dir));
}

/// Serves requests until the task is aborted.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>, quit_tx: watch::Sender<bool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let peer = stream.peer_cred().map(|c| c.uid()).ok();
        if !peer_allowed(peer, nix::unistd::Uid::effective().as_raw()) {
            warn!(uid = ?peer, "Refused a control client of another user");
            continue;
        }
        let shared = shared.clone();
        let quit_tx = quit_tx.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let request = serde_json::from_str::<Envelope<Request>>(&line);
                let shared = &shared;
                let quit_tx = &quit_tx;
                let answer = with_progress(&mut write, |progress| {
                    answer(shared, quit_tx, request, progress)
                })
                .await;
                let Some(response) = answer else { break };
                if send(&mut write, &response).await.is_err() {
                    break;
                }
            }
            debug!("Control client left");
        });
    }
}

/// Runs `f`, writing each stage it reports as a [`Response::Progress`] line meanwhile. `None`
/// if the client went away.
async fn with_progress<F>(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    f: impl FnOnce(Progress) -> F,
) -> Option<Response>
where
    F: std::future::Future<Output = Response>,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let work = f(Progress::new(tx));
    tokio::pin!(work);
    loop {
        tokio::select! {
            response = &mut work => {
                while let Ok(stage) = rx.try_recv() {
                    send(write, &Response::Progress { stage }).await.ok()?;
                }
                return Some(response);
            }
            Some(stage) = rx.recv() => {
                send(write, &Response::Progress { stage }).await.ok()?;
            }
        }
    }
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
) -> std::io::Result<()> {
    let mut out = serde_json::to_string(response).unwrap_or_default();
    out.push('\n');
    write.write_all(out.as_bytes()).await
}

async fn answer(
    shared: &Shared,
    quit_tx: &watch::Sender<bool>,
    request: Result<Envelope<Request>, serde_json::Error>,
    progress: Progress,
) -> Response {
    let request = match request {
        Ok(envelope) if envelope.version != control::CONTROL_VERSION => {
            return Response::Error {
                error: control::version_mismatch(envelope.version),
            }
        }
        Ok(envelope) => Ok(envelope.body),
        Err(e) => Err(e),
    };
    match request {
        Ok(Request::Metrics) => Response::Metrics {
            text: shared.metrics_text(),
        },
        Ok(Request::Top) => Response::Top(Box::new(shared.top().await)),
        Ok(Request::Status) => {
            let mut s = shared
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(intercepts) = shared.intercepts.get() {
                s.intercepts = intercepts.list_with_copies();
                s.manager_version = intercepts.manager_version().unwrap_or_default();
                s.carrier = intercepts.carrier();
            }
            Response::Status(Box::new(s))
        }
        Ok(Request::Intercept(req)) => match shared.intercepts.get() {
            None => not_ready(),
            Some(i) => match i.create(*req, &progress).await {
                Ok(report) => Response::Intercepted(Box::new(report)),
                Err(error) => Response::Error {
                    error: tether_proto::error_chain(&error),
                },
            },
        },
        Ok(Request::Leave { name }) => match shared.intercepts.get() {
            None => not_ready(),
            Some(i) => match i.leave(&name, &progress).await {
                Ok(left) => Response::Left(Box::new(left)),
                Err(error) => Response::Error {
                    error: tether_proto::error_chain(&error),
                },
            },
        },
        Ok(Request::AwaitApp {
            namespace,
            workload,
        }) => match shared.intercepts.get() {
            None => not_ready(),
            Some(i) => match i.await_app(&namespace, &workload, &progress).await {
                Ok(()) => Response::Ok,
                Err(error) => Response::Error {
                    error: tether_proto::error_chain(&error),
                },
            },
        },
        Ok(Request::List) => match shared.intercepts.get() {
            None => not_ready(),
            Some(i) => match i.list().await {
                Ok(list) => Response::List(Box::new(list)),
                Err(error) => Response::Error {
                    error: tether_proto::error_chain(&error),
                },
            },
        },
        Ok(Request::Quit) => {
            let _ = quit_tx.send(true);
            Response::Ok
        }
        Err(e) => Response::Error {
            error: format!("bad request: {e}"),
        },
    }
}

/// Whether a client with uid `peer` (`None`: unknown) may use the daemon running as `own`.
fn peer_allowed(peer: Option<u32>, own: u32) -> bool {
    peer.is_some_and(|uid| uid == 0 || uid == own)
}

fn not_ready() -> Response {
    Response::Error {
        error: "the daemon is still connecting; try again in a moment".to_owned(),
    }
}

/// Sends one request and reads one response.
pub async fn roundtrip(stream: &mut UnixStream, req: &Request) -> Option<Response> {
    roundtrip_with_progress(stream, req, &|_| {}).await
}

/// Sends one request and reads its response, passing the progress lines before it to
/// `progress`.
pub async fn roundtrip_with_progress(
    stream: &mut UnixStream,
    req: &Request,
    progress: &dyn Fn(&str),
) -> Option<Response> {
    let mut line = serde_json::to_string(&Envelope::new(req)).ok()?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await.ok()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut answer = String::new();
        if reader.read_line(&mut answer).await.ok()? == 0 {
            return None;
        }
        match serde_json::from_str(&answer).ok()? {
            Response::Progress { stage } => progress(&stage),
            response => return Some(response),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_the_daemons_user_are_served() {
        assert!(peer_allowed(Some(0), 1000));
        assert!(peer_allowed(Some(1000), 1000));
        assert!(!peer_allowed(Some(1001), 1000));
        assert!(!peer_allowed(Some(65534), 1000));
        assert!(!peer_allowed(None, 1000));
    }

    /// The client half of `a_client_of_another_user_is_not_served`, run by it in a child
    /// process as `nobody`.
    #[test]
    #[ignore = "run as another user by a_client_of_another_user_is_not_served"]
    fn control_client_as_another_user() {
        let Some(path) = std::env::var_os("TETHER_TEST_SOCKET") else {
            return;
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut stream = UnixStream::connect(path)
                .await
                .expect("the socket is reachable");
            match roundtrip(&mut stream, &Request::Status).await {
                Some(_) => println!("answered"),
                None => println!("refused"),
            }
        });
    }

    #[tokio::test]
    async fn a_client_of_another_user_is_not_served() {
        use crate::privileged::identity::daemon_identity;
        if !nix::unistd::Uid::effective().is_root() {
            return; // Needs root to run a client as another user.
        }
        let dir = std::env::temp_dir().join(format!("tether-peer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let user = crate::privileged::runtime_dir::user_dir(&dir);
        std::fs::create_dir_all(&user).unwrap();
        let listener = bind(&dir).await.unwrap();
        let path = control::socket_path(&dir);
        // Open the way on purpose: what is tested here is the credential check alone.
        for (p, mode) in [(&dir, 0o755), (&user, 0o777), (&path, 0o666)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let (quit_tx, _quit_rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, Arc::new(Shared::default()), quit_tx));

        let mut root = UnixStream::connect(&path).await.unwrap();
        let answer = roundtrip(&mut root, &Request::Status).await;
        assert!(matches!(answer, Some(Response::Status(_))), "{answer:?}");

        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "server::tests::control_client_as_another_user",
                "--ignored",
                "--nocapture",
            ])
            .env("TETHER_TEST_SOCKET", &path);
        daemon_identity(None).apply(&mut child);
        let output = tokio::task::spawn_blocking(move || child.output())
            .await
            .unwrap();
        match output {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                eprintln!("skipped: nobody cannot run this test binary ({e})");
            }
            Err(e) => panic!("running the client as nobody: {e}"),
            Ok(output) => {
                let stdout = String::from_utf8_lossy(&output.stdout);
                assert!(
                    stdout.contains("refused") && !stdout.contains("answered"),
                    "{stdout}{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        server.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_socket_is_bound_in_the_daemons_directory() {
        let dir = std::env::temp_dir().join(format!("tether-server-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(crate::privileged::runtime_dir::user_dir(&dir)).unwrap();
        let _listener = bind(&dir).await.unwrap();
        let path = control::socket_path(&dir);
        assert_eq!(path, dir.join("user/daemon.sock"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
