//! The cluster's own lifecycle: recovery from a killed run, a `down` that leaves nothing behind,
//! and `up` refusing bad conditions with a message that names the cause.
//!
//! Destructive, so `#[ignore]`d: `cargo xtask test` runs it last, after every other end-to-end
//! test. It ends with the cluster down.

use std::{net::TcpListener, process::Command};

use tether_e2e::*;

fn cluster(verb: &str) -> Run {
    run(Command::new("bash")
        .arg(repo().join("xtask/scripts/cluster.sh"))
        .arg(verb))
}

fn component_pids() -> Vec<(String, u32)> {
    let run_dir = state_dir().join("run");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(&run_dir)
        .expect("cluster run dir")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(component) = name.strip_suffix(".pid") {
            if let Ok(pid) = std::fs::read_to_string(entry.path())
                .unwrap_or_default()
                .trim()
                .parse()
            {
                pids.push((component.to_owned(), pid));
            }
        }
    }
    pids
}

#[test]
#[ignore = "tears the cluster down; run by `cargo xtask test` last"]
fn lifecycle() {
    recovers_after_every_process_is_killed();
    down_leaves_nothing_behind();
    up_refuses_a_taken_port();
    up_refuses_a_broken_cache();
}

fn recovers_after_every_process_is_killed() {
    let pids = component_pids();
    assert!(pids.len() >= 7, "cluster components running: {pids:?}");
    for (_, pid) in &pids {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    // Their pods' shims, containers, iptables chains and mounts are still there: `up` must cope.
    let started = std::time::Instant::now();
    cluster("up").expect_ok("cluster up after kill -9");
    eprintln!(
        "warm `cluster up` after kill -9 (recovery + start + images): {:?}",
        started.elapsed()
    );
    let status = cluster("status").expect_ok("cluster status");
    assert!(
        status.contains(" Ready "),
        "node Ready after recovery:\n{status}"
    );
    // The recovered cluster runs pods again.
    let mut demo = Command::new("cargo");
    // Not our per-package CARGO_* variables: the demo's nested builds would rebuild ring & co.
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("CARGO_CRATE_")
        {
            demo.env_remove(key);
        }
    }
    let r = run(demo.args(["xtask", "demo"]).current_dir(repo()));
    assert!(
        r.ok,
        "demo after recovery failed:\n{}\n{}",
        r.stdout, r.stderr
    );
    let (name, ip) = hello_pods()
        .into_iter()
        .next()
        .expect("a hello pod after recovery");
    let body = curl(None, &[&format!("http://{ip}:8080/")]).expect_ok("curl after recovery");
    assert!(body.contains(&format!("hello from {name}")), "{body}");
}

fn down_leaves_nothing_behind() {
    cluster("down").expect_ok("cluster down");
    cluster("check-clean").expect_ok("nothing left behind");
    // Independent of the script's own check: what a person would look at.
    let netns = run(Command::new("ip").args(["netns", "list"])).stdout;
    assert!(
        !netns.contains("tether-ws") && !netns.contains("cni-"),
        "namespaces left: {netns}"
    );
    let links = run(Command::new("ip").args(["-o", "link"])).stdout;
    assert!(
        !links.contains("cni0") && !links.contains("tws0"),
        "links left: {links}"
    );
    let rules = run(Command::new("iptables-save").arg("-t").arg("nat")).stdout;
    assert!(
        !rules.contains("KUBE-") && !rules.contains("CNI-"),
        "iptables left: {rules}"
    );
    assert!(!state_dir().exists(), "state dir left");
    let ps = run(Command::new("ps").args(["-eo", "args"])).stdout;
    for daemon in [
        "kube-apiserver",
        "kubelet",
        "containerd-shim",
        "etcd --name tether",
    ] {
        assert!(!ps.contains(daemon), "{daemon} still running");
    }
}

fn up_refuses_a_taken_port() {
    let _holder = TcpListener::bind("0.0.0.0:6443").expect("bind 6443 (cluster must be down)");
    let r = cluster("up");
    assert!(!r.ok, "up must fail while 6443 is taken");
    assert!(
        r.stderr.contains("port 6443") && r.stderr.contains("kube-apiserver"),
        "the error names the port and its user: {}",
        r.stderr
    );
    cluster("check-clean").expect_ok("a refused up changes nothing");
}

fn up_refuses_a_broken_cache() {
    let cache = std::env::temp_dir().join(format!("tether-broken-cache-{}", std::process::id()));
    let bin = cache.join("kubernetes-1.20.2/bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for b in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
    ] {
        std::fs::write(bin.join(b), b"truncated").expect("write");
    }
    let r = run(Command::new("bash")
        .arg(repo().join("xtask/scripts/cluster.sh"))
        .arg("up")
        .env("TETHER_CACHE", &cache));
    let _ = std::fs::remove_dir_all(&cache);
    assert!(!r.ok, "up must fail with a broken cache");
    assert!(
        r.stderr.contains("kube-apiserver") && r.stderr.contains("broken"),
        "the error names the broken binary: {}",
        r.stderr
    );
    cluster("check-clean").expect_ok("a refused up changes nothing");
}
