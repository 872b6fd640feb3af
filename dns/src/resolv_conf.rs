//! The one `resolv.conf` parser, for both sides: the workstation's file (which the daemon
//! rewrites while connected) and the manager pod's (its upstream resolvers, and a hint at the
//! cluster domain).

use std::net::IpAddr;

/// Where the C library reads its resolver configuration.
pub const RESOLV_CONF_PATH: &str = "/etc/resolv.conf";

/// The parts of a resolv.conf tether reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order. A scoped IPv6 address (`fe80::1%eth0`) keeps its address
    /// part.
    pub nameservers: Vec<IpAddr>,
    /// The search list, as written (a trailing dot and case kept). `search` and `domain` are
    /// mutually exclusive and the last one wins, as in glibc; `domain` gives one name.
    pub search: Vec<String>,
    /// `options` words, all lines together, in order.
    pub options: Vec<String>,
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
                    let addr = words.next().and_then(|w| w.split('%').next());
                    if let Some(ip) = addr.and_then(|a| a.parse().ok()) {
                        conf.nameservers.push(ip);
                    }
                }
                Some("search") => conf.search = words.map(str::to_owned).collect(),
                Some("domain") => conf.search = words.take(1).map(str::to_owned).collect(),
                Some("options") => conf.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        conf
    }

    /// The cluster domain a pod's search list reveals: the kubelet writes `svc.<domain>` (after
    /// `<namespace>.svc.<domain>`). Lower case, without a trailing dot.
    pub fn cluster_domain(&self) -> Option<String> {
        self.search
            .iter()
            .map(|entry| entry.trim_end_matches('.').to_ascii_lowercase())
            .filter_map(|entry| entry.strip_prefix("svc.").map(str::to_owned))
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
        assert_eq!(conf.nameservers, ["10.96.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            conf.search,
            [
                "tether.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(conf.options, ["ndots:5"]);
        assert_eq!(conf.cluster_domain().as_deref(), Some("cluster.local"));
    }

    #[test]
    fn finds_a_custom_domain_in_any_spelling() {
        let conf =
            ResolvConf::parse("search ns.svc.Corp.Example. svc.Corp.Example. corp.example\n");
        assert_eq!(conf.cluster_domain().as_deref(), Some("corp.example"));
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

    #[test]
    fn the_last_search_or_domain_line_wins_and_options_add_up() {
        let conf = ResolvConf::parse(
            "search a.example b.example\noptions ndots:2\ndomain c.example d.example\n\
             options edns0 ; comment\n",
        );
        assert_eq!(conf.search, ["c.example"]);
        assert_eq!(conf.options, ["ndots:2", "edns0"]);
        let conf = ResolvConf::parse("domain c.example\nsearch a.example\n");
        assert_eq!(conf.search, ["a.example"]);
    }
}
