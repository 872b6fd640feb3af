use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{json, Value};

use super::*;

/// A Deployment with the agent installed: `app` first, `cache` second, the agent last.
fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "orders",
            "namespace": "shop",
            "annotations": { "tether.dev/agent": "{}", "owner": "team-a" },
        },
        "spec": {
            "selector": { "matchLabels": { "app": "orders" } },
            "template": {
                "metadata": { "labels": { "app": "orders" } },
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "orders:1",
                            "args": ["--port", "8080"],
                            "ports": [{ "name": "tx-http", "containerPort": 8080 }],
                            "env": [{ "name": "A", "value": "1" }],
                            "readinessProbe": { "httpGet": { "path": "/healthz", "port": "tx-http" } },
                        },
                        { "name": "cache", "image": "redis:7" },
                        { "name": "tether-agent", "image": "agent:1" },
                    ],
                },
            },
        },
    })
}

fn workload_of(value: &Value, kind: WorkloadKind) -> Workload {
    let d: Deployment = serde_json::from_value(value.clone()).unwrap();
    Workload {
        kind,
        name: "orders".into(),
        namespace: "shop".into(),
        annotations: d.metadata.annotations.unwrap_or_default(),
        template: d.spec.unwrap().template,
    }
}

fn apply(value: &Value, patch: &json_patch::Patch) -> Result<Value, json_patch::PatchError> {
    let mut out = value.clone();
    json_patch::patch(&mut out, patch)?;
    Ok(out)
}

fn names(value: &Value) -> Vec<String> {
    value["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn replace_then_restore_gives_back_the_same_object() {
    let before = deployment();
    let w = workload_of(&before, WorkloadKind::Deployment);
    let removal = remove_patch(&w, "app", "ann@laptop").unwrap().unwrap();
    let replaced = apply(&before, &removal).unwrap();
    assert_eq!(names(&replaced), ["cache", "tether-agent"]);
    let w = workload_of(&replaced, WorkloadKind::Deployment);
    let record = replaced_of(&w).unwrap().unwrap();
    assert_eq!((record.index, record.by.as_str()), (0, "ann@laptop"));
    assert_eq!(record.container.name, "app");

    let restore = restore_patch(&w).unwrap().unwrap();
    assert_eq!(apply(&replaced, &restore).unwrap(), before);
}

#[test]
fn a_second_replace_of_the_same_container_is_nothing_to_do() {
    let before = deployment();
    let w = workload_of(&before, WorkloadKind::Deployment);
    let replaced = apply(&before, &remove_patch(&w, "app", "ann").unwrap().unwrap()).unwrap();
    let w = workload_of(&replaced, WorkloadKind::Deployment);
    assert!(remove_patch(&w, "app", "bob").unwrap().is_none());
    let other = remove_patch(&w, "cache", "bob").unwrap_err();
    assert_eq!(
        other.to_string(),
        "container app of Deployment orders is already replaced (by ann)"
    );
}

#[test]
fn the_second_restorer_fails_the_test_and_changes_nothing() {
    let before = deployment();
    let w = workload_of(&before, WorkloadKind::Deployment);
    let replaced = apply(&before, &remove_patch(&w, "app", "ann").unwrap().unwrap()).unwrap();
    let w = workload_of(&replaced, WorkloadKind::Deployment);
    let restore = restore_patch(&w).unwrap().unwrap();
    let restored = apply(&replaced, &restore).unwrap();
    // The manager planned from the same read as the daemon: its patch no longer applies.
    assert!(apply(&restored, &restore).is_err());
    // Planned afresh, there is nothing to do.
    let w = workload_of(&restored, WorkloadKind::Deployment);
    assert!(restore_patch(&w).unwrap().is_none());
}

#[test]
fn a_removal_planned_before_an_edit_of_the_container_list_does_not_apply() {
    let before = deployment();
    let w = workload_of(&before, WorkloadKind::Deployment);
    let removal = remove_patch(&w, "cache", "ann").unwrap().unwrap();
    let mut edited = before.clone();
    edited["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .remove(0);
    assert!(apply(&edited, &removal).is_err(), "cache is no longer at 1");
}

#[test]
fn edits_made_meanwhile_survive_the_restore() {
    let before = deployment();
    let w = workload_of(&before, WorkloadKind::Deployment);
    let mut replaced = apply(&before, &remove_patch(&w, "app", "ann").unwrap().unwrap()).unwrap();
    replaced["spec"]["template"]["spec"]["containers"][0]["image"] = json!("redis:8");
    replaced["metadata"]["annotations"]["note"] = json!("edited");
    let w = workload_of(&replaced, WorkloadKind::Deployment);
    let restored = apply(&replaced, &restore_patch(&w).unwrap().unwrap()).unwrap();
    let mut expected = before.clone();
    expected["spec"]["template"]["spec"]["containers"][1]["image"] = json!("redis:8");
    expected["metadata"]["annotations"]["note"] = json!("edited");
    assert_eq!(restored, expected);
}

#[test]
fn a_container_the_user_put_back_stays_and_only_the_record_goes() {
    let before = deployment();
    let w = workload_of(&before, WorkloadKind::Deployment);
    let mut replaced = apply(&before, &remove_patch(&w, "app", "ann").unwrap().unwrap()).unwrap();
    replaced["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "app", "image": "orders:2"}));
    let w = workload_of(&replaced, WorkloadKind::Deployment);
    let restored = apply(&replaced, &restore_patch(&w).unwrap().unwrap()).unwrap();
    assert_eq!(names(&restored), ["cache", "tether-agent", "app"]);
    assert!(restored["metadata"]["annotations"]
        .get(REPLACED_ANNOTATION)
        .is_none());
}

#[test]
fn restore_in_matches_the_patch() {
    let before = deployment();
    let w = workload_of(&before, WorkloadKind::Deployment);
    let replaced = apply(&before, &remove_patch(&w, "app", "ann").unwrap().unwrap()).unwrap();
    let w = workload_of(&replaced, WorkloadKind::Deployment);
    let mut template = w.template.clone();
    let mut annotations = Some(w.annotations.clone());
    assert!(restore_in(&w, &mut template, &mut annotations).unwrap());
    let original = workload_of(&before, WorkloadKind::Deployment);
    assert_eq!(template, original.template);
    assert_eq!(annotations, Some(original.annotations.clone()));
    // Nothing replaced: nothing to do.
    assert!(!restore_in(&original, &mut template, &mut annotations).unwrap());
}

#[test]
fn refusals() {
    let before = deployment();
    let w = workload_of(&before, WorkloadKind::Deployment);
    let e = remove_patch(&w, "web", "ann").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Deployment orders has no container web to replace"
    );
    let e = remove_patch(&w, AGENT_CONTAINER, "ann").unwrap_err();
    assert!(matches!(e, ReplaceError::Agent));
    let rs = workload_of(&before, WorkloadKind::ReplicaSet);
    assert!(matches!(
        remove_patch(&rs, "app", "ann"),
        Err(ReplaceError::Unsupported { .. })
    ));
    let mut bare = before.clone();
    bare["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .pop();
    let w = workload_of(&bare, WorkloadKind::Deployment);
    assert!(matches!(
        remove_patch(&w, "app", "ann"),
        Err(ReplaceError::NoAgent { .. })
    ));
    let mut garbled = before.clone();
    garbled["metadata"]["annotations"][REPLACED_ANNOTATION] = json!("{not json");
    let w = workload_of(&garbled, WorkloadKind::Deployment);
    assert!(matches!(
        restore_patch(&w),
        Err(ReplaceError::Record { .. })
    ));
}

#[test]
fn a_workload_without_annotations_gets_the_map() {
    let mut before = deployment();
    before["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let w = workload_of(&before, WorkloadKind::Deployment);
    let replaced = apply(&before, &remove_patch(&w, "app", "ann").unwrap().unwrap()).unwrap();
    assert!(replaced["metadata"]["annotations"][REPLACED_ANNOTATION].is_string());
}
