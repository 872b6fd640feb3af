//! [`FakeCluster`]: builds the manager's [`ClusterView`] by hand, where the watches would fill it
//! from the API server.
//!
//! A Service's ClusterIP is the address of a real loopback server: the manager dials a
//! ClusterIP as it would in a cluster (where kube-proxy takes it on to a pod), so here it
//! reaches the test server directly. The Service range is `127.0.0.0/8`, so the reverse names
//! of those addresses are the cluster's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;
use tether_manager::view::{
    key, ClusterView, EndpointAddress, PodInfo, PortInfo, Protocol, ServiceAddress, ServiceInfo,
    DEFAULT_CLUSTER_DOMAIN,
};

/// The Service range of every fake cluster: loopback, where the test servers are.
pub const SERVICE_CIDR: IpNet = IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8);

/// A [`ClusterView`] under construction.
#[derive(Debug, Clone)]
pub struct FakeCluster {
    view: ClusterView,
}

impl Default for FakeCluster {
    fn default() -> Self {
        FakeCluster::new()
    }
}

impl FakeCluster {
    /// An empty cluster with domain `cluster.local` and Service range [`SERVICE_CIDR`].
    pub fn new() -> FakeCluster {
        FakeCluster {
            view: ClusterView {
                cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
                service_cidrs: vec![SERVICE_CIDR],
                ..ClusterView::default()
            },
        }
    }

    /// Adds namespace `name`.
    pub fn namespace(mut self, name: &str) -> FakeCluster {
        self.view.namespaces.insert(name.to_owned());
        self
    }

    /// Adds Service `namespace/name` (and its namespace) with ClusterIP `addr`'s address and one
    /// unnamed port, `addr`'s, of `protocol`; its Endpoints name the same address, ready.
    pub fn service(
        mut self,
        namespace: &str,
        name: &str,
        addr: SocketAddr,
        protocol: Protocol,
    ) -> FakeCluster {
        let ports = vec![PortInfo {
            name: String::new(),
            protocol,
            port: addr.port(),
        }];
        self.view.namespaces.insert(namespace.to_owned());
        self.view.services.insert(
            key(namespace, name),
            ServiceInfo {
                address: ServiceAddress::ClusterIp(vec![addr.ip()]),
                ports: ports.clone(),
                publish_not_ready: false,
            },
        );
        self.view.endpoints.insert(
            key(namespace, name),
            vec![EndpointAddress {
                ip: addr.ip(),
                hostname: None,
                ready: true,
                ports,
            }],
        );
        self
    }

    /// Adds pod `namespace/name` (and its namespace) with address `ip`.
    pub fn pod(mut self, namespace: &str, name: &str, ip: IpAddr) -> FakeCluster {
        self.view.namespaces.insert(namespace.to_owned());
        self.view.pods.insert(
            key(namespace, name),
            PodInfo {
                ips: vec![ip],
                host_network: false,
            },
        );
        self
    }

    /// The view.
    pub fn build(self) -> ClusterView {
        self.view
    }

    /// Adds this cluster's namespaces, Services (with their Endpoints) and pods to `view`, as the
    /// watches would on their events: `manager.view().update(|v| cluster.merge_into(v))`.
    pub fn merge_into(self, view: &mut ClusterView) {
        view.namespaces.extend(self.view.namespaces);
        view.services.extend(self.view.services);
        view.endpoints.extend(self.view.endpoints);
        view.pods.extend(self.view.pods);
    }
}
