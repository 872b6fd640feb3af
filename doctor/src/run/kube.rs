//! Reads from the API server, each bounded by a timeout, with failures turned into the reason a
//! check was skipped.

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet, StatefulSet},
        authentication::v1::SelfSubjectReview,
        authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        },
        core::v1::{Endpoints, Event, Node, Pod, Service},
    },
    NamespaceResourceScope,
};
use kube::{
    api::{ListParams, PostParams},
    Api, Client,
};
use tether_daemon::cluster::{MANAGER_SELECTOR, MANAGER_SERVICE};

use crate::{
    access::{Access, Answer},
    cluster::Metrics,
    manager::ManagerView,
    workstation::ServiceTarget,
};

/// Why a read gave nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// RBAC said no.
    Forbidden,
    /// 404.
    NotFound,
    TimedOut(Duration),
    Other(String),
}

impl Failure {
    /// Why a check about `what` (`list nodes`) could not run.
    pub fn reason(&self, what: &str) -> String {
        match self {
            Failure::Forbidden => format!("your user may not {what} (RBAC)"),
            Failure::NotFound => format!("{what}: not found"),
            Failure::TimedOut(after) => {
                format!("{what}: no answer within {} s", after.as_secs())
            }
            Failure::Other(e) => format!("{what}: {e}"),
        }
    }
}

/// Runs one read within `limit`.
pub async fn within<T>(
    limit: Duration,
    read: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, read).await {
        Err(_) => Err(Failure::TimedOut(limit)),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(kube::Error::Api(s))) if s.code == 403 => Err(Failure::Forbidden),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Err(Failure::NotFound),
        Ok(Err(e)) => Err(Failure::Other(tether_proto::error_chain(&e))),
    }
}

pub async fn nodes(client: &Client, limit: Duration) -> Result<Vec<Node>, Failure> {
    let api: Api<Node> = Api::all(client.clone());
    within(limit, api.list(&ListParams::default()))
        .await
        .map(|l| l.items)
}

/// Every pod of the cluster that is not finished (for requested resources).
pub async fn all_pods(client: &Client, limit: Duration) -> Result<Vec<Pod>, Failure> {
    let api: Api<Pod> = Api::all(client.clone());
    let params = ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    within(limit, api.list(&params)).await.map(|l| l.items)
}

/// The Metrics API's node usage, or that it is not served.
pub async fn metrics(client: &Client, limit: Duration) -> Result<Metrics, Failure> {
    let request = http::Request::get("/apis/metrics.k8s.io/v1beta1/nodes")
        .body(Vec::new())
        .map_err(|e| Failure::Other(e.to_string()))?;
    let text = match within(limit, client.request_text(request)).await {
        Ok(text) => text,
        // No such API group: no metrics-server.
        Err(Failure::NotFound) => return Ok(Metrics::NotServed),
        // Registered but failing (503 while metrics-server is down).
        Err(Failure::Other(e)) => return Ok(Metrics::Unavailable(e)),
        Err(e) => return Err(e),
    };
    let list: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Failure::Other(e.to_string()))?;
    let nodes = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            let q = |k: &str| {
                item["usage"][k]
                    .as_str()
                    .and_then(crate::quantity::parse)
                    .unwrap_or(0.0)
            };
            (
                item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                q("cpu"),
                q("memory"),
            )
        })
        .collect();
    Ok(Metrics::Nodes(nodes))
}

/// The manager's Deployment, pods, Service and Warning events.
pub async fn manager(
    client: &Client,
    namespace: &str,
    limit: Duration,
) -> Result<ManagerView, Failure> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let (by_label, warnings) = (
        ListParams::default().labels(MANAGER_SELECTOR),
        ListParams::default().fields("type=Warning"),
    );
    let (deployment, pods, service, events) = tokio::join!(
        within(limit, deployments.get_opt(MANAGER_SERVICE)),
        within(limit, pods.list(&by_label)),
        within(limit, services.get_opt(MANAGER_SERVICE)),
        within(limit, events.list(&warnings)),
    );
    Ok(ManagerView {
        namespace: namespace.to_owned(),
        deployment: deployment?,
        // A user who may see the Deployment but not the rest still gets the first checks.
        pods: pods.map(|l| l.items).unwrap_or_default(),
        service: service.unwrap_or_default(),
        events: events.map(|l| l.items).unwrap_or_default(),
    })
}

/// A namespace's workloads and pods, for the agent checks.
#[derive(Debug, Default)]
pub struct Workloads {
    pub deployments: Vec<Deployment>,
    pub statefulsets: Vec<StatefulSet>,
    pub replicasets: Vec<ReplicaSet>,
    pub pods: Vec<Pod>,
    /// `None`: they could not be listed.
    pub services: Option<Vec<Service>>,
}

async fn list_in<K>(client: &Client, namespace: &str, limit: Duration) -> Result<Vec<K>, Failure>
where
    K: kube::Resource<Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    within(limit, api.list(&ListParams::default()))
        .await
        .map(|l| l.items)
}

pub async fn workloads(
    client: &Client,
    namespace: &str,
    limit: Duration,
) -> Result<Workloads, Failure> {
    let (deployments, statefulsets, replicasets, pods, services) = tokio::join!(
        list_in::<Deployment>(client, namespace, limit),
        list_in::<StatefulSet>(client, namespace, limit),
        list_in::<ReplicaSet>(client, namespace, limit),
        list_in::<Pod>(client, namespace, limit),
        list_in::<Service>(client, namespace, limit),
    );
    Ok(Workloads {
        deployments: deployments?,
        // Rights to list Deployments usually come with the others; do without if not.
        statefulsets: statefulsets.unwrap_or_default(),
        replicasets: replicasets.unwrap_or_default(),
        pods: pods?,
        services: services.ok(),
    })
}

/// Asks whether the current user may do `access`.
pub async fn review(client: &Client, access: &Access, limit: Duration) -> Result<Answer, Failure> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(access.verb.into()),
                group: Some(access.group.into()),
                resource: Some(access.resource.into()),
                subresource: access.subresource.map(Into::into),
                namespace: access.namespace.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = within(limit, api.create(&PostParams::default(), &review)).await?;
    let status = answer.status.unwrap_or_default();
    Ok(if status.allowed {
        Answer::Allowed
    } else {
        Answer::Denied(status.reason)
    })
}

/// Who the API server says the current user is (Kubernetes 1.28+; `None` before).
pub async fn whoami(client: &Client, limit: Duration) -> Option<String> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = within(
        limit,
        api.create(&PostParams::default(), &SelfSubjectReview::default()),
    )
    .await
    .ok()?;
    review.status?.user_info?.username
}

/// A Service of `namespace` with a ready endpoint on a TCP port (not `kubernetes`, which the
/// manager refuses to dial), to connect to through the tunnel: the first by name.
pub async fn reachable_service(
    client: &Client,
    namespace: &str,
    limit: Duration,
) -> Option<ServiceTarget> {
    let (services, endpoints) = tokio::join!(
        list_in::<Service>(client, namespace, limit),
        list_in::<Endpoints>(client, namespace, limit),
    );
    let (mut services, endpoints) = (services.ok()?, endpoints.ok()?);
    services.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    services.iter().find_map(|svc| {
        let name = svc.metadata.name.as_deref()?;
        let spec = svc.spec.as_ref()?;
        let ip: std::net::IpAddr = spec.cluster_ip.as_deref()?.parse().ok()?;
        if name == "kubernetes" {
            return None;
        }
        let ep = endpoints
            .iter()
            .find(|e| e.metadata.name.as_deref() == Some(name))?;
        spec.ports.iter().flatten().find_map(|port| {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                return None;
            }
            let ready = ep.subsets.iter().flatten().any(|subset| {
                !subset.addresses.as_deref().unwrap_or_default().is_empty()
                    && subset.ports.iter().flatten().any(|p| {
                        p.name == port.name && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                    })
            });
            ready.then(|| ServiceTarget {
                name: format!("{namespace}/{name}"),
                addr: std::net::SocketAddr::new(ip, port.port as u16),
            })
        })
    })
}
