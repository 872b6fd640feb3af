//! `tether connect`: starts the privileged helper (which starts the daemon; see
//! [`crate::daemon`]), shows its progress until it is ready, and runs `-- CMD` if given.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    process::{Command as Process, ExitCode, Stdio},
};

use anyhow::{bail, Context};
use tether_daemon::{
    control::{self, Request, Response},
    privileged::{
        identity,
        runtime_dir::{self, RuntimeDir},
    },
};

use crate::{args::ConnectArgs, client::ask, local::is_root, render};

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
    let dir = control::runtime_dir();
    // The helper's log is root's, in root's own directory; the daemon writes its own.
    let log = RuntimeDir::open(&dir)
        .and_then(|runtime| runtime.state()?.open_log(runtime_dir::HELPER_LOG))
        .map_err(|e| anyhow::anyhow!(tether_proto::error_chain(&e)))?;
    let logs = format!(
        "{} and {}",
        control::log_path(&dir).display(),
        runtime_dir::helper_log_path(&dir).display()
    );
    // `-- CMD` runs as the user who ran sudo, not as root.
    let invoking = identity::from_system()?;
    let mut child = crate::daemon::helper_command(&args)?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        // Its own process group: a Ctrl-C meant for this terminal does not reach the daemon.
        .process_group(0)
        .spawn()
        .context("starting the daemon")?;
    let stdout = child.stdout.take().context("daemon stdout")?;
    let outcome = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(stage) = line.strip_prefix("progress: ") {
                eprint!("{}", render::progress(stage));
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
    if let Some(Response::Status(s)) = ask(Request::Status).await {
        print!("{}", render::connected(&s));
    }
    let command = args.command;
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
