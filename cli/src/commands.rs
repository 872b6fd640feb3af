//! Which module runs each command: dispatch only.

use std::process::ExitCode;

use crate::{
    args::{Cli, Command},
    connect, daemon, doctor, install, intercept, shell, status, top,
};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Connect(args) => connect::connect(args).await,
        Command::Daemon(args) => daemon::run_helper(args.options).await,
        Command::DaemonWorker(args) => daemon::run_worker(args.options).await,
        Command::Status { metrics: true, .. } => status::metrics().await,
        Command::Status { output, .. } => status::status(output).await,
        Command::Top { once: true, output } => top::once(output).await,
        Command::Top { .. } => top::live().await,
        Command::Quit => status::quit().await,
        Command::Version => status::version().await,
        Command::Install {
            kube,
            image,
            image_pull_secret,
            dry_run,
            output,
        } => {
            install::install(install::Install {
                kube,
                image,
                image_pull_secret,
                dry_run: dry_run.then_some(output),
            })
            .await
        }
        Command::Uninstall(args) => intercept::uninstall(args).await,
        Command::Intercept(args) => intercept::intercept(*args).await,
        Command::Leave {
            name,
            namespace,
            output,
        } => intercept::leave(&name, namespace.as_deref(), output).await,
        Command::List { namespace, output } => intercept::list(namespace.as_deref(), output).await,
        Command::Completion { shell } => Ok(shell::completion(shell)),
        Command::Complete { what, namespace } => Ok(shell::candidates(what, namespace).await),
        Command::Man { dir } => shell::man(&dir),
        Command::Doctor(args) => doctor::doctor(args).await,
        Command::GatherLogs(args) => doctor::gather_logs(args).await,
    }
}
