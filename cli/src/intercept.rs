//! `tether intercept`, `leave`, `list` and `uninstall`.
//!
//! Intercepts go through the daemon, which holds the session they live in. `uninstall` talks to
//! the cluster directly (it needs no connection), with the user's own kubeconfig.

use std::{
    io::Write,
    process::{Command as Process, ExitCode},
};

use anyhow::{bail, Context};
use tether_daemon::{
    cluster::Cluster,
    control::{Request, Response},
    intercept::InterceptRequest,
};
use tether_kube::workload::{env, kube as wk};
use tether_route::filter::{Filter, FilterSpec};

use crate::{
    args::{InterceptArgs, Output, UninstallArgs},
    client::{ask, ask_showing_progress, not_connected},
    local::create_private,
    render::{self, Ended},
};

pub async fn intercept(args: InterceptArgs) -> anyhow::Result<ExitCode> {
    // A bad filter is refused before anything is asked of the cluster.
    Filter::try_from(FilterSpec {
        headers: args.http_header.clone(),
        path_prefix: args.http_path_prefix.clone(),
    })
    .context("bad --http-header or --http-path-prefix")?;
    if args.env_file.is_none() && args.command.is_empty() && args.env_syntax != env::EnvSyntax::Sh {
        bail!("--env-syntax needs --env-file");
    }
    connected_namespace(args.namespace.as_deref()).await?;
    let (local_port, service_port) = args.port.clone();
    let request = InterceptRequest {
        workload: args.workload.clone(),
        name: args.name.clone(),
        local_port,
        service_port,
        headers: args.http_header.clone(),
        path_prefix: args.http_path_prefix.clone(),
        env: args.env_file.is_some() || !args.command.is_empty(),
    };
    let report = match ask_showing_progress(Request::Intercept(Box::new(request))).await {
        None => return Err(not_connected()),
        Some(Response::Intercepted(r)) => *r,
        Some(Response::Error { error }) => bail!("{error}"),
        Some(other) => bail!("unexpected answer from the daemon: {other:?}"),
    };
    let name = report.intercept.name.clone();
    if let (Some(path), Some(vars)) = (&args.env_file, &report.env) {
        let rendered = env::render(vars, args.env_syntax);
        for skipped in &rendered.skipped {
            eprint!("{}", render::env_skipped(skipped, args.env_syntax));
        }
        let written = create_private(path)
            .and_then(|mut f| f.write_all(rendered.text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()));
        if let Err(e) = written {
            let _ = ask(Request::Leave { name }).await;
            return Err(e);
        }
    }
    if args.output == Output::Text {
        eprint!("{}", render::installed_agent(&report));
    }
    let env_file = args.env_file.as_deref();
    print!(
        "{}",
        render::report(args.output, &report, |r| render::intercepted(r, env_file))?
    );
    if args.command.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut cmd = Process::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    for (k, v) in report.env.iter().flatten() {
        cmd.env(k, v);
    }
    let status = cmd.status();
    let ended = match ask_showing_progress(Request::Leave { name: name.clone() }).await {
        Some(Response::Left(_)) => Ended::Left,
        Some(Response::Error { error }) => Ended::Refused(error),
        _ => Ended::NoDaemon,
    };
    eprint!("{}", render::intercept_ended(&name, &ended));
    let status = status.with_context(|| format!("running {}", args.command[0]))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

pub async fn leave(
    name: &str,
    namespace: Option<&str>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    connected_namespace(namespace).await?;
    match ask_showing_progress(Request::Leave {
        name: name.to_owned(),
    })
    .await
    {
        None => Err(not_connected()),
        Some(Response::Left(left)) => {
            print!("{}", render::report(output, &*left, render::left)?);
            Ok(ExitCode::SUCCESS)
        }
        Some(Response::Error { error }) => bail!("{error}"),
        Some(other) => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

pub async fn list(namespace: Option<&str>, output: Output) -> anyhow::Result<ExitCode> {
    connected_namespace(namespace).await?;
    let report = match ask(Request::List).await {
        None => return Err(not_connected()),
        Some(Response::List(r)) => *r,
        Some(Response::Error { error }) => bail!("{error}"),
        Some(other) => bail!("unexpected answer from the daemon: {other:?}"),
    };
    print!("{}", render::report(output, &report, render::list)?);
    Ok(ExitCode::SUCCESS)
}

/// Fails unless `wanted` (a `-n`) is the connected namespace, where the daemon makes and lists
/// intercepts; without `-n`, or not connected, there is nothing to check here.
async fn connected_namespace(wanted: Option<&str>) -> anyhow::Result<()> {
    let Some(wanted) = wanted else {
        return Ok(());
    };
    match ask(Request::Status).await {
        Some(Response::Status(s)) if s.connected && s.namespace != wanted => {
            bail!("{}", render::other_namespace(&s.namespace, wanted))
        }
        _ => Ok(()),
    }
}

/// After an uninstall: returns once callers reach the restored workloads' apps. Connected, the
/// daemon checks that from inside the cluster; otherwise only the rollouts can be awaited.
async fn settle(cluster: &Cluster, namespace: &str, restored: &[String]) -> anyhow::Result<()> {
    let connected = matches!(ask(Request::Status).await, Some(Response::Status(_)));
    for workload in restored {
        if connected {
            let request = Request::AwaitApp {
                namespace: namespace.to_owned(),
                workload: workload.clone(),
            };
            match ask_showing_progress(request).await {
                Some(Response::Ok) => continue,
                Some(Response::Error { error }) => bail!("{error}"),
                other => bail!("unexpected answer from the daemon: {other:?}"),
            }
        }
        eprint!(
            "{}",
            render::progress(&format!("waiting for the rollout of {workload}"))
        );
        let found = wk::find_workload(&cluster.client, namespace, workload)
            .await
            .map_err(|e| anyhow::anyhow!(tether_proto::error_chain(&e)))?;
        wk::wait_rollout(
            &cluster.client,
            &found,
            tether_daemon::intercept::ROLLOUT_TIMEOUT,
        )
        .await
        .map_err(|e| anyhow::anyhow!(tether_proto::error_chain(&e)))?;
    }
    Ok(())
}

pub async fn uninstall(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let cluster = args.kube.cluster().await?;
    if args.manager {
        tether_kube::install::uninstall(&cluster.client, &cluster.manager_namespace).await?;
        print!("{}", render::manager_removed());
        return Ok(ExitCode::SUCCESS);
    }
    let namespace = match args.namespace.clone() {
        Some(ns) => ns,
        None => match ask(Request::Status).await {
            Some(Response::Status(s)) if !s.namespace.is_empty() => s.namespace,
            _ => cluster.default_namespace.clone(),
        },
    };
    let restored: Vec<String> = if args.all {
        wk::uninstall_all(&cluster.client, &namespace)
            .await
            .map_err(|e| anyhow::anyhow!(tether_proto::error_chain(&e)))?
    } else {
        let workload = args.workload.clone().unwrap_or_default();
        let found = wk::find_workload(&cluster.client, &namespace, &workload)
            .await
            .map_err(|e| anyhow::anyhow!(tether_proto::error_chain(&e)))?;
        let removed = wk::uninstall_agent(&cluster.client, &namespace, &workload)
            .await
            .map_err(|e| anyhow::anyhow!(tether_proto::error_chain(&e)))?;
        if removed {
            vec![format!("{}/{}", found.kind, found.name)]
        } else {
            Vec::new()
        }
    };
    settle(&cluster, &namespace, &restored).await?;
    print!(
        "{}",
        render::report(args.output, &restored, |r| render::uninstalled(
            &namespace, r
        ))?
    );
    Ok(ExitCode::SUCCESS)
}
