//! `tether status`, `quit` and `version`: asking the daemon about, or ending, the connection.

use std::{path::Path, process::ExitCode, time::Duration};

use tether_daemon::{
    control::{self, Request, Response, StatusReport},
    privileged::{
        fuse_mount,
        resolv_conf::ResolvConfFile,
        runtime_dir::{RuntimeDir, StateDir},
    },
};

use crate::{
    args::Output,
    client::ask,
    local::is_root,
    render::{self, Quit},
};

pub async fn status(output: Output) -> anyhow::Result<ExitCode> {
    let report = match ask(Request::Status).await {
        Some(Response::Status(s)) => *s,
        _ => StatusReport::default(),
    };
    print!("{}", render::report(output, &report, render::status)?);
    Ok(ExitCode::SUCCESS)
}

/// `tether status --metrics`: the daemon's metrics, or an error when there is no daemon.
pub async fn metrics() -> anyhow::Result<ExitCode> {
    match ask(Request::Metrics).await {
        Some(Response::Metrics { text }) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Response::Error { error }) => anyhow::bail!(error),
        _ => anyhow::bail!("not connected: there is no daemon to ask (run `tether connect`)"),
    }
}

pub async fn quit() -> anyhow::Result<ExitCode> {
    let outcome = disconnect().await?;
    print!("{}", render::quit(outcome));
    Ok(ExitCode::SUCCESS)
}

/// Stops the daemon (which puts the machine back) and waits until it is gone; without one, puts
/// back what a crashed one may have left.
pub async fn disconnect() -> anyhow::Result<Quit> {
    let dir = control::runtime_dir();
    let pids = match ask(Request::Status).await {
        Some(Response::Status(s)) => vec![s.daemon_pid, s.privileged_pid],
        _ => Vec::new(),
    };
    let outcome = match ask(Request::Quit).await {
        Some(_) => {
            // Done when both processes are gone: the helper restores the resolver configuration
            // and removes the socket last.
            let sock = control::socket_path(&dir);
            for _ in 0..100 {
                if !sock.exists() && !pids.iter().any(|p| tether_daemon::process::running(*p)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Quit::Disconnected
        }
        // No daemon; still put back what a crashed one may have left.
        None if is_root() => {
            let resolver =
                ResolvConfFile::new(Path::new("/etc/resolv.conf"), StateDir::open(&dir)?)
                    .repair_stale()?;
            let mounts = fuse_mount::repair_stale(&StateDir::open(&dir)?)?;
            let socket = remove_dead_socket(&dir)?;
            if resolver || socket || mounts > 0 {
                Quit::Repaired {
                    resolver,
                    mounts,
                    socket,
                }
            } else {
                Quit::NotConnected
            }
        }
        None => Quit::NotConnected,
    };
    Ok(outcome)
}

/// Removes the control socket of a daemon that is gone: one nobody listens on (connecting is
/// refused). A live daemon's socket, even one that does not answer us, stays. Returns whether it
/// removed one.
fn remove_dead_socket(dir: &Path) -> anyhow::Result<bool> {
    let path = control::socket_path(dir);
    let is_socket = std::fs::symlink_metadata(&path)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
    if !is_socket {
        return Ok(false);
    }
    match std::os::unix::net::UnixStream::connect(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            // By name in the daemon's directory, following no link.
            RuntimeDir::open(dir)?.remove_socket();
            Ok(!path.exists())
        }
        _ => Ok(false),
    }
}

pub async fn version() -> anyhow::Result<ExitCode> {
    print!(
        "{}",
        render::version(env!("CARGO_PKG_VERSION"), tether_daemon::PROTOCOL_VERSION)
    );
    if let Some(Response::Status(s)) = ask(Request::Status).await {
        print!("{}", render::daemon_version(&s, env!("CARGO_PKG_VERSION")));
        if s.connected {
            if let Some(Response::List(list)) = ask(Request::List).await {
                print!(
                    "{}",
                    render::agent_versions(&list, env!("CARGO_PKG_VERSION"))
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
