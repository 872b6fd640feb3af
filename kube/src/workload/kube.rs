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
//!
//! # Layout
//! This file: finding, installing, uninstalling and listing workloads, and waiting for their
//! rollouts. `object`: the generic reads and writes over the three workload kinds.
//! `credential`: the agents' credential Secret.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::inject::{
    self, AgentRecord, AgentSettings, PlanError, Workload, WorkloadKind, AGENT_ANNOTATION,
};
use crate::rollout::{self, Progress};

mod credential;
mod object;
mod replace;

pub use crate::names::FIELD_MANAGER;
pub use credential::*;
use object::*;
pub use replace::{replace_container, restore_container};

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
    /// `--replace` cannot take the container out (or put it back).
    #[error(transparent)]
    Replace(#[from] crate::workload::replace::ReplaceError),
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
    /// The agent container's image in the pod template (its tag is tether's version).
    #[serde(default)]
    pub agent_image: Option<String>,
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
        // A container `--replace` took out comes back with the agent's removal.
        let mut template = current.template.clone();
        crate::workload::replace::restore_in(
            &current,
            &mut template,
            &mut obj.meta_mut().annotations,
        )?;
        *obj.template_mut() = inject::restore(&template, &[], &record).template;
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
            let agent_image = workload
                .template
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|c| c.name == inject::AGENT_CONTAINER))
                .and_then(|c| c.image.clone());
            WorkloadSummary {
                kind: workload.kind,
                name: workload.name,
                replicas,
                ready,
                agent,
                agent_image,
            }
        })
        .collect())
}

/// The workloads of `namespace` tether can inject (see [`list_workloads`]), as objects.
pub async fn workloads(client: &Client, namespace: &str) -> Result<Vec<Workload>, WorkloadError> {
    let all = all_workloads(client, namespace).await?;
    Ok(all.into_iter().map(|(w, _, _)| w).collect())
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
