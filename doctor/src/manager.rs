//! Traffic manager checks: installed, its version against the CLI's, its pod (state, restarts,
//! last termination, image pulls), its Service, and recent Warning events about it.

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Event, Pod, Service},
    },
    jiff::{SignedDuration, Timestamp},
};
use tether_daemon::cluster::{MANAGER_SERVICE, QUIC_PORT};

use crate::{
    check::{Check, Status},
    containers::{self, Target},
};

/// The manager's container in its pod (see `deploy/manager/20-manager.yaml`).
pub const CONTAINER: &str = "manager";
/// Warning events older than this are history, not news.
pub const RECENT: SignedDuration = SignedDuration::from_mins(15);

/// What the API server says about the manager.
#[derive(Debug, Clone, Default)]
pub struct ManagerView {
    /// The namespace looked in.
    pub namespace: String,
    /// `None`: not installed.
    pub deployment: Option<Deployment>,
    pub pods: Vec<Pod>,
    pub service: Option<Service>,
    /// Events of the manager's namespace (any type; filtered here).
    pub events: Vec<Event>,
}

/// `manager.installed`, `manager.version`, `manager.pod`, `manager.service`, `manager.events`.
pub fn manager_checks(view: &ManagerView, cli_version: &str, now: Timestamp) -> Vec<Check> {
    let ns = view.namespace.as_str();
    let Some(deployment) = &view.deployment else {
        return vec![Check::fail(
            "manager.installed",
            format!("no traffic manager in namespace {ns}"),
            "run `tether install`",
        )];
    };
    let image = image_of(deployment).unwrap_or_default();
    let pod = pod_check(ns, deployment, &view.pods, &image);
    let healthy = pod.status == Status::Ok;
    vec![
        Check::ok(
            "manager.installed",
            format!("deployment {MANAGER_SERVICE} in namespace {ns}"),
        ),
        version_check(&image, cli_version),
        pod,
        service_check(ns, view.service.as_ref()),
        events_check(ns, &view.events, &view.pods, healthy, now),
    ]
}

/// The manager container's image.
pub fn image_of(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)?
        .image
        .clone()
}

fn version_check(image: &str, cli: &str) -> Check {
    const ID: &str = "manager.version";
    match tether_kube::image::tag_version(image) {
        Some(v) if v == cli => Check::ok(ID, format!("image {image}, the CLI's version")),
        Some(v) => Check::warn(
            ID,
            format!("the manager runs {v} ({image}), this CLI is {cli}"),
            "use the CLI of the manager's version, or upgrade the manager: `tether install` \
             (with --image for your registry)",
        ),
        None => Check::ok(
            ID,
            format!("image {image} (its tag names no version to compare with the CLI's {cli})"),
        ),
    }
}

fn pod_check(ns: &str, deployment: &Deployment, pods: &[Pod], image: &str) -> Check {
    const ID: &str = "manager.pod";
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    if replicas == 0 {
        return Check::fail(
            ID,
            format!("deployment {MANAGER_SERVICE} is scaled to 0 replicas: no manager runs"),
            format!("`kubectl -n {ns} scale deployment/{MANAGER_SERVICE} --replicas=1`"),
        );
    }
    let live: Vec<&Pod> = pods.iter().filter(|p| !containers::is_over(p)).collect();
    let Some(pod) = newest(&live) else {
        let why = deployment
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                    .and_then(|c| c.message.clone())
            })
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        return Check::fail(
            ID,
            format!("no manager pod exists{why}"),
            format!(
                "`kubectl -n {ns} describe deployment {MANAGER_SERVICE}` and `kubectl -n {ns} get \
                 events --field-selector type=Warning`"
            ),
        );
    };
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let at = Target {
        namespace: ns,
        pod: name,
        container: CONTAINER,
    };
    let Some(cs) = containers::status_of(pod, CONTAINER) else {
        let why = containers::pending_reason(pod).unwrap_or_else(|| "Pending".into());
        return Check::fail(
            ID,
            format!("pod {name}: {why}"),
            format!("`kubectl -n {ns} describe pod {name}`"),
        );
    };
    let d = containers::diagnose(cs, image, at);
    let others = live.len() - 1;
    let found = if others > 0 {
        format!("pod {name}: {} (and {others} more pods)", d.found)
    } else {
        format!("pod {name}: {}", d.found)
    };
    Check {
        id: ID.into(),
        status: d.status,
        found,
        next: d.next,
    }
}

/// The most recently created pod.
fn newest<'a>(pods: &[&'a Pod]) -> Option<&'a Pod> {
    pods.iter()
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .copied()
}

fn service_check(ns: &str, service: Option<&Service>) -> Check {
    const ID: &str = "manager.service";
    let Some(service) = service else {
        return Check::fail(
            ID,
            format!("no Service {MANAGER_SERVICE} in namespace {ns}"),
            "run `tether install` to put it back",
        );
    };
    let spec = service.spec.as_ref();
    let quic = spec.and_then(|s| s.ports.as_ref()).and_then(|ps| {
        ps.iter()
            .find(|p| p.protocol.as_deref() == Some("UDP") && p.port == i32::from(QUIC_PORT))
    });
    match quic {
        Some(p) => Check::ok(
            ID,
            format!(
                "{} {MANAGER_SERVICE}: {}/UDP{}",
                spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP"),
                p.port,
                p.node_port
                    .map(|n| format!(", NodePort {n}"))
                    .unwrap_or_default()
            ),
        ),
        None => Check::fail(
            ID,
            format!("Service {MANAGER_SERVICE} has no {QUIC_PORT}/UDP port"),
            "run `tether install` to restore it",
        ),
    }
}

/// When an event last happened.
pub fn event_time(e: &Event) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Recent Warning events about the manager's pods, ReplicaSets and Deployment: the context of a
/// manager that is not healthy (why it cannot be scheduled, mount, pull), about its current
/// pods, its ReplicaSets and Deployment. While its pod is
/// healthy they are history, counted but no warning. Failed readiness probes from before a pod
/// became Ready are its start-up, not news.
fn events_check(ns: &str, events: &[Event], pods: &[Pod], healthy: bool, now: Timestamp) -> Check {
    const ID: &str = "manager.events";
    let ready_since = |pod: &str| {
        pods.iter()
            .find(|p| p.metadata.name.as_deref() == Some(pod))
            .and_then(|p| p.status.as_ref()?.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
            .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
    };
    let mut news: Vec<(&Event, Timestamp)> = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| {
            let o = &e.involved_object;
            let name = o.name.as_deref().unwrap_or_default();
            // A pod's events count while it is there; those of replaced pods are history.
            name.starts_with(MANAGER_SERVICE)
                && (o.kind.as_deref() != Some("Pod")
                    || pods.iter().any(|p| {
                        p.metadata.name.as_deref() == Some(name) && !containers::is_over(p)
                    }))
        })
        .filter_map(|e| Some((e, event_time(e)?)))
        .filter(|(_, t)| now.duration_since(*t) <= RECENT)
        .filter(|(e, t)| {
            let pod = e.involved_object.name.as_deref().unwrap_or_default();
            !(e.reason.as_deref() == Some("Unhealthy") && ready_since(pod).is_some_and(|r| *t <= r))
        })
        .collect();
    if news.is_empty() {
        return Check::ok(
            ID,
            format!("no Warning events in the last {} min", RECENT.as_mins()),
        );
    }
    let list = format!(
        "`kubectl -n {ns} get events --field-selector type=Warning --sort-by=.lastTimestamp`"
    );
    if healthy {
        return Check::ok(
            ID,
            format!(
                "{} Warning events in the last {} min, none about a current problem ({list})",
                news.len(),
                RECENT.as_mins()
            ),
        );
    }
    news.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
    let shown: Vec<String> = news
        .iter()
        .take(3)
        .map(|(e, _)| {
            format!(
                "{} {}: {}{}",
                e.involved_object.name.as_deref().unwrap_or_default(),
                e.reason.as_deref().unwrap_or_default(),
                shorten(e.message.as_deref().unwrap_or_default().trim(), 160),
                e.count
                    .filter(|c| *c > 1)
                    .map(|c| format!(" (×{c})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    Check {
        id: ID.into(),
        status: Status::Warn,
        found: format!(
            "{} Warning events in the last {} min: {}",
            news.len(),
            RECENT.as_mins(),
            shown.join("; ")
        ),
        next: Some(list),
    }
}

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests;
