//! Agent checks: every workload of the namespace whose pod template has the tether agent
//! container (see `tether_kube::workload::inject`): the agent containers' state, restarts and
//! last termination, its image against the manager's, whether the manager has it linked, and
//! whether a re-applied manifest has moved the Service ports the agent took over away from it.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet, StatefulSet},
        core::v1::{Pod, PodTemplateSpec, Service},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use tether_kube::{
    names::{AGENT_ANNOTATION, AGENT_CONTAINER},
    workload::inject::AgentRecord,
};

use crate::{
    check::{Check, Status},
    containers::{self, Target},
};

/// A workload whose pods carry the agent.
#[derive(Debug, Clone)]
pub struct AgentWorkload {
    /// `deployment`, `statefulset`, `replicaset`.
    pub kind: &'static str,
    pub name: String,
    pub replicas: i32,
    pub selector: LabelSelector,
    /// The agent container's image in the template.
    pub image: String,
    /// What the injection changed (its `tether.dev/agent` annotation), if it is readable.
    pub record: Option<AgentRecord>,
}

impl AgentWorkload {
    /// `agent.<kind>.<name>`.
    pub fn id(&self) -> String {
        format!("agent.{}.{}", self.kind, self.name)
    }
}

fn agent_image(template: &PodTemplateSpec) -> Option<String> {
    let spec = template.spec.as_ref()?;
    let c = spec.containers.iter().find(|c| c.name == AGENT_CONTAINER)?;
    Some(c.image.clone().unwrap_or_default())
}

fn workload(
    kind: &'static str,
    meta: &ObjectMeta,
    replicas: Option<i32>,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
) -> Option<AgentWorkload> {
    Some(AgentWorkload {
        kind,
        name: meta.name.clone()?,
        replicas: replicas.unwrap_or(1),
        selector: selector.clone(),
        image: agent_image(template)?,
        record: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(AGENT_ANNOTATION))
            .and_then(|json| serde_json::from_str(json).ok()),
    })
}

fn show_target(t: Option<&IntOrString>) -> String {
    match t {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => "its port number (no targetPort)".to_owned(),
    }
}

/// The Service ports the injection pointed at the agent that no longer lead to it: a manifest
/// re-applied after the injection (`kubectl apply`, a Helm upgrade, a GitOps sync) put its own
/// ports back, and that traffic now goes straight to the app, past the agent and any intercept.
pub fn drifted_ports(record: &AgentRecord, services: &[Service]) -> Vec<String> {
    let mut drift = Vec::new();
    for r in &record.services {
        let Some(svc) = services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(r.service.as_str()))
        else {
            drift.push(format!("Service {} is gone", r.service));
            continue;
        };
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.port == r.port && p.protocol.as_deref().unwrap_or("TCP") == r.protocol);
        match port {
            None => {
                let now: Vec<String> = ports
                    .iter()
                    .map(|p| format!("{}→{}", p.port, show_target(p.target_port.as_ref())))
                    .collect();
                drift.push(format!(
                    "Service {} no longer has port {}/{} that led to the agent's {} (its ports \
                     now: {})",
                    r.service,
                    r.port,
                    r.protocol,
                    r.agent_port,
                    if now.is_empty() {
                        "none".to_owned()
                    } else {
                        now.join(", ")
                    }
                ));
            }
            Some(p) if p.target_port != Some(IntOrString::Int(r.agent_port.into())) => {
                drift.push(format!(
                    "Service {} port {} targets {} again, not the agent's {}",
                    r.service,
                    r.port,
                    show_target(p.target_port.as_ref()),
                    r.agent_port
                ));
            }
            Some(_) => {}
        }
    }
    drift
}

/// The workloads with an agent. ReplicaSets a Deployment owns count as their Deployment.
pub fn agent_workloads(
    deployments: &[Deployment],
    statefulsets: &[StatefulSet],
    replicasets: &[ReplicaSet],
) -> Vec<AgentWorkload> {
    let mut out: Vec<AgentWorkload> = Vec::new();
    for d in deployments {
        if let Some(s) = &d.spec {
            out.extend(workload(
                "deployment",
                &d.metadata,
                s.replicas,
                &s.selector,
                &s.template,
            ));
        }
    }
    for d in statefulsets {
        if let Some(s) = &d.spec {
            out.extend(workload(
                "statefulset",
                &d.metadata,
                s.replicas,
                &s.selector,
                &s.template,
            ));
        }
    }
    for rs in replicasets {
        let owned = rs
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "Deployment");
        if let (false, Some(s), Some(t)) = (
            owned,
            &rs.spec,
            rs.spec.as_ref().and_then(|s| s.template.as_ref()),
        ) {
            out.extend(workload(
                "replicaset",
                &rs.metadata,
                s.replicas,
                &s.selector,
                t,
            ));
        }
    }
    out
}

/// Whether `selector` selects `labels` (matchLabels and matchExpressions).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let have = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    // An empty selector selects nothing for a workload (the API server refuses one anyway).
    let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty());
    labels_ok && exprs_ok && !empty
}

/// What the manager knows: the agent pods it has linked, when the daemon could say.
pub type Linked<'a> = Option<&'a [String]>;

/// One check per workload with an agent (`agent.<kind>.<name>`), or `agents` when there is none.
/// `services`: the namespace's Services (`None`: they could not be listed, drift is not judged).
pub fn agent_checks(
    namespace: &str,
    workloads: &[AgentWorkload],
    pods: &[Pod],
    services: Option<&[Service]>,
    manager_image: Option<&str>,
    linked: Linked<'_>,
) -> Vec<Check> {
    if workloads.is_empty() {
        return vec![Check::ok(
            "agents",
            format!("no workload in namespace {namespace} has the tether agent"),
        )];
    }
    workloads
        .iter()
        .map(|w| {
            let mut check = workload_check(namespace, w, pods, manager_image, linked);
            if let (Some(record), Some(services)) = (&w.record, services) {
                add_drift(&mut check, namespace, w, &drifted_ports(record, services));
            }
            check
        })
        .collect()
}

/// Adds drifted Service ports to a workload's check: a warning at least, and unless something
/// worse already has the next step, how to re-inject.
fn add_drift(check: &mut Check, namespace: &str, w: &AgentWorkload, drift: &[String]) {
    if drift.is_empty() {
        return;
    }
    let found = format!(
        "{}: traffic there bypasses the agent and its intercepts",
        drift.join("; ")
    );
    if check.status == Status::Ok {
        check.found = format!("{}/{}: {found}", w.kind, w.name);
        check.status = Status::Warn;
        check.next = Some(format!(
            "a re-applied manifest changed the Service's ports after the agent was injected: \
             re-inject it against the current ports with `tether uninstall {}/{} -n \
             {namespace}`, then `tether intercept` again",
            w.kind, w.name
        ));
    } else {
        check.found.push_str(&format!("; {found}"));
    }
}

fn workload_check(
    namespace: &str,
    w: &AgentWorkload,
    pods: &[Pod],
    manager_image: Option<&str>,
    linked: Linked<'_>,
) -> Check {
    let empty = BTreeMap::new();
    let mine: Vec<&Pod> = pods
        .iter()
        .filter(|p| !containers::is_over(p))
        .filter(|p| selects(&w.selector, p.metadata.labels.as_ref().unwrap_or(&empty)))
        .filter(|p| {
            p.spec
                .as_ref()
                .is_some_and(|s| s.containers.iter().any(|c| c.name == AGENT_CONTAINER))
        })
        .collect();
    let label = format!("{}/{}", w.kind, w.name);
    if mine.is_empty() {
        return if w.replicas == 0 {
            Check::ok(w.id(), format!("{label} has the agent and is scaled to 0"))
        } else {
            Check::warn(
                w.id(),
                format!("{label} has the agent in its template but no pod runs it yet"),
                format!(
                    "`kubectl -n {namespace} rollout status {}/{}`",
                    w.kind, w.name
                ),
            )
        };
    }
    // The worst pod speaks for the workload.
    let mut worst: Option<(Status, String, Option<String>)> = None;
    let mut ready = 0;
    for pod in &mine {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let at = Target {
            namespace,
            pod: name,
            container: AGENT_CONTAINER,
        };
        let (status, found, next) = match containers::status_of(pod, AGENT_CONTAINER) {
            Some(cs) => {
                let d = containers::diagnose(cs, &w.image, at);
                (d.status, format!("pod {name}: {}", d.found), d.next)
            }
            None => (
                Status::Warn,
                format!(
                    "pod {name}: {}",
                    containers::pending_reason(pod).unwrap_or_else(|| "Pending".into())
                ),
                Some(format!("`kubectl -n {namespace} describe pod {name}`")),
            ),
        };
        if status == Status::Ok {
            ready += 1;
        }
        if worst.as_ref().is_none_or(|(s, ..)| status > *s) {
            worst = Some((status, found, next));
        }
    }
    let (mut status, found, mut next) = worst.unwrap_or((Status::Ok, String::new(), None));
    let mut found = if status == Status::Ok {
        format!("{label}: {ready}/{} agents Ready, no restarts", mine.len())
    } else {
        format!("{label}: {found} ({ready}/{} agents Ready)", mine.len())
    };
    if status == Status::Ok {
        if let Some(m) = manager_image.filter(|m| *m != w.image) {
            status = Status::Warn;
            found.push_str(&format!(
                "; its agent image {} is not the manager's {m}",
                w.image
            ));
            next = Some(format!(
                "re-install the agent so it matches the manager: `tether uninstall {}/{} -n \
                 {namespace}`, then intercept again",
                w.kind, w.name
            ));
        }
    }
    if status == Status::Ok {
        if let Some(linked) = linked {
            let unlinked: Vec<&str> = mine
                .iter()
                .filter_map(|p| p.metadata.name.as_deref())
                .filter(|n| !linked.iter().any(|l| l == n))
                .collect();
            if !unlinked.is_empty() {
                status = Status::Warn;
                found.push_str(&format!(
                    "; not linked to the manager: {}",
                    unlinked.join(", ")
                ));
                next = Some(format!(
                    "an agent links within seconds of starting; if it stays unlinked, see \
                     `kubectl -n {namespace} logs {} -c {AGENT_CONTAINER}`",
                    unlinked[0]
                ));
            }
        }
    }
    Check {
        id: w.id(),
        status,
        found,
        next,
    }
}

#[cfg(test)]
mod tests;
