use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

use super::*;
use crate::check::Status;

fn node(conditions: serde_json::Value) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "status": {
            "conditions": conditions,
            "allocatable": {"cpu": "2", "memory": "4Gi"}
        }
    }))
    .unwrap()
}

fn healthy() -> serde_json::Value {
    json!([
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
        {"type": "DiskPressure", "status": "False"},
        {"type": "PIDPressure", "status": "False"},
        {"type": "Ready", "status": "True", "reason": "KubeletReady"}
    ])
}

#[test]
fn a_healthy_node() {
    let checks = node_checks(&node(healthy()));
    let ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["node.n1.ready", "node.n1.conditions"]);
    assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:?}");
    assert_eq!(
        checks[1].found,
        "no problem condition (MemoryPressure, DiskPressure, PIDPressure are False)"
    );
}

#[test]
fn disk_pressure_and_a_node_problem_detector_condition_are_named() {
    let mut conditions = healthy();
    conditions[1]["status"] = json!("True");
    conditions[1]["reason"] = json!("KubeletHasDiskPressure");
    conditions.as_array_mut().unwrap().push(json!({
        "type": "KernelDeadlock", "status": "True", "reason": "DockerHung",
        "message": "task docker:7 blocked for more than 120 seconds"
    }));
    let checks = node_checks(&node(conditions));
    let c = &checks[1];
    assert_eq!(c.status, Status::Fail);
    assert_eq!(
        c.found,
        "n1: DiskPressure=True (KubeletHasDiskPressure); KernelDeadlock=True (DockerHung: task \
         docker:7 blocked for more than 120 seconds)"
    );
    let next = c.next.as_deref().unwrap();
    assert!(next.contains("DiskPressure: disk space"), "{next}");
    assert!(
        next.contains("KernelDeadlock: reported by a node problem detector"),
        "{next}"
    );
    assert!(next.contains("kubectl describe node n1"), "{next}");
}

#[test]
fn not_ready_and_cordoned() {
    let mut conditions = healthy();
    conditions[3]["status"] = json!("Unknown");
    conditions[3]["reason"] = json!("NodeStatusUnknown");
    let checks = node_checks(&node(conditions));
    assert_eq!(checks[0].status, Status::Fail);
    assert!(checks[0]
        .found
        .contains("Ready=Unknown (NodeStatusUnknown)"));

    let mut cordoned = node(healthy());
    cordoned.spec = Some(serde_json::from_value(json!({"unschedulable": true})).unwrap());
    let checks = node_checks(&cordoned);
    assert_eq!(checks[0].status, Status::Warn);
    assert!(checks[0]
        .next
        .as_deref()
        .unwrap()
        .contains("kubectl uncordon n1"));
}

fn pod(node: &str, phase: &str, cpu: &str, memory: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": cpu, "memory": memory}}},
                {"name": "b"}
            ],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "1500m"}}}
            ]
        },
        "status": {"phase": phase}
    }))
    .unwrap()
}

#[test]
fn requested_vs_allocatable() {
    let pods = [
        pod("n1", "Running", "250m", "1Gi"),
        pod("n1", "Running", "250m", "1Gi"),
        pod("n1", "Succeeded", "2", "4Gi"),
        pod("n2", "Running", "2", "4Gi"),
    ];
    // The init container asks more CPU than the app: the scheduler counts the larger.
    assert_eq!(pod_requests(&pods[0]).0, 1.5);
    let checks = allocated_checks(&[node(healthy())], &pods);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].id, "node.n1.allocated");
    assert_eq!(checks[0].status, Status::Warn);
    assert_eq!(
        checks[0].found,
        "requests: cpu 3 of 2 (150%), memory 2.0Gi of 4.0Gi (50%)"
    );
    let light = [pod("n1", "Running", "100m", "256Mi")];
    let mut light = light.to_vec();
    light[0].spec.as_mut().unwrap().init_containers = None;
    let checks = allocated_checks(&[node(healthy())], &light);
    assert_eq!(checks[0].status, Status::Ok);
    assert_eq!(
        checks[0].found,
        "requests: cpu 100m of 2 (5%), memory 256Mi of 4.0Gi (6%)"
    );
}
