//! The generic reads and writes: one trait over Deployments, StatefulSets and ReplicaSets,
//! conflict-checked replaces, pods of a workload, and API errors worded for the user.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::Selector;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info};

use super::inject::{Workload, WorkloadKind};
use crate::rollout::{self, Progress};

pub use crate::names::FIELD_MANAGER;

use super::*;

/// Services, workloads and the rest, as far as the generic reads and writes need.
pub(super) trait Namespaced:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
}

impl<T> Namespaced for T where
    T: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
        + Send
        + Sync
        + 'static
{
}

/// A workload object: Deployment, StatefulSet or ReplicaSet.
pub(super) trait Object: Namespaced {
    const KIND: WorkloadKind;
    fn template(&self) -> &PodTemplateSpec;
    fn template_mut(&mut self) -> &mut PodTemplateSpec;
    fn selector(&self) -> Option<&LabelSelector>;
    /// Desired and ready replicas.
    fn replicas(&self) -> (i32, i32);
    /// The rollout judged from the object's status; `None`: judge by the pods.
    fn progress(&self) -> Option<Progress>;
    /// Whether a template change leaves the running pods as they are.
    fn keeps_pods(&self) -> bool;
}

/// An absent template, for objects read without a spec (never from a real API server).
static NO_TEMPLATE: PodTemplateSpec = PodTemplateSpec {
    metadata: None,
    spec: None,
};

impl Object for Deployment {
    const KIND: WorkloadKind = WorkloadKind::Deployment;
    fn template(&self) -> &PodTemplateSpec {
        self.spec.as_ref().map_or(&NO_TEMPLATE, |s| &s.template)
    }
    fn template_mut(&mut self) -> &mut PodTemplateSpec {
        &mut self.spec.get_or_insert_with(Default::default).template
    }
    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|s| &s.selector)
    }
    fn replicas(&self) -> (i32, i32) {
        let want = self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        (
            want,
            self.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
        )
    }
    fn progress(&self) -> Option<Progress> {
        Some(rollout::deployment_progress(self))
    }
    fn keeps_pods(&self) -> bool {
        false
    }
}

impl Object for StatefulSet {
    const KIND: WorkloadKind = WorkloadKind::StatefulSet;
    fn template(&self) -> &PodTemplateSpec {
        self.spec.as_ref().map_or(&NO_TEMPLATE, |s| &s.template)
    }
    fn template_mut(&mut self) -> &mut PodTemplateSpec {
        &mut self.spec.get_or_insert_with(Default::default).template
    }
    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|s| &s.selector)
    }
    fn replicas(&self) -> (i32, i32) {
        let want = self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        (
            want,
            self.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
        )
    }
    fn progress(&self) -> Option<Progress> {
        Some(rollout::statefulset_progress(self))
    }
    fn keeps_pods(&self) -> bool {
        rollout::is_on_delete(self)
    }
}

impl Object for ReplicaSet {
    const KIND: WorkloadKind = WorkloadKind::ReplicaSet;
    fn template(&self) -> &PodTemplateSpec {
        self.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .unwrap_or(&NO_TEMPLATE)
    }
    fn template_mut(&mut self) -> &mut PodTemplateSpec {
        self.spec
            .get_or_insert_with(Default::default)
            .template
            .get_or_insert_with(Default::default)
    }
    fn selector(&self) -> Option<&LabelSelector> {
        self.spec.as_ref().map(|s| &s.selector)
    }
    fn replicas(&self) -> (i32, i32) {
        let want = self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        (
            want,
            self.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
        )
    }
    fn progress(&self) -> Option<Progress> {
        None
    }
    fn keeps_pods(&self) -> bool {
        true
    }
}

pub(super) fn workload_of<K: Object>(obj: &K) -> Workload {
    Workload {
        kind: K::KIND,
        name: obj.name_any(),
        namespace: obj.namespace().unwrap_or_default(),
        annotations: obj.annotations().clone(),
        template: obj.template().clone(),
    }
}

/// Reads a workload; `None` if there is none. Refuses one that a controller manages.
pub(super) async fn get<K: Object>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Workload>, WorkloadError> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let Some(obj) = api
        .get_opt(name)
        .await
        .map_err(|e| api_error::<K>(e, "get", Some(name), namespace))?
    else {
        return Ok(None);
    };
    let workload = workload_of(&obj);
    // A Deployment or StatefulSet may be owned by an operator that tolerates the change; a
    // ReplicaSet's owner (a Deployment) certainly replaces it.
    if K::KIND == WorkloadKind::ReplicaSet {
        if let Some(owner) = rollout::controller_of(obj.meta()) {
            return Err(WorkloadError::Managed {
                workload: workload.to_string(),
                owner,
            });
        }
    }
    Ok(Some(workload))
}

/// Reads a workload that must exist.
pub(super) async fn get_object<K: Object>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<K, WorkloadError> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(|e| api_error::<K>(e, "get", Some(name), namespace))?
        .ok_or_else(|| WorkloadError::UnknownWorkload {
            kind: Some(K::KIND),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        })
}

pub(super) async fn list<K: Namespaced>(
    client: &Client,
    namespace: &str,
) -> Result<Vec<K>, WorkloadError> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error::<K>(e, "list", None, namespace))?;
    Ok(list.items)
}

/// Replaces `obj`; `None` on a conflict (someone wrote it since it was read).
pub(super) async fn replace<K: Namespaced>(
    api: &Api<K>,
    namespace: &str,
    obj: &K,
) -> Result<Option<K>, WorkloadError> {
    let name = obj.name_any();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match api.replace(&name, &params, obj).await {
        Ok(written) => Ok(Some(written)),
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(None),
        Err(e) => Err(api_error::<K>(e, "update", Some(&name), namespace)),
    }
}

/// Replaces each Service; `false` on the first conflict.
pub(super) async fn write_services(
    client: &Client,
    namespace: &str,
    services: &[Service],
) -> Result<bool, WorkloadError> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    for service in services {
        if replace(&api, namespace, service).await?.is_none() {
            return Ok(false);
        }
        debug!(service = %service.name_any(), namespace, "Service updated");
    }
    Ok(true)
}

/// The pods of a workload's selector (owned by it or not: callers filter).
pub(super) async fn pods_of<K: Object>(
    client: &Client,
    obj: &K,
) -> Result<Vec<Pod>, WorkloadError> {
    let namespace = obj.namespace().unwrap_or_default();
    // An unparsable selector lists the namespace's pods; ownership still tells them apart.
    let params = obj
        .selector()
        .and_then(|s| Selector::try_from(s.clone()).ok())
        .map_or_else(ListParams::default, |s| {
            ListParams::default().labels_from(&s)
        });
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let list = api
        .list(&params)
        .await
        .map_err(|e| api_error::<Pod>(e, "list", None, &namespace))?;
    Ok(list.items)
}

/// For controllers that leave their pods alone: deletes the pods that do not match the new
/// template, so they come back from it.
pub(super) async fn replace_stale_pods<K: Object>(
    client: &Client,
    obj: &K,
) -> Result<(), WorkloadError> {
    if !obj.keeps_pods() {
        return Ok(());
    }
    let namespace = obj.namespace().unwrap_or_default();
    let uid = obj.uid().unwrap_or_default();
    let pods = pods_of(client, obj).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    for pod in rollout::pods_to_replace(&uid, obj.template(), &pods) {
        match api.delete(&pod, &DeleteParams::default()).await {
            Ok(_) => info!(
                pod,
                namespace, "Pod deleted, to be recreated with the new spec"
            ),
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(api_error::<Pod>(e, "delete", Some(&pod), &namespace)),
        }
    }
    Ok(())
}

/// Names the object and the action; a 403 becomes [`WorkloadError::Forbidden`].
pub(super) fn api_error<K: Resource<DynamicType = ()>>(
    e: kube::Error,
    verb: &'static str,
    name: Option<&str>,
    namespace: &str,
) -> WorkloadError {
    let resource = K::plural(&()).into_owned();
    if let kube::Error::Api(s) = &e {
        if s.is_forbidden() {
            return WorkloadError::Forbidden {
                verb,
                resource,
                namespace: namespace.to_owned(),
            };
        }
    }
    let target = match name {
        Some(name) => format!("{} {name}", K::kind(&())),
        None => resource,
    };
    WorkloadError::Api {
        action: format!("{verb} {target} in namespace {namespace}"),
        source: e,
    }
}
