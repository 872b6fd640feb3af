//! What the daemon asks the root helper for, decided from plain data: which ranges to route into
//! the TUN device, which routes it would fight with, which resolvers stay upstream, and the
//! search list. Sans-IO: [`crate::daemon`] reads the inputs and carries the results out.

use std::net::{IpAddr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};
use tether_dns::ResolvConf;
use tether_proto::Subnets;

use crate::privileged::route_check::{self, Route};

/// The ranges to route and the ranges never to route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    /// Routed into the TUN device.
    pub routes: Vec<Ipv4Net>,
    /// Never routed, also when the cluster's ranges change later: `--never-proxy`, the tunnel's
    /// own peer and the API server (routing them into the tunnel would loop).
    pub never: Vec<Ipv4Net>,
}

/// The cluster's IPv4 ranges plus `also` (`--also-proxy`), minus `never` (`--never-proxy`),
/// the tunnel's direct peer and the API server.
pub fn routes(
    subnets: &Subnets,
    also: &[Ipv4Net],
    never: &[Ipv4Net],
    peer: Option<SocketAddr>,
    api_server: Option<IpAddr>,
) -> RoutePlan {
    let mut never = never.to_vec();
    if let Some(SocketAddr::V4(peer)) = peer {
        never.push(Ipv4Net::from(*peer.ip()));
    }
    if let Some(IpAddr::V4(ip)) = api_server {
        never.push(Ipv4Net::from(ip));
    }
    let routes = route_check::subtract(&wanted(subnets, also), &never);
    RoutePlan { routes, never }
}

/// The ranges a change of the cluster's subnets adds to `installed`.
pub fn new_routes(
    subnets: &Subnets,
    also: &[Ipv4Net],
    never: &[Ipv4Net],
    installed: &[Ipv4Net],
) -> Vec<Ipv4Net> {
    route_check::subtract(&wanted(subnets, also), never)
        .into_iter()
        .filter(|cidr| !installed.iter().any(|have| have.contains(cidr)))
        .collect()
}

/// The cluster's IPv4 ranges and `also`, aggregated.
fn wanted(subnets: &Subnets, also: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let mut out: Vec<Ipv4Net> = subnets
        .service
        .iter()
        .chain(&subnets.pod)
        .filter_map(|n| match n {
            IpNet::V4(v4) => Some(v4.trunc()),
            IpNet::V6(_) => None,
        })
        .chain(also.iter().copied())
        .collect();
    out.sort();
    out.dedup();
    Ipv4Net::aggregate(&out)
}

/// The machine's routes that `routes` would take traffic from, as one line (`a; b`), unless
/// `allow` (`--allow-conflicting-subnets`).
pub fn conflicts(
    existing: &[Route],
    routes: &[Ipv4Net],
    tun_name: &str,
    allow: bool,
) -> Option<String> {
    let found = route_check::find_conflicts(existing, routes, tun_name);
    (!found.is_empty() && !allow).then(|| {
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// The original resolvers that stay reachable once `routes` are in place: where names outside
/// the cluster go.
pub fn upstreams(original: &ResolvConf, routes: &[Ipv4Net]) -> Vec<SocketAddr> {
    original
        .nameservers
        .iter()
        .filter(|ip| {
            !routes
                .iter()
                .any(|r| matches!(ip, IpAddr::V4(v4) if r.contains(v4)))
        })
        .map(|ip| SocketAddr::new(*ip, 53))
        .collect()
}

/// The search list a pod of `namespace` has, for cluster domain `domain`.
pub fn search(namespace: &str, domain: &str) -> Vec<String> {
    vec![
        format!("{namespace}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<Ipv4Net> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn subnets(service: &[&str], pod: &[&str]) -> Subnets {
        let parse = |l: &[&str]| l.iter().map(|n| n.parse().unwrap()).collect();
        Subnets {
            service: parse(service),
            pod: parse(pod),
        }
    }

    #[test]
    fn routes_leave_out_the_peer_the_api_server_and_never_proxy() {
        let s = subnets(&["10.96.0.0/12", "fd00::/108"], &["10.244.0.0/16"]);
        let plan = routes(
            &s,
            &nets(&["192.168.50.0/24"]),
            &nets(&["10.244.7.0/24"]),
            Some("10.244.0.5:7443".parse().unwrap()),
            Some("10.96.0.1".parse().unwrap()),
        );
        for cidr in plan.routes.iter() {
            for left_out in ["10.244.7.9", "10.244.0.5", "10.96.0.1"] {
                assert!(!cidr.contains(&left_out.parse::<std::net::Ipv4Addr>().unwrap()));
            }
        }
        let covers = |ip: &str| {
            let ip = ip.parse::<std::net::Ipv4Addr>().unwrap();
            plan.routes.iter().any(|r| r.contains(&ip))
        };
        assert!(covers("10.96.0.10") && covers("10.244.1.1") && covers("192.168.50.3"));
        assert_eq!(plan.never.len(), 3);
    }

    #[test]
    fn a_new_subnet_is_routed_once() {
        let before = subnets(&["10.96.0.0/12"], &["10.244.0.0/24"]);
        let plan = routes(&before, &[], &[], None, None);
        let after = subnets(&["10.96.0.0/12"], &["10.244.0.0/24", "10.244.2.0/24"]);
        assert_eq!(
            new_routes(&after, &[], &plan.never, &plan.routes),
            nets(&["10.244.2.0/24"])
        );
        assert!(new_routes(&before, &[], &plan.never, &plan.routes).is_empty());
    }

    #[test]
    fn resolvers_inside_the_routes_are_not_upstreams() {
        let conf = ResolvConf::parse("nameserver 10.96.0.10\nnameserver 192.0.2.53\n");
        assert_eq!(
            upstreams(&conf, &nets(&["10.96.0.0/12"])),
            ["192.0.2.53:53".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn search_is_a_pods() {
        assert_eq!(
            search("shop", "cluster.local"),
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
    }
}
