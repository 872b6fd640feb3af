//! `tether`: puts a workstation inside a Kubernetes cluster's network.
//!
//! # Layout
//! Modules depend only on those listed after them (and the other crates); none on `main`.
//! - `commands`: which module runs each command (dispatch only).
//! - `connect`: `connect`: starts the privileged helper and waits until the daemon is ready.
//! - `daemon`: the hidden `daemon` (privileged helper) and `daemon-worker` (daemon) commands that
//!   `connect` starts, and how their options cross to them (as one JSON value).
//! - `status`: `status`, `quit`, `version`.
//! - `intercept`: `intercept`, `leave`, `list`, `uninstall`.
//! - `install`: `install` (and its `--dry-run` manifests).
//! - `doctor`: `doctor` and `gather-logs` (the checks themselves are in `tether-doctor`).
//! - `shell`: `completion` and `man`.
//! - `client`: asking the daemon over its unix socket.
//! - `local`: this machine directly (are we root; private files).
//! - `progress`: the updating progress line of long steps (plain lines when not a terminal).
//! - `render`: everything printed, as pure functions from a report to text (`-o text|json|yaml`).
//! - `config`: the config file, and how its defaults fill in what the command line left out.
//! - `args`: the command line (clap).
//!
//! # Exit codes
//! - 0: success (for `connect -- CMD`: CMD's own exit code).
//! - 1: the command failed; the message says what to do. For `doctor`: a check failed.
//! - 2: bad usage (unknown flag, bad value).
#![forbid(unsafe_code)]

mod args;
mod client;
mod commands;
mod config;
mod connect;
mod daemon;
mod doctor;
mod install;
mod intercept;
mod local;
mod progress;
mod render;
mod shell;
mod status;
mod top;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    let matches = args::Cli::command().get_matches();
    let mut cli = match args::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if cli.command.reads_config() {
        match config::Config::load() {
            Ok(config) => config.apply(&mut cli.command, &matches),
            Err(e) => {
                eprintln!("tether: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // rustls 0.23 panics at the first TLS connection unless exactly one provider is installed.
    tether_tunnel::install_crypto_provider();
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
