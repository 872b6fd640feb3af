//! Workstation checks. Connected: the daemon and its privileged helper, the TUN device, the
//! cluster subnets' routes (and any route shadowing them, as a VPN's would), the resolver, DNS
//! through tether, a TCP connection to a Service through the tunnel. Not
//! connected: what a crashed session may have left (resolver, TUN device, socket).

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use ipnet::Ipv4Net;
use tether_daemon::{control::StatusReport, privileged::route_check::Route};

use crate::check::{Check, Status};

/// The first line of the resolv.conf tether writes (see `tether_daemon::privileged::resolv_conf`).
pub const TETHER_RESOLV_MARK: &str = "# Written by tether";

/// The TUN device as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunState {
    pub up: bool,
    pub mtu: u32,
}

/// The saved original resolver configuration in root's state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backup {
    Present,
    Missing,
    /// Only root can look.
    Unreadable,
}

/// A Service to connect to through the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTarget {
    /// `namespace/name`.
    pub name: String,
    pub addr: std::net::SocketAddr,
}

/// What doctor saw of a connected workstation.
#[derive(Debug, Clone)]
pub struct ConnectedView {
    pub status: StatusReport,
    /// Where the daemon logs, for next steps.
    pub daemon_log: String,
    pub helper_alive: bool,
    /// `None`: no such device.
    pub tun: Option<TunState>,
    /// The main routing table.
    pub routes: Vec<Route>,
    /// `/etc/resolv.conf`'s text, if readable.
    pub resolv_conf: Option<String>,
    /// systemd-resolved manages the resolver (tether configures it per link, not in the file).
    pub resolved: bool,
    pub backup: Backup,
    /// `kubernetes.default` asked of tether's DNS server directly.
    pub direct_dns: Result<Vec<Ipv4Addr>, String>,
    /// `kubernetes.default` through the system resolver.
    pub system_dns: Result<Vec<IpAddr>, String>,
    /// A TCP connection through the tunnel to a Service with ready endpoints (not `kubernetes`:
    /// the manager's dial policy keeps the API server out of reach). `None`: no such Service.
    pub service: Option<(ServiceTarget, Result<Duration, String>)>,
}

/// All connected checks.
pub fn connected_checks(v: &ConnectedView) -> Vec<Check> {
    let s = &v.status;
    let reconnect = "`sudo tether quit` and `sudo tether connect` again".to_owned();
    let mut checks = Vec::new();

    let found = format!(
        "connected to {} (context {}), namespace {}, over {} via {}; {} reconnects",
        s.cluster_server, s.context, s.namespace, s.transport, s.manager, s.reconnects
    );
    checks.push(if s.connected {
        Check::ok(
            "workstation.daemon",
            format!("daemon pid {}: {found}", s.daemon_pid),
        )
    } else {
        Check::warn(
            "workstation.daemon",
            format!(
                "daemon pid {} is reconnecting to the traffic manager ({} reconnects so far)",
                s.daemon_pid, s.reconnects
            ),
            format!(
                "see the Traffic manager checks above and the daemon log {}",
                v.daemon_log
            ),
        )
    });

    checks.push(if v.helper_alive {
        Check::ok(
            "workstation.helper",
            format!("privileged helper pid {} is alive", s.privileged_pid),
        )
    } else {
        Check::fail(
            "workstation.helper",
            format!(
                "the privileged helper (pid {}) is gone: nobody restores routes and resolver",
                s.privileged_pid
            ),
            reconnect.clone(),
        )
    });

    checks.push(match &v.tun {
        Some(t) if t.up => Check::ok(
            "workstation.tun",
            format!("{} is up, MTU {}", s.tun_device, t.mtu),
        ),
        Some(_) => Check::fail(
            "workstation.tun",
            format!("{} is down", s.tun_device),
            reconnect.clone(),
        ),
        None => Check::fail(
            "workstation.tun",
            format!("the TUN device {} does not exist", s.tun_device),
            reconnect.clone(),
        ),
    });

    checks.push(routes_check(&s.subnets, &s.tun_device, &v.routes));
    checks.push(resolver_check(v));
    checks.push(dns_check(v));
    checks.push(service_check(v));
    checks.push(carrier_check(s));
    checks
}

/// Above this smoothed RTT the tunnel feels slow (interactive requests pay it several times).
pub const RTT_WARN_MS: f64 = 150.0;
/// Above this share of lost packets throughput collapses (QUIC backs off on every loss).
pub const LOSS_WARN_PERCENT: f64 = 2.0;
/// Loss is judged over at least this many packets; fewer say too little.
pub const LOSS_MIN_PACKETS: u64 = 100;

/// `workstation.carrier`: the tunnel's RTT and packet loss as the daemon's QUIC connection
/// measures them.
pub fn carrier_check(s: &StatusReport) -> Check {
    const ID: &str = "workstation.carrier";
    let Some(c) = &s.carrier else {
        return Check::skipped(
            ID,
            "the daemon reports no carrier figures (it is reconnecting, or older than this \
             tether)",
        );
    };
    let rtt = c.rtt_ms();
    let loss = c.loss_percent();
    let judged = c.sent_packets >= LOSS_MIN_PACKETS;
    let loss_text = if judged {
        format!(
            "{loss:.2} % lost ({} of {} packets)",
            c.lost_packets, c.sent_packets
        )
    } else {
        format!(
            "{} of {} packets lost (too few sent to judge loss)",
            c.lost_packets, c.sent_packets
        )
    };
    let found = format!("{} carrier: RTT {rtt:.1} ms, {loss_text}", s.transport);
    let slow = rtt > RTT_WARN_MS;
    let lossy = judged && loss > LOSS_WARN_PERCENT;
    if !slow && !lossy {
        return Check::ok(ID, found);
    }
    let mut why = Vec::new();
    if slow {
        why.push(format!("RTT over {RTT_WARN_MS} ms"));
    }
    if lossy {
        why.push(format!("loss over {LOSS_WARN_PERCENT} %"));
    }
    let next = if s.transport == "port-forward" {
        "the API server relays every packet over port-forward: if the manager's UDP port is \
         reachable from here, `sudo tether quit && sudo tether connect --transport udp`; \
         otherwise check the network to the API server"
            .to_owned()
    } else if lossy {
        format!(
            "the path to the manager ({}) drops packets (Wi-Fi, a VPN, a congested link): check \
             it with `ping`/`mtr`, or try `sudo tether quit && sudo tether connect --transport \
             port-forward`",
            s.manager
        )
    } else {
        format!(
            "the path to the manager ({}) is slow: check it with `ping`/`mtr` (a VPN hop or a \
             distant cluster)",
            s.manager
        )
    };
    Check::warn(ID, format!("{found}: {}", why.join(" and ")), next)
}

/// Every cluster subnet routed into the TUN, and no other route at least as specific
/// overlapping it (a VPN's or a docker bridge's would win and take the traffic).
pub fn routes_check(subnets: &[String], tun: &str, routes: &[Route]) -> Check {
    const ID: &str = "workstation.routes";
    let subnets: Vec<Ipv4Net> = subnets.iter().filter_map(|s| s.parse().ok()).collect();
    let mut unrouted = Vec::new();
    let mut shadows = Vec::new();
    for subnet in &subnets {
        let routed = routes
            .iter()
            .any(|r| r.dev == tun && r.dst.contains(subnet));
        if !routed {
            unrouted.push(subnet.to_string());
        }
        for r in routes
            .iter()
            .filter(|r| r.dev != tun && r.dst.prefix_len() > 0)
        {
            let overlaps = subnet.contains(&r.dst) || r.dst.contains(subnet);
            if overlaps && r.dst.prefix_len() >= subnet.prefix_len() {
                shadows.push((subnet, r));
            }
        }
    }
    if let Some((subnet, route)) = shadows.first() {
        let all: Vec<String> = shadows
            .iter()
            .map(|(s, r)| format!("{r} shadows {s}"))
            .collect();
        return Check::fail(
            ID,
            format!(
                "{}: traffic to those addresses bypasses tether",
                all.join("; ")
            ),
            format!(
                "if the route is stale, remove it (`sudo ip route del {}`); if a VPN needs it, \
                 reconnect with `--never-proxy {}` to leave that range to it (or disconnect the \
                 VPN); {subnet} is the cluster's",
                route.dst, route.dst
            ),
        );
    }
    if !unrouted.is_empty() {
        return Check::fail(
            ID,
            format!("not routed into {tun}: {}", unrouted.join(", ")),
            "`sudo tether quit` and `sudo tether connect` again",
        );
    }
    let all: Vec<String> = subnets.iter().map(Ipv4Net::to_string).collect();
    Check::ok(
        ID,
        format!("{} routed into {tun}, none shadowed", all.join(", ")),
    )
}

/// The nameservers of a resolv.conf text.
fn nameservers(text: &str) -> Vec<IpAddr> {
    tether_daemon::privileged::resolv_conf::ResolvConf::parse(text).nameservers
}

fn resolver_check(v: &ConnectedView) -> Check {
    const ID: &str = "workstation.resolver";
    let dns = &v.status.dns_server;
    let backup = match v.backup {
        Backup::Present => "; the original is saved",
        Backup::Missing => "",
        Backup::Unreadable => "; (the saved original is root's to check: run doctor with sudo)",
    };
    if v.resolved {
        return Check::ok(
            ID,
            format!(
                "systemd-resolved is in charge; tether's DNS {dns} is set on {}",
                v.status.tun_device
            ),
        );
    }
    let Some(text) = &v.resolv_conf else {
        return Check::skipped(ID, "cannot read /etc/resolv.conf");
    };
    let servers = nameservers(text);
    let first = servers.first().map(ToString::to_string);
    if first.as_deref() != Some(dns.as_str()) {
        let shown: Vec<String> = servers.iter().map(ToString::to_string).collect();
        return Check::fail(
            ID,
            format!(
                "/etc/resolv.conf no longer points to tether's DNS {dns} (nameservers: {}): \
                 something rewrote it, and cluster names do not resolve",
                if shown.is_empty() {
                    "none".into()
                } else {
                    shown.join(", ")
                }
            ),
            "`sudo tether quit && sudo tether connect` puts it right (quit restores the \
             original, connect points it to tether again); if a network manager or VPN client \
             rewrote it, tell that tool to leave it alone",
        );
    }
    if v.backup == Backup::Missing {
        return Check::warn(
            ID,
            format!(
                "/etc/resolv.conf points to tether's DNS {dns}, but the saved original is missing"
            ),
            "after `tether quit`, check /etc/resolv.conf by hand",
        );
    }
    Check::ok(
        ID,
        format!("/etc/resolv.conf points to tether's DNS {dns}{backup}"),
    )
}

fn dns_check(v: &ConnectedView) -> Check {
    const ID: &str = "workstation.dns";
    let dns = &v.status.dns_server;
    match (&v.system_dns, &v.direct_dns) {
        (Ok(ips), _) if !ips.is_empty() => {
            let shown: Vec<String> = ips.iter().map(ToString::to_string).collect();
            Check::ok(
                ID,
                format!("kubernetes.default resolves to {}", shown.join(", ")),
            )
        }
        (system, Ok(direct)) if !direct.is_empty() => Check::fail(
            ID,
            format!(
                "the system resolver cannot find kubernetes.default ({}) though tether's DNS \
                 {dns} answers it: the resolver does not ask tether",
                system.as_ref().err().map_or("no address", String::as_str)
            ),
            "see workstation.resolver; `sudo tether quit && sudo tether connect`",
        ),
        (_, direct) => Check::fail(
            ID,
            format!(
                "tether's DNS {dns} does not answer kubernetes.default ({})",
                direct.as_ref().err().map_or("no address", String::as_str)
            ),
            format!(
                "see the Traffic manager checks, `tether status` and the daemon log {}",
                v.daemon_log
            ),
        ),
    }
}

fn service_check(v: &ConnectedView) -> Check {
    const ID: &str = "workstation.service";
    match &v.service {
        None => Check::skipped(
            ID,
            format!(
                "no Service with ready endpoints in namespace {} to connect to",
                v.status.namespace
            ),
        ),
        Some((t, Ok(rtt))) => Check::ok(
            ID,
            format!(
                "TCP to Service {} ({}) through the tunnel: {} ms",
                t.name,
                t.addr,
                rtt.as_millis()
            ),
        ),
        Some((t, Err(e))) => Check::fail(
            ID,
            format!(
                "no TCP connection to Service {} ({}) through the tunnel: {e}",
                t.name, t.addr
            ),
            format!(
                "see the Traffic manager checks and `tether status`; the daemon log {} says what \
                 the tunnel does",
                v.daemon_log
            ),
        ),
    }
}

/// What a crashed session may have left on a workstation that is not connected.
#[derive(Debug, Clone)]
pub struct Leftovers {
    /// The control socket's path, if it exists (nobody answers on it).
    pub socket: Option<String>,
    pub resolv_conf: Option<String>,
    pub backup: Backup,
    /// A TUN device of tether's name that still exists.
    pub tun: Option<String>,
    /// Routes through that device.
    pub tun_routes: Vec<Route>,
}

/// `workstation.daemon` (not connected) and `workstation.leftovers`: every leftover named in one
/// check, with what repairs each.
pub fn leftover_checks(l: &Leftovers) -> Vec<Check> {
    const ID: &str = "workstation.leftovers";
    let mut checks = vec![Check::ok(
        "workstation.daemon",
        "not connected (`sudo tether connect` connects)",
    )];
    let ours = l
        .resolv_conf
        .as_deref()
        .is_some_and(|t| t.starts_with(TETHER_RESOLV_MARK));
    let mut found = Vec::new();
    let mut next = Vec::new();
    let mut status = Status::Ok;
    if ours {
        found.push(
            "/etc/resolv.conf is still tether's: names resolve through a DNS server that is gone"
                .to_owned(),
        );
        status = Status::Fail;
    }
    if l.backup == Backup::Present {
        found.push(
            "the original resolver configuration of a crashed session is saved, waiting to be \
             put back"
                .to_owned(),
        );
        status = Status::Fail;
    }
    if let Some(socket) = &l.socket {
        found.push(format!("a dead daemon's control socket remains ({socket})"));
        status = status.max(Status::Warn);
    }
    if ours || l.backup == Backup::Present || l.socket.is_some() {
        next.push(
            "`sudo tether quit` restores the original resolver configuration and removes the \
             dead socket"
                .to_owned(),
        );
    }
    if let Some(tun) = &l.tun {
        let routes = if l.tun_routes.is_empty() {
            String::new()
        } else {
            let shown: Vec<String> = l.tun_routes.iter().map(ToString::to_string).collect();
            format!(" with routes {}", shown.join(", "))
        };
        found.push(format!(
            "the TUN device {tun} still exists{routes} without a daemon: a tether process holds it"
        ));
        status = status.max(Status::Warn);
        next.push(
            "find that process with `pgrep -a tether` and stop it (`sudo kill PID`): the device \
             and its routes go with it"
                .to_owned(),
        );
    }
    if found.is_empty() {
        let note = if l.backup == Backup::Unreadable {
            " (the saved resolver backup is root's to check: run doctor with sudo)"
        } else {
            ""
        };
        checks.push(Check::ok(
            ID,
            format!("nothing left by a crashed session{note}"),
        ));
    } else {
        checks.push(Check {
            id: ID.to_owned(),
            status,
            found: found.join("; "),
            next: Some(next.join("; then ")),
        });
    }
    checks
}

#[cfg(test)]
mod tests;
