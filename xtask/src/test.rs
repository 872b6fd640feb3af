//! `cargo xtask test`: every test, in the order that needs the least cluster time.
//!
//! 0. `cargo fmt --check` and clippy with warnings denied.
//! 1. Unit and integration tests of every crate (no cluster; the machine's packages installed
//!    first, as some drive iptables).
//! 2. The cluster comes up (built the first time) with fresh images; the sample app is deployed.
//! 3. End-to-end tests run against it from the workstation namespace.
//! 4. The lifecycle suite: recovery from a killed cluster, `down` leaving nothing behind, and the
//!    bad-input cases of `up`. It ends with the cluster down.

use std::time::Instant;

use anyhow::{bail, Context};

use crate::{cluster, manager, sample};

pub fn run(keep_cluster: bool) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut phases = Vec::new();

    let t = Instant::now();
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    phases.push(("fmt + clippy", t.elapsed()));

    let t = Instant::now();
    // The link emulator's tests drive iptables and NFQUEUE: the machine's packages first.
    cluster::script("cluster.sh", &["deps"])?;
    cargo(&["test", "--workspace", "--exclude", "tether-e2e"])?;
    phases.push(("unit and integration tests", t.elapsed()));

    let t = Instant::now();
    cluster::script("cluster.sh", &["up"])?;
    sample::deploy()?;
    phases.push(("cluster up + images + sample app", t.elapsed()));

    let t = Instant::now();
    manager::build_cli()?;
    manager::install_cli()?;
    manager::install()?;
    phases.push(("tether CLI + traffic manager install", t.elapsed()));

    let t = Instant::now();
    // The end-to-end tests run the CLI `cargo install --path cli` installed, as a user has it.
    cargo_with(
        &["test", "-p", "tether-e2e", "--", "--test-threads=1"],
        &[("TETHER_BIN", manager::installed_tether_bin())],
    )?;
    phases.push(("end-to-end tests", t.elapsed()));

    if !keep_cluster {
        let t = Instant::now();
        cargo(&[
            "test",
            "-p",
            "tether-e2e",
            "--test",
            "lifecycle",
            "--",
            "--ignored",
            "--nocapture",
        ])?;
        phases.push(("cluster lifecycle tests", t.elapsed()));
    }

    println!("\ntimings:");
    for (name, d) in &phases {
        println!("  {name:<36} {:>7.1}s", d.as_secs_f64());
    }
    println!("  {:<36} {:>7.1}s", "total", t0.elapsed().as_secs_f64());
    Ok(())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_with(args, &[])
}

fn cargo_with(args: &[&str], env: &[(&str, std::path::PathBuf)]) -> anyhow::Result<()> {
    let status = cluster::cargo()
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("KUBECONFIG", cluster::kubeconfig())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
