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
    step("tether quit: the workstation is back as it was");
    anyhow::ensure!(ws(&["quit"])?.success(), "tether quit failed");
    println!("\nTry it yourself:\n  {}", cluster_env()?);
    println!(
        "  ip netns exec tether-ws bash   # then: {} connect; curl hello",
        tether.display()
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
