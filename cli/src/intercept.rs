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
    control::{AlsoPort, Request, Response},
    intercept::InterceptRequest,
};
use tether_kube::workload::{env, kube as wk};
use tether_route::filter::{Filter, FilterSpec};

use crate::{
    args::{InterceptArgs, MountArg, Output, UninstallArgs},
    client::{ask, ask_showing_progress, not_connected},
    local::{create_private, is_root},
    render::{self, Ended},
};

/// Where `--mount` put the container's files, in `--env-file` and the environment of `-- CMD`.
pub const ROOT_VAR: &str = "TETHER_ROOT";

pub async fn intercept(args: InterceptArgs) -> anyhow::Result<ExitCode> {
    // Bad input is refused before anything is asked of the cluster, or connected.
    check(&args)?;
    let connected_here = connect_first(&args).await?;
    if !connected_here {
        connected_namespace(args.namespace.as_deref()).await?;
    }
    let request = request(&args);
    let answer = ask_showing_progress(Request::Intercept(Box::new(request))).await;
    let refused = match answer {
        Some(Response::Intercepted(r)) => Ok(*r),
        None => Err(not_connected()),
        Some(Response::Error { error }) => Err(anyhow::anyhow!("{error}")),
        Some(other) => Err(anyhow::anyhow!(
            "unexpected answer from the daemon: {other:?}"
        )),
    };
    let report = match refused {
        Ok(report) => report,
        // What this command connected for is not there: leave the machine as it was.
        Err(e) if connected_here => {
            return Err(match crate::status::disconnect().await {
                Ok(_) => e.context(render::disconnected_again()),
                Err(quit) => e.context(format!(
                    "could not end the connection this command made ({quit:#}): run `tether quit`"
                )),
            })
        }
        Err(e) => return Err(e),
    };
    let name = report.intercept.name.clone();
    let mut report = report;
    if let (Some(vars), Some(mount)) = (&mut report.env, &report.intercept.mount) {
        vars.push((ROOT_VAR.to_owned(), mount.dir.display().to_string()));
    }
    if let Some(error) = &report.mount_error {
        eprint!("{}", render::mount_failed(error));
    }
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
    // Connected here under sudo: the command is the invoking user's, as with `connect -- CMD`.
    if connected_here {
        if let Some(user) = tether_daemon::privileged::identity::from_system()? {
            user.apply(&mut cmd);
        }
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

/// Checks what can be checked without the cluster.
fn check(args: &InterceptArgs) -> anyhow::Result<()> {
    Filter::try_from(FilterSpec {
        headers: args.http_header.clone(),
        path_prefix: args.http_path_prefix.clone(),
    })
    .context("bad --http-header or --http-path-prefix")?;
    if args.env_file.is_none() && args.command.is_empty() && args.env_syntax != env::EnvSyntax::Sh {
        bail!("--env-syntax needs --env-file");
    }
    check_to_pod(args.port.0, &args.to_pod)?;
    check_also_ports(args.port.0, &args.to_pod, &args.also_port)?;
    Ok(())
}

/// `--also-port`s: each container port once, and each local port free of the others.
pub fn check_also_ports(local: u16, to_pod: &[u16], also: &[AlsoPort]) -> anyhow::Result<()> {
    for (i, a) in also.iter().enumerate() {
        if a.local == local || to_pod.contains(&a.local) {
            bail!(
                "--also-port {}:{} would share local port {} with --port or --to-pod; choose \
                 another local port",
                a.local,
                a.port,
                a.local
            );
        }
        if also[..i]
            .iter()
            .any(|b| b.port == a.port || b.local == a.local)
        {
            bail!("--also-port {}:{} repeats a port", a.local, a.port);
        }
    }
    Ok(())
}

/// `--to-pod` ports: each once, and not the port intercepted traffic goes to.
pub fn check_to_pod(local: u16, to_pod: &[u16]) -> anyhow::Result<()> {
    for (i, port) in to_pod.iter().enumerate() {
        if *port == local {
            bail!(
                "--to-pod {port} is also the --port where intercepted traffic arrives on this \
                 machine; choose another local port"
            );
        }
        if to_pod[..i].contains(port) {
            bail!("--to-pod {port} is given twice");
        }
    }
    Ok(())
}

/// The daemon's request for `args`.
fn request(args: &InterceptArgs) -> InterceptRequest {
    let (local_port, service_port) = args.port.clone();
    InterceptRequest {
        workload: args.target.clone(),
        service: args.service.clone(),
        pick_workload: args.workload.clone(),
        container: args.container.clone(),
        to_pod: args.to_pod.clone(),
        name: args.name.clone(),
        local_port,
        service_port,
        headers: args.http_header.clone(),
        path_prefix: args.http_path_prefix.clone(),
        env: args.env_file.is_some() || !args.command.is_empty(),
        mirror: args.mirror,
        replace: args.replace,
        also_ports: args.also_port.clone(),
        mount: args.mount != MountArg::Off,
        mount_dir: match &args.mount {
            MountArg::At(dir) => Some(dir.clone()),
            MountArg::Off | MountArg::Temporary => None,
        },
    }
}

/// Connects first when there is no connection, as `tether connect` would with the intercept's
/// connect flags (and `-n`). Returns whether it connected. When connecting fails, the helper has
/// put the machine back, and the error says so.
async fn connect_first(args: &InterceptArgs) -> anyhow::Result<bool> {
    if matches!(ask(Request::Status).await, Some(Response::Status(_))) {
        return Ok(false);
    }
    if !is_root() {
        bail!(
            "not connected, and connecting first needs root (a TUN device): run `sudo tether \
             intercept …`, or `sudo tether connect` and then this command"
        );
    }
    eprint!("{}", render::connecting_first());
    let namespace = args
        .namespace
        .clone()
        .or_else(|| args.config_namespace.clone());
    let options = crate::connect::options_for(
        namespace,
        args.connect.clone(),
        tether_daemon::control::runtime_dir(),
    );
    crate::connect::start(&options)
        .await
        .context(render::connect_first_failed())?;
    if let Some(Response::Status(s)) = ask(Request::Status).await {
        eprint!("{}", render::connected(&s));
    }
    Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn also_ports_are_checked_before_anything_else() {
        let also = |local, port| AlsoPort { local, port };
        assert!(check_also_ports(8080, &[], &[also(9090, 9090), also(8081, 80)]).is_ok());
        assert_eq!(
            check_also_ports(8080, &[], &[also(8080, 9090)])
                .unwrap_err()
                .to_string(),
            "--also-port 8080:9090 would share local port 8080 with --port or --to-pod; choose \
             another local port"
        );
        assert!(check_also_ports(8080, &[9901], &[also(9901, 9090)]).is_err());
        assert_eq!(
            check_also_ports(8080, &[], &[also(9090, 9090), also(9091, 9090)])
                .unwrap_err()
                .to_string(),
            "--also-port 9091:9090 repeats a port"
        );
    }

    #[test]
    fn to_pod_ports_are_checked_before_anything_else() {
        assert!(check_to_pod(8080, &[]).is_ok());
        assert!(check_to_pod(8080, &[9901, 6379]).is_ok());
        assert_eq!(
            check_to_pod(8080, &[9901, 8080]).unwrap_err().to_string(),
            "--to-pod 8080 is also the --port where intercepted traffic arrives on this machine; \
             choose another local port"
        );
        assert_eq!(
            check_to_pod(8080, &[9901, 9901]).unwrap_err().to_string(),
            "--to-pod 9901 is given twice"
        );
    }
}
