//! What the cluster's address ranges and DNS domain are, and the watches that keep the
//! [`ClusterView`] current.
//!
//! * **Service CIDRs**: the `ServiceCIDR` API (networking.k8s.io/v1, Kubernetes 1.33+); where it
//!   is absent, a create of a Service with a ClusterIP outside any sane range, whose rejection
//!   names the valid range ([`parse_service_cidrs`]): first as a dry run, then for real, because
//!   Kubernetes 1.20 does not allocate (so does not check) ClusterIPs on dry runs.
//! * **Pod CIDRs**: the nodes' `spec.podCIDRs`, plus /16 (IPv4) or /64 (IPv6) around pod IPs
//!   those do not cover — some CNIs ignore the node ranges ([`derive_pod_subnets`]).
//! * **Cluster domain**: the `--cluster-domain` flag, else the pod's resolv.conf search list,
//!   else `cluster.local` ([`cluster_domain`]).
//! * **Watches** ([`Watches`]): Nodes, Services, Endpoints, Pods and Namespaces (all core v1,
//!   present on every Kubernetes version) mirrored into a [`SharedView`](crate::view::SharedView);
//!   pod-range changes are published on a `watch` channel ([`publish_subnets`]).

#[cfg(test)]
mod tests;
mod watch;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::view::{ClusterView, DEFAULT_CLUSTER_DOMAIN};
use tether_dns::ResolvConf;

pub use watch::{
    endpoint_addresses, node_info, pod_info, publish_subnets, service_info, Watches, SUBNET_SETTLE,
};

/// Name of the probe Service (never actually created: its ClusterIP is refused).
pub const PROBE_SERVICE: &str = "tether-cidr-probe";

/// ClusterIPs no cluster's service range contains: the API server rejects them and says what
/// the range is. One per family, so a dual-stack cluster names both ranges.
const PROBE_IPS: [&str; 2] = ["1.1.1.1", "2001:db8::1"];

/// Failure to discover the service ranges.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// RBAC forbids the probe Service create.
    #[error(
        "forbidden to create Services in namespace {namespace} (a probe, rejected by design, to \
         learn the service range); re-run `tether install` so the manager's Role grants it"
    )]
    Forbidden {
        /// The manager's namespace.
        namespace: String,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// The API server could not be asked.
    #[error("could not ask the API server for the service range; check that the manager pod reaches it (the pod restarts to retry)")]
    Api(#[source] kube::Error),
    /// Neither the ServiceCIDR API nor the probe named a range.
    #[error(
        "the API server did not reveal the service range (no ServiceCIDR API, and the probe's \
         rejection named none); give it with `--service-cidr`"
    )]
    NotFound,
}

/// How the service-range probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `dryRun=All`. Kubernetes 1.20 skips ClusterIP allocation on dry runs and accepts any
    /// address (measured on the local cluster), so this only tells on newer versions.
    DryRun,
    /// A real create. The API server rejects the address, so nothing is created; should it
    /// ever be accepted, the Service is deleted at once.
    Real,
}

/// The cluster's Service (ClusterIP) ranges: from the ServiceCIDR API, else a dry-run probe,
/// else a real (rejected) probe.
pub async fn service_cidrs(client: &Client, namespace: &str) -> Result<Vec<IpNet>, DiscoveryError> {
    if let Some(cidrs) = service_cidrs_from_api(client).await {
        info!(?cidrs, "Service range from the ServiceCIDR API");
        return Ok(cidrs);
    }
    for probe in [Probe::DryRun, Probe::Real] {
        let cidrs = probe_service_cidrs(client, namespace, probe).await?;
        if !cidrs.is_empty() {
            info!(
                ?cidrs,
                ?probe,
                "Service range from a probe Service's rejection"
            );
            return Ok(cidrs);
        }
    }
    Err(DiscoveryError::NotFound)
}

/// The ranges of the ServiceCIDR API (Kubernetes 1.33+); `None` where it is absent or empty.
pub async fn service_cidrs_from_api(client: &Client) -> Option<Vec<IpNet>> {
    match Api::<ServiceCIDR>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => {
            let cidrs: Vec<IpNet> = list
                .items
                .iter()
                .filter_map(|cidr| cidr.spec.as_ref()?.cidrs.as_ref())
                .flatten()
                .filter_map(|cidr| cidr.parse().ok())
                .collect();
            if cidrs.is_empty() {
                debug!("The ServiceCIDR API lists no range");
                return None;
            }
            Some(IpNet::aggregate(&cidrs))
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            debug!("No ServiceCIDR API (Kubernetes before 1.33)");
            None
        }
        Err(error) => {
            debug!(%error, "Could not list ServiceCIDRs");
            None
        }
    }
}

/// Creates (per `probe`) a Service with ClusterIP `1.1.1.1`, then `2001:db8::1`, in
/// `namespace`; the rejections name the ranges. Empty if none did.
pub async fn probe_service_cidrs(
    client: &Client,
    namespace: &str,
    probe: Probe,
) -> Result<Vec<IpNet>, DiscoveryError> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        dry_run: probe == Probe::DryRun,
        ..PostParams::default()
    };
    let mut cidrs = Vec::new();
    for ip in PROBE_IPS {
        match api.create(&params, &probe_service(ip)).await {
            Ok(_) if probe == Probe::DryRun => {
                debug!(
                    ip,
                    "Dry run accepted the probe's ClusterIP; it names no range"
                );
            }
            Ok(_) => {
                warn!(ip, "The probe Service was created; deleting it");
                if let Err(error) = api.delete(PROBE_SERVICE, &DeleteParams::default()).await {
                    warn!(%error, "Could not delete probe Service {PROBE_SERVICE}; delete it by hand");
                }
            }
            Err(kube::Error::Api(status)) if status.is_forbidden() => {
                let source = kube::Error::Api(status);
                return Err(DiscoveryError::Forbidden {
                    namespace: namespace.to_owned(),
                    source,
                });
            }
            Err(kube::Error::Api(status)) => {
                let found = parse_service_cidrs(&status.message);
                debug!(ip, ?probe, message = %status.message, ?found, "Probe rejected");
                cidrs.extend(found);
            }
            Err(error) => return Err(DiscoveryError::Api(error)),
        }
    }
    Ok(IpNet::aggregate(&cidrs))
}

/// The Service the probe pretends to create: valid in every way but its ClusterIP.
fn probe_service(cluster_ip: &str) -> Service {
    let labels = BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_owned(),
        "tether".to_owned(),
    )]);
    Service {
        metadata: ObjectMeta {
            name: Some(PROBE_SERVICE.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.to_owned()),
            ports: Some(vec![ServicePort {
                port: 80,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The ranges named in an API server's rejection of a ClusterIP, e.g. `…​: failed to allocate
/// IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is
/// 10.96.0.0/12`. Empty if the message names none.
pub fn parse_service_cidrs(message: &str) -> Vec<IpNet> {
    const MARKER: &str = "range of valid IPs is";
    let Some(at) = message.find(MARKER) else {
        return Vec::new();
    };
    let is_cidr_char = |c: char| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/');
    let cidrs: Vec<IpNet> = message[at + MARKER.len()..]
        .split(|c: char| !is_cidr_char(c))
        .filter(|word| word.contains('/'))
        .filter_map(|word| word.trim_end_matches(['.', ':']).parse::<IpNet>().ok())
        .map(|net| net.trunc())
        .collect();
    IpNet::aggregate(&cidrs)
}

/// The pod ranges: the nodes' CIDRs, plus the /16 (IPv4) or /64 (IPv6) around each pod IP none
/// of them contains, merged.
pub fn derive_pod_subnets(node_cidrs: &[IpNet], pod_ips: &[IpAddr]) -> Vec<IpNet> {
    let mut subnets: Vec<IpNet> = node_cidrs.iter().map(IpNet::trunc).collect();
    for ip in pod_ips {
        if node_cidrs.iter().any(|net| net.contains(ip)) {
            continue;
        }
        let around = match *ip {
            IpAddr::V4(v4) => Ipv4Net::new(v4, 16).map(IpNet::from),
            IpAddr::V6(v6) => Ipv6Net::new(v6, 64).map(IpNet::from),
        };
        // 16 and 64 are valid prefix lengths for their families, so `new` cannot fail.
        subnets.extend(around.ok().map(|net| net.trunc()));
    }
    IpNet::aggregate(&subnets)
}

/// [`derive_pod_subnets`] over the view's nodes and its pods not on the host network.
pub fn pod_subnets(view: &ClusterView) -> Vec<IpNet> {
    let node_cidrs: Vec<IpNet> = view
        .nodes
        .values()
        .flat_map(|n| n.pod_cidrs.iter().copied())
        .collect();
    let pod_ips: Vec<IpAddr> = view
        .pods
        .values()
        .filter(|pod| !pod.host_network)
        .flat_map(|pod| pod.ips.iter().copied())
        .collect();
    derive_pod_subnets(&node_cidrs, &pod_ips)
}

/// The cluster DNS domain: `flag` if given, else what the pod's resolv.conf search list shows,
/// else `cluster.local`. Returned without leading or trailing dots, in lower case.
pub fn cluster_domain(flag: Option<&str>, resolv_conf: Option<&ResolvConf>) -> String {
    let normalize = |d: &str| d.trim_matches('.').to_ascii_lowercase();
    flag.map(normalize)
        .filter(|d| !d.is_empty())
        .or_else(|| {
            resolv_conf
                .and_then(ResolvConf::cluster_domain)
                .map(|d| normalize(&d))
        })
        .unwrap_or_else(|| DEFAULT_CLUSTER_DOMAIN.to_owned())
}
