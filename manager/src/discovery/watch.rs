//! Watches that mirror Nodes, Services, Endpoints, Pods and Namespaces into the
//! [`SharedView`], the namespace list they publish, and the task that publishes pod-range
//! changes.

use std::fmt::Debug;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::Resource as _;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tether_proto::Subnets;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::pod_subnets;
use crate::view::{
    key, ClusterView, EndpointAddress, NodeInfo, PodInfo, PortInfo, Protocol, ServiceAddress,
    ServiceInfo, SharedView,
};

/// How long [`publish_subnets`] lets a burst of node/pod changes settle before recomputing.
pub const SUBNET_SETTLE: Duration = Duration::from_secs(1);

/// The running watches. Dropping this stops them.
#[derive(Debug)]
pub struct Watches {
    tasks: JoinSet<()>,
    synced_rx: mpsc::Receiver<&'static str>,
    pending: Vec<&'static str>,
    namespaces_rx: watch::Receiver<Vec<String>>,
}

impl Watches {
    /// Starts one watch per kind, mirroring into `view`; `topology_changed` is notified when a
    /// Node or Pod changes (the pod ranges may have).
    pub fn spawn(client: &Client, view: &SharedView, topology_changed: &Arc<Notify>) -> Watches {
        let (synced_tx, synced_rx) = mpsc::channel(8);
        let (namespaces_tx, namespaces_rx) = watch::channel(Vec::new());
        let mut tasks = JoinSet::new();
        let ctx = || Context {
            view: view.clone(),
            topology_changed: topology_changed.clone(),
            namespaces_tx: namespaces_tx.clone(),
            synced_tx: synced_tx.clone(),
        };
        tasks.spawn(mirror::<Namespace>(Api::all(client.clone()), ctx()));
        tasks.spawn(mirror::<Node>(Api::all(client.clone()), ctx()));
        tasks.spawn(mirror::<Service>(Api::all(client.clone()), ctx()));
        tasks.spawn(mirror::<Endpoints>(Api::all(client.clone()), ctx()));
        tasks.spawn(mirror::<Pod>(Api::all(client.clone()), ctx()));
        let pending = vec![
            Namespace::KIND,
            Node::KIND,
            Service::KIND,
            Endpoints::KIND,
            Pod::KIND,
        ];
        Watches {
            tasks,
            synced_rx,
            pending,
            namespaces_rx,
        }
    }

    /// The names of the cluster's namespaces, sorted; updated whenever one comes or goes.
    pub fn namespaces(&self) -> watch::Receiver<Vec<String>> {
        self.namespaces_rx.clone()
    }

    /// Waits until every watch has listed its kind once, or `timeout` passes. On timeout returns
    /// the kinds still not listed (their watches keep retrying).
    pub async fn synced(&mut self, timeout: Duration) -> Result<(), Vec<&'static str>> {
        let wait = async {
            while !self.pending.is_empty() {
                match self.synced_rx.recv().await {
                    Some(kind) => self.pending.retain(|k| *k != kind),
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(self.pending.clone())
        }
    }

    /// Adds a task to run as long as the watches do.
    pub fn spawn_task(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }
}

/// A kind mirrored into the view.
trait Mirror:
    Resource<DynamicType = ()>
    + k8s_openapi::Resource
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Whether a change can move the pod ranges.
    const TOPOLOGY: bool = false;
    /// Whether a change can change the namespace list.
    const NAMESPACES: bool = false;
    fn upsert(view: &mut ClusterView, object: &Self);
    fn remove(view: &mut ClusterView, object: &Self);
    fn clear(view: &mut ClusterView);
}

/// What each mirror writes to and tells.
struct Context {
    view: SharedView,
    topology_changed: Arc<Notify>,
    namespaces_tx: watch::Sender<Vec<String>>,
    synced_tx: mpsc::Sender<&'static str>,
}

/// Mirrors one kind: lists (atomically replacing what the view held), then applies changes;
/// errors are retried with backoff forever.
async fn mirror<K: Mirror>(api: Api<K>, context: Context) {
    let Context {
        view,
        topology_changed: changed,
        namespaces_tx,
        synced_tx,
    } = context;
    let mut events = pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    let mut listed = Vec::new();
    let mut synced_tx = Some(synced_tx);
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(object)) => listed.push(object),
            Ok(Event::InitDone) => {
                let count = listed.len();
                view.update(|view| {
                    K::clear(view);
                    for object in listed.drain(..) {
                        K::upsert(view, &object);
                    }
                });
                debug!(kind = K::KIND, count, "Listed");
                if let Some(tx) = synced_tx.take() {
                    // The receiver may be gone once the manager stopped waiting; nothing to do.
                    let _ = tx.send(K::KIND).await;
                }
            }
            Ok(Event::Apply(object)) => view.update(|view| K::upsert(view, &object)),
            Ok(Event::Delete(object)) => view.update(|view| K::remove(view, &object)),
            Err(error) => {
                warn!(kind = K::KIND, %error, "Watch failed; retrying");
                continue;
            }
        }
        if K::TOPOLOGY {
            changed.notify_one();
        }
        if K::NAMESPACES {
            let names: Vec<String> = view.read().namespaces.iter().cloned().collect();
            namespaces_tx.send_if_modified(|current| {
                let changed = *current != names;
                if changed {
                    *current = names;
                }
                changed
            });
        }
    }
}

fn object_key<K: Resource>(object: &K) -> (String, String) {
    key(
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default(),
    )
}

impl Mirror for Namespace {
    const NAMESPACES: bool = true;
    fn upsert(view: &mut ClusterView, object: &Self) {
        view.namespaces.insert(object.name_any());
    }
    fn remove(view: &mut ClusterView, object: &Self) {
        view.namespaces.remove(&object.name_any());
    }
    fn clear(view: &mut ClusterView) {
        view.namespaces.clear();
    }
}

impl Mirror for Node {
    const TOPOLOGY: bool = true;
    fn upsert(view: &mut ClusterView, object: &Self) {
        view.nodes.insert(object.name_any(), node_info(object));
    }
    fn remove(view: &mut ClusterView, object: &Self) {
        view.nodes.remove(&object.name_any());
    }
    fn clear(view: &mut ClusterView) {
        view.nodes.clear();
    }
}

impl Mirror for Service {
    fn upsert(view: &mut ClusterView, object: &Self) {
        view.services
            .insert(object_key(object), service_info(object));
    }
    fn remove(view: &mut ClusterView, object: &Self) {
        view.services.remove(&object_key(object));
    }
    fn clear(view: &mut ClusterView) {
        view.services.clear();
    }
}

impl Mirror for Endpoints {
    fn upsert(view: &mut ClusterView, object: &Self) {
        view.endpoints
            .insert(object_key(object), endpoint_addresses(object));
    }
    fn remove(view: &mut ClusterView, object: &Self) {
        view.endpoints.remove(&object_key(object));
    }
    fn clear(view: &mut ClusterView) {
        view.endpoints.clear();
    }
}

impl Mirror for Pod {
    const TOPOLOGY: bool = true;
    fn upsert(view: &mut ClusterView, object: &Self) {
        // A finished pod's IP goes back to the pool; it no longer names the pod.
        let phase = object.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return Self::remove(view, object);
        }
        view.pods.insert(object_key(object), pod_info(object));
    }
    fn remove(view: &mut ClusterView, object: &Self) {
        view.pods.remove(&object_key(object));
    }
    fn clear(view: &mut ClusterView) {
        view.pods.clear();
    }
}

/// A Service as the DNS sees it.
pub fn service_info(service: &Service) -> ServiceInfo {
    let spec = service.spec.clone().unwrap_or_default();
    let address = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceAddress::ExternalName(spec.external_name.clone().unwrap_or_default())
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceAddress::Headless
    } else {
        let ips = spec
            .cluster_ips
            .clone()
            .unwrap_or_else(|| spec.cluster_ip.clone().into_iter().collect());
        ServiceAddress::ClusterIp(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| port_info(p.name.as_deref(), p.protocol.as_deref(), p.port))
        .collect();
    ServiceInfo {
        address,
        ports,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    }
}

/// The addresses of an Endpoints object, each with its subset's ports.
pub fn endpoint_addresses(endpoints: &Endpoints) -> Vec<EndpointAddress> {
    let mut out = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let ports: Vec<PortInfo> = subset
            .ports
            .iter()
            .flatten()
            .filter_map(|p| port_info(p.name.as_deref(), p.protocol.as_deref(), p.port))
            .collect();
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        for (address, ready) in ready.chain(not_ready) {
            let Ok(ip) = address.ip.parse::<IpAddr>() else {
                continue;
            };
            let hostname = address.hostname.clone().filter(|h| !h.is_empty());
            out.push(EndpointAddress {
                ip,
                hostname,
                ready,
                ports: ports.clone(),
            });
        }
    }
    out
}

/// A pod's IPs (`status.podIPs`, else `status.podIP`) and whether it uses the host network.
pub fn pod_info(pod: &Pod) -> PodInfo {
    let status = pod.status.as_ref();
    let ips: Vec<String> = match status.and_then(|s| s.pod_ips.as_ref()) {
        Some(ips) if !ips.is_empty() => ips.iter().map(|ip| ip.ip.clone()).collect(),
        _ => status.and_then(|s| s.pod_ip.clone()).into_iter().collect(),
    };
    PodInfo {
        ips: ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
        host_network: pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false),
    }
}

/// A node's pod ranges (`spec.podCIDRs`, else `spec.podCIDR`).
pub fn node_info(node: &Node) -> NodeInfo {
    let spec = node.spec.as_ref();
    let cidrs: Vec<String> = match spec.and_then(|s| s.pod_cidrs.as_ref()) {
        Some(cidrs) if !cidrs.is_empty() => cidrs.clone(),
        _ => spec.and_then(|s| s.pod_cidr.clone()).into_iter().collect(),
    };
    NodeInfo {
        pod_cidrs: cidrs
            .iter()
            .filter_map(|c| c.parse::<IpNet>().ok())
            .collect(),
    }
}

fn port_info(name: Option<&str>, protocol: Option<&str>, port: i32) -> Option<PortInfo> {
    Some(PortInfo {
        name: name.unwrap_or_default().to_owned(),
        protocol: Protocol::from_k8s(protocol)?,
        port: u16::try_from(port).ok()?,
    })
}

/// Recomputes the pod ranges whenever `topology_changed` fires (after [`SUBNET_SETTLE`]) and
/// publishes them, with the fixed `service` ranges, on `subnets_tx` when they changed.
pub async fn publish_subnets(
    view: SharedView,
    service: Vec<IpNet>,
    topology_changed: Arc<Notify>,
    subnets_tx: watch::Sender<Subnets>,
) {
    loop {
        topology_changed.notified().await;
        tokio::time::sleep(SUBNET_SETTLE).await;
        let next = Subnets {
            service: service.clone(),
            pod: pod_subnets(&view.read()),
        };
        subnets_tx.send_if_modified(|current| {
            if *current == next {
                return false;
            }
            info!(service = ?next.service, pod = ?next.pod, "Cluster subnets changed");
            *current = next;
            true
        });
    }
}
