use serde_json::json;

use super::*;

fn deployment(replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "tether-manager", "namespace": "tether"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "tether-manager"}},
            "template": {"spec": {"containers": [{"name": "manager", "image": image}]}}
        }
    }))
    .unwrap()
}

fn pod(name: &str, ready_at: &str, container: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "creationTimestamp": "2025-01-01T10:00:00Z"},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready_at}],
            "containerStatuses": [container]
        }
    }))
    .unwrap()
}

fn ready() -> serde_json::Value {
    json!({"name": "manager", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
        "state": {"running": {}}})
}

fn service() -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "tether-manager"},
        "spec": {"type": "NodePort", "ports": [
            {"name": "quic", "port": 7443, "protocol": "UDP", "nodePort": 31234}
        ]}
    }))
    .unwrap()
}

fn event(object: &str, reason: &str, at: &str) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{object}.1")},
        "involvedObject": {"kind": "Pod", "name": object},
        "type": "Warning", "reason": reason, "message": "Readiness probe failed",
        "lastTimestamp": at
    }))
    .unwrap()
}

fn now() -> Timestamp {
    "2025-01-01T10:05:00Z".parse().unwrap()
}

#[test]
fn a_healthy_manager() {
    let view = ManagerView {
        namespace: "tether".into(),
        deployment: Some(deployment(1, "tether.local/tether-agent:0.1.0")),
        pods: vec![pod("tether-manager-a", "2025-01-01T10:00:10Z", ready())],
        service: Some(service()),
        // Start-up noise: before the pod was Ready.
        events: vec![event(
            "tether-manager-a",
            "Unhealthy",
            "2025-01-01T10:00:05Z",
        )],
    };
    let checks = manager_checks(&view, "0.1.0", now());
    let ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "manager.installed",
            "manager.version",
            "manager.pod",
            "manager.service",
            "manager.events"
        ]
    );
    assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:#?}");
    assert_eq!(
        checks[2].found,
        "pod tether-manager-a: manager is Ready, no restarts"
    );
    assert_eq!(
        checks[3].found,
        "NodePort tether-manager: 7443/UDP, NodePort 31234"
    );
}

#[test]
fn not_installed() {
    let checks = manager_checks(&ManagerView::default(), "0.1.0", now());
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].status, Status::Fail);
    assert_eq!(checks[0].next.as_deref(), Some("run `tether install`"));
}

#[test]
fn scaled_to_zero_names_the_scale_command() {
    let view = ManagerView {
        namespace: "tether".into(),
        deployment: Some(deployment(0, "x:0.1.0")),
        service: Some(service()),
        ..Default::default()
    };
    let checks = manager_checks(&view, "0.1.0", now());
    let pod = checks.iter().find(|c| c.id == "manager.pod").unwrap();
    assert_eq!(pod.status, Status::Fail);
    assert!(pod.found.contains("scaled to 0"));
    assert_eq!(
        pod.next.as_deref(),
        Some("`kubectl -n tether scale deployment/tether-manager --replicas=1`")
    );
}

#[test]
fn version_skew_and_recent_warnings() {
    let view = ManagerView {
        namespace: "tether".into(),
        deployment: Some(deployment(1, "reg/tether-agent:0.0.9")),
        pods: vec![pod("tether-manager-a", "2025-01-01T10:00:10Z", ready())],
        service: Some(service()),
        events: vec![
            event("tether-manager-a", "Unhealthy", "2025-01-01T10:03:00Z"),
            // Old news, and another object's.
            event("tether-manager-a", "BackOff", "2025-01-01T09:00:00Z"),
            event("hello-1", "BackOff", "2025-01-01T10:04:00Z"),
            // A replaced pod's.
            event("tether-manager-old", "BackOff", "2025-01-01T10:04:00Z"),
        ],
    };
    let checks = manager_checks(&view, "0.1.0", now());
    assert_eq!(checks[1].status, Status::Warn);
    assert!(
        checks[1].found.contains("runs 0.0.9"),
        "{}",
        checks[1].found
    );
    // While the pod is healthy, events are history.
    assert_eq!(checks[4].status, Status::Ok);
    assert!(checks[4]
        .found
        .starts_with("1 Warning events in the last 15 min, none about"));
    let mut sick = view.clone();
    sick.pods[0]
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .ready = false;
    let checks = manager_checks(&sick, "0.1.0", now());
    let events = &checks[4];
    assert_eq!(events.status, Status::Warn);
    assert_eq!(
        events.found,
        "1 Warning events in the last 15 min: tether-manager-a Unhealthy: Readiness probe failed"
    );
    assert_eq!(shorten("abcdef", 3), "abc…");
    assert_eq!(shorten("abc", 3), "abc");
    // A tag that is no version is not compared.
    assert_eq!(
        version_check("tether.local/tether-agent:5f3a9c", "0.1.0").status,
        Status::Ok
    );
}
