//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::Ipv4Net;
use tether_daemon::connect::Transport;

#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    about = "Put your workstation inside your Kubernetes cluster's network"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect this machine to the cluster network (needs root).
    Connect(ConnectArgs),
    /// Show the connection.
    Status {
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Disconnect and put the machine back as it was.
    Quit,
    /// Install the traffic manager in the cluster.
    Install {
        #[command(flatten)]
        kube: KubeArgs,
        /// The tether-agent image to run.
        #[arg(long, env = "TETHER_AGENT_IMAGE", default_value = DEFAULT_IMAGE)]
        image: String,
    },
    /// Remove the traffic manager from the cluster.
    Uninstall {
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Show versions.
    Version,
    /// Run the daemon in the foreground (started by `connect`).
    #[command(hide = true)]
    Daemon(ConnectArgs),
}

/// The image `install` uses unless told otherwise.
pub const DEFAULT_IMAGE: &str = concat!("tether.local/tether-agent:", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// The kubeconfig file [default: $KUBECONFIG, then ~/.kube/config].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: the current context].
    #[arg(long)]
    pub context: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The namespace short names resolve in.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// How to reach the traffic manager.
    #[arg(long, value_enum, default_value_t = Transport::Auto)]
    pub transport: Transport,
    /// A range never to route into the cluster (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub never_proxy: Vec<Ipv4Net>,
    /// An extra range to route into the cluster (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub also_proxy: Vec<Ipv4Net>,
    /// Route the cluster's ranges even where they overlap existing routes.
    #[arg(long)]
    pub allow_conflicting_subnets: bool,
    /// The TUN device's name.
    #[arg(long, default_value = "tether0", hide = true)]
    pub tun_name: String,
    /// The TUN device's network: the device takes its first address, the DNS server the second.
    #[arg(long, default_value = "198.18.0.0/30", hide = true)]
    pub tun_network: Ipv4Net,
    /// The resolver configuration to manage.
    #[arg(long, default_value = "/etc/resolv.conf", hide = true)]
    pub resolv_conf: PathBuf,
    /// A command to run while connected; tether disconnects when it exits.
    #[arg(last = true)]
    pub command: Vec<String>,
}
