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
    intercept::{ActiveIntercept, InterceptRequest},
};
use tether_kube::workload::{env, kube as wk};
use tether_route::filter::{Filter, FilterSpec};

use crate::args::{InterceptArgs, Output, UninstallArgs};
use crate::commands::{ask, ask_showing_progress, print_output};

/// One line describing an intercept.
pub fn describe(i: &ActiveIntercept) -> String {
    format!(
        "{}: {} {} → {} ({})",
        i.name,
        i.workload,
        i.service_port,
        i.local,
        filter_text(&i.headers, i.path_prefix.as_deref())
    )
}

fn filter_text(headers: &[String], path_prefix: Option<&str>) -> String {
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

fn not_connected() -> anyhow::Error {
    anyhow::anyhow!("not connected: run `sudo tether connect` first")
}

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
            eprintln!(
                "warning: {skipped} cannot be written in {:?} syntax; left out",
                args.env_syntax
            );
        }
        let written = crate::commands::create_private(path)
            .and_then(|mut f| f.write_all(rendered.text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()));
        if let Err(e) = written {
            let _ = ask(Request::Leave { name }).await;
            return Err(e);
        }
    }
    match args.output {
        Output::Text => {
            if report.installed_agent {
                eprintln!(
                    "Installed the traffic agent in {}.",
                    report.intercept.workload
                );
            }
            println!("Intercepting {}", describe(&report.intercept));
            println!("  pods: {}", report.pods.join(", "));
            if let Some(path) = &args.env_file {
                println!("  environment: {}", path.display());
            }
        }
        other => print_output(other, &report)?,
    }
    if args.command.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut cmd = Process::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    for (k, v) in report.env.iter().flatten() {
        cmd.env(k, v);
    }
    let status = cmd.status();
    match ask_showing_progress(Request::Leave { name: name.clone() }).await {
        Some(Response::Left(_)) => eprintln!("Intercept {name} ended."),
        Some(Response::Error { error }) => eprintln!("warning: leaving {name}: {error}"),
        _ => eprintln!("warning: the daemon is gone; the intercept ends with its session"),
    }
    let status = status.with_context(|| format!("running {}", args.command[0]))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

pub async fn leave(name: &str, output: Output) -> anyhow::Result<ExitCode> {
    match ask_showing_progress(Request::Leave {
        name: name.to_owned(),
    })
    .await
    {
        None => Err(not_connected()),
        Some(Response::Left(left)) => {
            match output {
                Output::Text => println!("Ended {}", describe(&left)),
                other => print_output(other, &left)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Response::Error { error }) => bail!("{error}"),
        Some(other) => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

pub async fn list(output: Output) -> anyhow::Result<ExitCode> {
    let report = match ask(Request::List).await {
        None => return Err(not_connected()),
        Some(Response::List(r)) => *r,
        Some(Response::Error { error }) => bail!("{error}"),
        Some(other) => bail!("unexpected answer from the daemon: {other:?}"),
    };
    if output != Output::Text {
        print_output(output, &report)?;
        return Ok(ExitCode::SUCCESS);
    }
    if report.workloads.is_empty() {
        println!("No workloads in namespace {}.", report.namespace);
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
        println!(
            "{}/{}  {}/{} ready  {agent}",
            w.kind, w.name, w.ready, w.replicas
        );
        for i in &w.intercepts {
            println!(
                "  intercept {} on port {} by {}: {}",
                i.name,
                i.service_port,
                i.owner,
                filter_text(&i.filter.headers, i.filter.path_prefix.as_deref())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
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
        eprintln!("  waiting for the rollout of {workload}…");
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
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = Cluster::load(args.kube.kubeconfig.clone(), args.kube.context.clone()).await?;
    if args.manager {
        tether_kube::install::uninstall(&cluster.client).await?;
        println!("Traffic manager removed.");
        return Ok(ExitCode::SUCCESS);
    }
    let namespace = match args.namespace.clone() {
        Some(ns) => ns,
        None => match ask(Request::Status).await {
            Some(Response::Status(s)) if !s.namespace.is_empty() => s.namespace,
            _ => "default".to_owned(),
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
    match args.output {
        Output::Text if restored.is_empty() => {
            println!("No traffic agent to remove in namespace {namespace}.")
        }
        Output::Text => {
            for w in &restored {
                println!("Removed the traffic agent from {w}; it is as it was before.");
            }
        }
        other => print_output(other, &restored)?,
    }
    Ok(ExitCode::SUCCESS)
}
