//! The pod's `/etc/resolv.conf`: where non-cluster DNS queries go, and a hint at the cluster
//! domain.

use std::net::IpAddr;

/// Where the kubelet writes the pod's resolver configuration.
pub const RESOLV_CONF_PATH: &str = "/etc/resolv.conf";

/// The parts of a resolv.conf the manager uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<IpAddr>,
    /// The `search` list (the last `search` line wins, as in glibc).
    pub search: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text. Unknown or malformed lines are skipped, as the C library does.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // A scoped IPv6 address (`fe80::1%eth0`) keeps its address part.
                    let addr = words.next().and_then(|w| w.split('%').next());
                    if let Some(ip) = addr.and_then(|a| a.parse().ok()) {
                        conf.nameservers.push(ip);
                    }
                }
                Some("search") => {
                    conf.search = words
                        .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
                        .collect();
                }
                Some("domain") if conf.search.is_empty() => {
                    conf.search = words
                        .take(1)
                        .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
                        .collect();
                }
                _ => {}
            }
        }
        conf
    }

    /// The cluster domain the kubelet's search list reveals: a pod's list holds
    /// `svc.<domain>` (after `<namespace>.svc.<domain>`).
    pub fn cluster_domain(&self) -> Option<&str> {
        self.search
            .iter()
            .filter_map(|entry| entry.strip_prefix("svc."))
            .find(|domain| !domain.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kubelet writes for a pod in namespace `tether` with ClusterFirst DNS.
    const POD_RESOLV_CONF: &str =
        "search tether.svc.cluster.local svc.cluster.local cluster.local\n\
                                   nameserver 10.96.0.10\n\
                                   options ndots:5\n";

    #[test]
    fn parses_a_kubelet_resolv_conf() {
        let conf = ResolvConf::parse(POD_RESOLV_CONF);
        assert_eq!(
            conf.nameservers,
            vec!["10.96.0.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            conf.search,
            [
                "tether.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(conf.cluster_domain(), Some("cluster.local"));
    }

    #[test]
    fn finds_a_custom_domain() {
        let conf = ResolvConf::parse("search ns.svc.corp.example svc.corp.example corp.example\n");
        assert_eq!(conf.cluster_domain(), Some("corp.example"));
    }

    #[test]
    fn host_resolv_conf_has_no_cluster_domain() {
        let text = "# generated\ndomain example.org\nnameserver 192.0.2.53 # primary\n\
                    nameserver fe80::1%eth0\nnameserver not-an-ip\n";
        let conf = ResolvConf::parse(text);
        assert_eq!(
            conf.nameservers,
            [
                "192.0.2.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert_eq!(conf.search, ["example.org"]);
        assert_eq!(conf.cluster_domain(), None);
    }
}
