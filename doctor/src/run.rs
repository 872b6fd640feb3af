//! `tether doctor`'s I/O: gathers what the checks judge, each read with its own timeout and all
//! of them at once, so that a dead cluster costs one timeout, not one per check.

pub mod kube;
pub mod local;
pub mod probe;

use std::{path::PathBuf, time::Duration};

use k8s_openapi::jiff::Timestamp;
use tether_daemon::{
    cluster::Cluster,
    control::{runtime_dir, StatusReport},
};

use crate::{
    access, agents,
    check::{Check, Report},
    cluster::{self, ApiOutcome},
    manager, nodes, workstation,
};

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// The namespace whose agents and intercept rights are checked.
    pub namespace: String,
    /// Where the traffic manager runs.
    pub manager_namespace: String,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// The longest one read (or probe step) may take.
    pub timeout: Duration,
    /// The running daemon's status, if there is one (the CLI asks it).
    pub daemon: Option<StatusReport>,
    /// Agent pods the manager has linked in `namespace`, if the daemon said.
    pub linked: Option<Vec<String>>,
    /// The CLI's version, to compare the manager's with.
    pub cli_version: String,
}

/// Runs every check.
pub async fn doctor(opts: &Options) -> Report {
    let (mut checks, local) = tokio::join!(cluster_checks(opts), workstation_checks(opts));
    checks.extend(local);
    Report::new(checks)
}

async fn workstation_checks(opts: &Options) -> Vec<Check> {
    let runtime = runtime_dir();
    match opts.daemon.clone() {
        Some(status) => {
            let loaded = tokio::time::timeout(
                opts.timeout,
                Cluster::load(opts.kubeconfig.clone(), opts.context.clone()),
            )
            .await;
            let target = match loaded {
                Ok(Ok(cluster)) => {
                    kube::reachable_service(&cluster.client, &status.namespace, opts.timeout).await
                }
                _ => None,
            };
            let view = local::connected(status, &runtime, target, opts.timeout).await;
            workstation::connected_checks(&view)
        }
        None => workstation::leftover_checks(&local::leftovers(&runtime)),
    }
}

/// Marks the checks that need the API server as skipped.
fn unreachable(why: &str) -> Vec<Check> {
    ["nodes", "manager.installed", "rbac", "agents"]
        .into_iter()
        .map(|id| Check::skipped(id, why))
        .collect()
}

async fn cluster_checks(opts: &Options) -> Vec<Check> {
    let limit = opts.timeout;
    let loaded = tokio::time::timeout(
        limit,
        Cluster::load(opts.kubeconfig.clone(), opts.context.clone()),
    )
    .await;
    let cluster = match loaded {
        Ok(Ok(c)) => c.with_manager_namespace(&opts.manager_namespace),
        Ok(Err(e)) => {
            let mut checks = vec![cluster::no_kubeconfig(&tether_proto::error_chain(&e))];
            checks.extend(unreachable("no usable kubeconfig"));
            return checks;
        }
        Err(_) => {
            let mut checks = vec![cluster::no_kubeconfig("loading it timed out")];
            checks.extend(unreachable("no usable kubeconfig"));
            return checks;
        }
    };
    let mut checks = vec![cluster::context_check(&cluster.context, &cluster.server)];
    let probed = probe::probe(&cluster, limit).await;
    checks.push(cluster::api_check(
        &cluster.server,
        &probed.host,
        &probed.outcome,
    ));
    let ApiOutcome::Reached { version, minor, .. } = &probed.outcome else {
        checks.extend(unreachable(
            "the API server cannot be used (see cluster.api)",
        ));
        return checks;
    };
    if let Some(ahead) = probed.clock_ahead {
        checks.push(cluster::clock_check(ahead));
    }
    let client = &cluster.client;
    let ns = opts.namespace.as_str();
    let needs = access::wanted(ns, &cluster.manager_namespace);
    let reviews = futures::future::join_all(needs.iter().map(|need| {
        futures::future::join_all(need.accesses.iter().map(|a| kube::review(client, a, limit)))
    }));
    let (node_list, pods, metrics, manager_view, workloads, reviews, user) = tokio::join!(
        kube::nodes(client, limit),
        kube::all_pods(client, limit),
        kube::metrics(client, limit),
        kube::manager(client, &cluster.manager_namespace, limit),
        kube::workloads(client, ns, limit),
        reviews,
        kube::whoami(client, limit),
    );

    let kubelets: Vec<(String, String)> = node_list
        .iter()
        .flatten()
        .map(|n| {
            (
                n.metadata.name.clone().unwrap_or_default(),
                n.status
                    .as_ref()
                    .and_then(|s| s.node_info.as_ref())
                    .map(|i| i.kubelet_version.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    checks.push(cluster::version_check(
        version,
        *minor,
        &opts.cli_version,
        &kubelets,
    ));
    checks.push(match &metrics {
        Ok(m) => cluster::metrics_check(m),
        Err(e) => Check::skipped("cluster.metrics", e.reason("read metrics.k8s.io")),
    });

    match &node_list {
        Ok(list) => {
            for node in list {
                checks.extend(nodes::node_checks(node));
            }
            match &pods {
                Ok(pods) => checks.extend(nodes::allocated_checks(list, pods)),
                Err(e) => checks.push(Check::skipped(
                    "nodes.allocated",
                    e.reason("list pods in all namespaces"),
                )),
            }
        }
        Err(e) => {
            checks.push(Check::skipped("nodes", e.reason("list nodes")).with_next(
                "ask a cluster admin to bind the ClusterRole tether-client-nodes to you",
            ))
        }
    }

    let manager_image = match &manager_view {
        Ok(view) => {
            checks.extend(manager::manager_checks(
                view,
                &opts.cli_version,
                Timestamp::now(),
            ));
            view.deployment.as_ref().and_then(manager::image_of)
        }
        Err(e) => {
            checks.push(Check::skipped(
                "manager.installed",
                e.reason("get the traffic manager's deployment in namespace tether"),
            ));
            None
        }
    };

    for (need, answers) in needs.iter().zip(reviews) {
        let answers: Result<Vec<access::Answer>, kube::Failure> = answers.into_iter().collect();
        checks.push(match answers {
            Ok(answers) => access::access_check(need, &answers, user.as_deref()),
            Err(e) => Check::skipped(need.id, e.reason("create selfsubjectaccessreviews")),
        });
    }

    match &workloads {
        Ok(w) => {
            let found = agents::agent_workloads(&w.deployments, &w.statefulsets, &w.replicasets);
            checks.extend(agents::agent_checks(
                ns,
                &found,
                &w.pods,
                w.services.as_deref(),
                manager_image.as_deref(),
                opts.linked.as_deref(),
            ));
        }
        Err(e) => checks.push(Check::skipped(
            "agents",
            e.reason(&format!("list deployments and pods in namespace {ns}")),
        )),
    }
    checks
}
