//! The hidden `daemon` and `daemon-worker` commands: the processes `tether connect` starts.
//!
//! `connect` (root) starts `tether daemon`, the privileged helper, in its own process group so
//! that it outlives `connect`; the helper starts `tether daemon-worker`, the daemon, as the user
//! who ran sudo (or `nobody`), and serves it on the other end of its stdin. Both are new
//! processes (a new process group; another uid), so they are this binary executed again, each
//! given the same [`Options`] as one JSON argument ([`DaemonArgs::argv`]).
//!
//! Until it is ready, the daemon reports on stdout for `connect`: `progress: …` lines, then
//! `ready` or `error: …`. The helper's stdout is the same pipe.

use std::{os::fd::AsFd, process::ExitCode};

use anyhow::Context;
use tether_daemon::{
    control,
    daemon::{self, Options},
    privileged::{channel::Helper, helper, identity, runtime_dir},
};
use tokio::net::UnixStream;

use crate::args::DaemonArgs;

/// `tether daemon` with `options`: how `connect` starts the privileged helper.
pub fn helper_command(options: &Options) -> anyhow::Result<std::process::Command> {
    command("daemon", options)
}

fn command(subcommand: &str, options: &Options) -> anyhow::Result<std::process::Command> {
    let exe = std::env::current_exe().context("finding the tether binary")?;
    let mut command = std::process::Command::new(exe);
    command.args(DaemonArgs::argv(subcommand, options).context("writing the daemon's options")?);
    Ok(command)
}

fn init_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// The privileged helper (root): starts the daemon as the invoking user and serves it.
pub async fn run_helper(options: Options) -> anyhow::Result<ExitCode> {
    init_logs();
    let worker = command("daemon-worker", &options)?;
    let config = options.helper_config();
    let invoking = match identity::from_system() {
        Ok(invoking) => invoking,
        Err(error) => {
            let text = tether_proto::error_chain(&error);
            tracing::error!(error = %text, "Privileged helper failed");
            println!("error: {text}");
            return Ok(ExitCode::FAILURE);
        }
    };
    match helper::run(config, worker, invoking).await {
        Ok(status) => Ok(ExitCode::from(
            status.code().unwrap_or(1).clamp(0, 255) as u8
        )),
        Err(error) => {
            let text = tether_proto::error_chain(&error);
            tracing::error!(error = %text, "Privileged helper failed");
            println!("error: {text}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The daemon (unprivileged): its helper is on the other end of stdin.
pub async fn run_worker(options: Options) -> anyhow::Result<ExitCode> {
    // Its own log, in its own directory; errors before this point reach `connect` on stdout.
    let dir = &options.runtime_dir;
    if let Err(e) = runtime_dir::redirect_stderr_to_daemon_log(dir) {
        // The daemon runs as the user and never follows a link here, even one of the user's own.
        println!(
            "error: opening the daemon log {}: {e}; if it is not a plain file, remove it",
            control::log_path(dir).display()
        );
        return Ok(ExitCode::FAILURE);
    }
    init_logs();
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("the helper's channel")?;
    let channel = std::os::unix::net::UnixStream::from(stdin);
    channel
        .set_nonblocking(true)
        .context("the helper's channel")?;
    let channel = UnixStream::from_std(channel).context("the helper's channel")?;
    let result = match Helper::connect(channel).await {
        Ok((helper, start)) => daemon::run(options, helper, start)
            .await
            .map_err(|e| tether_proto::error_chain(&e)),
        Err(e) => Err(tether_proto::error_chain(&e)),
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(text) => {
            tracing::error!(error = %text, "Daemon failed");
            println!("error: {text}");
            Ok(ExitCode::FAILURE)
        }
    }
}
