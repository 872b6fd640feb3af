//! [`ClusterView`]: the manager's picture of the cluster, as plain data.
//!
//! The watches in [`crate::discovery`] keep one up to date; the DNS core in [`crate::dns`] and
//! the subnet computation read it. Only what those need is kept, so a test builds one directly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use ipnet::IpNet;

/// The cluster DNS domain when nothing else says otherwise.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// `(namespace, name)` of a namespaced object.
pub type Key = (String, String);

/// What the manager knows about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The cluster DNS domain, without a trailing dot (`cluster.local`).
    pub cluster_domain: String,
    /// The Service (ClusterIP) ranges, as discovered at start: where reverse names are ours.
    pub service_cidrs: Vec<IpNet>,
    /// Names of existing namespaces.
    pub namespaces: BTreeSet<String>,
    /// Services by `(namespace, name)`.
    pub services: BTreeMap<Key, ServiceInfo>,
    /// Addresses of each Service's Endpoints object, by `(namespace, service name)`.
    pub endpoints: BTreeMap<Key, Vec<EndpointAddress>>,
    /// Pods by `(namespace, name)`.
    pub pods: BTreeMap<Key, PodInfo>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeInfo>,
}

impl Default for ClusterView {
    fn default() -> Self {
        ClusterView {
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            service_cidrs: Vec::new(),
            namespaces: BTreeSet::new(),
            services: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            pods: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
    }
}

impl ClusterView {
    /// The Service `namespace/name`, if it exists.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceInfo> {
        self.services.get(&key(namespace, name))
    }

    /// The addresses of Service `namespace/name`'s Endpoints (empty if there are none).
    pub fn endpoint_addresses(&self, namespace: &str, name: &str) -> &[EndpointAddress] {
        self.endpoints
            .get(&key(namespace, name))
            .map_or(&[], Vec::as_slice)
    }

    /// Whether a pod in `namespace` has `ip`.
    pub fn has_pod_ip(&self, namespace: &str, ip: IpAddr) -> bool {
        let from = key(namespace, "");
        self.pods
            .range(from..)
            .take_while(|((ns, _), _)| ns == namespace)
            .any(|(_, pod)| pod.ips.contains(&ip))
    }
}

/// Builds a [`Key`].
pub fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

/// How a Service is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAddress {
    /// A virtual IP per family (`spec.clusterIPs`).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: DNS names the endpoints themselves.
    Headless,
    /// `type: ExternalName`: DNS answers a CNAME to this name.
    ExternalName(String),
}

/// One Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// How it is addressed.
    pub address: ServiceAddress,
    /// Its ports.
    pub ports: Vec<PortInfo>,
    /// `spec.publishNotReadyAddresses`: DNS also names endpoints that are not ready.
    pub publish_not_ready: bool,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (Kubernetes' default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses Kubernetes' spelling (`TCP`, `UDP`, `SCTP`); absent means TCP.
    pub fn from_k8s(protocol: Option<&str>) -> Option<Protocol> {
        match protocol.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The SRV label for this protocol, without the underscore (`tcp`).
    pub fn srv_label(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A port of a Service or an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// The port's name; empty for the single unnamed port a Service may have.
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its number.
    pub port: u16,
}

/// One address of an Endpoints object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAddress {
    /// The endpoint's IP.
    pub ip: IpAddr,
    /// `hostname` (set for StatefulSet pods behind a headless Service).
    pub hostname: Option<String>,
    /// Listed under `addresses` rather than `notReadyAddresses`.
    pub ready: bool,
    /// The ports of the subset the address came from (target ports).
    pub ports: Vec<PortInfo>,
}

/// One pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// `status.podIPs`.
    pub ips: Vec<IpAddr>,
    /// `spec.hostNetwork`: its IPs are the node's, not from the pod range.
    pub host_network: bool,
}

/// One node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// `spec.podCIDRs`, or `spec.podCIDR` when that is all there is.
    pub pod_cidrs: Vec<IpNet>,
}

/// A [`ClusterView`] shared between the watches that write it and the readers.
///
/// Readers hold the lock only for a lookup; nothing awaits while holding it.
#[derive(Debug, Clone, Default)]
pub struct SharedView(Arc<RwLock<ClusterView>>);

impl SharedView {
    /// Wraps `view`.
    pub fn new(view: ClusterView) -> SharedView {
        SharedView(Arc::new(RwLock::new(view)))
    }

    /// Read access. A writer that panicked leaves the map consistent per entry, so a poisoned
    /// lock is still read.
    pub fn read(&self) -> RwLockReadGuard<'_, ClusterView> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with write access.
    pub fn update<T>(&self, f: impl FnOnce(&mut ClusterView) -> T) -> T {
        let mut guard = self.0.write().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}
