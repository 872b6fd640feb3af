//! `cargo xtask demo`: what a newcomer runs to see tether work.

use std::process::Command;

use anyhow::Context;

use crate::{cluster, manager, sample};

pub fn run() -> anyhow::Result<()> {
    step("Bringing up the local cluster");
    cluster::script("cluster.sh", &["up"])?;
    step("Deploying the sample app `hello`");
    sample::deploy()?;
    cluster::kubectl()
        .args(["get", "pods,services", "-o", "wide"])
        .status()?;
    let pod_ip = sample::running_pods()?
        .first()
        .map(|p| p.ip)
        .context("no running pod of the sample app")?;
    step(&format!(
        "From the workstation namespace `tether-ws`, without tether: curl http://{pod_ip}:8080"
    ));
    let status = ws_curl(&format!("http://{pod_ip}:8080/"), 3)?;
    if status.success() {
        anyhow::bail!(
            "the workstation reached the pod without tether: the namespace is not isolated"
        );
    }
    println!("\nThe workstation cannot reach the cluster's pods on its own.");

    step("Installing tether's traffic manager: tether install");
    manager::build_cli()?;
    manager::install()?;

    step("On the workstation: tether connect");
    let tether = manager::tether_bin();
    let ws = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", "tether-ws"])
            .arg(&tether)
            .args(args)
            .env("KUBECONFIG", cluster::kubeconfig())
            .status()
    };
    // A previous demo may have left a session running.
    let _ = ws(&["quit"])?;
    anyhow::ensure!(ws(&["connect"])?.success(), "tether connect failed");
    ws(&["status"])?;
    for url in [
        "http://hello/",
        "http://hello.default.svc.cluster.local/",
        &format!("http://{pod_ip}:8080/"),
    ] {
        step(&format!("From the workstation, through tether: curl {url}"));
        let ok = ws_curl(url, 5)?.success();
        anyhow::ensure!(ok, "curl {url} through tether failed");
    }
    intercept(&ws)?;

    step("tether quit: the workstation is back as it was");
    anyhow::ensure!(ws(&["quit"])?.success(), "tether quit failed");
    println!("\nTry it yourself:\n  {}", cluster_env()?);
    println!(
        "  ip netns exec tether-ws bash   # then: {} connect; curl hello",
        tether.display()
    );
    Ok(())
}

/// A personal intercept of `orders`: requests with the developer's header reach a process on the
/// workstation, the others still reach the app; then `leave` and `uninstall` put it back.
fn intercept(
    ws: &dyn Fn(&[&str]) -> std::io::Result<std::process::ExitStatus>,
) -> anyhow::Result<()> {
    step("On the workstation: the developer's own `orders`, listening on 127.0.0.1:18080");
    let laptop = Command::new("ip")
        .args(["netns", "exec", "tether-ws"])
        .arg(cluster::repo().join("target/release/tether-testapp"))
        .args([
            "--http-port",
            "18080",
            "--udp-port",
            "0",
            "--bind",
            "127.0.0.1",
        ])
        .args(["--name", "the-developers-laptop"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting the workstation's app")?;
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _laptop = Kill(laptop);

    step("tether intercept orders --port 18080:http --http-header x-dev=me");
    anyhow::ensure!(
        ws(&[
            "intercept",
            "orders",
            "--port",
            "18080:http",
            "--http-header",
            "x-dev=me"
        ])?
        .success(),
        "tether intercept failed"
    );
    ws(&["list"])?;
    let ip = cluster::run(cluster::kubectl().args([
        "get",
        "service",
        "orders",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]))?;
    step(&format!(
        "From a pod in the cluster, on one connection: GET http://{ip}/ with `x-dev: me`, then without"
    ));
    let status = cluster::kubectl()
        .args([
            "exec",
            "deploy/client",
            "-c",
            "app",
            "--",
            "tether-testapp",
            "get",
        ])
        .arg(format!("http://{ip}/"))
        .args(["--each-header", "x-dev:me", "--each-header", ""])
        .status()?;
    anyhow::ensure!(status.success(), "the requests from the client pod failed");

    step("tether leave orders; tether uninstall orders (the Deployment is as it was)");
    anyhow::ensure!(ws(&["leave", "orders"])?.success(), "tether leave failed");
    anyhow::ensure!(
        ws(&["uninstall", "orders"])?.success(),
        "tether uninstall failed"
    );
    Ok(())
}

fn cluster_env() -> anyhow::Result<String> {
    Ok(format!(
        "export KUBECONFIG={}",
        cluster::kubeconfig().display()
    ))
}

/// `curl` from the workstation namespace.
fn ws_curl(url: &str, max_time_secs: u32) -> std::io::Result<std::process::ExitStatus> {
    Command::new("ip")
        .args(["netns", "exec", "tether-ws", "curl", "-sS", "--max-time"])
        .arg(max_time_secs.to_string())
        .arg(url)
        .status()
}

fn step(msg: &str) {
    println!("\n\x1b[1m==> {msg}\x1b[0m");
}
