//! `tether gather-logs`: one `.tar.gz` with what a bug report needs: the daemon's and helper's
//! logs, the manager's and agents' logs (current and previous containers), Warning events of the
//! tether namespace and of the intercepted workloads' namespaces, `doctor -o json`, versions and
//! the nodes with their conditions. Every text passes the [`Redactor`] first, which also knows
//! the values of the Secrets in those namespaces when the user may read them; Secret objects
//! themselves are never fetched into the archive.
//!
//! # Layout
//! - [`window`]: the `--since` window (sans-IO).

pub mod window;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use k8s_openapi::{
    api::core::v1::{Event, Node, Pod, Secret},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    api::{ListParams, LogParams},
    Api, Client,
};
use serde::Serialize;
use tether_daemon::{
    cluster::{Cluster, MANAGER_SELECTOR, MANAGER_SERVICE},
    control,
    privileged::runtime_dir,
};
use tether_kube::names::AGENT_CONTAINER;

use crate::{
    archive::{zip::Zip, Archive, ArchiveError},
    manager,
    redact::{self, Redactor},
    run::{self, kube::within},
};

/// The top folder inside the archive.
pub const TOP: &str = "tether-logs";
/// The most of one log that goes in.
pub const MAX_LOG_BYTES: usize = 8 << 20;

/// `tether-logs-20250101T100000Z.tar.gz`, in the current directory.
pub fn default_archive_name() -> PathBuf {
    format!(
        "tether-logs-{}.tar.gz",
        Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
    )
    .into()
}

/// What to gather.
#[derive(Debug, Clone)]
pub struct GatherOptions {
    /// Also the namespace, cluster and timeouts to use.
    pub doctor: run::Options,
    pub since: Duration,
    pub output: PathBuf,
}

/// What went into the archive.
#[derive(Debug, Clone)]
pub struct Gathered {
    pub path: PathBuf,
    pub files: Vec<String>,
    /// What could not be gathered, and why.
    pub notes: Vec<String>,
}

/// Why there is no archive.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// Writing the archive failed.
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An entry did not fit the archive format.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The output's name says no archive format we write.
    #[error("{0}")]
    Output(String),
}

/// The archive's format, from the output file's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.tar.gz` or `.tgz`.
    TarGz,
    /// `.zip`.
    Zip,
}

impl Format {
    /// The format `path`'s name asks for (its ending, in any case).
    pub fn of(path: &Path) -> Result<Format, String> {
        // `logs.zip/` names a directory, though its last component reads `logs.zip`.
        let dir = path.as_os_str().to_string_lossy().ends_with('/');
        let name = path
            .file_name()
            .filter(|_| !dir)
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if name.ends_with(".zip") && name.len() > 4 {
            Ok(Format::Zip)
        } else if (name.ends_with(".tar.gz") && name.len() > 7)
            || (name.ends_with(".tgz") && name.len() > 4)
        {
            Ok(Format::TarGz)
        } else {
            Err(format!(
                "cannot tell the archive format of {:?}: name it *.tar.gz, *.tgz or *.zip",
                path.display().to_string()
            ))
        }
    }
}

/// `gather-logs -o FILE`, checked before anything is gathered.
pub fn parse_output(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    Format::of(&path)?;
    Ok(path)
}

/// The texts gathered so far, and what could not be.
#[derive(Debug, Default)]
struct Collection {
    files: Vec<(String, String)>,
    notes: Vec<String>,
    secret_values: Vec<Vec<u8>>,
}

impl Collection {
    fn add(&mut self, path: impl Into<String>, text: impl Into<String>) {
        self.files.push((path.into(), text.into()));
    }
}

/// Gathers everything and writes the archive; `progress` hears each step.
pub async fn gather(
    opts: &GatherOptions,
    progress: &dyn Fn(&str),
) -> Result<Gathered, GatherError> {
    let mut c = Collection::default();
    let since = Timestamp::now() - SignedDuration::try_from(opts.since).unwrap_or_default();

    progress("running tether doctor");
    let report = run::doctor(&opts.doctor).await;
    c.add("doctor.json", to_json(&report));
    c.add("doctor.txt", report.to_text());

    progress("reading the daemon's and helper's logs");
    local_logs(&mut c, since);
    if let Some(status) = &opts.doctor.daemon {
        c.add("workstation/status.json", to_json(status));
    }

    let limit = opts.doctor.timeout;
    let loaded = tokio::time::timeout(
        limit,
        Cluster::load(opts.doctor.kubeconfig.clone(), opts.doctor.context.clone()),
    )
    .await;
    match loaded {
        Ok(Ok(cluster)) => cluster_logs(&mut c, &cluster.client, opts, progress).await,
        Ok(Err(e)) => c
            .notes
            .push(format!("cluster: {}", tether_proto::error_chain(&e))),
        Err(_) => c
            .notes
            .push("cluster: loading the kubeconfig timed out".into()),
    }

    progress(&format!(
        "redacting and writing the archive ({})",
        plural(c.files.len() + 1, "file")
    ));
    let redactor = Redactor::new().with_values(&c.secret_values);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut readme = format!(
        "tether gather-logs, tether {}, {} (window: the last {} s)\n\
         Redacted: private keys, bearer tokens, JWTs, token/password-like settings, and {} known \
         Secret values. No Secret object is included.\n",
        opts.doctor.cli_version,
        Timestamp::now(),
        opts.since.as_secs(),
        redactor.known_values()
    );
    if !c.notes.is_empty() {
        readme.push_str("\nNot gathered:\n");
        for note in &c.notes {
            readme.push_str(&format!("- {note}\n"));
        }
    }
    let mut entries = vec![(format!("{TOP}/README.txt"), redactor.redact(&readme))];
    for (path, text) in &c.files {
        entries.push((format!("{TOP}/{path}"), redactor.redact(text)));
    }
    let bytes = match Format::of(&opts.output).map_err(GatherError::Output)? {
        Format::TarGz => {
            let mut archive = Archive::new();
            for (path, text) in &entries {
                archive.add(path, text.as_bytes(), now)?;
            }
            archive.finish(now)
        }
        Format::Zip => {
            let mut archive = Zip::new();
            for (path, text) in &entries {
                archive.add(path, text.as_bytes(), now)?;
            }
            archive.finish()?
        }
    };
    let files = entries.into_iter().map(|(path, _)| path).collect();
    write_private(&opts.output, &bytes).map_err(|source| GatherError::Write {
        path: opts.output.clone(),
        source,
    })?;
    Ok(Gathered {
        path: opts.output.clone(),
        files,
        notes: c.notes,
    })
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// Creates `path` readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

fn local_logs(c: &mut Collection, since: Timestamp) {
    let runtime = control::runtime_dir();
    for (name, path) in [
        ("daemon.log", control::log_path(&runtime)),
        ("helper.log", runtime_dir::helper_log_path(&runtime)),
    ] {
        match std::fs::read(&path) {
            Ok(bytes) => c.add(
                format!("workstation/{name}"),
                window::cut(&String::from_utf8_lossy(&bytes), since, MAX_LOG_BYTES),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => c.notes.push(format!(
                "{}: only root may read it (run `sudo tether gather-logs`)",
                path.display()
            )),
            Err(e) => c.notes.push(format!("{}: {e}", path.display())),
        }
    }
}

/// The namespaces whose events, agents and Secrets count: tether's, the one asked about, and
/// those of the workstation's intercepts.
fn namespaces(opts: &run::Options) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = [opts.manager_namespace.clone(), opts.namespace.clone()].into();
    if let Some(status) = &opts.daemon {
        set.extend(status.intercepts.iter().map(|i| i.namespace.clone()));
    }
    set
}

async fn cluster_logs(
    c: &mut Collection,
    client: &Client,
    opts: &GatherOptions,
    progress: &dyn Fn(&str),
) {
    let limit = opts.doctor.timeout;
    let namespaces = namespaces(&opts.doctor);

    progress("reading versions and nodes");
    let mut versions = format!(
        "tether {}\nprotocol {}\n",
        opts.doctor.cli_version,
        tether_daemon::PROTOCOL_VERSION
    );
    match within(limit, client.apiserver_version()).await {
        Ok(v) => versions.push_str(&format!("server {} ({})\n", v.git_version, v.platform)),
        Err(e) => c.notes.push(e.reason("read the server version")),
    }
    let nodes: Api<Node> = Api::all(client.clone());
    match within(limit, nodes.list(&ListParams::default())).await {
        Ok(list) => {
            for n in &list.items {
                let info = n.status.as_ref().and_then(|s| s.node_info.as_ref());
                versions.push_str(&format!(
                    "node {}: kubelet {}, runtime {}, kernel {}, os {}\n",
                    n.metadata.name.as_deref().unwrap_or_default(),
                    info.map_or("?", |i| i.kubelet_version.as_str()),
                    info.map_or("?", |i| i.container_runtime_version.as_str()),
                    info.map_or("?", |i| i.kernel_version.as_str()),
                    info.map_or("?", |i| i.os_image.as_str()),
                ));
            }
            c.add("nodes.yaml", nodes_yaml(&list.items));
        }
        Err(e) => c.notes.push(e.reason("list nodes")),
    }
    let manager_deploy: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &opts.doctor.manager_namespace);
    if let Ok(Some(d)) = within(limit, manager_deploy.get_opt(MANAGER_SERVICE)).await {
        versions.push_str(&format!(
            "manager image {}\n",
            manager::image_of(&d).unwrap_or_default()
        ));
    }
    c.add("versions.txt", versions);

    progress(&format!(
        "reading Warning events of {}",
        plural(namespaces.len(), "namespace")
    ));
    for ns in &namespaces {
        let events: Api<Event> = Api::namespaced(client.clone(), ns);
        match within(
            limit,
            events.list(&ListParams::default().fields("type=Warning")),
        )
        .await
        {
            Ok(list) => c.add(format!("events/{ns}.txt"), events_text(&list.items)),
            Err(e) => c
                .notes
                .push(e.reason(&format!("list events in namespace {ns}"))),
        }
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), &opts.doctor.manager_namespace);
    match within(
        limit,
        pods.list(&ListParams::default().labels(MANAGER_SELECTOR)),
    )
    .await
    {
        Ok(list) => {
            progress(&format!(
                "reading the traffic manager's logs ({})",
                plural(list.items.len(), "pod")
            ));
            for pod in &list.items {
                pod_logs(c, client, opts, pod, manager::CONTAINER, "manager").await;
            }
        }
        Err(e) => c.notes.push(e.reason("list the manager's pods")),
    }

    for ns in namespaces
        .iter()
        .filter(|ns| **ns != opts.doctor.manager_namespace)
    {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        match within(limit, pods.list(&ListParams::default())).await {
            Ok(list) => {
                let with_agent: Vec<&Pod> = list
                    .items
                    .iter()
                    .filter(|p| {
                        p.spec
                            .as_ref()
                            .is_some_and(|s| s.containers.iter().any(|c| c.name == AGENT_CONTAINER))
                    })
                    .collect();
                progress(&format!(
                    "reading the agents' logs in namespace {ns} ({})",
                    plural(with_agent.len(), "pod")
                ));
                for pod in with_agent {
                    pod_logs(
                        c,
                        client,
                        opts,
                        pod,
                        AGENT_CONTAINER,
                        &format!("agents/{ns}"),
                    )
                    .await;
                }
            }
            Err(e) => c
                .notes
                .push(e.reason(&format!("list pods in namespace {ns}"))),
        }
    }

    progress(&format!(
        "reading Secret values to redact in {}",
        plural(namespaces.len(), "namespace")
    ));
    for ns in &namespaces {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        match within(limit, secrets.list(&ListParams::default())).await {
            Ok(list) => {
                for s in &list.items {
                    let data = s.data.iter().flatten().map(|(k, v)| (k, v.0.as_slice()));
                    let strings = s
                        .string_data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k, v.as_bytes()));
                    c.secret_values
                        .extend(redact::secret_values(data.chain(strings)));
                }
            }
            Err(e) => c.notes.push(format!(
                "{} (their values are not searched for; pattern-based redaction still applies)",
                e.reason(&format!("list Secrets in namespace {ns}"))
            )),
        }
    }
}

/// `1 pod`, `2 pods`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The current and previous logs of `container` in `pod`, as `<folder>/<pod>[.previous].log`.
async fn pod_logs(
    c: &mut Collection,
    client: &Client,
    opts: &GatherOptions,
    pod: &Pod,
    container: &str,
    folder: &str,
) {
    let Some(name) = pod.metadata.name.as_deref() else {
        return;
    };
    let ns = pod
        .metadata
        .namespace
        .as_deref()
        .unwrap_or(&opts.doctor.manager_namespace);
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let restarted =
        crate::containers::status_of(pod, container).is_some_and(|s| s.restart_count > 0);
    for previous in [false, true] {
        if previous && !restarted {
            continue;
        }
        let params = LogParams {
            container: Some(container.to_owned()),
            previous,
            // What killed the previous container matters whenever it happened.
            since_seconds: (!previous).then_some(opts.since.as_secs() as i64),
            limit_bytes: Some(MAX_LOG_BYTES as i64),
            timestamps: true,
            ..Default::default()
        };
        let suffix = if previous { ".previous" } else { "" };
        match within(opts.doctor.timeout, api.logs(name, &params)).await {
            Ok(text) => c.add(format!("{folder}/{name}{suffix}.log"), text),
            Err(e) => c.notes.push(e.reason(&format!(
                "read the logs of {container} in pod {ns}/{name}{suffix}"
            ))),
        }
    }
}

/// Warning events, oldest first: `time reason kind/name: message (×count)`.
fn events_text(events: &[Event]) -> String {
    let mut rows: Vec<(Option<Timestamp>, String)> = events
        .iter()
        .map(|e| {
            let o = &e.involved_object;
            (
                manager::event_time(e),
                format!(
                    "{} {}/{}: {}{}",
                    e.reason.as_deref().unwrap_or_default(),
                    o.kind.as_deref().unwrap_or_default(),
                    o.name.as_deref().unwrap_or_default(),
                    e.message.as_deref().unwrap_or_default().trim(),
                    e.count
                        .filter(|n| *n > 1)
                        .map(|n| format!(" (×{n})"))
                        .unwrap_or_default()
                ),
            )
        })
        .collect();
    rows.sort_by_key(|(t, _)| *t);
    let mut out = String::new();
    for (t, row) in rows {
        let t = t.map_or("?".into(), |t| t.to_string());
        out.push_str(&format!("{t} {row}\n"));
    }
    if out.is_empty() {
        out.push_str("(no Warning events)\n");
    }
    out
}

/// Nodes with their conditions, capacity and versions (not the whole objects).
fn nodes_yaml(nodes: &[Node]) -> String {
    let summary: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| {
            let status = n.status.as_ref();
            serde_json::json!({
                "name": n.metadata.name,
                "unschedulable": n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
                "kubelet": status.and_then(|s| s.node_info.as_ref()).map(|i| &i.kubelet_version),
                "conditions": status.and_then(|s| s.conditions.as_ref()).map(|cs| cs.iter().map(|c| serde_json::json!({
                    "type": c.type_, "status": c.status, "reason": c.reason, "message": c.message,
                    "lastTransitionTime": c.last_transition_time.as_ref().map(|t| t.0.to_string()),
                })).collect::<Vec<_>>()),
                "allocatable": status.and_then(|s| s.allocatable.as_ref()),
                "capacity": status.and_then(|s| s.capacity.as_ref()),
            })
        })
        .collect();
    serde_yaml::to_string(&summary).unwrap_or_default()
}

#[cfg(test)]
mod tests;
