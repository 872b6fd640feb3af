use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test CIDR parses")
}

fn route(dst: &str, gateway: Option<&str>, dev: &str) -> Route {
    Route {
        dst: net(dst),
        gateway: gateway.map(|g| g.parse().expect("test address parses")),
        dev: dev.to_owned(),
    }
}

/// A laptop on a LAN: the default route via the router, the LAN itself, a docker bridge.
fn laptop() -> Vec<Route> {
    vec![
        route("0.0.0.0/0", Some("192.168.1.1"), "wlan0"),
        route("192.168.1.0/24", None, "wlan0"),
        route("172.17.0.0/16", None, "docker0"),
    ]
}

fn policy(allow_conflicting: bool) -> RoutePolicy {
    RoutePolicy {
        never: vec![net("10.1.0.0/16")],
        also: Vec::new(),
        allow_conflicting,
        own_dev: "tether0".into(),
    }
}

#[test]
fn cluster_ranges_are_routed() {
    for cidr in [
        "10.96.0.0/16",
        "10.244.0.0/16",
        "10.98.0.0/15",
        "100.64.0.0/10",
    ] {
        policy(false).check(net(cidr), &laptop(), &[]).expect(cidr);
    }
    // /8 is the broadest allowed.
    policy(false)
        .check(net("11.0.0.0/8"), &laptop(), &[])
        .unwrap();
}

#[test]
fn anything_broader_than_a_slash_8_is_refused() {
    for cidr in [
        "10.0.0.0/7",
        "0.0.0.0/0",
        "0.0.0.0/1",
        "128.0.0.0/1",
        "128.0.0.0/3",
        "2.0.0.0/7",
    ] {
        for allow in [false, true] {
            let err = policy(allow).check(net(cidr), &[], &[]).unwrap_err();
            assert!(matches!(err, RouteRefused::TooBroad(_)), "{cidr}: {err}");
        }
    }
    for cidr in ["127.0.0.0/8", "224.0.0.0/8", "169.254.0.0/16"] {
        let err = policy(true).check(net(cidr), &[], &[]).unwrap_err();
        assert!(matches!(err, RouteRefused::NotRoutable(_)), "{cidr}: {err}");
    }
    let err = policy(false)
        .check(net("10.96.0.1/16"), &[], &[])
        .unwrap_err();
    assert!(err.to_string().contains("not a network address"), "{err}");
}

#[test]
fn a_route_covering_a_gateway_is_refused_even_when_conflicts_are_allowed() {
    for allow in [false, true] {
        let err = policy(allow)
            .check(net("192.168.0.0/16"), &laptop(), &[])
            .unwrap_err();
        assert!(
            matches!(&err, RouteRefused::CoversGateway { route, .. } if route.dst.prefix_len() == 0),
            "{err}"
        );
        assert!(err.to_string().contains("via 192.168.1.1"), "{err}");
    }
    // A gateway no connected route covers (on-link): still found.
    let routes = vec![route("0.0.0.0/0", Some("100.70.0.1"), "eth0")];
    let err = policy(true)
        .check(net("100.64.0.0/10"), &routes, &[])
        .unwrap_err();
    assert!(matches!(err, RouteRefused::CoversGateway { .. }), "{err}");
    // The gateway of tether's own routes does not count.
    let own = vec![route("10.200.0.0/16", Some("10.96.0.1"), "tether0")];
    policy(false).check(net("10.96.0.0/16"), &own, &[]).unwrap();
}

#[test]
fn an_identical_route_is_refused_not_replaced() {
    for allow in [false, true] {
        let err = policy(allow)
            .check(net("172.17.0.0/16"), &laptop(), &[])
            .unwrap_err();
        assert!(matches!(err, RouteRefused::Identical(_)), "{err}");
        assert!(err.to_string().contains("never replaces"), "{err}");
    }
}

#[test]
fn overlaps_need_allow_conflicting_subnets() {
    let err = policy(false)
        .check(net("172.17.128.0/17"), &laptop(), &[])
        .unwrap_err();
    assert!(matches!(err, RouteRefused::Conflict(_)), "{err}");
    assert!(
        err.to_string().contains("172.17.0.0/16 dev docker0"),
        "{err}"
    );
    policy(true)
        .check(net("172.17.128.0/17"), &laptop(), &[])
        .unwrap();
    // The default route itself never conflicts: every cluster range is inside it.
    policy(false)
        .check(net("10.96.0.0/12"), &laptop(), &[])
        .unwrap();
}

#[test]
fn never_proxied_ranges_are_refused() {
    for cidr in ["10.0.0.0/8", "10.1.2.0/24"] {
        let err = policy(true).check(net(cidr), &[], &[]).unwrap_err();
        assert!(
            matches!(err, RouteRefused::NeverProxied { .. }),
            "{cidr}: {err}"
        );
    }
}

#[test]
fn many_slash_8s_do_not_add_up_to_the_internet() {
    // What a compromised manager would announce one by one: 1/8, 2/8, 3/8, ...
    let mut routed = Vec::new();
    let mut refused = None;
    for first in 1u8..=223 {
        let cidr = Ipv4Net::new(std::net::Ipv4Addr::new(first, 0, 0, 0), 8).unwrap();
        match policy(false).check(cidr, &[], &routed) {
            Ok(()) => routed.push(cidr),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert_eq!(routed.len(), 2, "{routed:?}");
    assert!(
        matches!(refused, Some(RouteRefused::OverBudget { total, .. }) if total == 3 << 24),
        "{refused:?}"
    );
    // What is routed already is not counted twice.
    policy(false)
        .check(net("1.2.0.0/16"), &[], &routed)
        .unwrap();
    // Root's --also-proxy is outside the budget.
    let generous = RoutePolicy {
        also: vec![net("20.0.0.0/8"), net("30.0.0.0/8")],
        ..policy(false)
    };
    let routed = vec![net("20.0.0.0/8"), net("30.0.0.0/8"), net("10.0.0.0/8")];
    generous.check(net("11.0.0.0/8"), &[], &routed).unwrap();
}
