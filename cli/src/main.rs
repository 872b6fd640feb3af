//! `tether`: puts a workstation inside a Kubernetes cluster's network.
//!
//! # Layout
//! - `args`: the command line (clap).
//! - `commands`: what each command does; most talk to the daemon over its unix socket.
//! - `intercept`: `intercept`, `leave`, `list`, `uninstall`.
//! - `doctor`: `doctor` and `gather-logs` (the checks themselves are in `tether-doctor`).
//!
//! # Exit codes
//! - 0: success (for `connect -- CMD`: CMD's own exit code).
//! - 1: the command failed; the message says what to do. For `doctor`: a check failed.
//! - 2: bad usage (unknown flag, bad value).
#![forbid(unsafe_code)]

mod args;
mod commands;
mod doctor;
mod intercept;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    // The daemon's work is a chain of hand-offs (TUN → stack → tunnel and back); on one thread
    // they cost no cross-thread wake-ups, which is most of a new connection's latency. Set
    // TETHER_DAEMON_THREADS=multi to compare.
    let single = matches!(cli.command, args::Command::DaemonWorker(_))
        && std::env::var("TETHER_DAEMON_THREADS").as_deref() != Ok("multi");
    let runtime = if single {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tether: {:#}", tether_proto::ErrorChain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}
