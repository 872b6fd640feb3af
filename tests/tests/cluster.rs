//! The local cluster itself: what every other end-to-end test stands on.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use tether_e2e::*;

#[test]
fn sample_app_pods_become_ready() {
    kubectl(&["rollout", "status", "deployment/hello", "--timeout=120s"]).expect_ok("rollout");
    let pods = hello_pods();
    assert_eq!(pods.len(), 2, "two hello pods running: {pods:?}");
    for (name, _) in &pods {
        let ready = kubectl(&[
            "get",
            "pod",
            name,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ])
        .expect_ok("pod condition");
        assert_eq!(ready, "True", "{name} Ready");
    }
}

#[test]
fn host_reaches_the_app_and_the_workstation_does_not() {
    let pods = hello_pods();
    assert!(!pods.is_empty(), "hello pods running");
    let (name, ip) = &pods[0];
    let url = format!("http://{ip}:8080/");
    let host = curl(None, &[&url]).expect_ok("curl pod from host");
    assert!(host.contains(&format!("hello from {name}")), "{host}");

    let svc = format!("http://{}/", cluster_ip("hello"));
    let via_svc = curl(None, &[&svc]).expect_ok("curl ClusterIP from host");
    assert!(via_svc.contains("hello from hello-"), "{via_svc}");

    // The workstation reaches the API server...
    let server = kubectl(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])
    .expect_ok("server url");
    let api = run(in_ns(WS, "kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["get", "--raw", "/version"]));
    assert!(
        api.ok,
        "workstation reaches the API server at {server}: {}",
        api.stderr
    );
    // ...but neither the pod nor the Service.
    for target in [&url, &svc] {
        let r = curl(Some(WS), &["--max-time", "3", target]);
        assert!(
            !r.ok,
            "workstation must not reach {target} without tether: {}",
            r.stdout
        );
    }
}

#[test]
fn exec_logs_and_port_forward_work_through_the_api_server() {
    let (name, _) = hello_pods().into_iter().next().expect("a hello pod");
    let out = kubectl(&["exec", &name, "--", "sh", "-c", "echo pod=$POD_NAME"]).expect_ok("exec");
    assert_eq!(out.trim(), format!("pod={name}"));

    let logs = kubectl(&["logs", &name]).expect_ok("logs");
    assert!(logs.contains("http echo listening"), "logs: {logs}");

    let mut pf = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["port-forward", &format!("pod/{name}"), ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start port-forward");
    let mut line = String::new();
    let mut reader = BufReader::new(pf.stdout.take().expect("stdout"));
    reader.read_line(&mut line).expect("port-forward banner");
    // "Forwarding from 127.0.0.1:41234 -> 8080"
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected port-forward output: {line}"))
        .to_owned();
    let body = eventually(Duration::from_secs(10), "port-forward answers", || {
        let r = curl(None, &[&format!("http://127.0.0.1:{port}/")]);
        r.ok.then_some(r.stdout)
    });
    let _ = pf.kill();
    let _ = pf.wait();
    assert!(body.contains(&format!("hello from {name}")), "{body}");
}
