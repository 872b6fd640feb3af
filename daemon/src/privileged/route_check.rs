//! Route conflict detection: before tether routes a cluster subnet into its TUN device, it checks
//! that no existing route already claims part of it (a VPN, a docker bridge, a LAN).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// An IPv4 route of the kernel's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub dev: String,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.dev)
    }
}

/// Parses `/proc/net/route` (hex, host byte order of a little-endian machine).
pub fn parse_proc_net_route(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let hex = |s: &str| {
                u32::from_str_radix(s, 16)
                    .ok()
                    .map(|v| Ipv4Addr::from(v.swap_bytes()))
            };
            let dst = hex(f[1])?;
            let gw = hex(f[2])?;
            let mask = hex(f[7])?;
            let prefix = u32::from(mask).leading_ones() as u8;
            Some(Route {
                dst: Ipv4Net::new(dst, prefix).ok()?,
                gateway: (!gw.is_unspecified()).then_some(gw),
                dev: f[0].to_owned(),
            })
        })
        .collect()
}

/// A subnet tether wants to route that an existing route overlaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub subnet: Ipv4Net,
    pub route: Route,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cluster subnet {} overlaps the existing route {}",
            self.subnet, self.route
        )
    }
}

/// The conflicts between `wanted` subnets and `existing` routes. The default route and routes of
/// tether's own device never conflict (a more specific route wins over them).
pub fn find_conflicts(existing: &[Route], wanted: &[Ipv4Net], own_dev: &str) -> Vec<Conflict> {
    let mut out = Vec::new();
    for subnet in wanted {
        for route in existing {
            if route.dst.prefix_len() == 0 || route.dev == own_dev {
                continue;
            }
            if overlaps(subnet, &route.dst) {
                out.push(Conflict {
                    subnet: *subnet,
                    route: route.clone(),
                });
            }
        }
    }
    out
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// `wanted` minus `never` (`--never-proxy`), split into the largest CIDRs that remain.
pub fn subtract(wanted: &[Ipv4Net], never: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let mut cur: Vec<Ipv4Net> = wanted.to_vec();
    for n in never {
        let mut next = Vec::new();
        for w in cur {
            if !overlaps(&w, n) {
                next.push(w);
            } else if n.contains(&w) {
                // wholly excluded
            } else {
                // n is inside w: split w into halves until the pieces avoid n.
                let mut stack = vec![w];
                while let Some(piece) = stack.pop() {
                    if !overlaps(&piece, n) {
                        next.push(piece);
                    } else if !n.contains(&piece) {
                        if let Ok(halves) = piece.subnets(piece.prefix_len() + 1) {
                            stack.extend(halves);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur.sort();
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t0000000A\t00000000\t0001\t0\t0\t0\tFCFFFFFF\t0\t0\t0\n\
docker0\t000060AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";

    #[test]
    fn parses_proc_net_route() {
        let routes = parse_proc_net_route(PROC);
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[0].to_string(), "0.0.0.0/0 via 10.0.0.1 dev eth0");
        assert_eq!(routes[1].to_string(), "10.0.0.0/30 dev eth0");
        assert_eq!(routes[2].to_string(), "172.96.0.0/16 dev docker0");
    }

    #[test]
    fn finds_conflicts_but_not_with_default_or_own_routes() {
        let routes = parse_proc_net_route(PROC);
        let wanted: Vec<Ipv4Net> = vec![
            "172.96.128.0/17".parse().unwrap(),
            "10.96.0.0/16".parse().unwrap(),
        ];
        let c = find_conflicts(&routes, &wanted, "tether0");
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].to_string(),
            "cluster subnet 172.96.128.0/17 overlaps the existing route 172.96.0.0/16 dev docker0"
        );
        let own = vec![Route {
            dst: "10.96.0.0/16".parse().unwrap(),
            gateway: None,
            dev: "tether0".into(),
        }];
        assert!(find_conflicts(&own, &wanted, "tether0").is_empty());
    }

    #[test]
    fn subtracts_never_proxy() {
        let w: Vec<Ipv4Net> = vec!["10.96.0.0/16".parse().unwrap()];
        let out = subtract(&w, &["10.96.0.0/17".parse().unwrap()]);
        assert_eq!(out, vec!["10.96.128.0/17".parse::<Ipv4Net>().unwrap()]);
        let out = subtract(&w, &["10.96.1.5/32".parse().unwrap()]);
        assert!(out
            .iter()
            .all(|n| !n.contains(&"10.96.1.5".parse::<Ipv4Addr>().unwrap())));
        assert!(out
            .iter()
            .any(|n| n.contains(&"10.96.1.4".parse::<Ipv4Addr>().unwrap())));
        assert_eq!(
            out.iter()
                .map(|n| 1u64 << (32 - n.prefix_len()))
                .sum::<u64>(),
            65535
        );
        assert!(subtract(&w, &["10.0.0.0/8".parse().unwrap()]).is_empty());
    }
}
