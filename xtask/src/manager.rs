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
