//! What `crictl`/`kubectl describe pod` would show about one container: its state, restarts and
//! last termination, turned into a finding and a next step. Shared by the manager and agent
//! checks.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::check::Status;

/// A container's trouble, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub status: Status,
    pub found: String,
    pub next: Option<String>,
}

/// Where a container is, for the commands a next step names.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
}

impl Target<'_> {
    fn logs(&self, previous: bool) -> String {
        format!(
            "`kubectl -n {} logs {} -c {}{}`",
            self.namespace,
            self.pod,
            self.container,
            if previous { " --previous" } else { "" }
        )
    }

    fn describe(&self) -> String {
        format!("`kubectl -n {} describe pod {}`", self.namespace, self.pod)
    }
}

/// Whether a pod is gone or on its way out: being deleted, or finished (`Succeeded`, or
/// `Failed` as an evicted pod is) and never to run again.
pub fn is_over(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        || pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

/// The container's status in `pod`, if the kubelet reported one.
pub fn status_of<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)
}

/// Why a pod that has no container status yet is stuck (unschedulable, usually).
pub fn pending_reason(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let scheduled = status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    Some(format!(
        "not scheduled: {}",
        scheduled
            .message
            .clone()
            .or_else(|| scheduled.reason.clone())
            .unwrap_or_default()
    ))
}

/// The last termination: `OOMKilled (exit code 137)`.
pub fn last_termination(cs: &ContainerStatus) -> Option<String> {
    let t = cs.last_state.as_ref()?.terminated.as_ref()?;
    Some(format!(
        "{} (exit code {})",
        t.reason.as_deref().unwrap_or("terminated"),
        t.exit_code
    ))
}

/// Judges one container: waiting reasons (image pulls, crash loops, missing config), a
/// termination, restarts (and the last termination's reason: `OOMKilled` above all), readiness.
pub fn diagnose(cs: &ContainerStatus, image: &str, at: Target<'_>) -> Diagnosis {
    let restarts = cs.restart_count;
    let last = last_termination(cs);
    let oom = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
    let restarts_text = match (&last, restarts) {
        (_, 0) => String::new(),
        (Some(last), n) => format!(", {n} restarts, last {last}"),
        (None, n) => format!(", {n} restarts"),
    };
    let state = cs.state.as_ref();
    if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.clone().unwrap_or_else(|| "Waiting".into());
        let message = w
            .message
            .as_ref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        let found = format!("{} is {reason}{message}{restarts_text}", at.container);
        let next = match reason.as_str() {
            "ErrImageNeverPull" => format!(
                "the image {image} is not on the node and its imagePullPolicy is Never: load it \
                 onto the node (`ctr -n k8s.io images import …`) or use an image the node can \
                 pull"
            ),
            "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" => format!(
                "the node cannot pull {image}: check the image name and tag, the registry's \
                 reachability and its credentials (imagePullSecrets); {}",
                at.describe()
            ),
            "CrashLoopBackOff" if oom => format!(
                "it is OOM-killed: raise its memory limit; its last words: {}",
                at.logs(true)
            ),
            "CrashLoopBackOff" => format!("it keeps exiting: see why with {}", at.logs(true)),
            "CreateContainerConfigError" | "CreateContainerError" => format!(
                "a Secret, ConfigMap or setting it needs is missing or wrong: {}",
                at.describe()
            ),
            "ContainerCreating" | "PodInitializing" => {
                return Diagnosis {
                    status: Status::Warn,
                    found,
                    next: Some(format!("wait a moment; if it stays so, {}", at.describe())),
                }
            }
            _ => at.describe(),
        };
        return Diagnosis {
            status: Status::Fail,
            found,
            next: Some(next),
        };
    }
    if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        return Diagnosis {
            status: Status::Fail,
            found: format!(
                "{} terminated: {} (exit code {}){restarts_text}",
                at.container,
                t.reason.as_deref().unwrap_or("?"),
                t.exit_code
            ),
            next: Some(format!("see why with {}", at.logs(false))),
        };
    }
    if !cs.ready {
        return Diagnosis {
            status: Status::Fail,
            found: format!("{} is running but not Ready{restarts_text}", at.container),
            next: Some(format!(
                "its readiness probe fails: {} and {}",
                at.describe(),
                at.logs(false)
            )),
        };
    }
    if restarts > 0 {
        let next = if oom {
            format!(
                "it was OOM-killed: raise its memory limit; its last words: {}",
                at.logs(true)
            )
        } else {
            format!("see why it restarted with {}", at.logs(true))
        };
        return Diagnosis {
            status: if oom { Status::Fail } else { Status::Warn },
            found: format!("{} is Ready{restarts_text}", at.container),
            next: Some(next),
        };
    }
    Diagnosis {
        status: Status::Ok,
        found: format!("{} is Ready, no restarts", at.container),
        next: None,
    }
}

#[cfg(test)]
mod tests;
