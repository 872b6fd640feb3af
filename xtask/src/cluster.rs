//! The local cluster's scripts and the state they leave for others to read.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

/// The repository root (xtask lives one level below it).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where the running cluster keeps its state (see `scripts/lib.sh`).
pub fn state_dir() -> PathBuf {
    std::env::var_os("TETHER_CLUSTER_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/tether-cluster"))
}

pub fn kubeconfig() -> PathBuf {
    state_dir().join("admin.kubeconfig")
}

/// `cargo` for a nested build, without the per-package `CARGO_*` variables `cargo run` gave us:
/// passed on to build scripts they make ring (and everything above it) rebuild each time.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let per_package = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
        ]
        .iter()
        .any(|p| key.starts_with(p));
        if per_package {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.current_dir(repo());
    cmd
}

/// Runs one of `xtask/scripts/*.sh`, failing with its exit status.
pub fn script(name: &str, args: &[&str]) -> anyhow::Result<()> {
    let path = repo().join("xtask/scripts").join(name);
    let status = Command::new("bash")
        .arg(&path)
        .args(args)
        .status()
        .with_context(|| format!("running {}", path.display()))?;
    if !status.success() {
        bail!("{name} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The image references `images.sh` recorded, e.g. `TESTAPP_IMAGE`.
pub fn images() -> anyhow::Result<BTreeMap<String, String>> {
    let path = state_dir().join("images.env");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (run `cargo xtask cluster up`)", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// `kubectl` with the admin kubeconfig.
pub fn kubectl() -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig());
    cmd
}

/// Runs a command, failing with its output when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    checked(cmd, out)
}

/// The stdout of a finished command, or an error with everything it printed.
pub fn checked(cmd: &Command, out: std::process::Output) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
