//! `tether intercept TARGET`: by Service name (`intercept SERVICE --port LOCAL:REMOTE`, as the
//! Kubernetes guide writes it), the errors when a name leaves a choice, `--container`,
//! `--to-pod`, and connecting first when not connected.
//!
//! The workloads are `duo` (two containers, behind four Services) and `duo-b` in
//! `deploy/sample/intercept.yaml`; `orders` for connecting first. Requests come from the client
//! pod, as in `intercept.rs`; the developer's process is the test app on the workstation.

use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;
use tether_e2e::{
    answered_by, cluster_ip, eventually, from_cluster, kubectl, machine_state, sh_on_workstation,
    tether, tether_on_workstation, Connected, Laptop, Run, WS,
};

/// `http://CLUSTER_IP:PORT/` of a Service.
fn service_url(service: &str, port: u16) -> String {
    format!("http://{}:{port}/", cluster_ip(service))
}

/// One request from the client pod is answered by `who` (or by a name starting with `who…`
/// when `prefix`).
#[track_caller]
fn answers(url: &str, who: &str, prefix: bool) {
    let out = from_cluster(url, &[]);
    let got = answered_by(&out.stdout);
    let ok = got.len() == 1
        && if prefix {
            got[0].starts_with(who)
        } else {
            got[0] == who
        };
    assert!(out.ok && ok, "expected {who} to answer {url}: {out:?}");
}

/// Fails unless `run` failed with `parts` in its message.
#[track_caller]
fn refused(run: &Run, parts: &[&str]) {
    assert!(!run.ok, "expected a refusal: {run:?}");
    for part in parts {
        assert!(
            run.stderr.contains(part),
            "expected `{part}` in: {}",
            run.stderr
        );
    }
}

/// The workloads' and Services' specs and annotations in `default`, to show a refusal changed
/// nothing (ReplicaSets a Deployment owns are left out: its controller rewrites them).
fn cluster_specs() -> BTreeMap<String, Value> {
    let out = kubectl(&["get", "deployments,replicasets,services", "-o", "json"])
        .expect_ok("kubectl get");
    let list: Value = serde_json::from_str(&out).expect("list JSON");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|o| o["metadata"]["ownerReferences"].is_null())
        .map(|o| {
            let key = format!("{}/{}", o["kind"], o["metadata"]["name"]);
            (
                key,
                serde_json::json!([o["spec"], o["metadata"]["annotations"]]),
            )
        })
        .collect()
}

/// Removes the agent from `duo` when a test that installed it ends, however it ends.
struct DuoRestored;

impl Drop for DuoRestored {
    fn drop(&mut self) {
        let _ = tether(WS, &["uninstall", "deploy/duo", "-n", "default"]);
    }
}

/// `tether intercept ARGS -o json`, asserting success; the report.
#[track_caller]
fn intercept_json(args: &[&str]) -> Value {
    let mut full = vec!["intercept"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    let out = tether(WS, &full).expect_ok("tether intercept");
    serde_json::from_str(&out).expect("intercept JSON")
}

#[test]
fn a_service_name_with_a_numeric_or_a_named_port() {
    let _ws = Connected::new(WS, &[]);
    let _restored = DuoRestored;
    let _laptop = Laptop::start(WS, 18090, "laptop-ann");
    let url = service_url("duo-side", 8181);
    answers(&url, "sidecar-duo-", true);

    // `duo-side` is only a Service: the workload is the one it selects, and its port the one
    // the Service's port 8181 reaches (the sidecar's).
    let report = intercept_json(&["duo-side", "--port", "18090:8181"]);
    let i = &report["intercept"];
    assert_eq!(i["workload"], "Deployment/duo", "{report}");
    assert_eq!(i["service_port"], "duo-side:http", "{report}");
    assert_eq!(i["container"], "sidecar", "{report}");
    answers(&url, "laptop-ann", false);
    tether(WS, &["leave", "duo"]).expect_ok("tether leave");
    answers(&url, "sidecar-duo-", true);

    // The same Service port by name.
    let report = intercept_json(&["duo-side", "--port", "18090:http"]);
    assert_eq!(report["intercept"]["service_port"], "duo-side:http");
    answers(&url, "laptop-ann", false);
    tether(WS, &["leave", "duo"]).expect_ok("tether leave");
    answers(&url, "sidecar-duo-", true);

    // `svc/` says it is the Service, also when a workload has the name.
    let report = intercept_json(&["svc/duo-b", "--port", "18090:80"]);
    assert_eq!(report["intercept"]["workload"], "Deployment/duo");
    assert_eq!(report["intercept"]["service_port"], "duo-b:http");
    answers(&service_url("duo-b", 80), "laptop-ann", false);
    tether(WS, &["leave", "duo"]).expect_ok("tether leave");
}

#[test]
fn names_that_leave_a_choice_are_refused_with_the_choices() {
    let ws = Connected::new(WS, &[]);
    let before = cluster_specs();
    let intercept = |args: &[&str]| {
        let mut full = vec!["intercept"];
        full.extend_from_slice(args);
        tether(WS, &full)
    };

    // A Service that selects several workloads.
    refused(
        &intercept(&["duo-all", "--port", "18091"]),
        &["Service duo-all selects several workloads: deploy/duo, deploy/duo-b; choose one with --workload"],
    );
    refused(
        &intercept(&["duo-all", "--workload", "orders", "--port", "18091"]),
        &["Service duo-all does not select orders; it selects deploy/duo, deploy/duo-b"],
    );
    // A name that is a workload and a Service selecting another workload.
    refused(
        &intercept(&["duo-b", "--port", "18091"]),
        &["duo-b is both Deployment duo-b and a Service that selects deploy/duo: write deploy/duo-b for the workload or svc/duo-b for the Service"],
    );
    // A workload behind several Services whose port `http` means different ports.
    refused(
        &intercept(&["duo", "--port", "18091:http"]),
        &[
            "port `http` of Deployment duo could be ",
            "duo/http (80→http)",
            "duo-side/http (8181→side)",
            "; choose the Service with --service duo or ",
            "--service duo-side",
        ],
    );
    refused(
        &intercept(&["duo", "--service", "orders", "--port", "18091"]),
        &["Service orders does not select Deployment duo; the Services that do: "],
    );
    // A container the pod does not have.
    refused(
        &intercept(&[
            "duo",
            "--service",
            "duo",
            "--port",
            "18091",
            "--container",
            "nope",
        ]),
        &["Deployment duo has no container nope; its containers are: app, sidecar"],
    );
    // Refused before anything is asked.
    let r = intercept(&["duo", "--port", "18091", "--to-pod", "18091"]);
    refused(&r, &["--to-pod 18091 is also the --port"]);
    let r = intercept(&["duo", "--port", "18091", "--to-pod", "http"]);
    assert_eq!(r.code, Some(2), "a usage error: {r:?}");

    assert_eq!(
        cluster_specs(),
        before,
        "a refused intercept changes nothing"
    );
    assert!(ws.status()["intercepts"].as_array().unwrap().is_empty());
}

#[test]
fn container_picks_the_port_and_environment_and_to_pod_reaches_the_sidecar() {
    // Connected in the workstation's own mount namespace, where its programs see the mounts.
    tether_on_workstation(WS, &["connect"]).expect_ok("tether connect");
    let ws = Connected { ns: WS.into() };
    let _restored = DuoRestored;
    let _laptop = Laptop::start(WS, 18092, "laptop-ann");
    let dir = std::env::temp_dir().join(format!("tether-e2e-duo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join("duo.json");
    let env_path = env_file.to_str().unwrap();
    let role = || -> String {
        let text = std::fs::read_to_string(&env_file).expect("env file");
        let env: Value = serde_json::from_str(&text).expect("env JSON");
        env["ROLE"].as_str().unwrap_or_default().to_owned()
    };

    // --container sidecar: the only port of Service duo the sidecar serves, its environment.
    let report = intercept_json(&[
        "duo",
        "--service",
        "duo",
        "--port",
        "18092",
        "--container",
        "sidecar",
        "--env-file",
        env_path,
        "--env-syntax",
        "json",
    ]);
    assert_eq!(report["intercept"]["service_port"], "duo:side", "{report}");
    assert_eq!(report["intercept"]["container"], "sidecar", "{report}");
    // --mount shows the sidecar's volumes: its own /cache, not the app's at the same path.
    assert_eq!(
        report["intercept"]["mount"]["volumes"],
        serde_json::json!(["/cache", "/var/run/secrets/kubernetes.io/serviceaccount"]),
        "{report}"
    );
    let root = report["intercept"]["mount"]["dir"]
        .as_str()
        .expect("mount dir");
    let who = sh_on_workstation(WS, &format!("cat {root}/cache/who"));
    assert_eq!(who.expect_ok("cat the sidecar's /cache/who"), "sidecar");
    assert_eq!(role(), "sidecar");
    answers(&service_url("duo", 8181), "laptop-ann", false);
    tether(WS, &["leave", "duo"]).expect_ok("tether leave");

    // --container app, and the sidecar's other port on 127.0.0.1 with --to-pod.
    let sidecar_admin = "http://127.0.0.1:8282/";
    let before = tether_e2e::curl(Some(WS), &[sidecar_admin]);
    assert!(
        !before.ok,
        "nothing listens on 8282 on the workstation yet: {before:?}"
    );
    let out = tether(
        WS,
        &[
            "intercept",
            "duo",
            "--service",
            "duo",
            "--port",
            "18092:http",
            "--container",
            "app",
            "--env-file",
            env_path,
            "--env-syntax",
            "json",
            "--to-pod",
            "8282",
        ],
    )
    .expect_ok("tether intercept --to-pod");
    assert!(
        out.contains("127.0.0.1:8282 reaches port 8282 of pod duo-"),
        "{out}"
    );
    assert!(
        out.contains("/cache, "),
        "the app's own volume is mounted: {out}"
    );
    let root = ws.status()["intercepts"][0]["mount"]["dir"]
        .as_str()
        .expect("mount dir")
        .to_owned();
    let listed = sh_on_workstation(WS, &format!("ls -A {root}/cache"));
    assert_eq!(
        listed.expect_ok("ls the app's /cache"),
        "",
        "the app's /cache is its emptyDir, not the sidecar's ConfigMap"
    );
    assert_eq!(role(), "app");
    answers(&service_url("duo", 80), "laptop-ann", false);
    // UDP too: the sidecar's echo on the same port number.
    let echo = tether_e2e::udp_roundtrip(WS, "127.0.0.1", 8282, "ping-sidecar-udp");
    assert_eq!(echo.stdout.trim(), "ping-sidecar-udp", "{echo:?}");
    let got = tether_e2e::curl(Some(WS), &[sidecar_admin]);
    assert!(
        got.ok && got.stdout.starts_with("hello from sidecar-duo-"),
        "the sidecar answers on 127.0.0.1:8282: {got:?}"
    );
    let status = ws.status();
    assert_eq!(
        status["intercepts"][0]["to_pod"],
        serde_json::json!([8282]),
        "{status}"
    );

    // The pod goes away: --to-pod follows the workload to its next pod.
    let old = status["intercepts"][0]["to_pod_target"]
        .as_str()
        .and_then(|t| t.split(' ').next())
        .expect("the pod --to-pod reaches")
        .to_owned();
    kubectl(&["delete", "pod", &old, "--wait=false"]).expect_ok("kubectl delete pod");
    let new = eventually(
        Duration::from_secs(120),
        "--to-pod to reach a new pod",
        || {
            let got = tether_e2e::curl(Some(WS), &[sidecar_admin]);
            let pod = got.stdout.strip_prefix("hello from sidecar-")?;
            let pod = pod.split_whitespace().next()?.to_owned();
            (got.ok && pod != old).then_some(pod)
        },
    );
    let status = ws.status();
    assert!(
        status["intercepts"][0]["to_pod_target"]
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("{new} ("))),
        "{status}"
    );
    let echo = tether_e2e::udp_roundtrip(WS, "127.0.0.1", 8282, "ping-new-pod");
    assert_eq!(echo.stdout.trim(), "ping-new-pod", "{echo:?}");

    tether(WS, &["leave", "duo"]).expect_ok("tether leave");
    let after = tether_e2e::curl(Some(WS), &[sidecar_admin]);
    assert!(!after.ok, "127.0.0.1:8282 closes on leave: {after:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn intercept_connects_first_and_quit_leaves_the_machine_as_it_was() {
    // Not connected (a test before may have left nothing: make sure).
    let _ = tether(WS, &["quit"]);
    let before = machine_state(WS);
    let _laptop = Laptop::start(WS, 18093, "laptop-ann");
    let not_connected = || {
        let s = tether(WS, &["status"]);
        !s.ok || s.stdout.contains("Not connected")
    };

    // Connecting fails: nothing was done, and it says so.
    let r = tether(
        WS,
        &[
            "intercept",
            "orders",
            "--port",
            "18093:http",
            "-n",
            "no-such-namespace",
        ],
    );
    refused(
        &r,
        &[
            "not connected, and connecting first failed, so nothing was intercepted; this machine is as it was",
            "no-such-namespace",
        ],
    );
    assert_eq!(
        machine_state(WS),
        before,
        "a failed connect changes nothing"
    );
    assert!(not_connected());

    // Connected, but the intercept is refused: the connection made for it ends again.
    let r = tether(WS, &["intercept", "no-such-thing", "--port", "18093"]);
    refused(
        &r,
        &[
            "no Deployment, StatefulSet, ReplicaSet or Service named no-such-thing in namespace default",
            "the connection this command made for it has ended",
        ],
    );
    assert_eq!(
        machine_state(WS),
        before,
        "resolver and routes as they were"
    );
    assert!(not_connected());

    // It connects, then intercepts.
    let r = tether(WS, &["intercept", "orders", "--port", "18093:http"]);
    let ws = Connected { ns: WS.to_owned() };
    assert!(r.ok, "{r:?}");
    assert!(
        r.stderr.contains("Not connected: connecting first."),
        "{}",
        r.stderr
    );
    answers(&service_url("orders", 80), "laptop-ann", false);
    let status = ws.status();
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["intercepts"][0]["name"], "orders", "{status}");

    drop(ws);
    assert_eq!(machine_state(WS), before, "quit puts the machine back");
    assert!(not_connected());
}
