//! Node checks, the walk of `kubectl describe node`: Ready, the pressure and
//! NetworkUnavailable conditions, any other condition (how Node Problem Detector reports
//! `KernelDeadlock`, `ReadonlyFilesystem`, …), and requested vs allocatable resources.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod};

use crate::{check::Check, quantity};

/// Requests above this share of a node's allocatable resources get a warning: the next pod
/// (an agent's rollout) may not fit.
pub const CROWDED: f64 = 0.9;

/// The conditions whose healthy value is `False`, and what each means.
const PRESSURE: [(&str, &str); 4] = [
    ("MemoryPressure", "memory is short; the kubelet evicts pods"),
    (
        "DiskPressure",
        "disk space or inodes are short; the kubelet evicts pods and removes images",
    ),
    ("PIDPressure", "process ids are short"),
    ("NetworkUnavailable", "the node's network is not configured"),
];

/// `node.<name>.ready` and `node.<name>.conditions`.
pub fn node_checks(node: &Node) -> Vec<Check> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let conditions: &[NodeCondition] = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let describe = format!("`kubectl describe node {name}`");
    let mut checks = Vec::new();

    let ready_id = format!("node.{name}.ready");
    let unschedulable = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    checks.push(match conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "True" && unschedulable => Check::warn(
            ready_id,
            format!("{name} is Ready but cordoned: no new pods (an agent's rollout) land on it"),
            format!("`kubectl uncordon {name}` when its maintenance is over"),
        ),
        Some(c) if c.status == "True" => Check::ok(ready_id, format!("{name} is Ready")),
        Some(c) => Check::fail(
            ready_id,
            format!("{name} is not Ready: Ready={}{}", c.status, explain(c)),
            format!(
                "{describe}; the kubelet or container runtime on {name} is down or cut off \
                 (Unknown: the node stopped reporting)"
            ),
        ),
        None => Check::fail(
            ready_id,
            format!("{name} reports no Ready condition"),
            format!("{describe}; is its kubelet running?"),
        ),
    });

    let mut problems = Vec::new();
    let mut next = Vec::new();
    for c in conditions.iter().filter(|c| c.type_ != "Ready") {
        let known = PRESSURE.iter().find(|(t, _)| *t == c.type_);
        // Pressure conditions are healthy `False`; so are Node Problem Detector's (its
        // conditions say a problem is present when `True`).
        if c.status == "False" {
            continue;
        }
        problems.push(format!("{}={}{}", c.type_, c.status, explain(c)));
        next.push(match known {
            Some((_, meaning)) => format!("{}: {meaning}", c.type_),
            None => format!("{}: reported by a node problem detector", c.type_),
        });
    }
    let id = format!("node.{name}.conditions");
    checks.push(if problems.is_empty() {
        let types: Vec<&str> = conditions
            .iter()
            .filter(|c| c.type_ != "Ready")
            .map(|c| c.type_.as_str())
            .collect();
        Check::ok(
            id,
            format!("no problem condition ({} are False)", types.join(", ")),
        )
    } else {
        Check::fail(
            id,
            format!("{name}: {}", problems.join("; ")),
            format!(
                "{}; see {describe} and fix the node (free disk or memory, restart its \
                 services) or drain it (`kubectl drain {name} --ignore-daemonsets`)",
                next.join("; ")
            ),
        )
    });
    checks
}

fn explain(c: &NodeCondition) -> String {
    match (&c.reason, &c.message) {
        (Some(r), Some(m)) if !m.is_empty() => format!(" ({r}: {m})"),
        (Some(r), _) => format!(" ({r})"),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    }
}

/// What a pod asks of its node: the larger of its containers' sum and its largest init
/// container (as the scheduler counts), plus its overhead. (CPU cores, memory bytes.)
pub fn pod_requests(pod: &Pod) -> (f64, f64) {
    let Some(spec) = &pod.spec else {
        return (0.0, 0.0);
    };
    let of = |c: &k8s_openapi::api::core::v1::Container| {
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let get = |k: &str| {
            req.and_then(|r| r.get(k))
                .and_then(|q| quantity::parse(&q.0))
                .unwrap_or(0.0)
        };
        (get("cpu"), get("memory"))
    };
    let (mut cpu, mut mem) = spec
        .containers
        .iter()
        .map(of)
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    for init in spec.init_containers.iter().flatten().map(of) {
        cpu = f64::max(cpu, init.0);
        mem = f64::max(mem, init.1);
    }
    if let Some(overhead) = &spec.overhead {
        cpu += overhead
            .get("cpu")
            .and_then(|q| quantity::parse(&q.0))
            .unwrap_or(0.0);
        mem += overhead
            .get("memory")
            .and_then(|q| quantity::parse(&q.0))
            .unwrap_or(0.0);
    }
    (cpu, mem)
}

/// `node.<name>.allocated`: requested vs allocatable CPU and memory, from the pods that are not
/// finished, as `kubectl describe node` shows under "Allocated resources".
pub fn allocated_checks(nodes: &[Node], pods: &[Pod]) -> Vec<Check> {
    let mut requested: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for pod in pods {
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        if finished {
            continue;
        }
        let (cpu, mem) = pod_requests(pod);
        let entry = requested.entry(node).or_default();
        entry.0 += cpu;
        entry.1 += mem;
    }
    nodes
        .iter()
        .map(|node| {
            let name = node.metadata.name.clone().unwrap_or_default();
            let id = format!("node.{name}.allocated");
            let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
            let get = |k: &str| {
                alloc
                    .and_then(|a| a.get(k))
                    .and_then(|q| quantity::parse(&q.0))
            };
            let (Some(cpu_alloc), Some(mem_alloc)) = (get("cpu"), get("memory")) else {
                return Check::skipped(id, format!("{name} reports no allocatable cpu/memory"));
            };
            let (cpu, mem) = requested.get(name.as_str()).copied().unwrap_or_default();
            let share = |used: f64, of: f64| if of > 0.0 { used / of } else { 1.0 };
            let (cpu_share, mem_share) = (share(cpu, cpu_alloc), share(mem, mem_alloc));
            let found = format!(
                "requests: cpu {} of {} ({:.0}%), memory {} of {} ({:.0}%)",
                quantity::cpu(cpu),
                quantity::cpu(cpu_alloc),
                cpu_share * 100.0,
                quantity::memory(mem),
                quantity::memory(mem_alloc),
                mem_share * 100.0
            );
            if cpu_share >= CROWDED || mem_share >= CROWDED {
                Check::warn(
                    id,
                    found,
                    format!(
                        "{name} is nearly fully requested: new pods (an agent's rollout) may stay \
                         Pending; free capacity or add a node (`kubectl describe node {name}`)"
                    ),
                )
            } else {
                Check::ok(id, found)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
