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
    let checks = agent_checks("default", &[], &[], None, None, None);
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
    let checks = agent_checks("default", &w, &pods, None, Some("agent:1"), None);
    assert_eq!(checks[0].status, Status::Ok, "{checks:?}");
    assert_eq!(
        checks[0].found,
        "deployment/hello: 1/1 agents Ready, no restarts"
    );
    let linked = vec!["someone-else".to_owned()];
    let checks = agent_checks("default", &w, &pods, None, Some("agent:1"), Some(&linked));
    assert_eq!(checks[0].status, Status::Warn);
    assert!(checks[0]
        .found
        .contains("not linked to the manager: hello-a"));
    let checks = agent_checks("default", &w, &pods, None, Some("agent:2"), None);
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
    let checks = agent_checks("default", &w, &pods, None, Some("agent:1"), None);
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

/// `hello` injected with its Service `hello` port 80 pointed at the agent's 9900 (the app
/// listens on 8080, the manifest's targetPort `http`).
fn injected() -> Deployment {
    let record = json!({
        "version": 1,
        "settings": {"image": "agent:1", "manager": "10.96.0.9:8443"},
        "container": "tether-agent",
        "volume": "tether-agent-credential",
        "ports": [{"appPort": 8080, "agentPort": 9900, "container": "app", "name": "http"}],
        "services": [{"service": "hello", "port": 80, "protocol": "TCP", "agentPort": 9900,
            "originalTargetPort": "http"}]
    });
    let mut d = deployment("hello", true);
    d.metadata.annotations = Some(
        [(AGENT_ANNOTATION.to_owned(), record.to_string())]
            .into_iter()
            .collect(),
    );
    d
}

fn service(ports: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"selector": {"app": "hello"}, "ports": ports}
    }))
    .unwrap()
}

#[test]
fn the_injection_record_is_read_from_the_workload() {
    let w = agent_workloads(&[injected()], &[], &[]);
    let record = w[0].record.as_ref().expect("the record");
    assert_eq!(record.services[0].agent_port, 9900);
    // Nothing drifted while the Service still leads to the agent.
    let agent = service(json!([{"name": "http", "port": 80, "targetPort": 9900}]));
    assert_eq!(
        drifted_ports(record, std::slice::from_ref(&agent)),
        Vec::<String>::new()
    );
    let pods = [pod("hello-1", "hello", ready())];
    let checks = agent_checks(
        "default",
        &w,
        &pods,
        Some(std::slice::from_ref(&agent)),
        Some("agent:1"),
        None,
    );
    assert_eq!(checks[0].status, Status::Ok, "{checks:#?}");
}

#[test]
fn service_ports_drifted_past_the_agent_are_named_with_the_fix() {
    let w = agent_workloads(&[injected()], &[], &[]);
    let record = w[0].record.as_ref().unwrap();

    // The manifest applied again: targetPort is the app's again.
    let reset = service(json!([{"name": "http", "port": 80, "targetPort": "http"}]));
    assert_eq!(
        drifted_ports(record, std::slice::from_ref(&reset)),
        ["Service hello port 80 targets http again, not the agent's 9900"]
    );
    // A new manifest moved the port.
    let moved = service(json!([{"name": "http", "port": 8081, "targetPort": 8080}]));
    assert_eq!(
        drifted_ports(record, &[moved]),
        [
            "Service hello no longer has port 80/TCP that led to the agent's 9900 (its ports \
          now: 8081→8080)"
        ]
    );
    // Same number, other protocol: not the port the agent took over.
    let udp = service(json!([{"port": 80, "protocol": "UDP", "targetPort": 9900}]));
    assert_eq!(drifted_ports(record, &[udp]).len(), 1);
    assert_eq!(drifted_ports(record, &[]), ["Service hello is gone"]);

    let pods = [pod("hello-1", "hello", ready())];
    let checks = agent_checks(
        "default",
        &w,
        &pods,
        Some(std::slice::from_ref(&reset)),
        Some("agent:1"),
        None,
    );
    let c = &checks[0];
    assert_eq!(c.status, Status::Warn);
    assert_eq!(
        c.found,
        "deployment/hello: Service hello port 80 targets http again, not the agent's 9900: \
         traffic there bypasses the agent and its intercepts"
    );
    assert_eq!(
        c.next.as_deref(),
        Some(
            "a re-applied manifest changed the Service's ports after the agent was injected: \
             re-inject it against the current ports with `tether uninstall deployment/hello -n \
             default`, then `tether intercept` again"
        )
    );
    // Services that could not be listed: drift is not judged.
    let checks = agent_checks("default", &w, &pods, None, Some("agent:1"), None);
    assert_eq!(checks[0].status, Status::Ok);
}
