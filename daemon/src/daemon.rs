//! The daemon: connects, configures the machine, carries traffic, reconnects, and puts the
//! machine back on quit.
//!
//! Progress goes to stdout as `progress: …`, then one `ready` or `error: …` line, for the
//! `tether connect` that started us; after that, stdout is not used.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use ipnet::Ipv4Net;
use tether_tunnel::backoff::Backoff;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::{
    cluster::Cluster,
    connect::{self, Dialed, Transport},
    control::StatusReport,
    plan::{self, RoutePlan},
    privileged::{
        channel::{ChannelError, Helper, Start},
        resolv_conf::ResolvConf,
        route_check,
    },
    session::Session,
    traffic,
};

/// Pauses between reconnect attempts: from the first to the longest.
const RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(200), Duration::from_secs(2));
/// Between two tries of the same manager address with the same certificate (each gets the UDP
/// handshake's own timeout).
const REDIAL_PAUSE: Duration = Duration::from_millis(250);
/// How long one attempt to dial the whole way (API server, certificate, tunnel) may take.
const DIAL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// When the same address may answer again, how long before dialing the whole way too.
const FULL_DIAL_DELAY: Duration = Duration::from_secs(3);

/// Everything `tether connect` passes to the daemon. It crosses to the privileged helper and the
/// daemon (each a new process) as one JSON value, so both get every field.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The namespace short names resolve in and intercepts are made in; empty: the context's.
    pub namespace: String,
    /// Where the traffic manager runs; empty: [`crate::cluster::MANAGER_NAMESPACE`].
    #[serde(default)]
    pub manager_namespace: String,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub transport: Transport,
    pub never_proxy: Vec<Ipv4Net>,
    pub also_proxy: Vec<Ipv4Net>,
    pub allow_conflicting_subnets: bool,
    pub tun_name: String,
    /// The TUN device's network; its first host is the device, its second the DNS server.
    pub tun_network: Ipv4Net,
    pub resolv_conf: PathBuf,
    pub runtime_dir: PathBuf,
}

impl Options {
    /// The DNS server's address: the TUN network's second host.
    pub fn dns_ip(&self) -> Ipv4Addr {
        let base = u32::from(self.tun_network.network());
        Ipv4Addr::from(base + 2)
    }

    /// The TUN device: named `tun_name`, with the TUN network's first host.
    pub fn tun_config(&self) -> crate::privileged::tun::TunConfig {
        crate::privileged::tun::TunConfig {
            name: self.tun_name.clone(),
            address: Ipv4Net::new(
                Ipv4Addr::from(u32::from(self.tun_network.network()) + 1),
                self.tun_network.prefix_len(),
            )
            .unwrap_or(self.tun_network),
            mtu: crate::TUN_MTU,
        }
    }

    /// What the privileged helper may do for this daemon.
    pub fn helper_config(&self) -> crate::privileged::helper::HelperConfig {
        crate::privileged::helper::HelperConfig {
            tun: self.tun_config(),
            dns: self.dns_ip(),
            routes: crate::privileged::route_policy::RoutePolicy {
                never: self.never_proxy.clone(),
                also: self.also_proxy.clone(),
                allow_conflicting: self.allow_conflicting_subnets,
                own_dev: self.tun_name.clone(),
            },
            resolv_conf: self.resolv_conf.clone(),
            runtime_dir: self.runtime_dir.clone(),
            kubeconfig: self.kubeconfig.clone(),
        }
    }
}

/// Errors that stop the daemon before it is ready.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Dial(#[from] connect::DialError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("{0}. Use --never-proxy to leave that range alone, or --allow-conflicting-subnets to route it anyway")]
    RouteConflict(String),
    #[error("using TUN device {name}")]
    Tun {
        name: String,
        #[source]
        source: crate::privileged::tun::TunError,
    },
    #[error(transparent)]
    Helper(ChannelError),
    /// The helper is not this process's parent (any more): it would not clean up after us.
    #[error("the privileged helper (pid {0}) is gone")]
    HelperGone(u32),
    #[error("asking to die with the privileged helper")]
    DeathSignal(#[source] nix::Error),
    #[error(transparent)]
    Kubeconfig(#[from] crate::privileged::helper::KubeconfigError),
    /// The manager named a cluster domain no resolver should be pointed at.
    #[error("the traffic manager announced the cluster domain {domain:?}")]
    ClusterDomain {
        domain: String,
        #[source]
        source: crate::privileged::domain::DomainError,
    },
    #[error("reading the resolver configuration")]
    ReadResolvConf(#[source] std::io::Error),
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    #[error("the control socket")]
    Socket(#[source] std::io::Error),
}

/// Shared state the control socket reports.
pub use crate::server::Shared;

fn progress(stage: &str) {
    info!("{stage}");
    println!("progress: {stage}");
}

/// Runs the daemon until `tether quit`, a signal, or a fatal error. It runs without privilege:
/// the TUN device, routes and resolver configuration come from its privileged `helper`
/// (see [`crate::privileged::helper`]). It reads the kubeconfig itself, as the user who ran
/// `sudo`, unless the helper put root's in `start` (root's daemon runs as `nobody`). It dies with
/// the helper.
pub async fn run(mut opts: Options, helper: Helper, start: Start) -> Result<(), DaemonError> {
    die_with(start.helper_pid)?;
    let helper = Arc::new(helper);
    let listener = crate::server::bind(&opts.runtime_dir).await?;

    progress("connecting to the cluster");
    // Ours (we run as the user who ran sudo), unless the helper read root's for us.
    let kubeconfig = match start.kubeconfig {
        Some(text) => text,
        None => crate::privileged::helper::read_kubeconfig(opts.kubeconfig.as_deref())?,
    };
    let cluster = Cluster::from_kubeconfig_json(&kubeconfig, opts.context.clone())
        .await?
        .with_manager_namespace(&opts.manager_namespace);
    if opts.namespace.is_empty() {
        // No `-n`: the context's namespace, as kubectl does.
        opts.namespace = cluster.default_namespace.clone();
    }
    cluster.check_namespace(&opts.namespace).await?;
    progress("dialing the traffic manager");
    let client = client_name();
    let dials = crate::session::DialTable::default();
    let dialed = connect::dial(
        &cluster,
        opts.transport,
        &client,
        &opts.namespace,
        dials.clone(),
    )
    .await?;
    let welcome = dialed.session.welcome.clone();
    crate::privileged::domain::validate(&welcome.cluster_domain).map_err(|source| {
        DaemonError::ClusterDomain {
            domain: welcome.cluster_domain.clone(),
            source,
        }
    })?;

    let RoutePlan { routes, never } = plan::routes(
        &welcome.subnets,
        &opts.also_proxy,
        &opts.never_proxy,
        dialed.direct_peer,
        api_server_ip(&cluster.server).await,
    );
    let existing = route_check::parse_proc_net_route(
        &std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
    );
    let conflicts = plan::conflicts(
        &existing,
        &routes,
        &opts.tun_name,
        opts.allow_conflicting_subnets,
    );
    if let Some(text) = conflicts {
        return Err(DaemonError::RouteConflict(text));
    }

    progress("creating the TUN device and routes");
    let fd = helper.tun().await.map_err(DaemonError::Helper)?;
    let tun = crate::privileged::tun::Tun::from_fd(fd, &opts.tun_name, crate::TUN_MTU).map_err(
        |source| DaemonError::Tun {
            name: opts.tun_name.clone(),
            source,
        },
    )?;
    helper
        .add_routes(routes.clone())
        .await
        .map_err(DaemonError::Helper)?;

    // DNS: our server inside the TUN range, the original resolvers as upstream (resolved's
    // uplinks where its stub is the original).
    let original = ResolvConf::parse(
        &std::fs::read_to_string(&opts.resolv_conf).map_err(DaemonError::ReadResolvConf)?,
    );
    let original = crate::privileged::resolved::upstream_conf(
        original,
        std::path::Path::new(crate::privileged::resolved::RUNTIME_DIR),
        IpAddr::V4(opts.dns_ip()),
    );
    let upstream = plan::upstreams(&original, &routes);
    let domain = welcome.cluster_domain.clone();
    let search = plan::search(&opts.namespace, &domain);
    let (session_tx, session_rx) = watch::channel(Some(dialed.session.clone()));
    let shared = Arc::new(Shared::default());
    let dns = crate::dns::Dns::new(&domain, upstream, Box::new(session_rx.clone()))
        .with_metrics(shared.metrics.clone());
    let stack_task = traffic::spawn(
        tun,
        SocketAddr::new(IpAddr::V4(opts.dns_ip()), 53),
        dns,
        session_rx.clone(),
        shared.metrics.clone(),
        shared.flows.clone(),
    );
    helper.set_dns(search).await.map_err(DaemonError::Helper)?;

    {
        let mut s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
        *s = StatusReport {
            connected: true,
            namespace: opts.namespace.clone(),
            context: cluster.context.clone(),
            cluster_server: cluster.server.clone(),
            transport: dialed.transport.to_string(),
            manager: dialed.manager.clone(),
            session_id: welcome.session_id.clone(),
            cluster_domain: domain.clone(),
            subnets: routes.iter().map(ToString::to_string).collect(),
            tun_device: opts.tun_name.clone(),
            dns_server: opts.dns_ip().to_string(),
            reconnects: 0,
            daemon_pid: std::process::id(),
            privileged_pid: start.helper_pid,
            intercepts: Vec::new(),
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            manager_version: String::new(),
            carrier: None,
            manager_namespace: cluster.manager_namespace.clone(),
        };
    }
    let intercepts = Arc::new(crate::intercept::Intercepts::new(
        cluster.clone(),
        opts.namespace.clone(),
        session_rx.clone(),
        dials.clone(),
        Some(helper.clone()),
    ));
    let _ = shared.intercepts.set(intercepts.clone());
    progress("connected");
    println!("ready");

    let follower = tokio::spawn(follow_cluster(
        session_rx.clone(),
        helper.clone(),
        routes.clone(),
        never,
        opts.also_proxy.clone(),
        shared.clone(),
    ));

    let (quit_tx, mut quit_rx) = watch::channel(false);
    let server = tokio::spawn(crate::server::serve(
        listener,
        shared.clone(),
        quit_tx.clone(),
    ));
    let supervisor = tokio::spawn(supervise(
        cluster,
        opts.clone(),
        client,
        dialed,
        session_tx,
        shared.clone(),
        intercepts.clone(),
    ));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DaemonError::Socket)?;
    tokio::select! {
        _ = quit_rx.changed() => info!("Quit requested"),
        _ = tokio::signal::ctrl_c() => info!("Interrupted"),
        _ = term.recv() => info!("Terminated"),
    }
    supervisor.abort();
    follower.abort();
    // Unmounted while the file streams still answer: nothing in flight fails.
    intercepts.unmount_all().await;
    if let Some(s) = session_rx.borrow().as_ref() {
        s.close();
    }
    stack_task.abort();
    // The TUN device (and with it every route through it) goes away with the stack task; the
    // helper restores the resolver configuration as soon as this process exits.
    let _ = stack_task.await;
    server.abort();
    crate::server::remove(&opts.runtime_dir);
    info!("Disconnected; the machine is as it was");
    Ok(())
}

/// Makes this process die with its helper (its parent): the helper restores the machine when
/// the daemon goes, and a daemon without its helper would keep the machine changed with no one
/// to put it back. Fails if the helper is gone already.
fn die_with(helper_pid: u32) -> Result<(), DaemonError> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .map_err(DaemonError::DeathSignal)?;
    // Checked after setting it: a helper that died just before would otherwise go unnoticed.
    if nix::unistd::getppid().as_raw() as u32 != helper_pid {
        return Err(DaemonError::HelperGone(helper_pid));
    }
    Ok(())
}

/// Re-dials whenever the session is lost; new flows wait for the next session.
async fn supervise(
    cluster: Cluster,
    opts: Options,
    client: String,
    mut dialed: Dialed,
    session_tx: watch::Sender<Option<Session>>,
    shared: Arc<Shared>,
    intercepts: crate::intercept::SharedIntercepts,
) {
    let dials = intercepts.dial_table();
    loop {
        // The session certificate is short-lived: before it expires, the session is ended and
        // dialed again with a new one (intercepts are recreated like after any reconnect).
        tokio::select! {
            reason = dialed.session.closed() => warn!(%reason, "Lost the tunnel; reconnecting"),
            _ = tokio::time::sleep_until(dialed.renew_at) => {
                info!("Renewing the session certificate; reconnecting");
                dialed.session.close();
            }
        }
        let _ = session_tx.send(None);
        {
            let mut s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
            s.connected = false;
        }
        dialed = reconnect(&cluster, &opts, &client, &dialed, &dials).await;
        info!(manager = %dialed.manager, "Reconnected");
        intercepts.recreate(&dialed.session).await;
        let _ = session_tx.send(Some(dialed.session.clone()));
        let mut s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
        s.connected = true;
        s.reconnects += 1;
        shared.metrics.reconnects.inc();
        s.transport = dialed.transport.to_string();
        s.manager = dialed.manager.clone();
        s.session_id = dialed.session.welcome.session_id.clone();
    }
}

/// Dials until a session is back, two ways side by side:
/// - to the same UDP address with the same session certificate ([`connect::redial`]), every
///   [`REDIAL_PAUSE`] while the certificate lasts: no API server is needed, so after a drop-out
///   the session is back one handshake after the link;
/// - the whole way ([`connect::dial`]: the manager found again and a new certificate), for a
///   manager that moved, a certificate due, or the port-forward carrier. Each attempt uses new
///   connections to the API server and gets [`DIAL_ATTEMPT_TIMEOUT`]: a pooled connection that
///   lived through the drop-out may wait minutes on TCP's retransmission timer. When the first
///   way may work, this one starts [`FULL_DIAL_DELAY`] later, so that a short drop-out files
///   no certificate request.
async fn reconnect(
    cluster: &Cluster,
    opts: &Options,
    client: &str,
    last: &connect::Dialed,
    dials: &crate::session::DialTable,
) -> connect::Dialed {
    let again = async {
        loop {
            match connect::redial(last, client, &opts.namespace, dials.clone()).await {
                None => return std::future::pending().await,
                Some(Ok(dialed)) => return dialed,
                Some(Err(error)) => debug!(%error, "Redial failed"),
            }
            tokio::time::sleep(REDIAL_PAUSE).await;
        }
    };
    let whole_way = async {
        if connect::can_redial(last) {
            tokio::time::sleep(FULL_DIAL_DELAY).await;
        }
        let mut backoff = Backoff::new(RECONNECT_BACKOFF.0, RECONNECT_BACKOFF.1);
        loop {
            let attempt = async {
                let cluster = cluster.with_new_connections()?;
                connect::dial(
                    &cluster,
                    opts.transport,
                    client,
                    &opts.namespace,
                    dials.clone(),
                )
                .await
            };
            let pause = match tokio::time::timeout(DIAL_ATTEMPT_TIMEOUT, attempt).await {
                Ok(Ok(dialed)) => return dialed,
                Ok(Err(e)) => {
                    warn!(error = %e, "Reconnect failed");
                    // A refused certificate stays refused until an admin acts: do not file a
                    // request every two seconds.
                    let refused = matches!(
                        &e,
                        connect::DialError::Cluster(
                            crate::cluster::ClusterError::SessionRefused(_)
                                | crate::cluster::ClusterError::Forbidden { .. }
                        )
                    );
                    if refused {
                        Duration::from_secs(30)
                    } else {
                        backoff.next_pause()
                    }
                }
                Err(_) => {
                    warn!(
                        "Reconnect attempt got no answer in {}s; trying again",
                        DIAL_ATTEMPT_TIMEOUT.as_secs()
                    );
                    backoff.next_pause()
                }
            };
            tokio::time::sleep(pause).await;
        }
    };
    tokio::select! {
        dialed = again => dialed,
        dialed = whole_way => dialed,
    }
}

/// Routes subnets the manager announces after connect (a new node's pod range, say), and
/// passes its namespaces on to the helper (for systemd-resolved's routing domains). Routes are
/// only added while connected; they all go when the device does.
async fn follow_cluster(
    mut session_rx: watch::Receiver<Option<Session>>,
    helper: Arc<Helper>,
    mut installed: Vec<Ipv4Net>,
    never: Vec<Ipv4Net>,
    also: Vec<Ipv4Net>,
    shared: Arc<Shared>,
) {
    let mut routed_namespaces = Arc::default();
    loop {
        let session = session_rx.borrow_and_update().clone();
        if let Some(session) = session {
            let mut subnets_rx = session.subnets_rx.clone();
            let mut namespaces_rx = session.namespaces_rx.clone();
            loop {
                let namespaces = namespaces_rx.borrow_and_update().clone();
                if !namespaces.is_empty() && namespaces != routed_namespaces {
                    let names = namespaces.iter().cloned().collect();
                    match helper.route_namespaces(names).await {
                        Ok(()) => routed_namespaces = namespaces,
                        Err(error) => warn!(%error, "Could not route the cluster's namespaces"),
                    }
                }
                let subnets = subnets_rx.borrow_and_update().clone();
                for cidr in plan::new_routes(&subnets, &also, &never, &installed) {
                    match helper.add_routes(vec![cidr]).await {
                        Ok(()) => {
                            info!(%cidr, "Routed a new cluster subnet");
                            installed.push(cidr);
                            let mut s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
                            s.subnets.push(cidr.to_string());
                        }
                        Err(error) => warn!(%cidr, %error, "Could not route a new cluster subnet"),
                    }
                }
                tokio::select! {
                    changed = subnets_rx.changed() => if changed.is_err() { break },
                    changed = namespaces_rx.changed() => if changed.is_err() { break },
                    _ = session_rx.changed() => break,
                }
            }
        } else if session_rx.changed().await.is_err() {
            return;
        }
    }
}

async fn api_server_ip(server: &str) -> Option<IpAddr> {
    let uri: http::Uri = server.parse().ok()?;
    let host = uri.host()?.trim_matches(['[', ']']).to_owned();
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    let port = uri.port_u16().unwrap_or(443);
    let mut addrs = tokio::net::lookup_host((host.as_str(), port)).await.ok()?;
    addrs.next().map(|a| a.ip())
}

fn client_name() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "root".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!("{user}@{host}")
}
