//! Rollout checks, sans-IO: whether a workload's pods run the template tether wrote (or
//! restored), which pods a controller without rolling updates must have replaced, and what to
//! tell the user when pods do not come up. `kube.rs` polls the API and asks these.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::AGENT_CONTAINER;

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Done,
    /// Not yet, and what is missing.
    Waiting(String),
}

/// A Deployment's rollout, judged like `kubectl rollout status`.
pub fn deployment_progress(d: &Deployment) -> Progress {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return Progress::Waiting("the Deployment controller has not seen the change yet".into());
    }
    if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
        return Progress::Waiting("the Deployment is paused".into());
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        Progress::Waiting(format!("{updated} of {want} replicas updated"))
    } else if total > updated {
        Progress::Waiting(format!("{} old replicas still running", total - updated))
    } else if available < updated {
        Progress::Waiting(format!(
            "{available} of {updated} updated replicas available"
        ))
    } else {
        Progress::Done
    }
}

/// A StatefulSet's rollout. `OnDelete` sets never update their revision, so they are judged
/// by their updated replicas.
pub fn statefulset_progress(s: &StatefulSet) -> Progress {
    let spec = s.spec.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1);
    let status = s.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < s.metadata.generation.unwrap_or(0) {
        return Progress::Waiting("the StatefulSet controller has not seen the change yet".into());
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    if updated < want {
        Progress::Waiting(format!("{updated} of {want} replicas updated"))
    } else if !is_on_delete(s) && status.update_revision != status.current_revision {
        Progress::Waiting("the rolling update has not completed".into())
    } else if ready < want {
        Progress::Waiting(format!("{ready} of {want} replicas ready"))
    } else {
        Progress::Done
    }
}

/// Whether a StatefulSet only replaces pods that are deleted.
pub fn is_on_delete(s: &StatefulSet) -> bool {
    s.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete")
}

/// The rollout of a controller that does not replace its pods (a ReplicaSet): `want` ready
/// pods owned by `owner_uid` that match `template`, and none that do not.
pub fn pods_progress(
    want: i32,
    owner_uid: &str,
    template: &PodTemplateSpec,
    pods: &[Pod],
) -> Progress {
    let owned: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_owned_by(p, owner_uid))
        .collect();
    let stale = owned
        .iter()
        .filter(|p| !pod_is_current(p, template))
        .count();
    let ready = owned
        .iter()
        .filter(|p| pod_is_current(p, template) && pod_is_ready(p))
        .count();
    if stale > 0 {
        Progress::Waiting(format!("{stale} pods still run the previous spec"))
    } else if (ready as i64) < i64::from(want) {
        Progress::Waiting(format!("{ready} of {want} pods ready"))
    } else {
        Progress::Done
    }
}

/// The live pods owned by `owner_uid` that do not match `template` (to delete, so that their
/// controller recreates them from it).
pub fn pods_to_replace(owner_uid: &str, template: &PodTemplateSpec, pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_owned_by(p, owner_uid))
        .filter(|p| !pod_is_current(p, template))
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// Whether the pod has the template's agent (same image and arguments), or none if the
/// template has none. Nothing else of the pod is compared: the agent is what tether changes.
pub fn pod_is_current(pod: &Pod, template: &PodTemplateSpec) -> bool {
    fn agent(
        containers: Option<&Vec<Container>>,
    ) -> Option<(&Option<String>, &Option<Vec<String>>)> {
        containers?
            .iter()
            .find(|c| c.name == AGENT_CONTAINER)
            .map(|c| (&c.image, &c.args))
    }
    agent(pod.spec.as_ref().map(|s| &s.containers))
        == agent(template.spec.as_ref().map(|s| &s.containers))
}

fn is_owned_by(pod: &Pod, uid: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid)
}

fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why a rollout is stuck, from the pods' status: the most telling reason first (a failing
/// agent container, then any failing container, an unschedulable pod, a waiting container, a
/// pod that is not ready).
pub fn pod_problem(pods: &[Pod]) -> Option<String> {
    const FAILING: &[&str] = &[
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    ];
    let mut best: Option<(u8, String)> = None;
    let mut consider = |rank: u8, message: String| {
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            best = Some((rank, message));
        }
    };
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let statuses = status.init_container_statuses.iter().flatten();
        for cs in statuses.chain(status.container_statuses.iter().flatten()) {
            let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
            if let Some(w) = waiting {
                let reason = w.reason.as_deref().unwrap_or("waiting");
                let mut message = format!("pod {name}: container {}: {reason}", cs.name);
                if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
                    message.push_str(&format!(" ({m})"));
                }
                let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
                if let Some(t) = last.filter(|_| reason == "CrashLoopBackOff") {
                    let why = t.reason.as_deref().unwrap_or("exited");
                    message.push_str(&format!(", last exit: {why}, code {}", t.exit_code));
                }
                let rank = match (FAILING.contains(&reason), cs.name == AGENT_CONTAINER) {
                    (true, true) => 0,
                    (true, false) => 1,
                    (false, _) => 3,
                };
                consider(rank, message);
            } else if !cs.ready && cs.state.as_ref().is_some_and(|s| s.running.is_some()) {
                consider(
                    4,
                    format!("pod {name}: container {} is running but not ready", cs.name),
                );
            }
        }
        for c in status.conditions.iter().flatten() {
            if c.type_ == "PodScheduled" && c.status == "False" {
                let why = c
                    .message
                    .as_deref()
                    .or(c.reason.as_deref())
                    .unwrap_or("unschedulable");
                consider(2, format!("pod {name} cannot be scheduled: {why}"));
            }
        }
        if !pod_is_ready(pod) {
            consider(5, format!("pod {name} is not ready"));
        }
    }
    best.map(|(_, m)| m)
}

/// The controller that owns an object (`Deployment orders`), if any. tether injects only
/// workloads nobody else manages: a controller would revert the change.
pub fn controller_of(meta: &ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("{} {}", o.kind, o.name))
}
