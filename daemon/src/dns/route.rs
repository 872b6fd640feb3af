//! Which names go to the cluster: plain code over a name and what the workstation knows of the
//! cluster's names.

use std::collections::BTreeSet;
use std::sync::Arc;

use ipnet::IpNet;
use tether_dns::reverse;
use tether_proto::Subnets;

/// Where a query goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The traffic manager, through the tunnel; its answer is final.
    Cluster,
    /// The traffic manager first; if it says NXDOMAIN, the original resolver (a namespace whose
    /// name is also a top-level domain, see the [module docs](super)).
    ClusterFirst,
    /// The original upstream resolver.
    Upstream,
}

/// What the workstation knows of the cluster's names, from the manager.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterNames {
    /// The namespaces.
    pub namespaces: Arc<BTreeSet<String>>,
    /// The service and pod ranges (both families): where reverse names are the cluster's.
    pub ranges: Vec<IpNet>,
}

impl ClusterNames {
    /// The names `namespaces` and `subnets` make the cluster's.
    pub fn new(namespaces: Arc<BTreeSet<String>>, subnets: &Subnets) -> ClusterNames {
        let ranges = subnets
            .service
            .iter()
            .chain(&subnets.pod)
            .copied()
            .collect();
        ClusterNames { namespaces, ranges }
    }
}

/// Decides where names go, for one cluster domain.
#[derive(Debug, Clone)]
pub struct Router {
    /// The cluster domain in lower case, without dots at either end.
    domain: String,
}

impl Router {
    /// Routes for the cluster domain `cluster_domain` (`cluster.local`).
    pub fn new(cluster_domain: &str) -> Router {
        Router {
            domain: cluster_domain.trim_matches('.').to_ascii_lowercase(),
        }
    }

    /// Where a query for `name` goes (any case, trailing dot or not).
    pub fn route(&self, name: &str, names: &ClusterNames) -> Destination {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Destination::Upstream;
        }
        let under_domain = name
            .strip_suffix(self.domain.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'));
        if under_domain {
            return Destination::Cluster;
        }
        if reverse::is_reverse(&name) {
            return match reverse::parse(&name) {
                Some(ip) if names.ranges.iter().any(|r| r.contains(&ip)) => Destination::Cluster,
                _ => Destination::Upstream,
            };
        }
        let is_ns = |label: &str| names.namespaces.contains(label);
        let labels: Vec<&str> = name.split('.').collect();
        match labels.as_slice() {
            [_] => Destination::Cluster,
            [.., ns, "svc" | "pod"] if is_ns(ns) => Destination::Cluster,
            [.., ns] if is_ns(ns) => Destination::ClusterFirst,
            _ => Destination::Upstream,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ClusterNames {
        let namespaces = ["default", "ext", "dev"].map(String::from).into();
        let subnets = Subnets {
            service: vec!["10.96.0.0/16".parse().unwrap()],
            pod: vec![
                "10.244.0.0/24".parse().unwrap(),
                "fd00:244::/64".parse().unwrap(),
            ],
        };
        ClusterNames::new(Arc::new(namespaces), &subnets)
    }

    #[test]
    fn the_cluster_domain_and_single_labels_are_the_clusters() {
        let router = Router::new("cluster.local");
        let names = ClusterNames::default();
        for name in [
            "hello.default.svc.cluster.local.",
            "Hello.Default.SVC.Cluster.Local",
            "cluster.local",
            "hello",
        ] {
            assert_eq!(router.route(name, &names), Destination::Cluster, "{name}");
        }
        for name in [
            "notcluster.local",
            "outside.tether.test",
            "",
            // Without the namespace list (an older manager), `svc.ns` is not recognised.
            "hello.default",
        ] {
            assert_eq!(router.route(name, &names), Destination::Upstream, "{name}");
        }
    }

    #[test]
    fn namespace_suffixed_names_are_the_clusters() {
        let router = Router::new("cluster.local");
        let names = names();
        for name in [
            "bulk.ext.svc",
            "ext.svc",
            "10-244-0-5.default.pod.",
            "kubernetes.default.svc",
        ] {
            assert_eq!(router.route(name, &names), Destination::Cluster, "{name}");
        }
        // `svc.ns`: the cluster first; `dev` shadows a real TLD, so `example.dev` goes on to
        // the original resolver if the cluster has no such name.
        for name in ["bulk.ext", "kubernetes.default", "example.dev", "a.b.EXT."] {
            assert_eq!(
                router.route(name, &names),
                Destination::ClusterFirst,
                "{name}"
            );
        }
        for name in ["bulk.nosuchns", "www.example.com", "ext.example.com"] {
            assert_eq!(router.route(name, &names), Destination::Upstream, "{name}");
        }
    }

    #[test]
    fn reverse_names_in_the_cluster_ranges_are_the_clusters() {
        let router = Router::new("cluster.local");
        let names = names();
        let v6 = reverse::name("fd00:244::9".parse().unwrap()).to_ascii();
        for name in ["10.0.96.10.in-addr.arpa.", "5.0.244.10.IN-ADDR.ARPA", &v6] {
            assert_eq!(router.route(name, &names), Destination::Cluster, "{name}");
        }
        for name in [
            "1.2.0.192.in-addr.arpa",
            "5.1.244.10.in-addr.arpa",
            "96.10.in-addr.arpa",
            "in-addr.arpa",
        ] {
            assert_eq!(router.route(name, &names), Destination::Upstream, "{name}");
        }
    }

    #[test]
    fn a_custom_domain_is_matched_on_label_boundaries() {
        let router = Router::new(".Corp.Example.");
        let names = ClusterNames::default();
        assert_eq!(
            router.route("a.b.svc.corp.example", &names),
            Destination::Cluster
        );
        assert_eq!(
            router.route("a.megacorp.example", &names),
            Destination::Upstream
        );
    }
}
