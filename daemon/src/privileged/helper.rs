//! The privileged helper: the only part of tether that runs as root while connected.
//!
//! `tether connect` starts it (as root); it starts the daemon as the user who ran `sudo`
//! (`SUDO_UID`/`SUDO_GID`, with that user's groups and home), or as `nobody` when root ran
//! tether directly (see [`identity`](super::identity)), and then does, on the daemon's request,
//! exactly four things (see [`channel`](super::channel)):
//! - create the TUN device its own command line describes and pass it to the daemon;
//! - route ranges into that device, by its own rules (see [`route_policy`](super::route_policy)):
//!   at most /8, never covering a gateway, never replacing a route, clear of `--never-proxy`
//!   and of existing routes (unless `--allow-conflicting-subnets`), within a session budget;
//! - once per session, point the resolver at the daemon's DNS server (an address of its own
//!   choosing), with search domains that must be real cluster domains (see
//!   [`domain`](super::domain)): per link through systemd-resolved where it is in charge (see
//!   [`resolved`](super::resolved)), else by rewriting `/etc/resolv.conf`, and put it back;
//! - under systemd-resolved, route the names under the cluster's namespaces and the reverse
//!   zones of its routed ranges to that server too (routing-only domains on its own link);
//! - mount FUSE file systems for `intercept --mount` on empty directories of the laptop user's,
//!   pass their `/dev/fuse` descriptors to the daemon, and unmount them (see
//!   [`fuse_mount`](super::fuse_mount)).
//!
//! Its own files (the resolv.conf backup, its log) are in a directory only root can write, and
//! it never follows a path the daemon's user could change (see
//! [`runtime_dir`](super::runtime_dir)). It reads the kubeconfig for a `nobody` daemon only; a
//! `sudo` user's daemon reads the user's own.
//!
//! It is what makes a crash harmless: when the daemon exits for any reason the helper puts the
//! resolver configuration back at once and unmounts its FUSE mounts, and the TUN device (and with
//! it every route) goes away with the daemon's descriptor. SIGTERM, SIGINT and SIGHUP stop the daemon and restore too. The
//! daemon dies with the helper (its parent-death signal); if the helper is killed outright, the
//! next `connect` (or `quit`) repairs what is left (see [`resolv_conf`](super::resolv_conf) and
//! [`fuse_mount::repair_stale`](super::fuse_mount::repair_stale)).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use super::channel::{read_line, write_line, Reply, Request, Start};
use super::domain;
use super::fuse_mount::{self, Mounts, Owner};
use super::identity::{self, Identity};
use super::resolv_conf::{self, ResolvConf, ResolvConfFile};
use super::resolved;
use super::route_check;
use super::route_policy::RoutePolicy;
use super::runtime_dir::{RuntimeDir, RuntimeDirError, StateDir};
use super::tun::{self, Tun, TunConfig};

/// How long the daemon gets to exit after the helper is told to stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What the helper is allowed to do, all from root's command line.
#[derive(Debug, Clone)]
pub struct HelperConfig {
    /// The TUN device to create.
    pub tun: TunConfig,
    /// The DNS server the resolver configuration points at (inside the TUN's range).
    pub dns: Ipv4Addr,
    /// What may be routed into the device.
    pub routes: RoutePolicy,
    /// The resolver configuration to manage.
    pub resolv_conf: PathBuf,
    /// The runtime directory: root's state, and the daemon's own directory.
    pub runtime_dir: PathBuf,
    /// The kubeconfig file [default: `$KUBECONFIG`, then `~/.kube/config`].
    pub kubeconfig: Option<PathBuf>,
}

/// No kubeconfig could be read.
#[derive(Debug, thiserror::Error)]
#[error("no kubeconfig: {0}. Set KUBECONFIG or pass --kubeconfig")]
pub struct KubeconfigError(String);

/// Errors that stop the helper before the daemon runs.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    #[error(transparent)]
    RuntimeDir(#[from] RuntimeDirError),
    #[error("starting the daemon")]
    Spawn(#[source] std::io::Error),
    #[error(transparent)]
    Resolver(#[from] resolv_conf::ResolvError),
    #[error(transparent)]
    Channel(#[from] super::channel::ChannelError),
}

/// Starts the daemon (`daemon` is its command) as the invoking user, or `nobody` when there is
/// none (`invoking` is `None`: root ran tether itself), and serves it until it exits; returns
/// its exit status.
pub async fn run(
    config: HelperConfig,
    mut daemon: std::process::Command,
    invoking: Option<Identity>,
) -> Result<ExitStatus, HelperError> {
    let runtime = RuntimeDir::open(&config.runtime_dir)?;
    let resolv = ResolvConfFile::new(&config.resolv_conf, runtime.state()?);
    // A helper that was killed left its resolv.conf behind: put it back first.
    if resolv.repair_stale()? {
        warn!("Restored the resolver configuration a previous session left behind");
    }
    let mounts_state = runtime.state()?;
    match fuse_mount::repair_stale(&mounts_state) {
        Ok(0) => {}
        Ok(n) => warn!(n, "Unmounted FUSE mounts a previous session left behind"),
        Err(error) => {
            warn!(error = %tether_proto::error_chain(&error), "Could not repair earlier mounts")
        }
    }
    // The mounts are for the laptop user: who ran `sudo`, or root.
    let owner = match &invoking {
        Some(user) => Owner {
            uid: user.uid,
            gid: user.gid,
        },
        None => Owner { uid: 0, gid: 0 },
    };
    // A `sudo` user's daemon reads the user's kubeconfig itself, with the user's rights; root's
    // is read only for the daemon of root, which runs as `nobody`.
    let kubeconfig = match invoking {
        Some(_) => None,
        None => Some(read_kubeconfig(config.kubeconfig.as_deref())?),
    };
    let user = identity::daemon_identity(invoking);
    runtime.prepare_user_dir(user.uid, user.gid)?;

    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(HelperError::Spawn)?;
    ours.set_nonblocking(true).map_err(HelperError::Spawn)?;
    let ours = UnixStream::from_std(ours).map_err(HelperError::Spawn)?;
    user.apply(&mut daemon);
    // The daemon writes its own log in its own directory: root's log is not its to write.
    daemon
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::null());
    // Spawned from this task, which `connect`'s runtime drives on the main thread: the daemon's
    // parent-death signal (it sets one, see `daemon::run`) follows the thread that forked it.
    let mut child = tokio::process::Command::from(daemon)
        .spawn()
        .map_err(HelperError::Spawn)?;
    info!(pid = child.id(), uid = user.uid, "Daemon started");
    let start = Start {
        kubeconfig,
        helper_pid: std::process::id(),
    };
    write_line(
        &ours,
        &serde_json::to_string(&start).map_err(super::channel::ChannelError::from)?,
        None,
    )
    .await?;

    let signal = |kind| signal(kind).map_err(HelperError::Spawn);
    let (mut term, mut int, mut hup) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
        signal(SignalKind::hangup())?,
    );
    let mut state = State::new(&config, &resolv);
    state.mounts = Some((Mounts::new(owner), mounts_state));
    let mut pending = Vec::new();
    let status = loop {
        tokio::select! {
            line = read_line(&ours, &mut pending) => match line {
                Ok((line, _)) => {
                    let (reply, fd) = state.handle(&line).await;
                    let text = serde_json::to_string(&reply).unwrap_or_default();
                    if write_line(&ours, &text, fd.as_ref().map(AsRawFd::as_raw_fd)).await.is_err() {
                        break wait(&mut child).await;
                    }
                    // Our copy of the device closes here: the daemon's is the only one left.
                    drop(fd);
                }
                // The daemon closed its end: it is exiting (or has crashed).
                Err(_) => break wait(&mut child).await,
            },
            status = child.wait() => break status.map_err(HelperError::Spawn)?,
            // Told to stop: the daemon goes first (it closes its session), then we restore.
            _ = term.recv() => break stop(&mut child).await,
            _ = int.recv() => break stop(&mut child).await,
            _ = hup.recv() => break stop(&mut child).await,
        }
    };
    if let Some((mounts, mounts_state)) = &mut state.mounts {
        mounts.unmount_all(mounts_state);
    }
    if state.dns_installed {
        if let Err(error) = resolv.restore() {
            warn!(error = %tether_proto::error_chain(&error), "Could not restore the resolver configuration");
        }
    }
    if state.resolved.is_some() {
        // Usually the link is gone already, and resolved with it forgot its settings.
        let _ = resolved::revert(&config.tun.name).await;
    }
    runtime.remove_socket();
    info!(
        ?status,
        "Daemon exited; the resolver configuration is restored"
    );
    Ok(status)
}

/// Asks the daemon to stop and waits for it (killing it if it takes too long).
async fn stop(child: &mut tokio::process::Child) -> ExitStatus {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    wait(child).await
}

/// Waits for the daemon to exit, killing it if it takes too long.
async fn wait(child: &mut tokio::process::Child) -> ExitStatus {
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(Ok(status)) => status,
        _ => {
            let _ = child.kill().await;
            child
                .wait()
                .await
                .unwrap_or_else(|_| ExitStatus::from_raw_code(1))
        }
    }
}

trait FromRawCode {
    fn from_raw_code(code: i32) -> Self;
}

impl FromRawCode for ExitStatus {
    fn from_raw_code(code: i32) -> Self {
        std::os::unix::process::ExitStatusExt::from_raw(code << 8)
    }
}

/// What the helper has done so far.
struct State<'a> {
    config: &'a HelperConfig,
    resolv: &'a ResolvConfFile,
    tun_created: bool,
    /// Routes added to the device this session.
    routed: Vec<Ipv4Net>,
    /// The daemon asked for DNS (once per session, whatever the outcome).
    dns_requested: bool,
    dns_installed: bool,
    /// DNS went to systemd-resolved (per link) instead of resolv.conf: the link's domains.
    resolved: Option<resolved::LinkDomains>,
    /// The FUSE mounts, and root's directory where they are recorded (`None`: mounting is not
    /// offered, as in tests of the other requests).
    mounts: Option<(Mounts, StateDir)>,
}

/// A descriptor the helper passes to the daemon.
#[derive(Debug)]
enum Passed {
    Tun(Tun),
    Fuse(OwnedFd),
}

impl AsRawFd for Passed {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Passed::Tun(tun) => tun.as_raw_fd(),
            Passed::Fuse(fd) => fd.as_raw_fd(),
        }
    }
}

impl<'a> State<'a> {
    fn new(config: &'a HelperConfig, resolv: &'a ResolvConfFile) -> Self {
        State {
            config,
            resolv,
            tun_created: false,
            routed: Vec::new(),
            dns_requested: false,
            dns_installed: false,
            resolved: None,
            mounts: None,
        }
    }

    async fn handle(&mut self, line: &str) -> (Reply, Option<Passed>) {
        let request: Request = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => return (refuse(RequestError::NotARequest(e)), None),
        };
        match request {
            Request::Tun => match self.create_tun() {
                Ok(fd) => (Reply::Ok, Some(Passed::Tun(fd))),
                Err(error) => (refuse(error), None),
            },
            Request::Routes { add } => match self.add_routes(&add).await {
                Ok(()) => (Reply::Ok, None),
                Err(error) => (refuse(error), None),
            },
            Request::Dns { search } => match self.set_dns(&search).await {
                Ok(()) => (Reply::Ok, None),
                Err(error) => (refuse(error), None),
            },
            Request::Namespaces { names } => match self.route_namespaces(&names).await {
                Ok(()) => (Reply::Ok, None),
                Err(error) => (refuse(error), None),
            },
            Request::Mount { dir } => match self.mount(dir.as_deref()) {
                Ok((reply, fd)) => (reply, Some(Passed::Fuse(fd))),
                Err(error) => (refuse(error), None),
            },
            Request::Unmount { dir } => match self.unmount(&dir) {
                Ok(()) => (Reply::Ok, None),
                Err(error) => (refuse(error), None),
            },
            Request::ReadAhead { dir } => {
                let done = match &self.mounts {
                    Some((mounts, _)) => mounts.read_ahead(&dir).map_err(RequestError::from),
                    None => Err(RequestError::NoMounts),
                };
                match done {
                    Ok(()) => (Reply::Ok, None),
                    Err(error) => (refuse(error), None),
                }
            }
        }
    }

    fn mount(&mut self, dir: Option<&Path>) -> Result<(Reply, OwnedFd), RequestError> {
        let (mounts, state) = self.mounts.as_mut().ok_or(RequestError::NoMounts)?;
        let made = mounts.mount(state, dir)?;
        let owner = mounts.owner();
        let reply = Reply::Mounted {
            dir: made.dir,
            uid: owner.uid,
            gid: owner.gid,
        };
        Ok((reply, made.fuse))
    }

    fn unmount(&mut self, dir: &Path) -> Result<(), RequestError> {
        let (mounts, state) = self.mounts.as_mut().ok_or(RequestError::NoMounts)?;
        mounts.unmount(state, dir)?;
        Ok(())
    }

    fn create_tun(&mut self) -> Result<Tun, RequestError> {
        if self.tun_created {
            return Err(RequestError::TunExists);
        }
        let tun = Tun::create(&self.config.tun).map_err(|source| RequestError::Tun {
            name: self.config.tun.name.clone(),
            source,
        })?;
        self.tun_created = true;
        info!(name = %self.config.tun.name, "TUN device created; passing it to the daemon");
        Ok(tun)
    }

    async fn add_routes(&mut self, add: &[Ipv4Net]) -> Result<(), RequestError> {
        if !self.tun_created {
            return Err(RequestError::NoTun);
        }
        let existing = route_check::parse_proc_net_route(
            &std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
        );
        // All of them are checked before any is added, each counting the ones before it.
        let mut planned = self.routed.clone();
        let mut new = Vec::new();
        for cidr in add {
            if planned.contains(cidr) {
                continue;
            }
            self.config.routes.check(*cidr, &existing, &planned)?;
            planned.push(*cidr);
            new.push(*cidr);
        }
        let routes = tun::Routes::named(&self.config.tun.name);
        for cidr in new {
            routes
                .add(IpNet::V4(cidr))
                .await
                .map_err(|source| RequestError::Route { cidr, source })?;
            self.routed.push(cidr);
        }
        info!(routes = ?add, "Routes added");
        if let Some(link) = &mut self.resolved {
            if link.add_routes(&self.routed) {
                resolved::update(&self.config.tun.name, link).await?;
            }
        }
        Ok(())
    }

    /// Routes the names under the cluster's namespaces to the daemon's server. Validated either
    /// way; only resolved needs telling.
    async fn route_namespaces(&mut self, names: &[String]) -> Result<(), RequestError> {
        resolved::validate_namespaces(names)?;
        if let Some(link) = &mut self.resolved {
            if link.set_namespaces(names)? {
                resolved::update(&self.config.tun.name, link).await?;
                info!(
                    namespaces = names.len(),
                    "Namespaces routed to tether (systemd-resolved)"
                );
            }
        }
        Ok(())
    }

    async fn set_dns(&mut self, search: &[String]) -> Result<(), RequestError> {
        if std::mem::replace(&mut self.dns_requested, true) {
            return Err(RequestError::DnsSet);
        }
        domain::validate_search(search)?;
        let original = ResolvConf::parse(&self.resolv.read()?);
        if resolved::in_charge(&original, Path::new(resolved::RUNTIME_DIR)) {
            let mut link = resolved::LinkDomains::new(search)?;
            link.add_routes(&self.routed);
            resolved::apply(&self.config.tun.name, IpAddr::V4(self.config.dns), &link).await?;
            self.resolved = Some(link);
            info!(dns = %self.config.dns, ?search, "Split DNS set on the link (systemd-resolved)");
            return Ok(());
        }
        let text = resolv_conf::render(&original, IpAddr::V4(self.config.dns), search)?;
        self.resolv.install(&text)?;
        self.dns_installed = true;
        info!(dns = %self.config.dns, ?search, "Resolver configuration installed");
        Ok(())
    }
}

/// Why the helper refused or failed a request of the daemon. The daemon gets it as one line
/// ([`tether_proto::error_chain`]).
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("not a request")]
    NotARequest(#[source] serde_json::Error),
    #[error("the TUN device was already created")]
    TunExists,
    #[error("cannot create TUN device {name}")]
    Tun {
        name: String,
        #[source]
        source: tun::TunError,
    },
    #[error("no TUN device yet")]
    NoTun,
    #[error(transparent)]
    RouteRefused(#[from] super::route_policy::RouteRefused),
    #[error("routing {cidr}")]
    Route {
        cidr: Ipv4Net,
        #[source]
        source: tun::TunError,
    },
    #[error("DNS is set once per session; it was set already")]
    DnsSet,
    #[error(transparent)]
    Domains(#[from] domain::DomainError),
    #[error(transparent)]
    ResolvConf(#[from] resolv_conf::ResolvError),
    #[error(transparent)]
    Resolved(#[from] resolved::ResolvedError),
    #[error("this helper does not mount")]
    NoMounts,
    #[error(transparent)]
    Mount(#[from] fuse_mount::MountError),
}

fn refuse(error: RequestError) -> Reply {
    let message = tether_proto::error_chain(&error);
    warn!(%message, "Refused a request of the daemon");
    Reply::Error { message }
}

/// The kubeconfig as JSON text: read by the daemon for its own user, or by the helper for a
/// daemon of root's that runs as `nobody`.
pub fn read_kubeconfig(path: Option<&Path>) -> Result<String, KubeconfigError> {
    let kc = match path {
        Some(path) => kube::config::Kubeconfig::read_from(path)
            .map_err(|e| KubeconfigError(format!("{}: {e}", path.display())))?,
        None => kube::config::Kubeconfig::read().map_err(|e| KubeconfigError(e.to_string()))?,
    };
    serde_json::to_string(&kc).map_err(|e| KubeconfigError(e.to_string()))
}

#[cfg(test)]
mod tests;
