//! `tether doctor` and `tether gather-logs`: the CLI side (asking the daemon, printing); the
//! checks and the archive are in `tether-doctor`.

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use tether_daemon::control::{Request, Response, StatusReport};
use tether_doctor::{logs::GatherOptions, Options};

use crate::{
    args::{DoctorArgs, GatherLogsArgs, KubeArgs},
    client::ask,
    render,
};

/// How long the daemon may take to answer `status` or `list`.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(3);

async fn ask_daemon(request: Request) -> Option<Response> {
    tokio::time::timeout(DAEMON_TIMEOUT, ask(request))
        .await
        .ok()
        .flatten()
}

/// What doctor checks: the namespace (the connected one unless told), the daemon's status and the
/// agents the manager has linked there.
async fn options(namespace: Option<String>, kube: KubeArgs, timeout: u64) -> Options {
    let daemon: Option<StatusReport> = match ask_daemon(Request::Status).await {
        Some(Response::Status(s)) if s.daemon_pid != 0 => Some(*s),
        _ => None,
    };
    let namespace = namespace
        .or_else(|| daemon.as_ref().map(|s| s.namespace.clone()))
        .unwrap_or_else(|| "default".into());
    let linked = match &daemon {
        Some(s) if s.connected && s.namespace == namespace => match ask_daemon(Request::List).await
        {
            Some(Response::List(list)) => Some(
                list.workloads
                    .into_iter()
                    .flat_map(|w| w.agent_pods)
                    .collect(),
            ),
            _ => None,
        },
        _ => None,
    };
    // The manager where told, else where the session found it.
    let manager_namespace = match (&kube.manager_namespace, &daemon) {
        (Some(ns), _) => ns.clone(),
        (None, Some(s)) if !s.manager_namespace.is_empty() => s.manager_namespace.clone(),
        _ => kube.manager_namespace().to_owned(),
    };
    Options {
        namespace,
        manager_namespace,
        kubeconfig: kube.kubeconfig,
        context: kube.context,
        timeout: Duration::from_secs(timeout.max(1)),
        daemon,
        linked,
        cli_version: env!("CARGO_PKG_VERSION").into(),
    }
}

pub async fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let opts = options(args.namespace, args.kube, args.timeout).await;
    let report = tether_doctor::doctor(&opts).await;
    print!(
        "{}",
        render::report(args.output, &report, tether_doctor::Report::to_text)?
    );
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn gather_logs(args: GatherLogsArgs) -> anyhow::Result<ExitCode> {
    let doctor = options(args.namespace, args.kube, args.timeout).await;
    let output = args
        .output
        .unwrap_or_else(tether_doctor::logs::default_archive_name);
    let opts = GatherOptions {
        doctor,
        since: args.since,
        output,
    };
    // A step per line while it collects, for a person watching; nothing in a script's log.
    let watched = std::io::stderr().is_terminal();
    let gathered = tether_doctor::logs::gather(&opts, &|step| {
        if watched {
            eprint!("{}", render::progress(step));
        }
    })
    .await?;
    for note in &gathered.notes {
        eprint!("{}", render::not_gathered(note));
    }
    print!("{}", render::gathered(&gathered.path, gathered.files.len()));
    Ok(ExitCode::SUCCESS)
}
