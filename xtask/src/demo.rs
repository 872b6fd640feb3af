//! `cargo xtask demo`: what a newcomer runs to see tether work.
//!
//! It can run any number of times in a row: it first ends whatever an earlier demo or test run
//! left (a connected daemon, the demo's laptop process, intercepts and agents in `default`), and
//! a [`Cleanup`] guard ends its own session, laptop process and agents on every way out,
//! a failure included. A demo killed outright is cleaned up by the next one.

use std::{
    path::PathBuf,
    process::{Command, ExitStatus},
};

use anyhow::Context;

use crate::{cluster, manager, sample};

/// Where the demo keeps the pid of its laptop process, for the next demo to end it if this one
/// is killed.
fn laptop_pid_file() -> PathBuf {
    cluster::state_dir().join("demo-laptop.pid")
}

/// The name the demo's laptop process answers with (and is recognised by).
const LAPTOP_NAME: &str = "the-developers-laptop";

/// `program` on the workstation: its network namespace and its one mount namespace (see
/// `xtask/scripts/workstation.sh`), where `intercept --mount` is seen by every later command.
fn on_ws(program: impl AsRef<std::ffi::OsStr>) -> anyhow::Result<Command> {
    let mnt = cluster::run(
        Command::new(cluster::repo().join("xtask/scripts/workstation.sh")).arg("tether-ws"),
    )?;
    let mut cmd = Command::new("nsenter");
    cmd.arg("--net=/run/netns/tether-ws")
        .arg(format!("--mount={}", mnt.trim()))
        .arg(program);
    Ok(cmd)
}

/// `tether ARGS` on the workstation.
fn ws(args: &[&str]) -> anyhow::Result<ExitStatus> {
    Ok(on_ws(manager::tether_bin())?
        .args(args)
        .env("KUBECONFIG", cluster::kubeconfig())
        .status()?)
}

pub fn run() -> anyhow::Result<()> {
    step("Bringing up the local cluster");
    cluster::script("cluster.sh", &["up"])?;
    manager::build_cli()?;
    step("Ending whatever an earlier demo or test run left on the workstation and in `default`");
    clean_up()?;
    let mut cleanup = Cleanup { armed: true };
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
    intercept()?;

    step("tether quit: the workstation is back as it was");
    anyhow::ensure!(ws(&["quit"])?.success(), "tether quit failed");
    cleanup.armed = false;
    println!("\nTry it yourself:\n  {}", cluster_env()?);
    println!(
        "  ip netns exec tether-ws bash   # then: {} connect; curl hello",
        tether.display()
    );
    Ok(())
}

/// A personal intercept of `orders`: requests with the developer's header reach a process on the
/// workstation, the others still reach the app; then `leave` and `uninstall` put it back.
fn intercept() -> anyhow::Result<()> {
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
        .args(["--name", LAPTOP_NAME])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting the workstation's app")?;
    // `ip netns exec` execs the program, so this is the app's own pid.
    let _ = std::fs::write(laptop_pid_file(), laptop.id().to_string());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_file(laptop_pid_file());
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

    step("tether top --once: what this machine's session did (the live view is `tether top`)");
    // The agents report their counts about once a second: wait for the request to show.
    for _ in 0..10 {
        let out = Command::new("ip")
            .args(["netns", "exec", "tether-ws"])
            .arg(manager::tether_bin())
            .args(["top", "--once", "-o", "json"])
            .output()?;
        let top: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if top["intercepts"][0]["laptop"]["requests"].as_u64() >= Some(1) {
            break;
        }
    }
    anyhow::ensure!(ws(&["top", "--once"])?.success(), "tether top failed");

    step("tether leave orders; tether uninstall orders (the Deployment is as it was)");
    anyhow::ensure!(ws(&["leave", "orders"])?.success(), "tether leave failed");
    anyhow::ensure!(
        ws(&["uninstall", "orders"])?.success(),
        "tether uninstall failed"
    );
    mount()
}

/// `--mount`: the intercepted container's ConfigMap, read on the laptop by a command that runs
/// for the intercept's length.
fn mount() -> anyhow::Result<()> {
    let script = "ls -l \"$TETHER_ROOT/etc/files\"; cat \"$TETHER_ROOT/etc/files/app.yaml\"";
    step(&format!(
        "tether intercept files --port 18081 -- sh -c '{script}': the container's volumes on \
         the laptop, under $TETHER_ROOT while the command runs"
    ));
    anyhow::ensure!(
        ws(&[
            "intercept",
            "files",
            "--port",
            "18081",
            "--",
            "sh",
            "-c",
            script
        ])?
        .success(),
        "tether intercept files -- sh failed"
    );
    step("tether uninstall files");
    anyhow::ensure!(
        ws(&["uninstall", "files"])?.success(),
        "tether uninstall failed"
    );
    Ok(())
}

/// Ends the session on `tether-ws`, the demo's laptop process and every agent in `default`.
/// Each part is done even if another fails; the first failure is returned.
fn clean_up() -> anyhow::Result<()> {
    let quit = ws(&["quit"]).context("running tether quit")?;
    kill_leftover_laptop();
    let uninstall =
        ws(&["uninstall", "--all", "-n", "default"]).context("running tether uninstall --all")?;
    anyhow::ensure!(quit.success(), "tether quit failed");
    anyhow::ensure!(uninstall.success(), "tether uninstall --all failed");
    Ok(())
}

/// Ends the laptop process an earlier demo started, if it still runs (by its recorded pid,
/// checked against its command line so an unrelated process that got the pid is left alone).
fn kill_leftover_laptop() {
    let Some(pid) = std::fs::read_to_string(laptop_pid_file())
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains(LAPTOP_NAME) {
        println!("Ending the laptop process (pid {pid}) an earlier demo left running");
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    let _ = std::fs::remove_file(laptop_pid_file());
}

/// Cleans up after a demo that did not reach its end.
struct Cleanup {
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            step("The demo failed: ending its session, intercepts and agents");
            if let Err(error) = clean_up() {
                eprintln!("warning: cleaning up after the demo: {error:#}");
            }
        }
    }
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
