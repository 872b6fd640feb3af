use serde_json::json;

use super::*;

fn deployment(name: &str, agent: bool) -> Deployment {
    let mut containers = vec![json!({"name": "app", "image": "app:1"})];
    if agent {
        containers.push(json!({"name": "tether-agent", "image": "agent:1"}));
    }
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": containers}}
        }
    }))
    .unwrap()
}

fn owned_rs() -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": "hello-6d9f", "ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "Deployment", "name": "hello", "uid": "u"}]},
        "spec": {
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {"spec": {"containers": [{"name": "tether-agent", "image": "agent:1"}]}}
        }
    }))
    .unwrap()
}

fn pod(name: &str, app: &str, agent: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "app"}, {"name": "tether-agent"}]},
        "status": {"containerStatuses": [agent]}
    }))
    .unwrap()
}

fn ready() -> serde_json::Value {
    json!({"name": "tether-agent", "image": "agent:1", "imageID": "", "ready": true,
        "restartCount": 0, "state": {"running": {}}})
}

#[test]
fn finds_workloads_with_the_agent_container() {
    let found = agent_workloads(
        &[deployment("hello", true), deployment("plain", false)],
        &[],
        &[owned_rs()],
    );
    let ids: Vec<String> = found.iter().map(AgentWorkload::id).collect();
    assert_eq!(ids, ["agent.deployment.hello"]);
    assert_eq!(found[0].image, "agent:1");
}

#[test]
fn none_is_fine() {
    let checks = agent_checks("default", &[], &[], None, None);
    assert_eq!(checks[0].id, "agents");
    assert_eq!(checks[0].status, Status::Ok);
}

#[test]
fn healthy_agents_and_linking() {
    let w = agent_workloads(&[deployment("hello", true)], &[], &[]);
    let pods = [
        pod("hello-a", "hello", ready()),
        pod(
            "other-a",
            "other",
            json!({"name": "tether-agent", "image": "", "imageID": "",
            "ready": false, "restartCount": 9, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}),
        ),
    ];
    let checks = agent_checks("default", &w, &pods, Some("agent:1"), None);
    assert_eq!(checks[0].status, Status::Ok, "{checks:?}");
    assert_eq!(
        checks[0].found,
        "deployment/hello: 1/1 agents Ready, no restarts"
    );
    let linked = vec!["someone-else".to_owned()];
    let checks = agent_checks("default", &w, &pods, Some("agent:1"), Some(&linked));
    assert_eq!(checks[0].status, Status::Warn);
    assert!(checks[0]
        .found
        .contains("not linked to the manager: hello-a"));
    let checks = agent_checks("default", &w, &pods, Some("agent:2"), None);
    assert_eq!(checks[0].status, Status::Warn);
    assert!(checks[0].found.contains("is not the manager's agent:2"));
}

#[test]
fn a_crash_looping_agent_is_named_with_its_workload_and_reason() {
    let w = agent_workloads(&[deployment("hello", true)], &[], &[]);
    let crashing = json!({"name": "tether-agent", "image": "agent:1", "imageID": "",
        "ready": false, "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        "lastState": {"terminated": {"reason": "Error", "exitCode": 2}}});
    let pods = [
        pod("hello-a", "hello", ready()),
        pod("hello-b", "hello", crashing),
    ];
    let checks = agent_checks("default", &w, &pods, Some("agent:1"), None);
    let c = &checks[0];
    assert_eq!(c.id, "agent.deployment.hello");
    assert_eq!(c.status, Status::Fail);
    assert_eq!(
        c.found,
        "deployment/hello: pod hello-b: tether-agent is CrashLoopBackOff: back-off 40s, 3 \
         restarts, last Error (exit code 2) (1/2 agents Ready)"
    );
    assert!(c
        .next
        .as_deref()
        .unwrap()
        .contains("kubectl -n default logs hello-b -c tether-agent --previous"));
}

#[test]
fn selectors_with_expressions() {
    let labels: BTreeMap<String, String> = [
        ("app".to_owned(), "hello".to_owned()),
        ("tier".to_owned(), "web".to_owned()),
    ]
    .into();
    let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
    assert!(selects(
        &sel(json!({"matchLabels": {"app": "hello"}})),
        &labels
    ));
    assert!(!selects(
        &sel(json!({"matchLabels": {"app": "other"}})),
        &labels
    ));
    assert!(selects(
        &sel(json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]})),
        &labels
    ));
    assert!(!selects(
        &sel(json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})),
        &labels
    ));
    assert!(!selects(&sel(json!({})), &labels));
}
