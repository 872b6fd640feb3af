//! The async side of injection: reads the workload and its Services, writes what
//! [`inject`](super::inject) planned, and waits for the pods. Every decision is made there;
//! this file reads, writes and retries.
//!
//! # Writes
//! Objects are written with `replace`: the `resourceVersion` read with the object turns a
//! concurrent edit into a 409 instead of a lost update. On a 409 everything is read and planned
//! again, up to [`WRITE_ATTEMPTS`] times. Planning always starts from the record (an installed
//! agent is planned away first), so a retry after a partial write (workload done, a Service
//! not) finishes the job instead of doing it twice.
//!
//! # Order
//! - Install: the workload first. Named target ports need nothing more: each pod is reached at
//!   whatever port carries the name *in that pod*, so old pods (app) and new pods (agent) both
//!   work during the rollout. Numeric target ports are then pointed at the agent only after the
//!   rollout ([`INSTALL_ROLLOUT_TIMEOUT`]): earlier, the Service would send traffic to old pods,
//!   where nothing listens on the agent port.
//! - Uninstall: the Services first, then the workload. Pods with the agent still have the app
//!   listening on its own port, so traffic sent back to it works throughout the rollout.
//!
//! ReplicaSets (and `OnDelete` StatefulSets) do not replace their pods when their template
//! changes; the pods that do not match it are deleted, which interrupts that workload briefly.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Selector;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::inject::{
    self, AgentRecord, AgentSettings, PlanError, Workload, WorkloadKind, AGENT_ANNOTATION,
    AGENT_SECRET,
};
use crate::rollout::{self, Progress};

pub use crate::names::FIELD_MANAGER;
/// How often a write is retried after a conflict.
pub const WRITE_ATTEMPTS: usize = 5;
/// How long [`install_agent`] waits for the pods before pointing numeric Service ports at the
/// agent.
pub const INSTALL_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why a workload operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// No workload of that name.
    #[error("{}", unknown_workload(*.kind, .name, .namespace))]
    UnknownWorkload {
        /// The kind asked for, if any.
        kind: Option<WorkloadKind>,
        name: String,
        namespace: String,
    },
    /// A workload another controller manages (and would revert).
    #[error("{workload} is managed by {owner}: intercept the {owner} instead")]
    Managed { workload: String, owner: String },
    /// RBAC says no.
    #[error("you may not {verb} {resource} in namespace {namespace} (RBAC): ask a cluster admin to grant it to you")]
    Forbidden {
        verb: &'static str,
        resource: String,
        namespace: String,
    },
    /// The change cannot be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Other writers kept winning.
    #[error("{object} kept changing while tether updated it; try again")]
    Conflict { object: String },
    /// The pods did not come up in time.
    #[error("{workload} did not roll out within {}s: {reason}", .timeout.as_secs())]
    RolloutTimeout {
        workload: String,
        timeout: Duration,
        /// The most telling pod problem, or what the rollout still lacks.
        reason: String,
    },
    /// Any other API failure.
    #[error("cannot {action}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// No randomness for a credential request.
    #[error("reading /dev/urandom")]
    Nonce(#[source] std::io::Error),
}

fn unknown_workload(kind: Option<WorkloadKind>, name: &str, namespace: &str) -> String {
    let kinds = match kind {
        Some(kind) => kind.to_string(),
        None => "Deployment, StatefulSet or ReplicaSet".to_owned(),
    };
    format!("no {kinds} named {name} in namespace {namespace}")
}

/// One line of `tether list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSummary {
    pub kind: WorkloadKind,
    pub name: String,
    /// Desired replicas.
    pub replicas: i32,
    /// Ready replicas.
    pub ready: i32,
    /// The installed agent, if any (and readable).
    pub agent: Option<AgentRecord>,
}

/// Finds `name` (`orders`, `deploy/orders`, `sts/db`, …) in `namespace`. A bare name is looked
/// up as a Deployment, then a StatefulSet, then a ReplicaSet.
pub async fn find_workload(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Workload, WorkloadError> {
    let (kind, bare) = inject::parse_workload_ref(name)?;
    let kinds = kind.map_or(WorkloadKind::ALL.to_vec(), |k| vec![k]);
    let mut forbidden = None;
    for k in kinds {
        let found = match k {
            WorkloadKind::Deployment => get::<Deployment>(client, namespace, bare).await,
            WorkloadKind::StatefulSet => get::<StatefulSet>(client, namespace, bare).await,
            WorkloadKind::ReplicaSet => get::<ReplicaSet>(client, namespace, bare).await,
        };
        match found {
            Ok(Some(w)) => return Ok(w),
            Ok(None) => {}
            // Another kind may still be readable, and be the one.
            Err(e @ WorkloadError::Forbidden { .. }) if kind.is_none() => {
                forbidden.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(forbidden.unwrap_or(WorkloadError::UnknownWorkload {
        kind,
        name: bare.to_owned(),
        namespace: namespace.to_owned(),
    }))
}

/// The Services of `namespace`.
pub async fn services(client: &Client, namespace: &str) -> Result<Vec<Service>, WorkloadError> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error::<Service>(e, "list", None, namespace))?;
    Ok(list.items)
}

/// Installs the agent into `workload` (only its kind, name and namespace are used: the object
/// is read afresh) and points its Services at it; see the module doc for the order. Does
/// nothing when the same agent is already there; reinstalls, in one update, when the settings
/// or the Services changed. Ensures the agent's Secret first, since pods cannot start without.
pub async fn install_agent(
    client: &Client,
    workload: &Workload,
    settings: &AgentSettings,
) -> Result<AgentRecord, WorkloadError> {
    match workload.kind {
        WorkloadKind::Deployment => install::<Deployment>(client, workload, settings).await,
        WorkloadKind::StatefulSet => install::<StatefulSet>(client, workload, settings).await,
        WorkloadKind::ReplicaSet => install::<ReplicaSet>(client, workload, settings).await,
    }
}

async fn install<K: Object>(
    client: &Client,
    workload: &Workload,
    settings: &AgentSettings,
) -> Result<AgentRecord, WorkloadError> {
    let (namespace, name) = (workload.namespace.as_str(), workload.name.as_str());
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    for attempt in 1..=WRITE_ATTEMPTS {
        let mut obj = get_object::<K>(client, namespace, name).await?;
        let current = workload_of(&obj);
        let plan = inject::inject(&current, &services(client, namespace).await?, settings)?;
        for skipped in &plan.skipped {
            warn!(workload = %current, reason = %skipped, "Port not taken over");
        }
        let recorded = inject::record_of(&current)?;
        if recorded.as_ref() != Some(&plan.record)
            || !inject::has_agent(&current.template, &plan.record)
            || !inject::agent_is_current(&current.template, settings)
        {
            *obj.template_mut() = plan.template;
            inject::annotate(&mut obj.meta_mut().annotations, Some(&plan.record));
            let Some(written) = replace(&api, namespace, &obj).await? else {
                debug!(workload = %current, attempt, "Conflict, retrying");
                continue;
            };
            info!(workload = %current, ports = plan.record.ports.len(), "Traffic agent added");
            replace_stale_pods(client, &written).await?;
        }
        if plan.services.is_empty() {
            return Ok(plan.record);
        }
        wait_rollout_of::<K>(client, namespace, name, INSTALL_ROLLOUT_TIMEOUT).await?;
        if write_services(client, namespace, &plan.services).await? {
            info!(workload = %current, services = plan.services.len(), "Services pointed at the traffic agent");
            return Ok(plan.record);
        }
        debug!(workload = %current, attempt, "Service conflict, retrying");
    }
    Err(WorkloadError::Conflict {
        object: workload.to_string(),
    })
}

/// Removes the agent from `name` in `namespace` and restores its Services; `false` if there was
/// no agent. Removes the namespace's agent Secret once no workload has an agent.
pub async fn uninstall_agent(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<bool, WorkloadError> {
    let workload = find_workload(client, namespace, name).await?;
    let removed = uninstall(client, &workload).await?;
    if removed {
        remove_secret_if_unused(client, namespace).await;
    }
    Ok(removed)
}

/// Removes every agent in `namespace`; the restored workloads (`Deployment/orders`). Goes on
/// after a failure, then reports the first one.
pub async fn uninstall_all(client: &Client, namespace: &str) -> Result<Vec<String>, WorkloadError> {
    let mut restored = Vec::new();
    let mut first_error = None;
    for (workload, ..) in all_workloads(client, namespace).await? {
        if !workload.annotations.contains_key(AGENT_ANNOTATION) {
            continue;
        }
        match uninstall(client, &workload).await {
            Ok(true) => restored.push(workload.id()),
            Ok(false) => {}
            Err(e) => {
                warn!(workload = %workload, error = %tether_proto::error_chain(&e), "Traffic agent not removed");
                first_error.get_or_insert(e);
            }
        }
    }
    remove_secret_if_unused(client, namespace).await;
    match first_error {
        Some(e) => Err(e),
        None => Ok(restored),
    }
}

async fn uninstall(client: &Client, workload: &Workload) -> Result<bool, WorkloadError> {
    match workload.kind {
        WorkloadKind::Deployment => uninstall_from::<Deployment>(client, workload).await,
        WorkloadKind::StatefulSet => uninstall_from::<StatefulSet>(client, workload).await,
        WorkloadKind::ReplicaSet => uninstall_from::<ReplicaSet>(client, workload).await,
    }
}

async fn uninstall_from<K: Object>(
    client: &Client,
    workload: &Workload,
) -> Result<bool, WorkloadError> {
    let (namespace, name) = (workload.namespace.as_str(), workload.name.as_str());
    let Some(record) = inject::record_of(workload)? else {
        return Ok(false);
    };
    restore_services(client, workload, &record).await?;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    for attempt in 1..=WRITE_ATTEMPTS {
        let mut obj = get_object::<K>(client, namespace, name).await?;
        let current = workload_of(&obj);
        let Some(record) = inject::record_of(&current)? else {
            // Someone else finished the job.
            return Ok(true);
        };
        *obj.template_mut() = inject::restore(&current.template, &[], &record).template;
        inject::annotate(&mut obj.meta_mut().annotations, None);
        match replace(&api, namespace, &obj).await? {
            Some(written) => {
                info!(workload = %current, "Traffic agent removed");
                replace_stale_pods(client, &written).await?;
                return Ok(true);
            }
            None => debug!(workload = %current, attempt, "Conflict, retrying"),
        }
    }
    Err(WorkloadError::Conflict {
        object: workload.to_string(),
    })
}

async fn restore_services(
    client: &Client,
    workload: &Workload,
    record: &AgentRecord,
) -> Result<(), WorkloadError> {
    if record.services.is_empty() {
        return Ok(());
    }
    for attempt in 1..=WRITE_ATTEMPTS {
        let current = services(client, &workload.namespace).await?;
        let restored = inject::restore(&workload.template, &current, record);
        if write_services(client, &workload.namespace, &restored.services).await? {
            info!(workload = %workload, services = restored.services.len(), "Services restored");
            return Ok(());
        }
        debug!(workload = %workload, attempt, "Service conflict, retrying");
    }
    Err(WorkloadError::Conflict {
        object: format!("the Services of {workload}"),
    })
}

/// Waits until `workload`'s pods all run its current template and are ready (see
/// [`rollout::deployment_progress`] and friends). On timeout, says why from the pods' status.
pub async fn wait_rollout(
    client: &Client,
    workload: &Workload,
    timeout: Duration,
) -> Result<(), WorkloadError> {
    let (namespace, name) = (workload.namespace.as_str(), workload.name.as_str());
    match workload.kind {
        WorkloadKind::Deployment => {
            wait_rollout_of::<Deployment>(client, namespace, name, timeout).await
        }
        WorkloadKind::StatefulSet => {
            wait_rollout_of::<StatefulSet>(client, namespace, name, timeout).await
        }
        WorkloadKind::ReplicaSet => {
            wait_rollout_of::<ReplicaSet>(client, namespace, name, timeout).await
        }
    }
}

async fn wait_rollout_of<K: Object>(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), WorkloadError> {
    let deadline = Instant::now() + timeout;
    loop {
        let obj = get_object::<K>(client, namespace, name).await?;
        let progress = match obj.progress() {
            Some(progress) => progress,
            None => {
                let pods = pods_of(client, &obj).await?;
                let uid = obj.uid().unwrap_or_default();
                rollout::pods_progress(obj.replicas().0, &uid, obj.template(), &pods)
            }
        };
        let why = match progress {
            Progress::Done => {
                debug!(kind = %K::KIND, name, "Rolled out");
                return Ok(());
            }
            Progress::Waiting(why) => why,
        };
        if Instant::now() >= deadline {
            let pods = pods_of(client, &obj).await.unwrap_or_default();
            return Err(WorkloadError::RolloutTimeout {
                workload: format!("{} {name}", K::KIND),
                timeout,
                reason: rollout::pod_problem(&pods).unwrap_or(why),
            });
        }
        debug!(kind = %K::KIND, name, %why, "Waiting for the rollout");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Whether the agents' Secret in `namespace` holds a credential the manager (whose CA is
/// `ca_pem`) accepts for that namespace.
pub async fn agent_credential_is_current(
    client: &Client,
    namespace: &str,
    ca_pem: &str,
) -> Result<bool, WorkloadError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(AGENT_SECRET)
        .await
        .map_err(|e| api_error::<Secret>(e, "get", Some(AGENT_SECRET), namespace))?;
    Ok(inject::agent_credential_is_current(
        namespace,
        secret.as_ref(),
        ca_pem,
    ))
}

/// Writes a fresh request nonce into the agents' Secret of `namespace` (creating it if needed)
/// and returns it: the manager issues an agent credential to whoever can show it.
pub async fn request_agent_credential(
    client: &Client,
    namespace: &str,
) -> Result<String, WorkloadError> {
    let nonce = nonce().map_err(WorkloadError::Nonce)?;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let exists = api
        .get_opt(AGENT_SECRET)
        .await
        .map_err(|e| api_error::<Secret>(e, "get", Some(AGENT_SECRET), namespace))?
        .is_some();
    if exists {
        api.patch(
            AGENT_SECRET,
            &PatchParams::default(),
            &Patch::Merge(inject::agent_request_patch(&nonce)),
        )
        .await
        .map_err(|e| api_error::<Secret>(e, "patch", Some(AGENT_SECRET), namespace))?;
    } else {
        api.create(
            &PostParams::default(),
            &inject::agent_request_secret(namespace, &nonce),
        )
        .await
        .map_err(|e| api_error::<Secret>(e, "create", Some(AGENT_SECRET), namespace))?;
    }
    Ok(nonce)
}

/// Stores the manager's answer to the request `nonce` in the agents' Secret of `namespace`.
pub async fn store_agent_credential(
    client: &Client,
    namespace: &str,
    nonce: &str,
    credential: &tether_proto::AgentCredential,
) -> Result<(), WorkloadError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    api.patch(
        AGENT_SECRET,
        &PatchParams::default(),
        &Patch::Merge(inject::agent_credential_patch(nonce, credential)),
    )
    .await
    .map_err(|e| api_error::<Secret>(e, "patch", Some(AGENT_SECRET), namespace))?;
    debug!(namespace, "Agent credential stored");
    Ok(())
}

/// 128 random bits from the OS, as hex.
fn nonce() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The workloads of `namespace` tether can inject: Deployments, StatefulSets, and ReplicaSets
/// no controller owns.
pub async fn list_workloads(
    client: &Client,
    namespace: &str,
) -> Result<Vec<WorkloadSummary>, WorkloadError> {
    let all = all_workloads(client, namespace).await?;
    Ok(all
        .into_iter()
        .map(|(workload, replicas, ready)| {
            let agent = inject::record_of(&workload).unwrap_or_else(|e| {
                debug!(workload = %workload, error = %tether_proto::error_chain(&e), "Unreadable record");
                None
            });
            WorkloadSummary {
                kind: workload.kind,
                name: workload.name,
                replicas,
                ready,
                agent,
            }
        })
        .collect())
}

/// Every injectable workload with its desired and ready replicas.
async fn all_workloads(
    client: &Client,
    namespace: &str,
) -> Result<Vec<(Workload, i32, i32)>, WorkloadError> {
    fn entry<K: Object>(obj: &K) -> (Workload, i32, i32) {
        let (replicas, ready) = obj.replicas();
        (workload_of(obj), replicas, ready)
    }
    let mut out = Vec::new();
    out.extend(
        list::<Deployment>(client, namespace)
            .await?
            .iter()
            .map(entry),
    );
    out.extend(
        list::<StatefulSet>(client, namespace)
            .await?
            .iter()
            .map(entry),
    );
    out.extend(
        list::<ReplicaSet>(client, namespace)
            .await?
            .iter()
            // A Deployment's ReplicaSets carry copies of its annotations, the record included.
            .filter(|rs| rollout::controller_of(rs.meta()).is_none())
            .map(entry),
    );
    Ok(out)
}

/// Deletes the agent Secret of `namespace` unless a workload there still has an agent.
/// Best effort: the uninstall itself has succeeded.
async fn remove_secret_if_unused(client: &Client, namespace: &str) {
    match all_workloads(client, namespace).await {
        Ok(all)
            if all
                .iter()
                .any(|(w, ..)| w.annotations.contains_key(AGENT_ANNOTATION)) =>
        {
            return
        }
        Ok(_) => {}
        Err(e) => {
            warn!(namespace, error = %tether_proto::error_chain(&e), "Agent credential kept: cannot tell whether it is in use");
            return;
        }
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.delete(AGENT_SECRET, &DeleteParams::default()).await {
        Ok(_) => info!(namespace, "Agent credential removed"),
        Err(kube::Error::Api(s)) if s.is_not_found() => {}
        Err(e) => {
            warn!(namespace, error = %tether_proto::error_chain(&e), "Agent credential not removed")
        }
    }
}

/// Services, workloads and the rest, as far as the generic reads and writes need.
trait Namespaced:
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
trait Object: Namespaced {
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

fn workload_of<K: Object>(obj: &K) -> Workload {
    Workload {
        kind: K::KIND,
        name: obj.name_any(),
        namespace: obj.namespace().unwrap_or_default(),
        annotations: obj.annotations().clone(),
        template: obj.template().clone(),
    }
}

/// Reads a workload; `None` if there is none. Refuses one that a controller manages.
async fn get<K: Object>(
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
async fn get_object<K: Object>(
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

async fn list<K: Namespaced>(client: &Client, namespace: &str) -> Result<Vec<K>, WorkloadError> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error::<K>(e, "list", None, namespace))?;
    Ok(list.items)
}

/// Replaces `obj`; `None` on a conflict (someone wrote it since it was read).
async fn replace<K: Namespaced>(
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
async fn write_services(
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
async fn pods_of<K: Object>(client: &Client, obj: &K) -> Result<Vec<Pod>, WorkloadError> {
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
async fn replace_stale_pods<K: Object>(client: &Client, obj: &K) -> Result<(), WorkloadError> {
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
fn api_error<K: Resource<DynamicType = ()>>(
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
