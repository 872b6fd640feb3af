//! Which destinations the manager dials for a session (sans-IO).
//!
//! `tether connect` lets a user reach what a pod could reach, not the manager's own pod, the
//! node's control plane or the cloud's metadata service. By default the manager refuses:
//! - loopback, "this network" (`0.0.0.0/8`), link-local (`169.254.0.0/16`, with the cloud metadata
//!   address `169.254.169.254`; `fe80::/10`), multicast and broadcast addresses;
//! - its own pod's addresses, on every port;
//! - the API server (the `kubernetes` Service and its endpoints, given at start) and the control
//!   plane's well-known ports on any address: kubelet 10250/10255, kube-controller-manager
//!   10257, kube-scheduler 10259, etcd 2379/2380, the API server's 6443.
//!
//! An installation can allow more (`--dial-allow CIDR`, which lifts the defaults for that range)
//! or deny more (`--dial-deny CIDR`, which always wins). A refusal carries its reason, which the
//! daemon logs and the application sees as a reset.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Control-plane ports refused on any address, with what listens there.
pub const CONTROL_PLANE_PORTS: &[(u16, &str)] = &[
    (2379, "etcd"),
    (2380, "etcd"),
    (6443, "the API server"),
    (10250, "the kubelet"),
    (10255, "the kubelet"),
    (10257, "kube-controller-manager"),
    (10259, "kube-scheduler"),
];

/// Ranges refused by default, with why.
const DENIED_RANGES: &[(&str, &str)] = &[
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("0.0.0.0/8", "\"this network\""),
    (
        "169.254.0.0/16",
        "link-local (cloud metadata lives at 169.254.169.254)",
    ),
    ("fe80::/10", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("255.255.255.255/32", "broadcast"),
];

/// The manager's dial policy.
#[derive(Debug, Clone)]
pub struct DialPolicy {
    ranges: Vec<(IpNet, String)>,
    /// Exact destinations refused (the API server).
    addrs: Vec<(SocketAddr, String)>,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl DialPolicy {
    /// The default policy plus the installation's `allow` and `deny` ranges. `own` are the
    /// manager pod's addresses, `api_server` the API server's (the `kubernetes` Service's
    /// ClusterIP and port, and its endpoints).
    pub fn new(
        own: &[IpAddr],
        api_server: &[SocketAddr],
        allow: Vec<IpNet>,
        deny: Vec<IpNet>,
    ) -> Self {
        let mut ranges: Vec<(IpNet, String)> = DENIED_RANGES
            .iter()
            .filter_map(|(net, why)| Some((net.parse().ok()?, (*why).to_owned())))
            .collect();
        ranges.extend(
            own.iter()
                .map(|ip| (IpNet::from(*ip), "the traffic manager's own pod".to_owned())),
        );
        let addrs = api_server
            .iter()
            .map(|addr| (*addr, "the API server".to_owned()))
            .collect();
        Self {
            ranges,
            addrs,
            allow,
            deny,
        }
    }

    /// `Ok` if the manager may dial `dst`, else why not.
    pub fn check(&self, dst: SocketAddr) -> Result<(), String> {
        let ip = dst.ip();
        let refuse = |why: &str| {
            Err(format!(
                "the traffic manager does not dial {dst}: {why} (its dial policy; an \
                 installation can allow it with --dial-allow)"
            ))
        };
        if let Some(net) = self.deny.iter().find(|n| n.contains(&ip)) {
            return Err(format!(
                "the traffic manager does not dial {dst}: {net} is denied by this installation"
            ));
        }
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        if let Some((_, why)) = self.ranges.iter().find(|(n, _)| n.contains(&ip)) {
            return refuse(why);
        }
        if let Some((_, why)) = self.addrs.iter().find(|(a, _)| *a == dst) {
            return refuse(why);
        }
        if let Some((_, what)) = CONTROL_PLANE_PORTS.iter().find(|(p, _)| *p == dst.port()) {
            return refuse(&format!("port {} is {what}'s", dst.port()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> DialPolicy {
        DialPolicy::new(
            &["10.244.0.7".parse().unwrap()],
            &[
                "10.96.0.1:443".parse().unwrap(),
                "192.0.2.2:6443".parse().unwrap(),
            ],
            allow.iter().map(|n| n.parse().unwrap()).collect(),
            deny.iter().map(|n| n.parse().unwrap()).collect(),
        )
    }

    fn refused(p: &DialPolicy, dst: &str) -> String {
        p.check(dst.parse().unwrap()).expect_err(dst)
    }

    #[test]
    fn pods_and_services_are_dialed() {
        let p = policy(&[], &[]);
        for dst in [
            "10.244.0.9:8080",
            "10.96.12.4:80",
            "10.96.0.10:53",
            "[fd00::1]:80",
        ] {
            assert_eq!(p.check(dst.parse().unwrap()), Ok(()), "{dst}");
        }
    }

    #[test]
    fn the_manager_the_node_and_the_metadata_service_are_not() {
        let p = policy(&[], &[]);
        assert!(refused(&p, "127.0.0.1:7444").contains("loopback"));
        assert!(refused(&p, "[::1]:7444").contains("loopback"));
        assert!(refused(&p, "169.254.169.254:80").contains("cloud metadata"));
        assert!(refused(&p, "10.244.0.7:7444").contains("own pod"));
        assert!(refused(&p, "10.244.0.7:9999").contains("own pod"));
        assert!(refused(&p, "10.96.0.1:443").contains("API server"));
        assert!(refused(&p, "192.0.2.2:6443").contains("API server"));
        assert!(refused(&p, "10.244.0.9:10250").contains("kubelet"));
        assert!(refused(&p, "192.0.2.2:2379").contains("etcd"));
        assert!(refused(&p, "224.0.0.1:5353").contains("multicast"));
        assert!(refused(&p, "0.0.0.0:80").contains("this network"));
        // The kubernetes Service on another port, or another address on 443, is fine.
        assert_eq!(p.check("10.96.0.1:80".parse().unwrap()), Ok(()));
        assert_eq!(p.check("10.96.0.2:443".parse().unwrap()), Ok(()));
    }

    #[test]
    fn an_installation_allows_and_denies_ranges() {
        let p = policy(&["169.254.169.254/32", "10.244.0.9/32"], &["10.96.0.0/24"]);
        assert_eq!(p.check("169.254.169.254:80".parse().unwrap()), Ok(()));
        assert_eq!(p.check("10.244.0.9:10250".parse().unwrap()), Ok(()));
        assert!(refused(&p, "169.254.0.1:80").contains("link-local"));
        assert!(refused(&p, "10.96.0.12:80").contains("denied by this installation"));
        // Deny wins over allow.
        let p = policy(&["10.0.0.0/8"], &["10.96.0.0/16"]);
        assert!(refused(&p, "10.96.1.1:80").contains("denied"));
    }
}
