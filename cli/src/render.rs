//! What the CLI prints, as pure functions: a report in, the exact text out, final newline
//! included, for `-o text` and for `-o json|yaml`. Nothing here prints or asks anything; the
//! commands `print!` (or `eprint!`) what these return.

use std::{fmt::Write as _, path::Path};

use serde::Serialize;
use tether_daemon::control::{ActiveIntercept, InterceptReport, ListReport, StatusReport};
use tether_kube::{
    install::Manifest,
    workload::env::{EnvSyntax, Skipped},
};
use tether_proto::stats::MirrorCounts;
use tether_proto::InterceptMode;

use crate::args::{ManifestFormat, Output};

/// `value` as `-o json` (pretty, one final newline) or `-o yaml` prints it; `-o text` is
/// `text(value)`.
pub fn report<T: Serialize>(
    output: Output,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<String> {
    Ok(match output {
        Output::Text => text(value),
        Output::Json => serde_json::to_string_pretty(value)? + "\n",
        Output::Yaml => serde_yaml::to_string(value)?,
    })
}

/// One step of a long operation, on stderr while it runs.
pub fn progress(stage: &str) -> String {
    format!("  {stage}…\n")
}

/// `tether status`: the session, or that there is none (no daemon: pid 0).
pub fn status(report: &StatusReport) -> String {
    if report.daemon_pid == 0 {
        return "Not connected.\n".to_owned();
    }
    let state = if report.connected {
        "connected"
    } else {
        "reconnecting"
    };
    let mut out = String::new();
    let _ = writeln!(out, "Status:      {state}");
    let _ = writeln!(
        out,
        "Cluster:     {} (context {})",
        report.cluster_server, report.context
    );
    let _ = writeln!(out, "Namespace:   {}", report.namespace);
    let _ = writeln!(
        out,
        "Transport:   {} via {}",
        report.transport, report.manager
    );
    let _ = writeln!(out, "Session:     {}", report.session_id);
    if let Some(c) = &report.carrier {
        let _ = writeln!(
            out,
            "Carrier:     RTT {:.1} ms, {:.2} % lost ({} of {} packets)",
            c.rtt_ms(),
            c.loss_percent(),
            c.lost_packets,
            c.sent_packets
        );
        if let (Some(local), Some(remote)) = (c.local, c.remote) {
            let _ = writeln!(out, "Path:        {local} → {remote}");
        }
    }
    let _ = writeln!(
        out,
        "DNS:         {} (cluster domain {})",
        report.dns_server, report.cluster_domain
    );
    let _ = writeln!(
        out,
        "Routes:      {} via {}",
        report.subnets.join(", "),
        report.tun_device
    );
    let _ = writeln!(out, "Reconnects:  {}", report.reconnects);
    let _ = writeln!(out, "Daemon pid:  {}", report.daemon_pid);
    if report.intercepts.is_empty() {
        out.push_str("Intercepts:  none\n");
    } else {
        out.push_str("Intercepts:\n");
        for i in &report.intercepts {
            let _ = writeln!(out, "  {}", describe(i));
            if i.mode == InterceptMode::Mirror {
                let _ = writeln!(out, "    {}", copies(i.copies));
            }
            if let Some(mount) = &i.mount {
                let _ = writeln!(
                    out,
                    "    volumes of pod {} under {}",
                    mount.pod,
                    mount.dir.display()
                );
            }
        }
    }
    out
}

/// `tether connect`, once the daemon is up.
pub fn connected(report: &StatusReport) -> String {
    format!(
        "Connected to {} (context {}) over {}; namespace {}.\n",
        report.cluster_server, report.context, report.transport, report.namespace
    )
}

/// What `tether quit` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quit {
    /// The daemon stopped.
    Disconnected,
    /// There was no daemon, and nothing to put back.
    NotConnected,
    /// There was no daemon, and what a crashed one left was put right: its resolver
    /// configuration restored, its FUSE mounts unmounted, its dead control socket removed.
    Repaired {
        resolver: bool,
        mounts: usize,
        socket: bool,
    },
}

/// `tether quit`.
pub fn quit(outcome: Quit) -> String {
    match outcome {
        Quit::Disconnected => "Disconnected.\n".to_owned(),
        Quit::NotConnected => "Not connected.\n".to_owned(),
        Quit::Repaired {
            resolver,
            mounts,
            socket,
        } => {
            let mut done = Vec::new();
            if resolver {
                done.push("restored the resolver configuration".to_owned());
            }
            match mounts {
                0 => {}
                1 => done.push("unmounted the FUSE mount".to_owned()),
                n => done.push(format!("unmounted the {n} FUSE mounts")),
            }
            if socket {
                done.push("removed the dead control socket".to_owned());
            }
            format!(
                "Not connected; {} a crashed daemon left.\n",
                done.join(" and ")
            )
        }
    }
}

/// `tether version`: this binary's and the protocol's.
pub fn version(cli: &str, protocol: impl std::fmt::Display) -> String {
    format!("tether {cli}\nprotocol {protocol}\n")
}

/// `tether version`, after [`version`]: the running daemon and its traffic manager, and a
/// warning for each that runs another tether than `cli`.
pub fn daemon_version(daemon: &StatusReport, cli: &str) -> String {
    let mut out = format!(
        "daemon pid {} (connected to {})\n",
        daemon.daemon_pid, daemon.cluster_server
    );
    let versions = [
        (
            "daemon",
            &daemon.daemon_version,
            "`tether quit` and connect again",
        ),
        (
            "traffic manager",
            &daemon.manager_version,
            "`tether install` installs this version's",
        ),
    ];
    for (what, version, fix) in versions {
        if version.is_empty() {
            continue;
        }
        out.push_str(&format!("{what} {version}\n"));
        if version != cli {
            out.push_str(&format!(
                "warning: the {what} runs tether {version} and this is tether {cli}: {fix}\n"
            ));
        }
    }
    out
}

/// The agents of the connected namespace and their images, with a warning for each whose tag
/// is a version other than `cli`'s. A tag that is no version (a digest-like build tag, as the
/// local cluster's, or none) is shown and not judged.
pub fn agent_versions(list: &ListReport, cli: &str) -> String {
    let mut out = String::new();
    for row in &list.workloads {
        let Some(image) = &row.agent_image else {
            continue;
        };
        let workload = format!("{}/{}", row.kind.to_lowercase(), row.name);
        let _ = writeln!(out, "agent {workload} in {}: {image}", list.namespace);
        if let Some(version) = tether_kube::image::tag_version(image).filter(|v| *v != cli) {
            // As the tag spells it (`v1.1.0`), which is what the user sees in the image.
            let tag = image.rsplit_once(':').map_or(version, |(_, t)| t);
            let _ = writeln!(
                out,
                "warning: the agent of {workload} runs tether {tag} and this is tether {cli}: \
                 `tether uninstall {workload} -n {}` removes it; the next intercept injects \
                 the traffic manager's agent",
                list.namespace
            );
        }
    }
    out
}

/// `-n` names a namespace other than the connected one, where intercepts are made and listed.
pub fn other_namespace(connected: &str, wanted: &str) -> String {
    format!(
        "connected to namespace {connected}, not {wanted}: intercepts are made and listed in the \
         connected namespace; to work in {wanted}, `tether quit` then `tether connect -n {wanted}`"
    )
}

/// One line describing an intercept (no newline: it goes inside other lines). A mirror says so:
/// `copy: Deployment/orders orders:http → 127.0.0.1:8080 (mirror of all traffic)`.
pub fn describe(i: &ActiveIntercept) -> String {
    let mirror = match i.mode {
        InterceptMode::Take => "",
        InterceptMode::Mirror => "mirror of ",
        InterceptMode::Replace => "replacing the container, ",
    };
    format!(
        "{}: {} {} → {} ({mirror}{})",
        i.name,
        i.workload,
        i.service_port,
        i.local,
        filter_text(&i.headers, i.path_prefix.as_deref())
    )
}

/// A mirror's copies in words: `copies: 12 sent, 3 dropped`.
pub fn copies(counts: Option<MirrorCounts>) -> String {
    match counts {
        Some(c) => format!("copies: {} sent, {} dropped", c.sent, c.dropped),
        None => "copies: none reported yet".to_owned(),
    }
}

/// The requests an intercept takes, in words.
pub fn filter_text(headers: &[String], path_prefix: Option<&str>) -> String {
    let mut parts: Vec<String> = headers.iter().map(|h| format!("header {h}")).collect();
    if let Some(p) = path_prefix {
        parts.push(format!("path {p}"));
    }
    if parts.is_empty() {
        "all traffic".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `tether intercept -o text` on stdout; `env_file` is where the environment was written.
pub fn intercepted(report: &InterceptReport, env_file: Option<&Path>) -> String {
    let i = &report.intercept;
    let verb = match i.mode {
        InterceptMode::Take => "Intercepting",
        InterceptMode::Mirror => "Mirroring",
        InterceptMode::Replace => "Replacing",
    };
    let mut out = format!(
        "{verb} {}\n  pods: {}\n",
        describe(i),
        report.pods.join(", ")
    );
    if i.mode == InterceptMode::Replace {
        let _ = writeln!(
            out,
            "  container {} no longer runs in the cluster: every request goes to {}; `tether \
             leave {}` puts it back",
            i.container, i.local, i.name
        );
        out.push_str(&other_ports(i));
    }
    if i.mode == InterceptMode::Mirror {
        let _ = writeln!(
            out,
            "  the app still answers every caller; a copy of each request goes to {} and its \
             answer is discarded",
            i.local
        );
    }
    if let Some(path) = env_file {
        let _ = writeln!(out, "  environment: {}", path.display());
    }
    if let Some(pod) = &report.intercept.to_pod_target {
        for port in &report.intercept.to_pod {
            let _ = writeln!(out, "  127.0.0.1:{port} reaches port {port} of pod {pod}");
        }
    }
    if let Some(mount) = &report.intercept.mount {
        out.push_str(&mounted(mount));
    }
    out
}

/// A replace's other ports: where each goes, or how to take one that is not taken.
fn other_ports(i: &ActiveIntercept) -> String {
    let mut out = String::new();
    for p in &i.other_ports {
        let port = p.app_port;
        match (&p.intercept, p.local, &p.why) {
            (Some(taken), Some(local), _) => {
                let _ = writeln!(
                    out,
                    "  {} (container port {port}) goes to 127.0.0.1:{local} too (intercept \
                     {taken}, ending with {})",
                    p.service_port, i.name
                );
            }
            (_, _, Some(why)) => {
                let _ = writeln!(
                    out,
                    "  {} (container port {port}) is not taken: {why}",
                    p.service_port
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "  {} (container port {port}) is not taken (nothing of the app answers it \
                     now): `--also-port {port}` or `--also-port LOCAL:{port}` takes it here",
                    p.service_port
                );
            }
        }
    }
    out
}

/// Where `--mount` put the container's volumes.
fn mounted(mount: &tether_daemon::control::MountInfo) -> String {
    let dir = mount.dir.display();
    let volumes = match mount.volumes.as_slice() {
        [] => "none".to_owned(),
        volumes => volumes
            .iter()
            .map(|v| format!("{dir}{v}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!(
        "  volumes of pod {} under {dir} (TETHER_ROOT): {volumes}\n",
        mount.pod
    )
}

/// `--mount` failed; the intercept goes on (stderr).
pub fn mount_failed(error: &str) -> String {
    format!("Warning: the container's volumes are not mounted: {error}\n")
}

/// `tether intercept` without a connection, before it connects (stderr).
pub fn connecting_first() -> &'static str {
    "Not connected: connecting first.\n"
}

/// Why `tether intercept` did nothing when connecting first failed.
pub fn connect_first_failed() -> &'static str {
    "not connected, and connecting first failed, so nothing was intercepted; this machine is as \
     it was"
}

/// After a refused intercept, the connection `tether intercept` made for it has ended.
pub fn disconnected_again() -> &'static str {
    "the intercept was refused; the connection this command made for it has ended, so this \
     machine is as it was"
}

/// `tether intercept -o text` on stderr, before [`intercepted`]: whether it installed the agent.
pub fn installed_agent(report: &InterceptReport) -> String {
    if report.installed_agent {
        format!(
            "Installed the traffic agent in {}.\n",
            report.intercept.workload
        )
    } else {
        String::new()
    }
}

/// A variable the env file could not hold (stderr).
pub fn env_skipped(skipped: &Skipped, syntax: EnvSyntax) -> String {
    format!("warning: {skipped} cannot be written in {syntax:?} syntax; left out\n")
}

/// How leaving went after `tether intercept -- CMD` (stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Left,
    Refused(String),
    NoDaemon,
}

/// `tether intercept -- CMD`, after CMD exited and the intercept was left (stderr).
pub fn intercept_ended(name: &str, ended: &Ended) -> String {
    match ended {
        Ended::Left => format!("Intercept {name} ended.\n"),
        Ended::Refused(error) => format!("warning: leaving {name}: {error}\n"),
        Ended::NoDaemon => {
            "warning: the daemon is gone; the intercept ends with its session\n".to_owned()
        }
    }
}

/// `tether leave -o text`.
pub fn left(intercept: &ActiveIntercept) -> String {
    format!("Ended {}\n", describe(intercept))
}

/// `tether list -o text`: one line per workload, one more per intercept on it.
pub fn list(report: &ListReport) -> String {
    let mut out = String::new();
    if report.workloads.is_empty() {
        let _ = writeln!(out, "No workloads in namespace {}.", report.namespace);
    }
    for w in &report.workloads {
        let agent = if w.agent_installed {
            format!(
                "agent installed ({} of {} pods linked)",
                w.agent_pods.len(),
                w.ready
            )
        } else {
            "no agent".to_owned()
        };
        let _ = writeln!(
            out,
            "{}/{}  {}/{} ready  {agent}",
            w.kind, w.name, w.ready, w.replicas
        );
        for i in &w.intercepts {
            let kind = match i.mode {
                InterceptMode::Take => "intercept",
                InterceptMode::Mirror => "mirror",
                InterceptMode::Replace => "replace",
            };
            let _ = writeln!(
                out,
                "  {kind} {} on port {} by {}: {}",
                i.name,
                i.service_port,
                i.owner,
                filter_text(&i.filter.headers, i.filter.path_prefix.as_deref())
            );
        }
    }
    out
}

/// `tether uninstall -o text` for workloads: those restored, in `namespace`.
pub fn uninstalled(namespace: &str, restored: &[String]) -> String {
    if restored.is_empty() {
        return format!("No traffic agent to remove in namespace {namespace}.\n");
    }
    restored
        .iter()
        .map(|w| format!("Removed the traffic agent from {w}; it is as it was before.\n"))
        .collect()
}

/// The manifests as `kubectl apply -f -` reads them (`tether install --dry-run`).
pub fn manifests(manifests: &[Manifest], format: ManifestFormat) -> anyhow::Result<String> {
    let objects: Vec<_> = manifests.iter().map(|m| &m.object).collect();
    Ok(match format {
        ManifestFormat::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
            serde_json::to_string_pretty(&list)? + "\n"
        }
        ManifestFormat::Yaml => {
            let mut out = String::new();
            for object in objects {
                out.push_str("---\n");
                out.push_str(&serde_yaml::to_string(object)?);
            }
            out
        }
    })
}

/// `tether install`, before it applies the manifests.
pub fn installing(image: &str, server: &str) -> String {
    format!("Installing the traffic manager ({image}) in {server}…\n")
}

/// `tether install`, once the manager is ready.
pub fn installed(namespace: &str) -> String {
    format!("Traffic manager installed in namespace {namespace}.\n")
}

/// `tether uninstall --manager`.
pub fn manager_removed() -> String {
    "Traffic manager removed.\n".to_owned()
}

/// `tether man DIR`, once the pages are written.
pub fn man_written(dir: &Path) -> String {
    format!("Man pages written to {}\n", dir.display())
}

/// `tether gather-logs`: something it could not include (stderr).
pub fn not_gathered(note: &str) -> String {
    format!("  not gathered: {note}\n")
}

/// `tether gather-logs`, once the archive is written.
pub fn gathered(path: &Path, files: usize) -> String {
    format!(
        "Wrote {} ({files} files; secrets redacted). Attach it to your bug report.\n",
        path.display()
    )
}

#[cfg(test)]
mod tests;
