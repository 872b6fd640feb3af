//! What each command does.

use std::{
    io::{BufRead, BufReader},
    os::fd::AsFd,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command as Process, ExitCode, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};
use tether_daemon::{
    cluster::Cluster,
    control::{self, Request, Response, StatusReport},
    daemon::{self, Options},
    privileged::{
        channel::Helper,
        helper, identity,
        resolv_conf::ResolvConfFile,
        runtime_dir::{self, RuntimeDir, StateDir},
    },
};
use tokio::net::UnixStream;

use crate::args::{Cli, Command, ConnectArgs, Output};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Connect(args) => connect(args).await,
        Command::Daemon(args) => run_helper(args).await,
        Command::DaemonWorker(args) => run_daemon(args).await,
        Command::Status { output } => status(output).await,
        Command::Quit => quit().await,
        Command::Install {
            kube,
            image,
            image_pull_secret,
            dry_run,
            output,
        } => {
            use tether_kube::install;
            let mut manifests = install::manifests(&image)?;
            if let Some(secret) = &image_pull_secret {
                install::with_image_pull_secret(&mut manifests, secret);
            }
            if dry_run {
                print!("{}", render_manifests(&manifests, output)?);
                return Ok(ExitCode::SUCCESS);
            }
            let _ = rustls::crypto::ring::default_provider().install_default();
            let cluster = Cluster::load(kube.kubeconfig, kube.context).await?;
            println!(
                "Installing the traffic manager ({image}) in {}…",
                cluster.server
            );
            install::install_manifests(
                &cluster.client,
                &manifests,
                &image,
                install::INSTALL_TIMEOUT,
            )
            .await?;
            println!(
                "Traffic manager installed in namespace {}.",
                tether_kube::install::NAMESPACE
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Uninstall(args) => crate::intercept::uninstall(args).await,
        Command::Intercept(args) => crate::intercept::intercept(args).await,
        Command::Leave { name, output } => crate::intercept::leave(&name, output).await,
        Command::List { output } => crate::intercept::list(output).await,
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "tether", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => {
            use clap::CommandFactory;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            println!("Man pages written to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(args) => crate::doctor::doctor(args).await,
        Command::GatherLogs(args) => crate::doctor::gather_logs(args).await,
        Command::Version => {
            println!("tether {}", env!("CARGO_PKG_VERSION"));
            println!("protocol {}", tether_daemon::PROTOCOL_VERSION);
            if let Some(Response::Status(s)) = ask(Request::Status).await {
                println!(
                    "daemon pid {} (connected to {})",
                    s.daemon_pid, s.cluster_server
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Sends one request to the running daemon; `None` if there is none.
pub(crate) async fn ask(req: Request) -> Option<Response> {
    ask_with(req, &|_| {}).await
}

/// Like [`ask`], printing the daemon's progress on stderr while it works.
pub(crate) async fn ask_showing_progress(req: Request) -> Option<Response> {
    ask_with(req, &|stage| eprintln!("  {stage}…")).await
}

async fn ask_with(req: Request, progress: &dyn Fn(&str)) -> Option<Response> {
    use std::os::unix::fs::MetadataExt;
    let dir = control::runtime_dir();
    let mut stream = UnixStream::connect(control::socket_path(&dir)).await.ok()?;
    // The socket is in the daemon's user's directory, so its name could be a link to another
    // service's socket: nothing is sent unless the listener is that directory's owner (the
    // daemon's user; never root).
    let owner = std::fs::symlink_metadata(runtime_dir::user_dir(&dir))
        .ok()?
        .uid();
    if stream.peer_cred().ok()?.uid() != owner {
        return None;
    }
    tether_daemon::server::roundtrip_with_progress(&mut stream, &req, progress).await
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

async fn connect(args: ConnectArgs) -> anyhow::Result<ExitCode> {
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
    let exe = std::env::current_exe().context("finding the tether binary")?;
    let mut cmd = Process::new(exe);
    cmd.arg("daemon").args(daemon_args(&args));
    let mut child = cmd
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
                eprintln!("  {stage}…");
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
        println!(
            "Connected to {} (context {}) over {}; namespace {}.",
            s.cluster_server, s.context, s.transport, s.namespace
        );
    }
    if args.command.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut command = Process::new(&args.command[0]);
    command.args(&args.command[1..]);
    if let Some(user) = &invoking {
        user.apply(&mut command);
    }
    let status = command.status();
    let _ = quit().await;
    let status = status.with_context(|| format!("running {}", args.command[0]))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

fn daemon_args(a: &ConnectArgs) -> Vec<String> {
    let mut v = vec![
        "--namespace".into(),
        a.namespace.clone(),
        "--transport".into(),
        a.transport.to_string(),
        "--tun-name".into(),
        a.tun_name.clone(),
        "--tun-network".into(),
        a.tun_network.to_string(),
        "--resolv-conf".into(),
        a.resolv_conf.display().to_string(),
    ];
    if let Some(k) = &a.kube.kubeconfig {
        v.extend(["--kubeconfig".into(), k.display().to_string()]);
    }
    if let Some(c) = &a.kube.context {
        v.extend(["--context".into(), c.clone()]);
    }
    for n in &a.never_proxy {
        v.extend(["--never-proxy".into(), n.to_string()]);
    }
    for n in &a.also_proxy {
        v.extend(["--also-proxy".into(), n.to_string()]);
    }
    if a.allow_conflicting_subnets {
        v.push("--allow-conflicting-subnets".into());
    }
    v
}

fn init_daemon_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn daemon_options(args: ConnectArgs) -> Options {
    Options {
        namespace: args.namespace,
        kubeconfig: args.kube.kubeconfig,
        context: args.kube.context,
        transport: args.transport,
        never_proxy: args.never_proxy,
        also_proxy: args.also_proxy,
        allow_conflicting_subnets: args.allow_conflicting_subnets,
        tun_name: args.tun_name,
        tun_network: args.tun_network,
        resolv_conf: args.resolv_conf,
        runtime_dir: control::runtime_dir(),
    }
}

/// The privileged helper (root): starts the daemon as the invoking user and serves it.
async fn run_helper(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    init_daemon_logs();
    let mut worker =
        std::process::Command::new(std::env::current_exe().context("finding the tether binary")?);
    worker.arg("daemon-worker").args(daemon_args(&args));
    let config = daemon_options(args).helper_config();
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
async fn run_daemon(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    // Its own log, in its own directory; errors before this point reach `connect` on stdout.
    let dir = control::runtime_dir();
    if let Err(e) = runtime_dir::redirect_stderr_to_daemon_log(&dir) {
        // The daemon runs as the user and never follows a link here, even one of the user's own.
        println!(
            "error: opening the daemon log {}: {e}; if it is not a plain file, remove it",
            control::log_path(&dir).display()
        );
        return Ok(ExitCode::FAILURE);
    }
    init_daemon_logs();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("the helper's channel")?;
    let channel = std::os::unix::net::UnixStream::from(stdin);
    channel
        .set_nonblocking(true)
        .context("the helper's channel")?;
    let channel = UnixStream::from_std(channel).context("the helper's channel")?;
    let opts = daemon_options(args);
    let result = match Helper::connect(channel).await {
        Ok((helper, start)) => daemon::run(opts, helper, start)
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

/// Creates (or truncates) `path` readable by its owner only: 0600, also when it existed.
pub(crate) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

pub(crate) fn print_output<T: serde::Serialize>(output: Output, value: &T) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(value)?),
        Output::Text => {}
    }
    Ok(())
}

async fn status(output: Output) -> anyhow::Result<ExitCode> {
    let report = match ask(Request::Status).await {
        Some(Response::Status(s)) => *s,
        _ => StatusReport::default(),
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&report)?),
        Output::Text if report.daemon_pid == 0 => println!("Not connected."),
        Output::Text => {
            let state = if report.connected {
                "connected"
            } else {
                "reconnecting"
            };
            println!("Status:      {state}");
            println!(
                "Cluster:     {} (context {})",
                report.cluster_server, report.context
            );
            println!("Namespace:   {}", report.namespace);
            println!("Transport:   {} via {}", report.transport, report.manager);
            println!("Session:     {}", report.session_id);
            println!(
                "DNS:         {} (cluster domain {})",
                report.dns_server, report.cluster_domain
            );
            println!(
                "Routes:      {} via {}",
                report.subnets.join(", "),
                report.tun_device
            );
            println!("Reconnects:  {}", report.reconnects);
            println!("Daemon pid:  {}", report.daemon_pid);
            if report.intercepts.is_empty() {
                println!("Intercepts:  none");
            } else {
                println!("Intercepts:");
                for i in &report.intercepts {
                    println!("  {}", crate::intercept::describe(i));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn quit() -> anyhow::Result<ExitCode> {
    let dir = control::runtime_dir();
    let pids = match ask(Request::Status).await {
        Some(Response::Status(s)) => vec![s.daemon_pid, s.privileged_pid],
        _ => Vec::new(),
    };
    match ask(Request::Quit).await {
        Some(_) => {
            // Done when both processes are gone: the helper restores the resolver configuration
            // and removes the socket last.
            let sock = control::socket_path(&dir);
            let alive = |pid: &u32| {
                // A zombie (not yet reaped by its new parent) has finished.
                *pid != 0
                    && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                        stat.rsplit_once(')')
                            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
                    })
            };
            for _ in 0..100 {
                if !sock.exists() && !pids.iter().any(alive) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            println!("Disconnected.");
        }
        None => {
            // No daemon; still put back what a crashed one may have left.
            if is_root()
                && ResolvConfFile::new(Path::new("/etc/resolv.conf"), StateDir::open(&dir)?)
                    .repair_stale()?
            {
                println!(
                    "Not connected; restored the resolver configuration a crashed daemon left."
                );
            } else {
                println!("Not connected.");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The manifests as `kubectl apply -f -` reads them.
fn render_manifests(
    manifests: &[tether_kube::install::Manifest],
    format: crate::args::ManifestFormat,
) -> anyhow::Result<String> {
    let objects: Vec<_> = manifests.iter().map(|m| &m.object).collect();
    Ok(match format {
        crate::args::ManifestFormat::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
            serde_json::to_string_pretty(&list)? + "\n"
        }
        crate::args::ManifestFormat::Yaml => {
            let mut out = String::new();
            for object in objects {
                out.push_str("---\n");
                out.push_str(&serde_yaml::to_string(object)?);
            }
            out
        }
    })
}
