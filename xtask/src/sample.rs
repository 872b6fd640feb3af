//! The sample app (`deploy/sample`), deployed with the locally built image.

use std::{io::Write, process::Stdio};

use anyhow::Context;

use crate::cluster;

/// Applies the sample manifests and waits for the rollout.
pub fn deploy() -> anyhow::Result<()> {
    let images = cluster::images()?;
    let image = images
        .get("TESTAPP_IMAGE")
        .context("no TESTAPP_IMAGE recorded; run `cargo xtask images`")?;
    let manifest = std::fs::read_to_string(cluster::repo().join("deploy/sample/hello.yaml"))?
        .replace("${TESTAPP_IMAGE}", image);
    let mut child = cluster::kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("running kubectl")?;
    child
        .stdin
        .take()
        .context("kubectl stdin")?
        .write_all(manifest.as_bytes())?;
    anyhow::ensure!(
        child.wait()?.success(),
        "kubectl apply of the sample app failed"
    );
    cluster::run(cluster::kubectl().args([
        "rollout",
        "status",
        "deployment/hello",
        "--timeout=120s",
    ]))?;
    Ok(())
}
