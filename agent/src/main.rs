//! `tether-agent`: the traffic manager and the sidecar traffic agent, in one image.
//!
//! # Layout
//! This file only parses arguments; the work is in the library: `manager` runs
//! [`tether_manager::manager::run_manager`], `sidecar` runs [`tether_sidecar::run`].
//!
//! # Exit codes
//! - 0: stopped normally.
//! - 1: failed (the error and its causes are printed to stderr).
//! - 2: usage error.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use tether_dns::resolv_conf::RESOLV_CONF_PATH;
use tether_kube::names;
use tether_manager::manager::{self, ManagerConfig};
use tether_sidecar::link::LinkConfig;
use tether_sidecar::{self as sidecar, SidecarConfig};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "tether-agent", version, about = "tether's in-cluster side")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the traffic manager.
    Manager(ManagerArgs),
    /// Run the sidecar traffic agent: a proxy in front of one port of the app.
    Sidecar(SidecarArgs),
}

#[derive(Debug, Args)]
struct SidecarArgs {
    /// A port taken over, `AGENT_PORT=APP_PORT`: the proxy listens on AGENT_PORT and forwards to
    /// the app on 127.0.0.1:APP_PORT (repeatable).
    #[arg(long, value_parser = sidecar::Forward::parse)]
    forward: Vec<sidecar::Forward>,
    /// Where a single proxy listens (instead of `--forward`, for trying the proxy alone).
    #[arg(long, requires = "app", conflicts_with = "forward")]
    listen: Option<SocketAddr>,
    /// The app's own address for `--listen`.
    #[arg(long, requires = "listen")]
    app: Option<SocketAddr>,
    /// The traffic manager's QUIC address; without it no intercept ever arrives.
    #[arg(long, requires = "workload")]
    manager: Option<SocketAddr>,
    /// Directory with the agent credential (`ca.crt`, `tls.crt`, `tls.key`).
    #[arg(long, default_value = "/var/run/tether")]
    credentials: PathBuf,
    /// The workload this agent serves, as `Kind/name`.
    #[arg(long)]
    workload: Option<String>,
    /// The pod's name.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pod: String,
    /// The pod's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// How long a new connection may stay silent before it is relayed as non-HTTP.
    #[arg(long, default_value_t = 1000)]
    sniff_timeout_ms: u64,
    /// TCP port of the Prometheus metrics endpoint (`/metrics`); none without it.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// The app container's volumes served to `tether intercept --mount`, as a JSON array of
    /// `{"path": CONTAINER_PATH, "source": AGENT_PATH, "readOnly": BOOL}`; none without it.
    #[arg(long, env = sidecar::files::MOUNTS_ENV)]
    mounts: Option<String>,
}

#[derive(Debug, Args)]
struct ManagerArgs {
    /// The manager pod's addresses (the downward API's status.podIPs), never dialed for a session.
    #[arg(long, env = "POD_IPS", value_delimiter = ',')]
    pod_ip: Vec<std::net::IpAddr>,
    /// Ranges dialed for sessions even where the default dial policy refuses (loopback,
    /// link-local, the manager itself, the control plane).
    #[arg(long, env = "TETHER_DIAL_ALLOW", value_delimiter = ',')]
    dial_allow: Vec<ipnet::IpNet>,
    /// Ranges never dialed for sessions.
    #[arg(long, env = "TETHER_DIAL_DENY", value_delimiter = ',')]
    dial_deny: Vec<ipnet::IpNet>,
    /// The manager's own namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = names::NAMESPACE)]
    namespace: String,
    /// UDP port of the QUIC endpoint.
    #[arg(long, default_value_t = names::QUIC_PORT)]
    quic_port: u16,
    /// TCP port of the port-forward relay, on loopback only: `kubectl port-forward` reaches it,
    /// the pod network does not.
    #[arg(long, default_value_t = names::RELAY_PORT)]
    relay_port: u16,
    /// TCP port the readiness probe connects to, once the tunnel serves.
    #[arg(long, default_value_t = names::HEALTH_PORT)]
    health_port: u16,
    /// TCP port of the Prometheus metrics endpoint (`/metrics`).
    #[arg(long, default_value_t = names::METRICS_PORT)]
    metrics_port: u16,
    /// The cluster DNS domain [default: from /etc/resolv.conf's search list, else cluster.local].
    #[arg(long, env = "TETHER_CLUSTER_DOMAIN")]
    cluster_domain: Option<String>,
    /// The service (ClusterIP) ranges, comma-separated [default: discovered].
    #[arg(long, env = "TETHER_SERVICE_CIDRS", value_delimiter = ',')]
    service_cidr: Vec<IpNet>,
    /// The resolver configuration to forward non-cluster names with.
    #[arg(long, default_value = RESOLV_CONF_PATH)]
    resolv_conf: PathBuf,
    /// Where the audit log goes: `-` for stdout (tracing logs go to stderr), a file path
    /// (appended), or `off`. One `audit.k8s.io/v1` Event per line.
    #[arg(long, env = "TETHER_AUDIT_LOG", default_value = "-")]
    audit_log: tether_manager::audit::AuditTarget,
    /// The manager pod's name (the Events it writes name it as their reporting instance).
    #[arg(long, env = "POD_NAME", default_value = "tether-manager")]
    pod_name: String,
    /// How long a person's session certificate is valid, in seconds (daemons renew at 2/3).
    #[arg(long, env = "TETHER_SESSION_CERT_LIFETIME", default_value_t = tether_manager::signer::DEFAULT_LIFETIME.as_secs(), value_parser = clap::value_parser!(u64).range(60..))]
    session_cert_lifetime: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // rustls 0.23 panics at the first TLS connection unless exactly one provider is installed.
    tether_tunnel::install_crypto_provider();

    let result = match cli.command {
        Command::Sidecar(args) => run_sidecar(args).await,
        Command::Manager(args) => run_manager(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {:#}", tether_proto::ErrorChain(&*error));
            ExitCode::FAILURE
        }
    }
}

async fn run_manager(args: ManagerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client = kube::Client::try_default().await?;
    let config = ManagerConfig {
        namespace: args.namespace,
        quic_port: args.quic_port,
        relay_port: args.relay_port,
        health_port: args.health_port,
        metrics_port: args.metrics_port,
        cluster_domain: args.cluster_domain,
        service_cidrs: args.service_cidr,
        resolv_conf: args.resolv_conf,
        sync_timeout: manager::SYNC_TIMEOUT,
        session_cert_lifetime: std::time::Duration::from_secs(args.session_cert_lifetime),
        pod_ips: args.pod_ip,
        dial_allow: args.dial_allow,
        dial_deny: args.dial_deny,
        audit_log: args.audit_log,
        pod_name: args.pod_name,
    };
    // Stopped with SIGTERM (rollout, pod deletion): the tunnel server closes every session with a
    // reason, so clients and agents reconnect to the next manager at once.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = manager::run_manager(client, config, tether_manager::session::serve) => result?,
        // The tunnel server closes its sessions on SIGTERM and returns; this is the backstop.
        _ = async {
            term.recv().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        } => tracing::info!("Terminated"),
    }
    Ok(())
}

async fn run_sidecar(args: SidecarArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut forwards = args.forward;
    if let (Some(listen), Some(app)) = (args.listen, args.app) {
        forwards.push(sidecar::Forward { listen, app });
    }
    if forwards.is_empty() {
        return Err("nothing to proxy: give --forward AGENT_PORT=APP_PORT".into());
    }
    let identity = args.pod.clone();
    // A bad table costs the mounts, not the agent: its proxies must keep the app reachable.
    let mounts = match args.mounts.as_deref().map(sidecar::files::Tables::parse) {
        None => sidecar::files::Tables::default(),
        Some(Ok(mounts)) => mounts,
        Some(Err(error)) => {
            tracing::error!(error = %tether_proto::ErrorChain(&error), "Serving no volumes: {} is invalid", sidecar::files::MOUNTS_ENV);
            sidecar::files::Tables::default()
        }
    };
    let link = args.manager.map(|manager| LinkConfig {
        manager,
        credentials: args.credentials,
        namespace: args.namespace,
        workload: args.workload.unwrap_or_default(),
        pod: args.pod,
    });
    let config = SidecarConfig {
        forwards,
        link,
        sniff_timeout: Duration::from_millis(args.sniff_timeout_ms),
        identity,
        metrics_port: args.metrics_port,
        mounts,
    };
    // On SIGTERM (the pod is going away) stop accepting and let accepted connections finish.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    sidecar::run(config, async move {
        term.recv().await;
    })
    .await?;
    tracing::info!("Terminated");
    Ok(())
}
