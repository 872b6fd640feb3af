//! `tether connect`: starts the privileged helper (which starts the daemon; see
//! [`crate::daemon`]), shows its progress until it is ready, and runs `-- CMD` if given.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command as Process, ExitCode, Stdio},
};

use anyhow::{bail, Context};
use tether_daemon::{
    control::{self, Request, Response},
    daemon::Options,
    privileged::{
        identity,
        runtime_dir::{self, RuntimeDir},
    },
};

use crate::{
    args::{ConnectArgs, ConnectOptions, KubeArgs},
    client::ask,
    local::is_root,
    render,
};

pub async fn connect(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    if let Some(Response::Status(s)) = ask(Request::Status).await {
        bail!(
            "already connected to {} (context {}, namespace {}); run `tether quit` first",
            s.cluster_server,
            s.context,
            s.namespace
        );
    }
    if !is_root() {
        bail!("cannot create the TUN device: tether connect needs root; run `sudo tether connect`");
    }
    // `-- CMD` runs as the user who ran sudo, not as root.
    let invoking = identity::from_system()?;
    let (options, command) = daemon_options(args, control::runtime_dir());
    start(&options).await?;
    if let Some(Response::Status(s)) = ask(Request::Status).await {
        print!("{}", render::connected(&s));
    }
    if command.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut process = Process::new(&command[0]);
    process.args(&command[1..]);
    if let Some(user) = &invoking {
        user.apply(&mut process);
    }
    let status = process.status();
    let _ = crate::status::quit().await;
    let status = status.with_context(|| format!("running {}", command[0]))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

/// Starts the privileged helper with `options` (which starts the daemon) and returns once the
/// daemon is connected, showing its progress on stderr. When it fails, the helper has put the
/// machine back as it was before it exits.
pub async fn start(options: &Options) -> anyhow::Result<()> {
    let dir = &options.runtime_dir;
    // The helper's log is root's, in root's own directory; the daemon writes its own.
    let log = RuntimeDir::open(dir)
        .and_then(|runtime| runtime.state()?.open_log(runtime_dir::HELPER_LOG))
        .map_err(|e| anyhow::anyhow!(tether_proto::error_chain(&e)))?;
    let logs = format!(
        "{} and {}",
        control::log_path(dir).display(),
        runtime_dir::helper_log_path(dir).display()
    );
    let mut child = crate::daemon::helper_command(options)?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        // Its own process group: a Ctrl-C meant for this terminal does not reach the daemon.
        .process_group(0)
        .spawn()
        .context("starting the daemon")?;
    let stdout = child.stdout.take().context("daemon stdout")?;
    let outcome = tokio::task::spawn_blocking(move || {
        let progress = crate::progress::Progress::stderr();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(stage) = line.strip_prefix("progress: ") {
                progress.step(stage);
            } else if line == "ready" {
                return Ok(());
            } else if let Some(error) = line.strip_prefix("error: ") {
                return Err(error.to_owned());
            }
        }
        Err(String::new())
    })
    .await?;
    match outcome {
        Ok(()) => {}
        Err(e) if e.is_empty() => {
            let _ = child.wait();
            bail!("the daemon exited unexpectedly; see {logs}");
        }
        Err(e) => {
            let _ = child.wait();
            bail!("{e}");
        }
    }
    // Reap it later: the daemon outlives us.
    std::mem::forget(child);
    Ok(())
}

/// The daemon's options (for the helper and the daemon alike; the daemon's files go under
/// `runtime_dir`), and the command to run while connected.
fn daemon_options(args: ConnectArgs, runtime_dir: PathBuf) -> (Options, Vec<String>) {
    // Every field named: a new flag is passed on or deliberately not.
    let ConnectArgs {
        namespace,
        options,
        command,
    } = args;
    (options_for(namespace, options, runtime_dir), command)
}

/// The daemon's options for connecting to `namespace` (`None`: the context's) with `options`.
pub fn options_for(
    namespace: Option<String>,
    options: ConnectOptions,
    runtime_dir: PathBuf,
) -> Options {
    // Every field named: a new flag is passed on or deliberately not.
    let ConnectOptions {
        kube:
            KubeArgs {
                kubeconfig,
                context,
                manager_namespace,
            },
        transport,
        never_proxy,
        also_proxy,
        allow_conflicting_subnets,
        tun_name,
        tun_network,
        resolv_conf,
    } = options;
    Options {
        // Empty: the daemon takes the context's, once it has read the kubeconfig.
        namespace: namespace.unwrap_or_default(),
        manager_namespace: manager_namespace.unwrap_or_default(),
        kubeconfig,
        context,
        transport,
        never_proxy,
        also_proxy,
        allow_conflicting_subnets,
        tun_name,
        tun_network,
        resolv_conf,
        runtime_dir,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command, DaemonArgs};

    fn connect_args(argv: &[&str]) -> ConnectArgs {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Connect(args) => args,
            other => panic!("not connect: {other:?}"),
        }
    }

    #[test]
    fn every_connect_flag_reaches_the_daemon_options() {
        let args = connect_args(&[
            "tether",
            "connect",
            "-n",
            "shop",
            "--kubeconfig",
            "/home/a/kc",
            "--context",
            "kind",
            "--transport",
            "port-forward",
            "--never-proxy",
            "10.1.0.0/16",
            "--never-proxy",
            "10.2.0.0/16",
            "--also-proxy",
            "192.168.5.0/24",
            "--allow-conflicting-subnets",
            "--tun-name",
            "tws0",
            "--tun-network",
            "198.18.4.0/30",
            "--resolv-conf",
            "/tmp/resolv.conf",
            "--",
            "make",
            "test",
        ]);
        let (o, command) = daemon_options(args, PathBuf::from("/run/t"));
        assert_eq!(command, ["make", "test"]);
        assert_eq!(o.namespace, "shop");
        assert_eq!(o.kubeconfig, Some(PathBuf::from("/home/a/kc")));
        assert_eq!(o.context.as_deref(), Some("kind"));
        assert_eq!(o.transport.to_string(), "port-forward");
        assert_eq!(
            o.never_proxy,
            [
                "10.1.0.0/16".parse().unwrap(),
                "10.2.0.0/16".parse().unwrap()
            ]
        );
        assert_eq!(o.also_proxy, ["192.168.5.0/24".parse().unwrap()]);
        assert!(o.allow_conflicting_subnets);
        assert_eq!(o.tun_name, "tws0");
        assert_eq!(o.tun_network.to_string(), "198.18.4.0/30");
        assert_eq!(o.resolv_conf, PathBuf::from("/tmp/resolv.conf"));
        assert_eq!(o.runtime_dir, PathBuf::from("/run/t"));
    }

    #[test]
    fn connect_defaults_reach_the_daemon_options() {
        let (o, command) = daemon_options(connect_args(&["tether", "connect"]), "/run/t".into());
        assert!(command.is_empty());
        assert_eq!(o.namespace, "", "the daemon takes the context's namespace");
        assert_eq!((o.kubeconfig, o.context), (None, None));
        assert_eq!(o.transport.to_string(), "auto");
        assert!(o.never_proxy.is_empty() && o.also_proxy.is_empty());
        assert!(!o.allow_conflicting_subnets);
        assert_eq!(o.tun_name, "tether0");
        assert_eq!(o.tun_network.to_string(), "198.18.0.0/30");
        assert_eq!(o.resolv_conf, PathBuf::from("/etc/resolv.conf"));
    }

    /// What the helper and the daemon parse is what `connect` had, field for field.
    #[test]
    fn options_cross_to_the_helper_and_the_daemon_unchanged() {
        let args = connect_args(&[
            "tether",
            "connect",
            "--context",
            "a context with spaces",
            "--never-proxy",
            "10.1.0.0/16",
            "--allow-conflicting-subnets",
            "--tun-network",
            "10.0.0.5/24",
        ]);
        let (options, _) = daemon_options(args, "/run/tether e2e/ws1".into());
        for subcommand in ["daemon", "daemon-worker"] {
            let argv = DaemonArgs::argv(subcommand, &options).unwrap();
            let cli = Cli::try_parse_from(
                std::iter::once("tether").chain(argv.iter().map(String::as_str)),
            )
            .unwrap();
            let parsed = match (subcommand, cli.command) {
                ("daemon", Command::Daemon(a)) | ("daemon-worker", Command::DaemonWorker(a)) => {
                    a.options
                }
                (_, other) => panic!("{subcommand} parsed as {other:?}"),
            };
            assert_eq!(
                format!("{parsed:?}"),
                format!("{options:?}"),
                "{subcommand}"
            );
        }
    }

    #[test]
    fn the_daemon_refuses_options_it_does_not_know() {
        let (options, _) = daemon_options(connect_args(&["tether", "connect"]), "/run/t".into());
        let mut json: serde_json::Value = serde_json::to_value(&options).unwrap();
        json["never_proxy_typo"] = serde_json::json!([]);
        let argv = ["tether", "daemon", "--options-json", &json.to_string()];
        let error = Cli::try_parse_from(argv).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(error.to_string().contains("never_proxy_typo"), "{error}");
    }
}
