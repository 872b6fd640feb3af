//! Whether the manager Deployment is available (judged by [`crate::rollout`], like every
//! rollout), and if not, why: a pure reading of the Deployment's and pods' status.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::rollout::{deployment_progress, Progress};

/// Waiting reasons that waiting will not fix: the image must change or be made available. A
/// failed pull counts: the kubelet retries it, but a missing tag or a refused pull secret does
/// not heal on its own, and the user is better told at once (with the pull's error).
const UNUSABLE: [&str; 4] = [
    "ErrImageNeverPull",
    "InvalidImageName",
    "ErrImagePull",
    "ImagePullBackOff",
];

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rollout {
    /// Every replica runs the current template and is available.
    Available,
    /// Not yet; the text says what it waits on.
    Waiting(String),
    /// A container cannot start with this image.
    Unusable { reason: String, message: String },
}

/// Reads `deployment` (absent: not created yet) and its `pods`. Only pods running `image` and not
/// being deleted count, so a pod left from an earlier install does not speak for this one.
pub(crate) fn rollout(deployment: Option<&Deployment>, pods: &[Pod], image: &str) -> Rollout {
    let Some(deployment) = deployment else {
        return Rollout::Waiting("the Deployment does not exist yet".into());
    };
    if deployment_progress(deployment) == Progress::Done {
        return Rollout::Available;
    }
    let current = pods.iter().filter(|pod| {
        let spec = pod.spec.as_ref();
        pod.metadata.deletion_timestamp.is_none()
            && spec.is_some_and(|s| {
                s.containers
                    .iter()
                    .any(|c| c.image.as_deref() == Some(image))
            })
    });
    let mut detail = None;
    for pod in current {
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        let status = pod.status.clone().unwrap_or_default();
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for container in containers {
            if let Some((reason, message)) = waiting(container) {
                if UNUSABLE.contains(&reason.as_str()) {
                    return Rollout::Unusable { reason, message };
                }
                detail.get_or_insert_with(|| {
                    format!(
                        "pod {name}: container {} is waiting: {reason}: {message}",
                        container.name
                    )
                });
            }
            if let Some(exit) = last_exit(container) {
                detail.get_or_insert_with(|| {
                    format!("pod {name}: container {} {exit}", container.name)
                });
            }
        }
        let unschedulable = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False");
        if let Some(condition) = unschedulable {
            let message = condition.message.as_deref().unwrap_or("no reason given");
            detail.get_or_insert_with(|| format!("pod {name} cannot be scheduled: {message}"));
        }
        let phase = status.phase.as_deref().unwrap_or("Pending");
        detail.get_or_insert_with(|| format!("pod {name} is {phase} and not ready yet"));
    }
    if let Some(detail) = detail {
        return Rollout::Waiting(detail);
    }
    // No pod: the ReplicaSet may be refused one (quota, admission).
    let conditions = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref());
    let failure = conditions
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
        .and_then(|c| c.message.clone());
    Rollout::Waiting(failure.map_or_else(
        || "no manager pod yet".to_owned(),
        |m| format!("no manager pod: {m}"),
    ))
}

fn waiting(container: &ContainerStatus) -> Option<(String, String)> {
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.clone().unwrap_or_else(|| "unknown".into());
    Some((reason, waiting.message.clone().unwrap_or_default()))
}

/// "exited with code 1 (Error) and restarted N times", from the last termination.
fn last_exit(container: &ContainerStatus) -> Option<String> {
    let terminated = container.last_state.as_ref()?.terminated.as_ref()?;
    let reason = terminated.reason.as_deref().unwrap_or("no reason");
    Some(format!(
        "exited with code {} ({reason}) and restarted {} times; see `kubectl -n tether logs -p` on the pod",
        terminated.exit_code, container.restart_count
    ))
}
