use k8s_openapi::api::core::v1::ContainerStatus;
use serde_json::json;

use super::*;

const AT: Target<'static> = Target {
    namespace: "tether",
    pod: "tether-manager-abc",
    container: "manager",
};

fn cs(v: serde_json::Value) -> ContainerStatus {
    let mut base = json!({"name": "manager", "image": "img", "imageID": "", "ready": false,
        "restartCount": 0});
    for (k, val) in v.as_object().unwrap() {
        base[k] = val.clone();
    }
    serde_json::from_value(base).unwrap()
}

#[test]
fn image_never_pull_says_to_load_the_image() {
    let d = diagnose(
        &cs(json!({"state": {"waiting": {"reason": "ErrImageNeverPull",
            "message": "Container image \"x:1\" is not present with pull policy of Never"}}})),
        "x:1",
        AT,
    );
    assert_eq!(d.status, Status::Fail);
    assert!(
        d.found
            .starts_with("manager is ErrImageNeverPull: Container image"),
        "{}",
        d.found
    );
    assert!(d.next.unwrap().contains("x:1 is not on the node"));
}

#[test]
fn crash_loop_after_oom_says_raise_the_limit() {
    let d = diagnose(
        &cs(json!({"restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}})),
        "img",
        AT,
    );
    assert_eq!(d.status, Status::Fail);
    assert_eq!(
        d.found,
        "manager is CrashLoopBackOff, 4 restarts, last OOMKilled (exit code 137)"
    );
    let next = d.next.unwrap();
    assert!(next.contains("raise its memory limit"), "{next}");
    assert!(next.contains("kubectl -n tether logs tether-manager-abc -c manager --previous"));
}

#[test]
fn crash_loop_with_an_error() {
    let d = diagnose(
        &cs(json!({"restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
            "lastState": {"terminated": {"reason": "Error", "exitCode": 3}}})),
        "img",
        AT,
    );
    assert_eq!(
        d.found,
        "manager is CrashLoopBackOff: back-off 20s, 2 restarts, last Error (exit code 3)"
    );
    assert!(d.next.unwrap().starts_with("it keeps exiting"));
}

#[test]
fn ready_with_restarts_warns_and_oom_fails() {
    let running = json!({"running": {}});
    let d = diagnose(
        &cs(json!({"ready": true, "restartCount": 1, "state": running,
            "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}})),
        "img",
        AT,
    );
    assert_eq!(d.status, Status::Warn);
    let d = diagnose(
        &cs(json!({"ready": true, "restartCount": 1, "state": running,
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}})),
        "img",
        AT,
    );
    assert_eq!(d.status, Status::Fail);
    let d = diagnose(&cs(json!({"ready": true, "state": running})), "img", AT);
    assert_eq!(d.status, Status::Ok);
    let d = diagnose(&cs(json!({"state": running})), "img", AT);
    assert_eq!(d.status, Status::Fail);
    assert_eq!(d.found, "manager is running but not Ready");
}

#[test]
fn pending_pods_say_why() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient memory."}]}
    }))
    .unwrap();
    assert_eq!(
        pending_reason(&pod).unwrap(),
        "not scheduled: 0/1 nodes are available: 1 Insufficient memory."
    );
}
