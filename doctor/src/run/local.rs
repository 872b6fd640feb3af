//! Reads the workstation: `/proc`, `/sys/class/net`, `/etc/resolv.conf`, root's state directory,
//! and asks tether's DNS server and the `kubernetes` Service through the tunnel.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use tether_daemon::{
    control::{self, StatusReport},
    privileged::{
        resolv_conf::{ResolvConf, BACKUP},
        resolved, route_check,
        runtime_dir::{self, STATE_DIR},
    },
};

use crate::{
    dnsprobe,
    workstation::{Backup, ConnectedView, Leftovers, ServiceTarget, TunState},
};

const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The TUN device's default name (`tether connect --tun-name`).
const DEFAULT_TUN: &str = "tether0";

fn tun_state(name: &str) -> Option<TunState> {
    let dir = Path::new("/sys/class/net").join(name);
    let flags = std::fs::read_to_string(dir.join("flags")).ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    let mtu = std::fs::read_to_string(dir.join("mtu"))
        .ok()
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(0);
    // IFF_UP; a TUN device's operstate says "unknown" even when it works.
    Some(TunState {
        up: flags & 0x1 != 0,
        mtu,
    })
}

fn backup(runtime: &Path) -> Backup {
    match std::fs::symlink_metadata(runtime.join(STATE_DIR).join(BACKUP)) {
        Ok(_) => Backup::Present,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Backup::Missing,
        Err(_) => Backup::Unreadable,
    }
}

/// Asks tether's DNS server for `name` directly.
async fn ask_dns(
    server: IpAddr,
    name: &str,
    limit: Duration,
) -> Result<Vec<std::net::Ipv4Addr>, String> {
    let id = (std::process::id() & 0xffff) as u16;
    let query = dnsprobe::query(id, name)?;
    let exchange = async {
        let socket = tokio::net::UdpSocket::bind(("0.0.0.0", 0))
            .await
            .map_err(|e| e.to_string())?;
        socket
            .send_to(&query, SocketAddr::new(server, 53))
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
        dnsprobe::answer(id, &buf[..n])
    };
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", limit.as_secs())))
}

async fn system_lookup(name: &str, limit: Duration) -> Result<Vec<IpAddr>, String> {
    match tokio::time::timeout(limit, tokio::net::lookup_host((name, 443))).await {
        Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(addrs)) => {
            let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.sort();
            ips.dedup();
            Ok(ips)
        }
    }
}

async fn connect(addr: SocketAddr, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(_)) => Ok(start.elapsed()),
    }
}

/// What doctor needs to judge a connected workstation; `target` is a Service to connect to
/// through the tunnel.
pub async fn connected(
    status: StatusReport,
    runtime: &Path,
    target: Option<ServiceTarget>,
    limit: Duration,
) -> ConnectedView {
    let resolv_conf = std::fs::read_to_string(RESOLV_CONF).ok();
    let parsed = ResolvConf::parse(resolv_conf.as_deref().unwrap_or_default());
    let domain = status.cluster_domain.trim_end_matches('.');
    let fqdn = format!("kubernetes.default.svc.{domain}.");
    let direct = async {
        match status.dns_server.parse() {
            Ok(server) => ask_dns(server, &fqdn, limit).await,
            Err(_) => Err(format!("no DNS server address ({:?})", status.dns_server)),
        }
    };
    let (direct_dns, system_dns) = tokio::join!(direct, system_lookup("kubernetes.default", limit));
    let service = match target {
        Some(t) => {
            let result = connect(t.addr, limit).await;
            Some((t, result))
        }
        None => None,
    };
    ConnectedView {
        helper_alive: tether_daemon::process::running(status.privileged_pid),
        tun: tun_state(&status.tun_device),
        routes: std::fs::read_to_string("/proc/net/route")
            .map(|t| route_check::parse_proc_net_route(&t))
            .unwrap_or_default(),
        resolved: resolved::in_charge(&parsed, Path::new(resolved::RUNTIME_DIR)),
        resolv_conf,
        backup: backup(runtime),
        daemon_log: control::log_path(runtime).display().to_string(),
        direct_dns,
        system_dns,
        service,
        status,
    }
}

/// What a crashed session may have left.
pub fn leftovers(runtime: &Path) -> Leftovers {
    let socket = runtime_dir::socket_path(runtime);
    Leftovers {
        socket: socket
            .symlink_metadata()
            .is_ok()
            .then(|| socket.display().to_string()),
        resolv_conf: std::fs::read_to_string(RESOLV_CONF).ok(),
        backup: backup(runtime),
        tun: tun_state(DEFAULT_TUN).map(|_| DEFAULT_TUN.to_owned()),
        tun_routes: std::fs::read_to_string("/proc/net/route")
            .map(|t| route_check::parse_proc_net_route(&t))
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.dev == DEFAULT_TUN)
            .collect(),
    }
}
