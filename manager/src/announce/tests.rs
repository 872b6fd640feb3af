use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use tether_proto::{InterceptFilter, InterceptInfo, InterceptMode};

use super::*;

fn intercept(id: u64, owner: &str, headers: &[&str], port: u16) -> InterceptInfo {
    InterceptInfo {
        id,
        name: "orders".into(),
        namespace: "shop".into(),
        workload: "Deployment/orders".into(),
        port,
        service_port: "http".into(),
        owner: owner.into(),
        session_id: format!("s{id}"),
        filter: InterceptFilter {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            path_prefix: None,
        },
        mode: InterceptMode::Take,
    }
}

#[test]
fn the_annotation_lists_the_active_intercepts_oldest_first() {
    let ann = intercept(3, "ann (ann@laptop)", &["x-dev=ann"], 8080);
    let bob = intercept(9, "bob", &[], 8080);
    assert_eq!(
        summary(&[bob.clone(), ann.clone()]).as_deref(),
        Some("ann (x-dev=ann) → 8080; bob (all requests) → 8080")
    );
    assert_eq!(summary(&[ann]).as_deref(), Some("ann (x-dev=ann) → 8080"));
    assert_eq!(summary(&[]), None);
}

#[test]
fn a_mirror_says_it_is_one() {
    let carol = InterceptInfo {
        mode: InterceptMode::Mirror,
        ..intercept(4, "carol", &[], 8080)
    };
    assert_eq!(
        summary(std::slice::from_ref(&carol)).as_deref(),
        Some("carol (mirror: all requests) → 8080")
    );
    assert_eq!(
        started_message(&carol),
        "mirrored by carol (all requests) to port 8080 (service port http), mirror \"orders\" \
         from carol"
    );
    assert_eq!(
        ended_message(&carol, "left"),
        "mirror by carol (all requests) to port 8080 ended: left"
    );
}

#[test]
fn the_patch_sets_or_removes_only_the_annotation() {
    assert_eq!(
        annotation_patch(Some("ann (x-dev=ann) → 8080")),
        json!({"metadata": {"annotations": {"tether.dev/intercepts": "ann (x-dev=ann) → 8080"}}})
    );
    // A merge patch removes a key set to null.
    assert_eq!(
        annotation_patch(None),
        json!({"metadata": {"annotations": {"tether.dev/intercepts": null}}})
    );
}

#[test]
fn messages_name_the_user_the_filter_and_the_port() {
    let ann = intercept(3, "ann (ann@laptop)", &["x-dev=ann"], 8080);
    assert_eq!(
        started_message(&ann),
        "intercepted by ann (x-dev=ann) to port 8080 (service port http), intercept \"orders\" \
         from ann (ann@laptop)"
    );
    assert_eq!(
        ended_message(&ann, "left"),
        "intercept by ann (x-dev=ann) to port 8080 ended: left"
    );
}

#[test]
fn the_event_is_on_the_workload_by_its_uid() {
    let involved = Involved {
        kind: "Deployment".into(),
        name: "orders".into(),
        namespace: "shop".into(),
        uid: Some("0d1c2b8f".into()),
    };
    let now = Timestamp::from_second(1_714_564_800).unwrap();
    let e = event(
        &involved,
        STARTED,
        "intercepted by ann".into(),
        now,
        "tether-manager-1",
    );
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(
        v["involvedObject"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders",
               "namespace": "shop", "uid": "0d1c2b8f"})
    );
    assert_eq!(v["metadata"]["generateName"], "orders.");
    assert_eq!(v["metadata"]["namespace"], "shop");
    assert_eq!(
        v["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "tether"
    );
    assert_eq!(v["reason"], "Intercepted");
    assert_eq!(v["type"], "Normal");
    assert_eq!(v["source"]["component"], "tether-manager");
    assert_eq!(v["reportingInstance"], "tether-manager-1");
    assert_eq!(v["count"], 1);
    assert_eq!(v["firstTimestamp"], "2024-05-01T12:00:00Z");
    let ended = event(&involved, ENDED, "ended".into(), now, "m");
    assert_eq!(serde_json::to_value(&ended).unwrap()["action"], "Leave");
}
