use super::*;
use crate::check::Status;
use tether_daemon::control::CarrierStats;

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
            carrier: Some(CarrierStats {
                rtt_us: 1_200,
                sent_packets: 5_000,
                lost_packets: 2,
                cwnd: 12_000,
                ..Default::default()
            }),
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
            "workstation.service",
            "workstation.carrier"
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

fn carrier(transport: &str, rtt_us: u64, sent: u64, lost: u64) -> Check {
    let mut s = view().status;
    s.transport = transport.into();
    s.carrier = Some(CarrierStats {
        rtt_us,
        sent_packets: sent,
        lost_packets: lost,
        cwnd: 12_000,
        ..Default::default()
    });
    carrier_check(&s)
}

#[test]
fn the_carriers_rtt_and_loss_are_judged() {
    let ok = carrier("udp", 1_200, 5_000, 2);
    assert_eq!(ok.status, Status::Ok);
    assert_eq!(
        ok.found,
        "udp carrier: RTT 1.2 ms, 0.04 % lost (2 of 5000 packets)"
    );
    // At the thresholds: still fine.
    assert_eq!(carrier("udp", 150_000, 1_000, 20).status, Status::Ok);

    let lossy = carrier("udp", 1_200, 1_000, 21);
    assert_eq!(lossy.status, Status::Warn);
    assert_eq!(
        lossy.found,
        "udp carrier: RTT 1.2 ms, 2.10 % lost (21 of 1000 packets): loss over 2 %"
    );
    let next = lossy.next.unwrap();
    assert!(next.contains("10.0.0.1:31234") && next.contains("--transport port-forward"));

    let slow = carrier("udp", 150_100, 1_000, 0);
    assert_eq!(slow.status, Status::Warn);
    assert!(slow.found.ends_with(": RTT over 150 ms"), "{}", slow.found);
    assert!(slow.next.unwrap().contains("is slow"));

    let both = carrier("port-forward", 400_000, 1_000, 50);
    assert_eq!(both.status, Status::Warn);
    assert!(both.found.ends_with(": RTT over 150 ms and loss over 2 %"));
    assert!(both.next.unwrap().contains("--transport udp"));

    // A handful of packets says nothing about loss.
    let young = carrier("udp", 900, 20, 1);
    assert_eq!(young.status, Status::Ok);
    assert_eq!(
        young.found,
        "udp carrier: RTT 0.9 ms, 1 of 20 packets lost (too few sent to judge loss)"
    );

    let mut s = view().status;
    s.carrier = None;
    assert_eq!(carrier_check(&s).status, Status::Skipped);
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
        tun_routes: Vec::new(),
    };
    let checks = leftover_checks(&clean);
    assert!(checks.iter().all(|c| c.status == Status::Ok));
    assert_eq!(checks[1].found, "nothing left by a crashed session");

    // What a daemon and helper killed together leave: every leftover named in one check.
    let crashed = Leftovers {
        resolv_conf: Some(format!(
            "{TETHER_RESOLV_MARK} while connected\nnameserver 198.18.0.2\n"
        )),
        backup: Backup::Present,
        socket: Some("/run/tether/user/daemon.sock".into()),
        ..clean.clone()
    };
    let c = &leftover_checks(&crashed)[1];
    assert_eq!(c.status, Status::Fail);
    assert_eq!(
        c.found,
        "/etc/resolv.conf is still tether's: names resolve through a DNS server that is gone; \
         the original resolver configuration of a crashed session is saved, waiting to be put \
         back; a dead daemon's control socket remains (/run/tether/user/daemon.sock)"
    );
    assert_eq!(
        c.next.as_deref(),
        Some(
            "`sudo tether quit` restores the original resolver configuration and removes the \
             dead socket"
        )
    );

    let socket = Leftovers {
        socket: Some("/run/tether/user/daemon.sock".into()),
        ..clean.clone()
    };
    assert_eq!(leftover_checks(&socket)[1].status, Status::Warn);

    // A TUN device someone still holds, with its routes: quit cannot help, the holder must go.
    let held = Leftovers {
        tun: Some("tether0".into()),
        tun_routes: vec![Route {
            dst: "10.96.0.0/12".parse().unwrap(),
            gateway: None,
            dev: "tether0".into(),
        }],
        ..clean
    };
    let c = &leftover_checks(&held)[1];
    assert_eq!(c.status, Status::Warn);
    assert!(
        c.found
            .contains("tether0 still exists with routes 10.96.0.0/12 dev tether0"),
        "{}",
        c.found
    );
    assert!(c.next.as_deref().unwrap().contains("pgrep -a tether"));
}
