//! The sample app (`deploy/sample`), deployed with the locally built image.

use std::{
    io::Write,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::cluster;

/// Applies the sample manifests (`hello`, the intercept tests' workloads, and `files` for
/// `--mount`) and waits for the
/// rollouts.
pub fn deploy() -> anyhow::Result<()> {
    remove_leftover_agents()?;
    apply("hello.yaml")?;
    apply("intercept.yaml")?;
    apply("files.yaml")?;
    for workload in [
        "deployment/hello",
        "deployment/orders",
        "deployment/lonely",
        "deployment/client",
        "deployment/duo",
        "deployment/duo-b",
        "deployment/files",
        "deployment/worker",
        "statefulset/inventory",
    ] {
        cluster::run(cluster::kubectl().args(["rollout", "status", workload, "--timeout=120s"]))?;
    }
    replica_set_ready("legacy", Duration::from_secs(120))
}

/// Waits until every replica of a bare ReplicaSet is ready (it has no rollout status, and
/// waiting on its pods by label would also wait on pods still terminating from an earlier run).
fn replica_set_ready(name: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let out = cluster::run(cluster::kubectl().args([
            "get",
            "replicaset",
            name,
            "-o",
            "jsonpath={.spec.replicas} {.status.readyReplicas}",
        ]))?;
        let mut counts = out.split_whitespace();
        if let (Some(want), Some(ready)) = (counts.next(), counts.next()) {
            if want == ready {
                return Ok(());
            }
        }
        anyhow::ensure!(
            start.elapsed() < timeout,
            "ReplicaSet {name} not ready within {timeout:?} (replicas, ready: {out:?})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A kept cluster may still have traffic agents from an earlier run. Re-applying the manifests
/// over them would put the app's port names back next to the agent (a half-restored template),
/// so those workloads are deleted first and come back from the manifests.
fn remove_leftover_agents() -> anyhow::Result<()> {
    let out = cluster::run(cluster::kubectl().args([
        "get",
        "deployments,statefulsets,replicasets",
        "-o",
        r#"jsonpath={range .items[*]}{.kind}/{.metadata.name} {.metadata.ownerReferences[0].kind} {.metadata.annotations.tether\.dev/agent}{"\n"}{end}"#,
    ]))?;
    for line in out.lines() {
        let mut fields = line.splitn(3, ' ');
        let (Some(object), Some(owner), Some(agent)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        // ReplicaSets of a Deployment carry a copy of its annotation; the Deployment is enough.
        if owner.is_empty() && !agent.trim().is_empty() {
            // Foreground: the pods go before the object, so none of them outlives it.
            cluster::run(cluster::kubectl().args([
                "delete",
                object,
                "--cascade=foreground",
                "--wait=true",
            ]))?;
        }
    }
    Ok(())
}

fn apply(file: &str) -> anyhow::Result<()> {
    let images = cluster::images()?;
    let image = images
        .get("TESTAPP_IMAGE")
        .context("no TESTAPP_IMAGE recorded; run `cargo xtask images`")?;
    let manifest = std::fs::read_to_string(cluster::repo().join("deploy/sample").join(file))?
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
        "kubectl apply of deploy/sample/{file} failed"
    );
    Ok(())
}

/// A running pod of the sample app.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub ip: std::net::IpAddr,
}

/// The sample app's running pods that are not being deleted (a rollout leaves old pods
/// `Running` while they terminate), sorted by name.
pub fn running_pods() -> anyhow::Result<Vec<Pod>> {
    let out = cluster::run(cluster::kubectl().args([
        "--request-timeout=10s",
        "get",
        "pods",
        "-l",
        "app=hello",
        "--field-selector=status.phase=Running",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ]))?;
    let mut pods: Vec<Pod> = out
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (name, ip) = (f.next()?, f.next()?.parse().ok()?);
            // A third field is a deletion timestamp.
            f.next().is_none().then(|| Pod {
                name: name.to_owned(),
                ip,
            })
        })
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pods)
}
