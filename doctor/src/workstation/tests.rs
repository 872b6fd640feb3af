use super::*;
use crate::check::Status;

fn route(dst: &str, dev: &str) -> Route {
    Route {
        dst: dst.parse().unwrap(),
        gateway: None,
        dev: dev.into(),
    }
}

fn target() -> ServiceTarget {
    ServiceTarget {
        name: "default/hello".into(),
        addr: "10.96.0.20:80".parse().unwrap(),
    }
}

fn view() -> ConnectedView {
    ConnectedView {
        status: StatusReport {
            connected: true,
            namespace: "default".into(),
            context: "local".into(),
            cluster_server: "https://10.0.0.1:6443/".into(),
            transport: "udp".into(),
            manager: "10.0.0.1:31234".into(),
            subnets: vec!["10.96.0.0/16".into(), "10.244.0.0/16".into()],
            tun_device: "tether0".into(),
            dns_server: "198.18.0.2".into(),
            daemon_pid: 42,
            privileged_pid: 41,
            ..Default::default()
        },
        daemon_log: "/run/tether/user/daemon.log".into(),
        helper_alive: true,
        tun: Some(TunState {
            up: true,
            mtu: 65000,
        }),
        routes: vec![
            route("0.0.0.0/0", "eth0"),
            route("10.0.0.0/24", "eth0"),
            route("10.96.0.0/16", "tether0"),
            route("10.244.0.0/16", "tether0"),
            // Less specific than a cluster subnet: the cluster's more specific route wins.
            route("10.0.0.0/8", "wg0"),
        ],
        resolv_conf: Some(
            "# Written by tether while connected; restored on `tether quit`.\nnameserver \
             198.18.0.2\nsearch default.svc.cluster.local\n"
                .into(),
        ),
        resolved: false,
        backup: Backup::Present,
        direct_dns: Ok(vec![Ipv4Addr::new(10, 96, 0, 1)]),
        system_dns: Ok(vec![IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1))]),
        service: Some((target(), Ok(Duration::from_millis(4)))),
    }
}

fn by_id<'a>(checks: &'a [Check], id: &str) -> &'a Check {
    checks.iter().find(|c| c.id == id).unwrap()
}

#[test]
fn a_healthy_connection() {
    let checks = connected_checks(&view());
    let ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "workstation.daemon",
            "workstation.helper",
            "workstation.tun",
            "workstation.routes",
            "workstation.resolver",
            "workstation.dns",
            "workstation.service"
        ]
    );
    assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:#?}");
    assert_eq!(
        by_id(&checks, "workstation.routes").found,
        "10.96.0.0/16, 10.244.0.0/16 routed into tether0, none shadowed"
    );
    assert_eq!(
        by_id(&checks, "workstation.service").found,
        "TCP to Service default/hello (10.96.0.20:80) through the tunnel: 4 ms"
    );
    let mut none = view();
    none.service = None;
    assert_eq!(
        by_id(&connected_checks(&none), "workstation.service").status,
        Status::Skipped
    );
}

#[test]
fn a_tampered_resolver_is_named_with_its_repair() {
    let mut v = view();
    v.resolv_conf = Some("nameserver 192.0.2.53\n".into());
    v.system_dns = Err("no such host".into());
    let checks = connected_checks(&v);
    let resolver = by_id(&checks, "workstation.resolver");
    assert_eq!(resolver.status, Status::Fail);
    assert!(
        resolver.found.contains("nameservers: 192.0.2.53"),
        "{}",
        resolver.found
    );
    assert!(resolver
        .next
        .as_deref()
        .unwrap()
        .starts_with("`sudo tether quit && sudo tether connect`"));
    let dns = by_id(&checks, "workstation.dns");
    assert_eq!(dns.status, Status::Fail);
    assert!(dns
        .found
        .contains("though tether's DNS 198.18.0.2 answers it"));
}

#[test]
fn a_vpn_route_shadowing_a_cluster_subnet() {
    let mut v = view();
    v.routes.push(route("10.96.0.0/24", "tun-vpn"));
    let c = routes_check(&v.status.subnets, "tether0", &v.routes);
    assert_eq!(c.status, Status::Fail);
    assert_eq!(
        c.found,
        "10.96.0.0/24 dev tun-vpn shadows 10.96.0.0/16: traffic to those addresses bypasses tether"
    );
    assert!(c.next.unwrap().contains("sudo ip route del 10.96.0.0/24"));
    let c = routes_check(&v.status.subnets, "tether0", &v.routes[..3]);
    assert_eq!(c.status, Status::Fail);
    assert_eq!(c.found, "not routed into tether0: 10.244.0.0/16");
}

#[test]
fn dead_helper_missing_tun_and_broken_tunnel() {
    let mut v = view();
    v.helper_alive = false;
    v.tun = None;
    v.direct_dns = Err("timed out".into());
    v.system_dns = Err("timed out".into());
    v.service = Some((target(), Err("timed out".into())));
    v.status.connected = false;
    let checks = connected_checks(&v);
    assert_eq!(by_id(&checks, "workstation.daemon").status, Status::Warn);
    for id in [
        "workstation.helper",
        "workstation.tun",
        "workstation.dns",
        "workstation.service",
    ] {
        assert_eq!(by_id(&checks, id).status, Status::Fail, "{id}");
    }
    assert!(by_id(&checks, "workstation.dns")
        .found
        .contains("does not answer kubernetes.default (timed out)"));
}

#[test]
fn leftovers_of_a_crashed_session() {
    let clean = Leftovers {
        socket: None,
        resolv_conf: Some("nameserver 192.0.2.53\n".into()),
        backup: Backup::Missing,
        tun: None,
    };
    let checks = leftover_checks(&clean);
    assert!(checks.iter().all(|c| c.status == Status::Ok));
    let stale = Leftovers {
        resolv_conf: Some(format!(
            "{TETHER_RESOLV_MARK} while connected\nnameserver 198.18.0.2\n"
        )),
        ..clean.clone()
    };
    let c = &leftover_checks(&stale)[1];
    assert_eq!(c.status, Status::Fail);
    assert_eq!(
        c.next.as_deref(),
        Some("`sudo tether quit` restores the original resolver configuration")
    );
    let socket = Leftovers {
        socket: Some("/run/tether/user/daemon.sock".into()),
        ..clean
    };
    assert_eq!(leftover_checks(&socket)[1].status, Status::Warn);
}
