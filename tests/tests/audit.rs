//! The audit trail of an intercept, where a platform admin looks for it right after a developer
//! ran `tether intercept … --http-header x-dev=ann` and `tether leave`:
//! - the API server's audit log has the workload's change (the agent) under the developer's own
//!   user name, and the manager's service account wrote nothing there but annotation patches;
//! - the manager's audit log (`kubectl logs`, one `audit.k8s.io/v1` Event per line) has the
//!   intercept's creation and end under the same user, with the filter;
//! - `kubectl describe deploy/orders` shows `Intercepted` and `InterceptEnded` events, and the
//!   workload's `tether.dev/intercepts` annotation lists the intercept while it is active;
//! - a user without the right to intercept in a namespace is refused, and the refusal and its
//!   reason are in the manager's audit log.
//!
//! The API server's audit log is the local cluster's (`$STATE/logs/kube-apiserver-audit.log`,
//! see `xtask/scripts/cluster.sh`); `TETHER_E2E_APISERVER_AUDIT_LOG` names another.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tether_e2e::{
    eventually, kubectl, manager_audit, run, state_dir, tether, user_kubeconfig, Bindings,
    Connected, WS,
};

/// The developer; the refused one.
const ANN: &str = "dev-ann-audit";
const CAROL: &str = "dev-carol-audit";
/// The manager's service account, as the API server names it.
const MANAGER_SA: &str = "system:serviceaccount:tether:tether-manager";

fn apiserver_audit_log() -> PathBuf {
    std::env::var_os("TETHER_E2E_APISERVER_AUDIT_LOG")
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir().join("logs/kube-apiserver-audit.log"))
}

/// The API server's audit events written after byte `from` of its log.
fn apiserver_audit(from: u64) -> Vec<Value> {
    let text = std::fs::read(apiserver_audit_log()).expect("the API server's audit log");
    String::from_utf8_lossy(&text[from as usize..])
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The manager's audit line with `action` for the intercept named `name`, once it is there.
fn manager_line(action: &str, name: &str) -> Value {
    eventually(
        Duration::from_secs(20),
        &format!("the manager's {action} line for {name}"),
        || {
            manager_audit().into_iter().find(|e| {
                e["annotations"]["tether.dev/action"] == action && e["objectRef"]["name"] == name
            })
        },
    )
}

/// The workload's intercepts annotation, if any.
fn intercepts_annotation() -> Option<String> {
    let out = kubectl(&["get", "deployment", "orders", "-o", "json"]).expect_ok("get orders");
    let object: Value = serde_json::from_str(&out).expect("JSON");
    object["metadata"]["annotations"]["tether.dev/intercepts"]
        .as_str()
        .map(str::to_owned)
}

/// The messages of the workload's events with `reason`.
fn event_messages(reason: &str) -> Vec<String> {
    let selector =
        format!("involvedObject.name=orders,involvedObject.kind=Deployment,reason={reason}");
    let out = kubectl(&["get", "events", "--field-selector", &selector, "-o", "json"])
        .expect_ok("kubectl get events");
    let list: Value = serde_json::from_str(&out).expect("JSON");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn an_intercept_is_audited_under_the_developers_own_name() {
    let log_start = std::fs::metadata(apiserver_audit_log())
        .expect("the API server writes an audit log (cluster.sh --audit-log-path)")
        .len();
    // Without an agent, the intercept has to write the workload.
    tether(WS, &["uninstall", "orders"]).expect_ok("tether uninstall");
    let kc = user_kubeconfig(ANN);
    let mut bindings = Bindings::default();
    bindings.client(ANN);
    bindings.bind(&[
        "rolebinding",
        "tether-e2e-ann-audit-intercept",
        "--clusterrole=tether-intercept",
        &format!("--user={ANN}"),
        "-n",
        "default",
    ]);
    let _ann = Connected::new(WS, &["--kubeconfig", kc.to_str().unwrap()]);
    // A name no earlier run used: the manager's log may hold those.
    let name = format!("audit-{}", std::process::id());
    tether(
        WS,
        &[
            "intercept",
            "orders",
            "--name",
            &name,
            "--port",
            "18097:http",
            "--http-header",
            "x-dev=ann",
        ],
    )
    .expect_ok("ann's intercept");

    // The manager's line: ann, her filter, where from.
    let created = manager_line("intercept-created", &name);
    assert_eq!(created["user"]["username"], ANN, "{created}");
    assert_eq!(created["verb"], "create", "{created}");
    assert_eq!(created["objectRef"]["namespace"], "default", "{created}");
    assert_eq!(created["objectRef"]["resource"], "intercepts", "{created}");
    assert_eq!(created["annotations"]["tether.dev/filter"], "x-dev=ann");
    assert_eq!(
        created["annotations"]["tether.dev/workload"],
        "Deployment/orders"
    );
    assert_eq!(created["responseStatus"]["code"], 201, "{created}");
    assert!(
        created["sourceIPs"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
            && created["userAgent"].as_str().is_some_and(|a| !a.is_empty()),
        "{created}"
    );
    let port = created["annotations"]["tether.dev/port"]
        .as_str()
        .expect("the port")
        .to_owned();
    // `--mount` (on by default) opened the pod's files: ann's too, with the pod named.
    let id = _ann.status()["intercepts"][0]["id"]
        .as_u64()
        .expect("the intercept's id");
    let files = manager_line("files-opened", &format!("intercept-{id}"));
    assert_eq!(files["user"]["username"], ANN, "{files}");
    assert!(
        files["annotations"]["tether.dev/pod"]
            .as_str()
            .is_some_and(|p| p.starts_with("orders-")),
        "{files}"
    );

    // On the workload, right after `tether intercept`: the annotation and the event.
    assert_eq!(
        intercepts_annotation(),
        Some(format!("{ANN} (x-dev=ann) → {port}"))
    );
    let started = event_messages("Intercepted");
    let expected = format!("intercepted by {ANN} (x-dev=ann) to port {port}");
    assert!(
        started
            .iter()
            .any(|m| m.starts_with(&expected) && m.contains(&name)),
        "{started:?}"
    );
    let describe = kubectl(&["describe", "deployment", "orders"]).expect_ok("kubectl describe");
    assert!(
        describe.contains("Intercepted") && describe.contains(&expected),
        "{describe}"
    );

    tether(WS, &["leave", &name]).expect_ok("tether leave");
    let ended = manager_line("intercept-ended", &name);
    assert_eq!(ended["user"]["username"], ANN, "{ended}");
    assert_eq!(ended["verb"], "delete", "{ended}");
    assert_eq!(ended["annotations"]["tether.dev/reason"], "left", "{ended}");
    assert_eq!(
        ended["annotations"]["tether.dev/intercept-id"],
        created["annotations"]["tether.dev/intercept-id"]
    );
    assert!(
        ended["stageTimestamp"].as_str() >= created["stageTimestamp"].as_str(),
        "{created}\n{ended}"
    );
    assert_eq!(intercepts_annotation(), None);
    let ended_events = event_messages("InterceptEnded");
    assert!(
        ended_events.iter().any(|m| m.starts_with(&format!(
            "intercept by {ANN} (x-dev=ann) to port {port} ended: left"
        ))),
        "{ended_events:?}"
    );

    // The API server's own log: the agent went in as ann; the manager only patched (the
    // annotation), never replaced the workload.
    let writes = |events: &[Value], user: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| {
                e["objectRef"]["resource"] == "deployments"
                    && e["objectRef"]["namespace"] == "default"
                    && e["objectRef"]["name"] == "orders"
                    && e["user"]["username"] == user
                    && e["stage"] == "ResponseComplete"
                    && e["responseStatus"]["code"]
                        .as_u64()
                        .is_some_and(|c| c < 300)
            })
            .map(|e| e["verb"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let (by_ann, by_manager) = eventually(
        Duration::from_secs(20),
        "the API server's audit log has the writes",
        || {
            let events = apiserver_audit(log_start);
            let (ann, manager) = (writes(&events, ANN), writes(&events, MANAGER_SA));
            (!ann.is_empty() && manager.len() >= 2).then_some((ann, manager))
        },
    );
    assert!(by_ann.iter().any(|v| v == "update"), "{by_ann:?}");
    assert!(by_manager.iter().all(|v| v == "patch"), "{by_manager:?}");

    // She may remove the agent too; her intercepts annotation is long gone.
    tether(
        WS,
        &["uninstall", "orders", "--kubeconfig", kc.to_str().unwrap()],
    )
    .expect_ok("uninstall as the developer");
    let _ = std::fs::remove_dir_all(kc.parent().unwrap());
}

/// A user who may connect but not intercept in kube-system asks anyway (with the hostile
/// client, which skips the CLI's own checks): the refusal and its reason are audited.
#[test]
fn a_refused_intercept_is_audited_with_the_reason() {
    let kc = user_kubeconfig(CAROL);
    let mut bindings = Bindings::default();
    bindings.client(CAROL);
    let out = run(Command::new(env!("CARGO_BIN_EXE_tether-e2e-hostile"))
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["--claim", "carol@audit"])
        .args(["create", "kube-system", "Deployment/coredns", "53"]))
    .expect_ok("hostile client");
    let answer: Value = serde_json::from_str(out.lines().next().expect("an answer")).expect("JSON");
    assert_eq!(answer["ok"], false, "{answer}");

    let refused = eventually(
        Duration::from_secs(20),
        "the manager's intercept-refused line for carol",
        || {
            manager_audit().into_iter().find(|e| {
                e["annotations"]["tether.dev/action"] == "intercept-refused"
                    && e["user"]["username"] == CAROL
                    && e["objectRef"]["namespace"] == "kube-system"
            })
        },
    );
    assert_eq!(refused["responseStatus"]["code"], 403, "{refused}");
    assert_eq!(
        refused["responseStatus"]["reason"], "Forbidden",
        "{refused}"
    );
    let message = refused["responseStatus"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains(&format!(
            "forbidden by RBAC: user \"{CAROL}\" may not create intercepts.tether.dev in namespace \"kube-system\""
        )),
        "{refused}"
    );
    assert_eq!(
        refused["annotations"]["tether.dev/workload"],
        "Deployment/coredns"
    );
    // Her claim is kept as what it is: the client's hint, next to her verified name.
    assert_eq!(refused["userAgent"], "carol@audit", "{refused}");
    // And the refused intercept announced nothing on the workload.
    let coredns = kubectl(&[
        "-n",
        "kube-system",
        "get",
        "deployment",
        "coredns",
        "-o",
        "json",
    ]);
    if coredns.ok {
        let object: Value = serde_json::from_str(&coredns.stdout).expect("JSON");
        assert!(
            object["metadata"]["annotations"]["tether.dev/intercepts"].is_null(),
            "{object}"
        );
    }
    let _ = std::fs::remove_dir_all(kc.parent().unwrap());
}
