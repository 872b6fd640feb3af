//! `tether status`, `quit` and `version`: asking the daemon about, or ending, the connection.

use std::{path::Path, process::ExitCode, time::Duration};

use tether_daemon::{
    control::{self, Request, Response, StatusReport},
    privileged::{resolv_conf::ResolvConfFile, runtime_dir::StateDir},
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

pub async fn quit() -> anyhow::Result<ExitCode> {
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
                if !sock.exists() && !pids.iter().any(alive) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Quit::Disconnected
        }
        // No daemon; still put back what a crashed one may have left.
        None if is_root()
            && ResolvConfFile::new(Path::new("/etc/resolv.conf"), StateDir::open(&dir)?)
                .repair_stale()? =>
        {
            Quit::Repaired
        }
        None => Quit::NotConnected,
    };
    print!("{}", render::quit(outcome));
    Ok(ExitCode::SUCCESS)
}

/// Whether process `pid` runs; a zombie (not yet reaped by its new parent) has finished.
fn alive(pid: &u32) -> bool {
    *pid != 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
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
