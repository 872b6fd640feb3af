//! The privileged helper: the only part of tether that runs as root while connected.
//!
//! `tether connect` starts it (as root); it starts the daemon as the user who ran `sudo`
//! (`SUDO_UID`/`SUDO_GID`), or as `nobody` when root ran tether directly, and then does, on the
//! daemon's request, exactly three things (see [`channel`](super::channel)):
//! - create the TUN device its own command line describes and pass it to the daemon;
//! - route ranges into that device, refusing any that is not a plain unicast network, that
//!   touches a `--never-proxy` range, or that overlaps an existing route (unless
//!   `--allow-conflicting-subnets`);
//! - point the resolver at the daemon's DNS server (an address of its own choosing), with
//!   validated search domains: per link through systemd-resolved where it is in charge (see
//!   [`resolved`](super::resolved)), else by rewriting `/etc/resolv.conf`, and put it back.
//!
//! It also reads the kubeconfig for the daemon (which may not be able to), and it is what makes
//! a crash harmless: when the daemon exits for any reason the helper puts the resolver
//! configuration back at once, and the TUN device (and with it every route) goes away with the
//! daemon's descriptor. If the helper itself is killed, the next `connect` repairs what is left
//! (see [`resolv_conf`](super::resolv_conf)).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use super::channel::{read_line, write_line, Reply, Request, Start};
use super::resolv_conf::{self, ResolvConf, ResolvConfFile};
use super::resolved;
use super::route_check;
use crate::tun::{self, Tun, TunConfig};

/// The uid and gid of `nobody`, for a daemon started by root without `sudo`.
pub const NOBODY: (u32, u32) = (65534, 65534);

/// How long the daemon gets to exit after the helper is told to stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What the helper is allowed to do, all from root's command line.
#[derive(Debug, Clone)]
pub struct HelperConfig {
    /// The TUN device to create.
    pub tun: TunConfig,
    /// The DNS server the resolver configuration points at (inside the TUN's range).
    pub dns: Ipv4Addr,
    /// Ranges never routed into the device.
    pub never_proxy: Vec<Ipv4Net>,
    /// Route ranges even where they overlap existing routes.
    pub allow_conflicting_subnets: bool,
    /// The resolver configuration to manage.
    pub resolv_conf: PathBuf,
    /// The runtime directory (socket, backups); handed to the daemon's user.
    pub runtime_dir: PathBuf,
    /// The kubeconfig file [default: `$KUBECONFIG`, then `~/.kube/config`].
    pub kubeconfig: Option<PathBuf>,
}

/// Errors that stop the helper before the daemon runs.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("no kubeconfig: {0}. Set KUBECONFIG or pass --kubeconfig")]
    Kubeconfig(String),
    #[error("preparing {path}")]
    RuntimeDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the daemon")]
    Spawn(#[source] std::io::Error),
    #[error(transparent)]
    Resolver(#[from] resolv_conf::ResolvError),
    #[error(transparent)]
    Channel(#[from] super::channel::ChannelError),
}

/// The user the daemon runs as: the one who ran `sudo`, else `nobody`.
pub fn daemon_user() -> (u32, u32) {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    match (var("SUDO_UID"), var("SUDO_GID")) {
        (Some(uid), Some(gid)) if uid != 0 => (uid, gid),
        _ => NOBODY,
    }
}

/// Starts the daemon (`daemon` is its command, run as `user`) and serves it until it exits;
/// returns its exit status.
pub async fn run(
    config: HelperConfig,
    mut daemon: std::process::Command,
    user: (u32, u32),
) -> Result<ExitStatus, HelperError> {
    let resolv = ResolvConfFile::new(&config.resolv_conf, &config.runtime_dir);
    // A daemon that died with its helper left its resolv.conf behind: put it back first.
    if resolv.repair_stale()? {
        warn!("Restored the resolver configuration a previous daemon left behind");
    }
    let kubeconfig = read_kubeconfig(config.kubeconfig.as_ref())?;
    prepare_runtime_dir(&config.runtime_dir, user)?;

    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(HelperError::Spawn)?;
    ours.set_nonblocking(true).map_err(HelperError::Spawn)?;
    let ours = UnixStream::from_std(ours).map_err(HelperError::Spawn)?;
    let mut child = tokio::process::Command::from({
        daemon
            .uid(user.0)
            .gid(user.1)
            .stdin(Stdio::from(OwnedFd::from(theirs)));
        daemon
    })
    .spawn()
    .map_err(HelperError::Spawn)?;
    info!(pid = child.id(), uid = user.0, "Daemon started");
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

    let mut term = signal(SignalKind::terminate()).map_err(HelperError::Spawn)?;
    let mut int = signal(SignalKind::interrupt()).map_err(HelperError::Spawn)?;
    let mut state = State {
        config: &config,
        resolv: &resolv,
        tun_created: false,
        dns_installed: false,
        resolved: false,
    };
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
            _ = term.recv() => stop(&child),
            _ = int.recv() => stop(&child),
        }
    };
    if state.dns_installed {
        if let Err(error) = resolv.restore() {
            warn!(%error, "Could not restore the resolver configuration");
        }
    }
    if state.resolved {
        // Usually the link is gone already, and resolved with it forgot its settings.
        let _ = resolved::revert(&config.tun.name).await;
    }
    crate::server::remove(&config.runtime_dir);
    info!(
        ?status,
        "Daemon exited; the resolver configuration is restored"
    );
    Ok(status)
}

/// Asks the daemon to stop (it restores and exits; the helper follows).
fn stop(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
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
    dns_installed: bool,
    /// DNS went to systemd-resolved (per link) instead of resolv.conf.
    resolved: bool,
}

impl State<'_> {
    async fn handle(&mut self, line: &str) -> (Reply, Option<Tun>) {
        let request: Request = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => return (refuse(format!("not a request: {e}")), None),
        };
        match request {
            Request::Tun => match self.create_tun() {
                Ok(fd) => (Reply::Ok, Some(fd)),
                Err(message) => (refuse(message), None),
            },
            Request::Routes { add } => match self.add_routes(&add).await {
                Ok(()) => (Reply::Ok, None),
                Err(message) => (refuse(message), None),
            },
            Request::Dns { search } => match self.set_dns(&search).await {
                Ok(()) => (Reply::Ok, None),
                Err(message) => (refuse(message), None),
            },
        }
    }

    fn create_tun(&mut self) -> Result<Tun, String> {
        if self.tun_created {
            return Err("the TUN device was already created".to_owned());
        }
        let tun = Tun::create(&self.config.tun).map_err(|e| {
            format!(
                "cannot create TUN device {}: {}",
                self.config.tun.name,
                crate::error_chain(&e)
            )
        })?;
        self.tun_created = true;
        info!(name = %self.config.tun.name, "TUN device created; passing it to the daemon");
        Ok(tun)
    }

    async fn add_routes(&self, add: &[Ipv4Net]) -> Result<(), String> {
        if !self.tun_created {
            return Err("no TUN device yet".to_owned());
        }
        let existing = route_check::parse_proc_net_route(
            &std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
        );
        for cidr in add {
            check_route(
                *cidr,
                &self.config.never_proxy,
                &existing,
                &self.config.tun.name,
                self.config.allow_conflicting_subnets,
            )?;
        }
        let routes = tun::Routes::named(&self.config.tun.name);
        for cidr in add {
            routes
                .add(IpNet::V4(*cidr))
                .await
                .map_err(|e| format!("routing {cidr}: {}", crate::error_chain(&e)))?;
        }
        info!(routes = ?add, "Routes added");
        Ok(())
    }

    async fn set_dns(&mut self, search: &[String]) -> Result<(), String> {
        let original = ResolvConf::parse(&self.resolv.read().map_err(|e| e.to_string())?);
        if resolved::in_charge(&original, std::path::Path::new(resolved::RUNTIME_DIR)) {
            resolved::apply(&self.config.tun.name, IpAddr::V4(self.config.dns), search).await?;
            self.resolved = true;
            info!(dns = %self.config.dns, ?search, "Split DNS set on the link (systemd-resolved)");
            return Ok(());
        }
        let text = resolv_conf::render(&original, IpAddr::V4(self.config.dns), search)
            .map_err(|e| e.to_string())?;
        self.resolv.install(&text).map_err(|e| e.to_string())?;
        self.dns_installed = true;
        info!(dns = %self.config.dns, ?search, "Resolver configuration installed");
        Ok(())
    }
}

fn refuse(message: String) -> Reply {
    warn!(%message, "Refused a request of the daemon");
    Reply::Error { message }
}

/// The helper's own check of a route the daemon asks for.
pub fn check_route(
    cidr: Ipv4Net,
    never: &[Ipv4Net],
    existing: &[route_check::Route],
    own_dev: &str,
    allow_conflicting: bool,
) -> Result<(), String> {
    tun::validate_route(IpNet::V4(cidr)).map_err(|e| e.to_string())?;
    if let Some(n) = never
        .iter()
        .find(|n| n.contains(&cidr.network()) || cidr.contains(&n.network()))
    {
        return Err(format!("{cidr} touches the never-proxied range {n}"));
    }
    if !allow_conflicting {
        if let Some(conflict) = route_check::find_conflicts(existing, &[cidr], own_dev).first() {
            return Err(conflict.to_string());
        }
    }
    Ok(())
}

/// The kubeconfig as JSON text (the daemon may not be able to read root's files).
fn read_kubeconfig(path: Option<&PathBuf>) -> Result<String, HelperError> {
    let kc = match path {
        Some(path) => kube::config::Kubeconfig::read_from(path)
            .map_err(|e| HelperError::Kubeconfig(format!("{}: {e}", path.display())))?,
        None => {
            kube::config::Kubeconfig::read().map_err(|e| HelperError::Kubeconfig(e.to_string()))?
        }
    };
    serde_json::to_string(&kc).map_err(|e| HelperError::Kubeconfig(e.to_string()))
}

/// Creates the runtime directory and gives it to the daemon's user (its socket goes there).
fn prepare_runtime_dir(dir: &std::path::Path, user: (u32, u32)) -> Result<(), HelperError> {
    let err = |source| HelperError::RuntimeDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::os::unix::fs::chown(dir, Some(user.0), Some(user.1)).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, dev: &str) -> route_check::Route {
        route_check::Route {
            dst: dst.parse().unwrap(),
            gateway: None,
            dev: dev.to_owned(),
        }
    }

    #[test]
    fn routes_are_checked_against_policy_and_existing_routes() {
        let existing = [route("0.0.0.0/0", "eth0"), route("192.168.1.0/24", "eth0")];
        let never: Vec<Ipv4Net> = vec!["10.1.0.0/16".parse().unwrap()];
        let check = |cidr: &str, allow| {
            check_route(cidr.parse().unwrap(), &never, &existing, "tether0", allow)
        };
        assert!(check("10.96.0.0/16", false).is_ok());
        assert!(
            check("0.0.0.0/0", true).is_err(),
            "the default route is never taken"
        );
        assert!(check("127.0.0.0/8", true).is_err());
        assert!(check("10.0.0.0/8", true)
            .unwrap_err()
            .contains("never-proxied"));
        let err = check("192.168.0.0/16", false).unwrap_err();
        assert!(err.contains("192.168.1.0/24"), "{err}");
        assert!(check("192.168.0.0/16", true).is_ok());
        assert!(
            check("10.96.0.1/16", false).is_err(),
            "not a network address"
        );
    }

    #[test]
    fn sudo_user_or_nobody() {
        // Only the fallback is testable without changing the process's environment.
        if std::env::var_os("SUDO_UID").is_none() {
            assert_eq!(daemon_user(), NOBODY);
        }
    }
}
