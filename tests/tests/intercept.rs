//! `tether intercept`: a Service's traffic reaches a process on the workstation, all of it or only
//! requests that carry the developer's header; and `leave`, `list`, `uninstall`.
//!
//! Requests come from inside the cluster: `kubectl exec deploy/client -- tether-testapp get`
//! sends them to a Service's ClusterIP over one connection and prints who answered each. The
//! developer's process is the same test app, run in a workstation namespace under the name
//! `laptop-…`, so every answer says whether the app or the laptop served it.
//!
//! The workloads are in `deploy/sample/intercept.yaml`.

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tether_e2e::{
    answered_by, cluster_ip, delete_manager_pod, eventually, from_cluster, in_ns, kubectl, run,
    running_pods, tether, user_kubeconfig, Bindings, Connected, Laptop, Run, WS, WS2,
};

/// One request (with `args`, e.g. a header) from the client pod, right after the command that
/// should have made it reach the laptop called `laptop`: `tether intercept` returns only once
/// callers of the Service reach the intercept.
#[track_caller]
fn laptop_answers(url: &str, args: &[&str], laptop: &str) {
    let out = from_cluster(url, args);
    assert!(
        out.ok && answered_by(&out.stdout) == [laptop],
        "expected {laptop} to answer: {out:?}"
    );
}

fn service_url(service: &str, port: u16) -> String {
    format!("http://{}:{port}/", cluster_ip(service))
}

/// The `.spec` of an object, as JSON.
fn spec(kind: &str, name: &str) -> Value {
    let out = kubectl(&["get", kind, name, "-o", "json"]).expect_ok("kubectl get");
    let mut object: Value = serde_json::from_str(&out).expect("object JSON");
    object["spec"].take()
}

/// Every workload and Service spec in `default`, keyed by kind and name, to show a refused
/// command changed nothing. ReplicaSets a Deployment owns are left out: the Deployment controller
/// rewrites them on its own (scaling old ones down, deleting those beyond the revision history).
fn cluster_specs() -> BTreeMap<String, Value> {
    let out = kubectl(&[
        "get",
        "deployments,statefulsets,replicasets,services",
        "-o",
        "json",
    ])
    .expect_ok("kubectl get");
    let list: Value = serde_json::from_str(&out).expect("list JSON");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["metadata"]["ownerReferences"].is_null())
        .map(|o| {
            let key = format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            let value = serde_json::json!({
                "spec": o["spec"],
                "annotations": o["metadata"]["annotations"],
            });
            (key, value)
        })
        .collect()
}

/// Fails naming each object whose spec or annotations differ from `before`.
fn assert_cluster_unchanged(before: &BTreeMap<String, Value>, what: &str) {
    let after = cluster_specs();
    let changed: Vec<String> = before
        .keys()
        .chain(after.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|key| before.get(*key) != after.get(*key))
        .map(|key| {
            format!(
                "{key}:\n  before: {:?}\n  after:  {:?}",
                before.get(key),
                after.get(key)
            )
        })
        .collect();
    assert!(
        changed.is_empty(),
        "{what} changed the cluster:\n{}",
        changed.join("\n")
    );
}

fn uninstall_all() {
    tether(WS, &["uninstall", "--all", "-n", "default"]).expect_ok("tether uninstall --all");
}

/// The app's pods answer (their names start with the workload's): right after `leave` or
/// `uninstall`, which return only once callers reach the app.
#[track_caller]
fn app_answers(url: &str, workload: &str) {
    let out = from_cluster(url, &[]);
    let who = answered_by(&out.stdout);
    assert!(
        out.ok && who.len() == 1 && who[0].starts_with(workload),
        "expected {workload}… to answer: {out:?}"
    );
}

#[test]
fn global_intercept_takes_all_traffic_until_leave() {
    let ws = Connected::new(WS, &[]);
    let _laptop = Laptop::start(WS, 18080, "laptop-ann");
    let url = service_url("orders", 80);
    app_answers(&url, "orders-");

    let out =
        tether(WS, &["intercept", "orders", "--port", "18080:http"]).expect_ok("tether intercept");
    assert!(out.contains("orders"), "{out}");
    laptop_answers(&url, &[], "laptop-ann");
    let got = from_cluster(&url, &["--repeat", "3"]).expect_ok("requests");
    assert_eq!(answered_by(&got), ["laptop-ann"; 3], "{got}");

    // status and list show it, also as JSON.
    let status = ws.status();
    let intercepts = status["intercepts"].as_array().unwrap();
    assert_eq!(intercepts.len(), 1, "{status}");
    assert_eq!(intercepts[0]["name"], "orders");
    let list: Value =
        serde_json::from_str(&tether(WS, &["list", "-o", "json"]).expect_ok("tether list"))
            .unwrap();
    let orders = list["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "orders")
        .expect("orders listed");
    assert_eq!(orders["agent_installed"], true, "{orders}");
    assert_eq!(orders["intercepts"][0]["name"], "orders", "{orders}");
    assert!(
        orders["intercepts"][0]["owner"]
            .as_str()
            .unwrap()
            .contains('@'),
        "{orders}"
    );
    // `tether version` names the agent and its image, which is this version's.
    let version = tether(WS, &["version"]).expect_ok("tether version");
    let image = orders["agent_image"].as_str().expect("agent image listed");
    assert!(
        version.contains(&format!("agent deployment/orders in default: {image}")),
        "{version}"
    );
    assert!(!version.contains("warning"), "no skew: {version}");

    tether(WS, &["leave", "orders"]).expect_ok("tether leave");
    let got = from_cluster(&url, &["--repeat", "3"]).expect_ok("requests");
    assert!(
        answered_by(&got).iter().all(|w| w.starts_with("orders-")),
        "{got}"
    );
    assert!(ws.status()["intercepts"].as_array().unwrap().is_empty());
}

#[test]
fn personal_intercept_splits_one_connection_per_request() {
    let _ws = Connected::new(WS, &[]);
    let _laptop = Laptop::start(WS, 18081, "laptop-ann");
    tether(
        WS,
        &[
            "intercept",
            "orders",
            "--port",
            "18081:http",
            "--http-header",
            "x-session=ann",
        ],
    )
    .expect_ok("tether intercept");
    let url = service_url("orders", 80);
    laptop_answers(&url, &["--header", "x-session:ann"], "laptop-ann");
    for h2 in [false, true] {
        let mut args = vec![
            "--each-header",
            "x-session:ann",
            "--each-header",
            "",
            "--repeat",
            "6",
        ];
        if h2 {
            args.push("--h2");
        }
        let got = from_cluster(&url, &args);
        let who = answered_by(&got.stdout);
        assert!(got.ok, "h2={h2}: {got:?}");
        // `get` says it used one connection; on it, requests alternate laptop / app.
        assert!(got.stderr.contains("all on one"), "h2={h2}: {}", got.stderr);
        for (i, w) in who.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(w, "laptop-ann", "h2={h2} request {i}: {got:?}");
            } else {
                assert!(w.starts_with("orders-"), "h2={h2} request {i}: {got:?}");
            }
        }
        assert_eq!(who.len(), 6);
    }
    tether(WS, &["leave", "orders"]).expect_ok("tether leave");
}

#[test]
fn two_developers_hold_personal_intercepts_at_once() {
    let _ann = Connected::new(WS, &[]);
    let _bob = Connected::new(WS2, &[]);
    let _laptop_ann = Laptop::start(WS, 18082, "laptop-ann");
    let _laptop_bob = Laptop::start(WS2, 18082, "laptop-bob");
    let ann = [
        "intercept",
        "orders",
        "--port",
        "18082:http",
        "--http-header",
        "x-session=ann",
    ];
    tether(WS, &ann).expect_ok("ann's intercept");
    let bob = [
        "intercept",
        "orders",
        "--port",
        "18082:http",
        "--http-header",
        "x-session=bob",
    ];
    tether(WS2, &bob).expect_ok("bob's intercept");

    let url = service_url("orders", 80);
    laptop_answers(&url, &["--header", "x-session:bob"], "laptop-bob");
    let got = from_cluster(
        &url,
        &[
            "--each-header",
            "x-session:ann",
            "--each-header",
            "x-session:bob",
            "--each-header",
            "",
        ],
    )
    .expect_ok("requests");
    let who = answered_by(&got);
    assert_eq!(who[0], "laptop-ann", "{got}");
    assert_eq!(who[1], "laptop-bob", "{got}");
    assert!(who[2].starts_with("orders-"), "{got}");

    // Bob cannot take requests ann's filter takes; the refusal names her intercept.
    let clash = tether(
        WS2,
        &[
            "intercept",
            "orders",
            "--name",
            "clash",
            "--port",
            "18082:http",
            "--http-header",
            "x-session=ann",
        ],
    );
    assert!(!clash.ok);
    assert!(clash.stderr.contains("overlaps"), "{}", clash.stderr);
    assert!(
        clash.stderr.contains("intercept `orders`"),
        "{}",
        clash.stderr
    );

    tether(WS, &["leave", "orders"]).expect_ok("ann leaves");
    let got = from_cluster(
        &url,
        &[
            "--each-header",
            "x-session:ann",
            "--each-header",
            "x-session:bob",
        ],
    )
    .expect_ok("requests");
    let who = answered_by(&got);
    assert!(who[0].starts_with("orders-"), "{got}");
    assert_eq!(who[1], "laptop-bob", "{got}");
}

#[test]
fn env_file_matches_what_the_pod_sees() {
    let ws = Connected::new(WS, &[]);
    let dir = std::env::temp_dir().join(format!("tether-e2e-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("orders.json");
    tether(
        WS,
        &[
            "intercept",
            "orders",
            "--port",
            "18083:http",
            "--http-header",
            "x-session=env",
            "--env-file",
            file.to_str().unwrap(),
            "--env-syntax",
            "json",
        ],
    )
    .expect_ok("tether intercept --env-file");
    let written: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).expect("env JSON");

    // What the app itself sees: its /env, straight from the pod (not through the Service).
    let (_, pod_ip) = running_pods("app=orders")
        .into_iter()
        .next()
        .expect("a running orders pod");
    let seen = from_cluster(&format!("http://{pod_ip}:8080/env"), &["--json"]).expect_ok("/env");
    let seen: Value = serde_json::from_str(&seen).unwrap();
    let body = seen[0]["body"].as_str().unwrap();
    let pod_env: Vec<(&str, &str)> = body.lines().filter_map(|l| l.split_once('=')).collect();

    for (name, value) in &pod_env {
        match written.get(*name) {
            Some(v) => assert_eq!(v.as_str().unwrap(), *value, "{name}"),
            // Only what the image and the runtime add is not the pod spec's to give.
            None => assert!(
                ["PATH", "HOSTNAME", "HOME", "TERM"].contains(name),
                "{name} is in the pod but not in the env file"
            ),
        }
    }
    for name in written.keys() {
        assert!(
            pod_env.iter().any(|(n, _)| n == name) || name == "TETHER_ROOT",
            "{name} is in the env file but not in the pod"
        );
    }
    // tether's own addition: where `--mount` (on by default) put the container's volumes.
    let root = written.get("TETHER_ROOT").and_then(Value::as_str);
    assert!(
        root.is_some_and(|r| r.starts_with("/tmp/tether-mount-")),
        "TETHER_ROOT: {root:?}"
    );
    // Every kind of source made it.
    for name in [
        "CFG_LOG_LEVEL",
        "DB_PASSWORD",
        "ORDERS_API_TOKEN",
        "POD_IP",
        "DB_URL",
        "ORDERS_SERVICE_HOST",
        "KUBERNETES_SERVICE_HOST",
    ] {
        assert!(
            written.contains_key(name),
            "{name} missing from the env file"
        );
    }
    tether(WS, &["leave", "orders"]).expect_ok("tether leave");
    let _ = std::fs::remove_dir_all(&dir);

    // `-- CMD` runs with that environment, and the intercept ends when CMD does.
    let out = tether(
        WS,
        &[
            "intercept",
            "orders",
            "--port",
            "18083:http",
            "--http-header",
            "x-session=cmd",
            "--",
            "sh",
            "-c",
            "echo \"token=$ORDERS_API_TOKEN url=$DB_URL\"; exit 3",
        ],
    );
    assert_eq!(out.code, Some(3), "CMD's exit code: {out:?}");
    let db_url = written["DB_URL"].as_str().unwrap();
    assert!(
        out.stdout
            .contains(&format!("token=tok-3f9a1c url={db_url}")),
        "{out:?}"
    );
    assert!(ws.status()["intercepts"].as_array().unwrap().is_empty());
}

#[test]
fn intercept_ends_when_the_client_vanishes() {
    let ws = Connected::new(WS, &[]);
    let _laptop = Laptop::start(WS, 18084, "laptop-ann");
    let url = service_url("orders", 80);
    tether(WS, &["intercept", "orders", "--port", "18084:http"]).expect_ok("tether intercept");
    laptop_answers(&url, &[], "laptop-ann");

    let pid = ws.status()["daemon_pid"].as_u64().unwrap().to_string();
    run(Command::new("kill").args(["-9", &pid])).expect_ok("kill -9 the daemon");
    // Within 15 s the Service answers from the app again.
    eventually(
        Duration::from_secs(15),
        "the app gets its traffic back",
        || {
            let out = from_cluster(&url, &[]);
            let who = answered_by(&out.stdout);
            (out.ok && who.len() == 1 && who[0].starts_with("orders-")).then_some(())
        },
    );
    // `quit` cleans up what the killed daemon left (Connected's drop does it too).
    tether(WS, &["quit"]).expect_ok("tether quit");
}

/// Install, intercept, leave, uninstall: the workload and its Service are exactly as before.
#[test]
fn uninstall_restores_workloads_and_services_exactly() {
    let _ws = Connected::new(WS, &[]);
    uninstall_all();
    for (kind, name, service, port) in [
        ("deployment", "orders", "orders", "18085:http"),
        ("deployment", "orders", "orders", "18085:admin"),
        ("statefulset", "inventory", "inventory", "18085"),
        ("replicaset", "legacy", "legacy", "18085"),
    ] {
        let workload_before = spec(kind, name);
        let service_before = spec("service", service);
        let intercept = tether(WS, &["intercept", name, "--port", port]);
        intercept.expect_ok("tether intercept");
        assert_ne!(
            spec(kind, name),
            workload_before,
            "{kind}/{name}: the agent is in the template"
        );
        tether(WS, &["leave", name]).expect_ok("tether leave");
        let out = tether(WS, &["uninstall", &format!("{kind}/{name}")]).expect_ok("uninstall");
        assert!(out.contains(name), "{out}");
        assert_eq!(spec(kind, name), workload_before, "{kind}/{name} spec");
        assert_eq!(
            spec("service", service),
            service_before,
            "service {service}"
        );
    }
    // And the workloads serve again without the agent.
    app_answers(&service_url("orders", 80), "orders-");
    app_answers(&service_url("legacy", 80), "legacy-");
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let _ws = Connected::new(WS, &[]);
    let _bob = Connected::new(WS2, &[]);
    tether(WS, &["intercept", "orders", "--port", "18086:http"]).expect_ok("first global");
    let before = cluster_specs();
    let cases: [(&str, &[&str], &str); 8] = [
        (
            "another namespace",
            &[
                "intercept",
                "orders",
                "--port",
                "18086:http",
                "-n",
                "kube-system",
            ],
            "connected to namespace default, not kube-system",
        ),
        (
            "list of another namespace",
            &["list", "-n", "kube-system"],
            "tether connect -n kube-system",
        ),
        (
            "unknown workload",
            &["intercept", "nosuch", "--port", "18086"],
            "no Deployment, StatefulSet, ReplicaSet or Service named nosuch in namespace default",
        ),
        (
            "unknown port name",
            &["intercept", "orders", "--port", "18086:grpc"],
            "grpc",
        ),
        (
            "no Service",
            &["intercept", "lonely", "--port", "18086"],
            "not exposed by any Service",
        ),
        (
            "malformed header",
            &[
                "intercept",
                "orders",
                "--port",
                "18086:http",
                "--http-header",
                "x-session",
            ],
            "NAME=VALUE",
        ),
        (
            "bad local port",
            &["intercept", "orders", "--port", "http"],
            "local port",
        ),
        (
            "second global",
            &["intercept", "orders", "--port", "18086:http"],
            "already intercepted",
        ),
    ];
    for (what, args, expected) in cases {
        let out = tether(WS2, args);
        assert!(!out.ok, "{what}: succeeded: {out:?}");
        assert!(out.stderr.contains(expected), "{what}: {}", out.stderr);
        assert_cluster_unchanged(&before, what);
    }
    // The holder is named.
    let out = tether(WS2, &["intercept", "orders", "--port", "18086:http"]);
    assert!(out.stderr.contains('@'), "{}", out.stderr);
    tether(WS, &["leave", "orders"]).expect_ok("leave");
}

/// Starts `GET /slow?ms=…` from the client pod; the child prints who answered.
fn slow_request(url: &str, ms: u32) -> Child {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(tether_e2e::kubeconfig())
        .args([
            "exec",
            "deploy/client",
            "-c",
            "app",
            "--",
            "tether-testapp",
            "get",
        ])
        .arg(format!("{url}slow?ms={ms}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a slow request")
}

fn finish(child: Child) -> Run {
    child.wait_with_output().expect("slow request").into()
}

#[test]
fn in_flight_requests_survive_an_intercept_starting_and_ending() {
    let _ws = Connected::new(WS, &[]);
    let _laptop = Laptop::start(WS, 18087, "laptop-ann");
    let url = service_url("orders", 80);
    let intercept = ["intercept", "orders", "--port", "18087:http"];
    // The agent is installed first: installing it is a rollout, which replaces the pods.
    tether(WS, &intercept).expect_ok("tether intercept");
    tether(WS, &["leave", "orders"]).expect_ok("tether leave");
    app_answers(&url, "orders-");

    // A request to the app is in flight when the intercept starts…
    let to_app = slow_request(&url, 5000);
    std::thread::sleep(Duration::from_millis(1500));
    tether(WS, &intercept).expect_ok("tether intercept");
    let got = from_cluster(&url, &[]).expect_ok("a new request");
    assert_eq!(answered_by(&got), ["laptop-ann"], "{got}");
    let done = finish(to_app).expect_ok("the in-flight request");
    assert!(answered_by(&done)[0].starts_with("orders-"), "{done}");

    // …and one to the laptop is in flight when it ends.
    let to_laptop = slow_request(&url, 5000);
    std::thread::sleep(Duration::from_millis(1500));
    tether(WS, &["leave", "orders"]).expect_ok("tether leave");
    let got = from_cluster(&url, &[]).expect_ok("a new request");
    assert!(answered_by(&got)[0].starts_with("orders-"), "{got}");
    let done = finish(to_laptop).expect_ok("the in-flight request");
    assert_eq!(answered_by(&done), ["laptop-ann"], "{done}");
}

#[test]
fn new_pods_of_a_scaled_workload_follow_the_intercept() {
    let _ws = Connected::new(WS, &[]);
    let _laptop = Laptop::start(WS, 18088, "laptop-ann");
    tether(
        WS,
        &[
            "intercept",
            "orders",
            "--port",
            "18088:http",
            "--http-header",
            "x-session=scale",
        ],
    )
    .expect_ok("tether intercept");
    kubectl(&["scale", "deployment/orders", "--replicas=3"]).expect_ok("kubectl scale");
    kubectl(&["rollout", "status", "deployment/orders", "--timeout=120s"]).expect_ok("rollout");
    // Every pod, old and new, sends the developer's requests to the laptop: straight to each
    // pod's agent port, so every pod is asked.
    let pods = running_pods("app=orders");
    assert_eq!(pods.len(), 3, "{pods:?}");
    for (_, ip) in pods {
        let url = format!("http://{ip}:9900/");
        let got = eventually(
            Duration::from_secs(20),
            "the new pod's agent follows",
            || {
                let out = from_cluster(
                    &url,
                    &["--each-header", "x-session:scale", "--each-header", ""],
                );
                let who = answered_by(&out.stdout);
                (out.ok && who.len() == 2 && who[0] == "laptop-ann").then_some(who)
            },
        );
        assert!(got[1].starts_with("orders-"), "{got:?}");
    }
    kubectl(&["scale", "deployment/orders", "--replicas=1"]).expect_ok("kubectl scale back");
    tether(WS, &["leave", "orders"]).expect_ok("tether leave");
    // The next tests want one pod, not two more on their way out.
    eventually(Duration::from_secs(120), "scaled back to one pod", || {
        let names = kubectl(&["get", "pods", "-l", "app=orders", "-o", "name"]).stdout;
        (names.lines().count() == 1).then_some(())
    });
}

#[test]
fn an_intercept_survives_a_manager_restart() {
    let ws = Connected::new(WS, &[]);
    let _laptop = Laptop::start(WS, 18089, "laptop-ann");
    let url = service_url("orders", 80);
    tether(WS, &["intercept", "orders", "--port", "18089:http"]).expect_ok("tether intercept");
    laptop_answers(&url, &[], "laptop-ann");

    let session = ws.status()["session_id"].clone();
    delete_manager_pod();
    // The daemon reconnects to the new manager and re-creates its intercept; the agent links to
    // the new manager with the credential it has (the CA is kept).
    eventually(Duration::from_secs(60), "the intercept works again", || {
        let status = ws.status();
        let out = from_cluster(&url, &[]);
        (status["session_id"] != session && answered_by(&out.stdout) == ["laptop-ann"])
            .then_some(())
    });
    tether(WS, &["leave", "orders"]).expect_ok("tether leave");
}

/// A developer with only the documented roles: `tether-client` lets her connect; intercepting
/// in a namespace needs `tether-intercept` there. Without it she is told so and nothing changes.
#[test]
fn rbac_decides_who_may_intercept() {
    // The agent is not installed, so intercepting has to write the workload.
    tether(WS, &["uninstall", "orders"]).expect_ok("tether uninstall");
    let kc = user_kubeconfig("dev-alice");
    let mut bindings = Bindings::default();
    bindings.client("dev-alice");
    let _alice = Connected::new(WS, &["--kubeconfig", kc.to_str().unwrap()]);
    let _laptop = Laptop::start(WS, 18091, "laptop-alice");
    let intercept = ["intercept", "orders", "--port", "18091:http"];

    // What she can read of the manager's Secrets: the CA certificate, no key (the CA's would let
    // her pose as the manager; her session certificate's key never left her daemon).
    let as_alice = |args: &[&str]| {
        run(Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(args))
    };
    let secret = as_alice(&[
        "get",
        "secret",
        "tether-manager-tls",
        "-n",
        "tether",
        "-o",
        "json",
    ]);
    let secret: Value = serde_json::from_str(&secret.expect_ok("alice reads the CA certificate"))
        .expect("Secret JSON");
    let keys: Vec<&String> = secret["data"].as_object().expect("data").keys().collect();
    assert_eq!(keys, ["ca.crt"]);
    let ca = as_alice(&["get", "secret", "tether-manager-ca", "-n", "tether"]);
    assert!(!ca.ok && ca.stderr.contains("forbidden"), "{ca:?}");

    let before = cluster_specs();
    let refused = tether(WS, &intercept);
    assert!(!refused.ok, "{refused:?}");
    assert!(
        refused.stderr.contains("RBAC") && refused.stderr.contains("deployments"),
        "{}",
        refused.stderr
    );
    assert_cluster_unchanged(&before, "a refused intercept");

    bindings.bind(&[
        "rolebinding",
        "tether-e2e-alice-intercept",
        "--clusterrole=tether-intercept",
        "--user=dev-alice",
        "-n",
        "default",
    ]);
    tether(WS, &intercept).expect_ok("intercept with tether-intercept bound");
    laptop_answers(&service_url("orders", 80), &[], "laptop-alice");
    // Her proof of write access is gone from the agents' Secret once it served.
    let agents = kubectl(&["get", "secret", "tether-agent-tls", "-o", "json"]);
    let agents: Value = serde_json::from_str(&agents.expect_ok("agent Secret")).expect("JSON");
    let keys: Vec<&String> = agents["data"].as_object().expect("data").keys().collect();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    tether(WS, &["leave", "orders"]).expect_ok("tether leave");
    // She may remove the agent too.
    tether(
        WS,
        &["uninstall", "orders", "--kubeconfig", kc.to_str().unwrap()],
    )
    .expect_ok("uninstall as the developer");
    let _ = std::fs::remove_dir_all(kc.parent().unwrap());
}

/// A namespace the test creates; deleted on drop.
struct TempNamespace(String);

impl Drop for TempNamespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"]);
    }
}

/// An agent credential is good for the agents of one namespace: copied elsewhere (with the
/// Secret, or by anyone who may read it there), the manager refuses it and the agent says why.
/// Nor can an agent claim to be another pod than its own.
#[test]
fn an_agent_credential_serves_only_its_own_namespace() {
    let _ws = Connected::new(WS, &[]);
    // The agent's container and the namespace's credential, as an intercept installs them.
    tether(WS, &["intercept", "orders", "--port", "18093:http"]).expect_ok("intercept");
    tether(WS, &["leave", "orders"]).expect_ok("leave");
    let deployment = kubectl(&["get", "deployment", "orders", "-o", "json"]);
    let deployment: Value = serde_json::from_str(&deployment.expect_ok("orders")).expect("JSON");
    let secret = kubectl(&["get", "secret", "tether-agent-tls", "-o", "json"]);
    let secret: Value = serde_json::from_str(&secret.expect_ok("agent Secret")).expect("JSON");

    let other = TempNamespace(format!("tether-e2e-other-{}", std::process::id()));
    kubectl(&["create", "namespace", &other.0]).expect_ok("create namespace");
    let mut pod = deployment["spec"]["template"]["spec"].clone();
    // Only the agent: the app's configuration refers to objects of its own namespace.
    let agent: Vec<Value> = pod["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter(|c| c["name"] == "tether-agent")
        .cloned()
        .collect();
    assert_eq!(agent.len(), 1, "the agent container: {pod}");
    let volume = agent[0]["volumeMounts"][0]["name"].clone();
    let volumes: Vec<Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter(|v| v["name"] == volume)
        .cloned()
        .collect();
    pod["containers"] = Value::Array(agent);
    pod["volumes"] = Value::Array(volumes);
    let objects = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": { "name": "tether-agent-tls", "namespace": other.0 },
                "type": secret["type"],
                "data": secret["data"],
            },
            deployment_of(&other.0, "copied-agent", &pod),
        ],
    });
    apply(&objects);
    let refusal = format!("is for namespace default, not {}", other.0);
    agent_is_refused(&other.0, "copied-agent", &refusal);

    // In its own namespace, with its own credential, an agent still cannot claim to be another
    // pod: the manager has the API server check its pod's token.
    let mut impostor = pod.clone();
    for env in impostor["containers"][0]["env"]
        .as_array_mut()
        .expect("env")
    {
        if env["name"] == "POD_NAME" {
            *env = serde_json::json!({ "name": "POD_NAME", "value": "orders-impostor" });
        }
    }
    let _impostor = Deleted(vec!["deployment".into(), "tether-e2e-impostor".into()]);
    apply(&deployment_of("default", "tether-e2e-impostor", &impostor));
    agent_is_refused(
        "default",
        "tether-e2e-impostor",
        "the agent is not pod default/orders-impostor: its token is bound to pod tether-e2e-impostor-",
    );
}

/// An object the test created; deleted (without waiting) on drop.
struct Deleted(Vec<String>);

impl Drop for Deleted {
    fn drop(&mut self) {
        let mut args = vec!["delete", "--wait=false"];
        args.extend(self.0.iter().map(String::as_str));
        let _ = kubectl(&args);
    }
}

/// A one-replica Deployment of `pod` (a pod spec), labelled `app: NAME`.
fn deployment_of(namespace: &str, name: &str, pod: &Value) -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } }, "spec": pod },
        },
    })
}

/// `kubectl apply` of a JSON manifest.
fn apply(objects: &Value) {
    let manifest = std::env::temp_dir().join(format!("tether-e2e-{}.json", std::process::id()));
    std::fs::write(&manifest, objects.to_string()).expect("manifest");
    kubectl(&["apply", "-f", manifest.to_str().unwrap()]).expect_ok("kubectl apply");
    let _ = std::fs::remove_file(&manifest);
}

/// Waits until the agent of `deployment` logs `refusal`, and checks it never linked.
fn agent_is_refused(namespace: &str, deployment: &str, refusal: &str) {
    let target = format!("deployment/{deployment}");
    let logs = || kubectl(&["logs", "-n", namespace, &target, "-c", "tether-agent"]);
    eventually(Duration::from_secs(90), "the agent is refused", || {
        logs().stdout.contains(refusal).then_some(())
    });
    let logs = logs();
    assert!(
        !logs.stdout.contains("Linked to the traffic manager"),
        "{}",
        logs.stdout
    );
}

/// Python's `http.server` on the laptop answers as HTTP/1.0 and closes its connection after each
/// answer. Versions and persistence are per hop: callers keep their HTTP/1.1 keep-alive
/// connection across requests the laptop answers.
#[test]
fn an_http10_laptop_server_keeps_callers_connections_open() {
    let _ws = Connected::new(WS, &[]);
    let dir = std::env::temp_dir().join("tether-e2e-http10");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "hello from laptop-py\n").unwrap();
    let child = in_ns(WS, "/usr/bin/python3")
        .args([
            "-m",
            "http.server",
            "18090",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting python3 -m http.server");
    let _laptop = Laptop::adopt(child);
    eventually(Duration::from_secs(10), "http.server listens", || {
        tether_e2e::curl(Some(WS), &["http://127.0.0.1:18090/"])
            .ok
            .then_some(())
    });
    tether(
        WS,
        &[
            "intercept",
            "orders",
            "--port",
            "18090:http",
            "--http-header",
            "x-session=py",
        ],
    )
    .expect_ok("tether intercept");

    // From a pod: laptop, app, laptop, app on one connection.
    let url = service_url("orders", 80);
    let args = [
        "--each-header",
        "x-session:py",
        "--each-header",
        "",
        "--repeat",
        "4",
    ];
    let got = from_cluster(&url, &args);
    assert!(got.ok, "{got:?}");
    assert!(got.stderr.contains("all on one"), "{}", got.stderr);
    let who = answered_by(&got.stdout);
    assert_eq!(who.len(), 4, "{got:?}");
    for (i, w) in who.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(w, "laptop-py", "request {i}: {got:?}");
        } else {
            assert!(w.starts_with("orders-"), "request {i}: {got:?}");
        }
    }

    // From the workstation through tether, as the curl: one connection for all three.
    let out = tether_e2e::curl(
        Some(WS),
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}:%{num_connects} ",
            "http://orders/",
            "--next",
            "-H",
            "x-session: py",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}:%{num_connects} ",
            "http://orders/",
            "--next",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}:%{num_connects} ",
            "http://orders/",
        ],
    );
    assert!(out.ok, "{out:?}");
    assert_eq!(out.stdout.trim(), "1.1:1 1.1:0 1.1:0", "{out:?}");
    tether(WS, &["leave", "orders"]).expect_ok("tether leave");
}
