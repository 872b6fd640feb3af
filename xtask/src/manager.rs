//! Builds the `tether` CLI and installs the traffic manager with the locally built image.

use std::{path::PathBuf, process::Command};

use anyhow::Context;

use crate::cluster;

/// The release `tether` binary.
pub fn tether_bin() -> PathBuf {
    cluster::repo().join("target/release/tether")
}

/// Builds the CLI with the same package set as `images.sh`, so that both share one build (the
/// same set unifies features the same way; a different set would rebuild shared crates).
pub fn build_cli() -> anyhow::Result<()> {
    let status = cluster::cargo()
        .args([
            "build",
            "--release",
            "-p",
            "tether-agent",
            "-p",
            "tether-testapp",
            "-p",
            "tether-cli",
        ])
        .status()
        .context("running cargo")?;
    anyhow::ensure!(status.success(), "building the tether CLI failed");
    Ok(())
}

/// Where `cargo xtask test` installs the CLI the way the README tells users to.
pub fn installed_tether_bin() -> PathBuf {
    cluster::repo().join("target/e2e-install/bin/tether")
}

/// `cargo install --path cli`, as the README says, into `target/e2e-install`: the end-to-end
/// tests run that binary. It shares `target/` with [`build_cli`], so it costs a copy.
pub fn install_cli() -> anyhow::Result<()> {
    let repo = cluster::repo();
    let status = cluster::cargo()
        .current_dir(&repo)
        .args(["install", "--locked", "--path", "cli", "--root"])
        .arg(repo.join("target/e2e-install"))
        .arg("--target-dir")
        .arg(repo.join("target"))
        .status()
        .context("running cargo install")?;
    anyhow::ensure!(status.success(), "cargo install --path cli failed");
    let out = Command::new(installed_tether_bin())
        .arg("--version")
        .output()
        .context("running the installed tether")?;
    anyhow::ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("tether "),
        "the installed tether does not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `tether install --image <local agent image>`.
pub fn install() -> anyhow::Result<()> {
    let images = cluster::images()?;
    let image = images
        .get("TETHER_AGENT_IMAGE")
        .context("no TETHER_AGENT_IMAGE recorded; run `cargo xtask images`")?;
    let status = Command::new(tether_bin())
        .args(["install", "--image", image, "--kubeconfig"])
        .arg(cluster::kubeconfig())
        .status()
        .context("running tether install")?;
    anyhow::ensure!(status.success(), "tether install failed");
    Ok(())
}
