//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::Ipv4Net;
use tether_daemon::{
    cluster::{Cluster, ClusterError},
    connect::Transport,
    control::AlsoPort,
    daemon::Options,
};

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
        /// Print the daemon's Prometheus metrics (text format 0.0.4) instead.
        #[arg(long, conflicts_with = "output")]
        metrics: bool,
    },
    /// Watch this machine's session live: carrier, throughput, flows, DNS and intercepts (`q`
    /// quits).
    Top {
        /// Print one snapshot (rates over one second) instead, for scripts.
        #[arg(long)]
        once: bool,
        /// Format of --once's snapshot.
        #[arg(short, long, value_enum, default_value_t = Output::Text, requires = "once")]
        output: Output,
    },
    /// Disconnect and put the machine back as it was.
    Quit,
    /// Install the traffic manager in the cluster.
    Install {
        #[command(flatten)]
        kube: KubeArgs,
        /// The tether-agent image to run [else the config file's `install.image`].
        #[arg(long, env = "TETHER_AGENT_IMAGE", default_value = DEFAULT_IMAGE)]
        image: String,
        /// A Secret in namespace tether the manager's pod pulls its image with.
        #[arg(long, value_name = "SECRET")]
        image_pull_secret: Option<String>,
        /// Print the manifests instead of applying them (with -o yaml or json).
        #[arg(long)]
        dry_run: bool,
        /// Format of --dry-run's manifests.
        #[arg(short, long, value_enum, default_value_t = ManifestFormat::Yaml, requires = "dry_run")]
        output: ManifestFormat,
    },
    /// Remove tether from workloads (restoring them exactly), or the traffic manager.
    Uninstall(UninstallArgs),
    /// Send a workload's or a Service's traffic to a port on this machine (all of it, or
    /// matching requests); connects first when not connected.
    Intercept(Box<InterceptArgs>),
    /// End an intercept.
    Leave {
        /// The intercept's name (see `tether status`).
        name: String,
        /// The intercept's namespace: intercepts are in the connected one, so another is refused.
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show the namespace's workloads, their agents and intercepts.
    List {
        /// The namespace to list: the connected one (another is refused; reconnect with `-n`).
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show versions.
    Version,
    /// Print a shell completion script: `source <(tether completion bash)`, or for zsh and fish
    /// the same with their own name.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print candidates for a shell completion, one per line (the completion scripts call it).
    #[command(hide = true, name = "__complete")]
    Complete {
        /// What to list.
        #[arg(value_enum)]
        what: Completable,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Write man pages (tether.1 and one per subcommand) into DIR (`cargo xtask man`).
    #[command(hide = true)]
    Man {
        /// Where to write them.
        dir: PathBuf,
    },
    /// Check every layer between this machine and the cluster, and say what to do about
    /// problems. Exit code 1 when a check failed.
    Doctor(DoctorArgs),
    /// Pack logs, events, versions and doctor's report into one archive for a bug report
    /// (private keys, tokens and Secret values redacted).
    GatherLogs(GatherLogsArgs),
    /// Run the daemon's privileged helper in the foreground (started by `connect`, as root); it
    /// starts the daemon itself without privilege.
    #[command(hide = true)]
    Daemon(DaemonArgs),
    /// Run the daemon (started by the privileged helper, talking to it on stdin).
    #[command(hide = true)]
    DaemonWorker(DaemonArgs),
}

impl Command {
    /// The commands the config file has defaults for.
    pub fn reads_config(&self) -> bool {
        matches!(
            self,
            Command::Connect(_)
                | Command::Install { .. }
                | Command::Uninstall(_)
                | Command::Intercept(_)
                | Command::Doctor(_)
                | Command::GatherLogs(_)
        )
    }
}

impl Command {
    /// The cluster arguments of a command that has them.
    pub fn kube_mut(&mut self) -> Option<&mut KubeArgs> {
        match self {
            Command::Connect(a) => Some(&mut a.options.kube),
            Command::Intercept(a) => Some(&mut a.connect.kube),
            Command::Install { kube, .. } => Some(kube),
            Command::Uninstall(a) => Some(&mut a.kube),
            Command::Doctor(a) => Some(&mut a.kube),
            Command::GatherLogs(a) => Some(&mut a.kube),
            _ => None,
        }
    }
}

/// What `connect` hands the privileged helper, and the helper the daemon: the options, as data.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// The daemon's options, one JSON object.
    #[arg(long = DaemonArgs::FLAG, value_name = "JSON", value_parser = parse_daemon_options)]
    pub options: Options,
}

impl DaemonArgs {
    const FLAG: &'static str = "options-json";

    /// The arguments that make `tether` run `subcommand` (`daemon` or `daemon-worker`) with
    /// `options`: what [`Cli`] parses back into the same options.
    pub fn argv(subcommand: &str, options: &Options) -> serde_json::Result<[String; 3]> {
        Ok([
            subcommand.to_owned(),
            format!("--{}", Self::FLAG),
            serde_json::to_string(options)?,
        ])
    }
}

fn parse_daemon_options(text: &str) -> Result<Options, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["workload", "all", "manager"]))]
pub struct UninstallArgs {
    /// The workload to remove the agent from: a name, or `kind/name`.
    pub workload: Option<String>,
    /// Remove the agent from every workload in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Remove the traffic manager (agents stay; remove them first with --all).
    #[arg(long)]
    pub manager: bool,
    /// The workloads' namespace [default: the connected namespace, else the context's, else
    /// `default`].
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// The namespace whose agents and intercept rights are checked [default: the connected
    /// namespace, else `default`].
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The longest one check may wait for an answer, in seconds.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Clone, Args)]
pub struct GatherLogsArgs {
    /// The namespace of the workloads whose agents' logs and events to include [default: the
    /// connected namespace, else `default`]; tether's own namespace is always included.
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// How far back logs and events go: `30s`, `10m`, `2h`, `1d`.
    #[arg(long, default_value = "1h", value_parser = tether_doctor::logs::window::parse_since)]
    pub since: std::time::Duration,
    /// The archive to write, `.tar.gz` (or `.tgz`) or `.zip` by its name [default:
    /// tether-logs-<time>.tar.gz here].
    #[arg(short, long, value_name = "FILE", value_parser = tether_doctor::logs::parse_output)]
    pub output: Option<PathBuf>,
    /// The longest one read may wait for an answer, in seconds.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = INTERCEPT_EXAMPLES)]
pub struct InterceptArgs {
    /// What to intercept: a workload (`orders`, `deploy/orders`, `sts/db`, `rs/legacy`) or a
    /// Service (`orders`, `svc/orders`: the workload it selects). A name that is both a workload
    /// and a Service selecting another workload must say which with its prefix.
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// `LOCAL[:REMOTE]`: the port on this machine that gets the traffic, and which Service port
    /// (name or number, or `SERVICE/PORT`; needed when there are several).
    #[arg(short, long, value_name = "LOCAL[:REMOTE]", value_parser = parse_port)]
    pub port: (u16, Option<String>),
    /// The Service whose port is intercepted, when the workload is behind several.
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// The workload to intercept, when TARGET is a Service that selects several (NAME or
    /// KIND/NAME).
    #[arg(long, value_name = "NAME")]
    pub workload: Option<String>,
    /// The container whose port is intercepted and whose environment is used, when the pod has
    /// several.
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Reach PORT of the intercepted pod (a sidecar's, say) at 127.0.0.1:PORT on this machine
    /// while the intercept lasts (repeatable; TCP and UDP).
    #[arg(long = "to-pod", value_name = "PORT", value_parser = parse_to_pod)]
    pub to_pod: Vec<u16>,
    /// Take only requests with this header, `NAME=VALUE` (repeatable; all must match)
    /// [default: the config file's `intercept.http-header`].
    #[arg(long = "http-header", value_name = "NAME=VALUE")]
    pub http_header: Vec<String>,
    /// Take every request, even when the config file sets a default `http-header`.
    #[arg(long, conflicts_with = "http_header")]
    pub all_requests: bool,
    /// Take only requests whose path starts with this prefix.
    #[arg(long = "http-path-prefix", value_name = "PREFIX")]
    pub http_path_prefix: Option<String>,
    /// Mirror instead of take: the requests still go to the app, which answers the callers, and
    /// a copy of each comes to this machine (its answer is discarded). Copies are best effort:
    /// when this machine is slow or away they are dropped and counted (`tether status`), never
    /// holding up a caller. Several people may mirror a workload, beside anyone's intercept.
    #[arg(long)]
    pub mirror: bool,
    /// Replace the container instead of sharing it: while the intercept lasts the intercepted
    /// container is removed from the workload's pods (nothing of it runs in the cluster, a queue
    /// consumer does not consume twice) and all the requests come here; `leave` puts it back
    /// exactly. Refused while anyone else intercepts or mirrors the workload. Deployments and
    /// StatefulSets.
    #[arg(long, conflicts_with_all = ["mirror", "http_header", "http_path_prefix"])]
    pub replace: bool,
    /// With --replace: the replaced container's other port PORT (one a Service exposes) comes
    /// to 127.0.0.1:LOCAL here too [default LOCAL: PORT] (repeatable). Without it the other
    /// ports are listed, not taken: each one taken opens a port of this machine to the cluster.
    #[arg(
        long = "also-port",
        value_name = "[LOCAL:]PORT",
        requires = "replace",
        value_parser = parse_also_port
    )]
    pub also_port: Vec<AlsoPort>,
    /// Mount the intercepted container's volumes (ConfigMaps, Secrets, the service-account
    /// token, emptyDirs, claims) on this machine, at their container paths under DIR: `true` (a
    /// new temporary directory), `false` (no mount) or DIR, an empty directory of yours.
    /// `TETHER_ROOT` names it in `--env-file` and for `-- CMD`. Unmounted when the intercept
    /// ends.
    #[arg(
        long,
        value_name = "true|false|DIR",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "true",
        value_parser = parse_mount
    )]
    pub mount: MountArg,
    /// Write the intercepted container's environment to this file.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// The env file's syntax.
    #[arg(long, value_enum, default_value_t = tether_kube::workload::env::EnvSyntax::Sh)]
    pub env_syntax: tether_kube::workload::env::EnvSyntax,
    /// The intercept's name [default: the workload's name].
    #[arg(long)]
    pub name: Option<String>,
    /// The workload's namespace: intercepts are made in the connected one, so another is
    /// refused (reconnect with `tether connect -n NS`). Not connected: the namespace to connect
    /// to.
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Run this command with the container's environment; the intercept ends when it exits.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// How to connect first when not connected (as `tether connect` takes them). Last: the
    /// heading applies to every argument after it.
    #[command(flatten, next_help_heading = "Connecting first (when not connected)")]
    pub connect: ConnectOptions,
    /// The config file's `connect.namespace`, for connecting first without `-n`.
    #[arg(skip)]
    pub config_namespace: Option<String>,
}

const INTERCEPT_EXAMPLES: &str = "\
Examples:
  tether intercept orders --port 8080               # the workload orders, its only port
  tether intercept orders --port 8080:http          # a Service port by name…
  tether intercept svc/orders-api --port 8080:80    # …or number, of a Service
  tether intercept orders --port 8080 --http-header x-dev=ann
  tether intercept orders --port 8080 --mirror       # a copy of every request; the app answers
  tether intercept orders --port 8080 --replace      # the app container stops while it lasts
  tether intercept web --port 8080 --container app --to-pod 9901
  tether intercept orders --port 8080 --mount=/tmp/orders -- ./run.sh  # volumes under /tmp/orders

Not connected, `tether intercept` connects first (it then needs root, like `tether connect`);
if that fails, nothing was changed.";

/// `--mount`'s value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountArg {
    Off,
    /// A new temporary directory.
    Temporary,
    /// This directory (absolute).
    At(PathBuf),
}

fn parse_mount(text: &str) -> Result<MountArg, String> {
    match text {
        "true" => Ok(MountArg::Temporary),
        "false" => Ok(MountArg::Off),
        "" => Err("--mount= needs true, false or a directory".to_owned()),
        path => {
            let path = PathBuf::from(path);
            // The daemon runs elsewhere: a relative path is this shell's.
            let path = if path.is_absolute() {
                path
            } else {
                std::env::current_dir()
                    .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?
                    .join(path)
            };
            Ok(MountArg::At(path))
        }
    }
}

/// An `--also-port`: `PORT` or `LOCAL:PORT`.
fn parse_also_port(text: &str) -> Result<AlsoPort, String> {
    let number = |t: &str| {
        t.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{t}` is not a port number (1-65535)"))
    };
    match text.split_once(':') {
        Some((local, port)) => Ok(AlsoPort {
            local: number(local)?,
            port: number(port)?,
        }),
        None => {
            let port = number(text)?;
            Ok(AlsoPort { local: port, port })
        }
    }
}

/// A `--to-pod` port.
fn parse_to_pod(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{text}` is not a port number (1-65535)"))
}

/// A namespace name, checked before anything reaches the cluster.
pub fn parse_namespace(text: &str) -> Result<String, String> {
    if tether_kube::install::is_namespace_name(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a namespace name (at most 63 lowercase letters, digits and `-`, \
             starting and ending with a letter or digit)"
        ))
    }
}

fn parse_port(text: &str) -> Result<(u16, Option<String>), String> {
    let (local, service) = match text.split_once(':') {
        Some((local, service)) if !service.is_empty() => (local, Some(service.to_owned())),
        Some(_) => {
            return Err(format!(
                "`{text}`: nothing after `:`; write LOCAL or LOCAL:REMOTE"
            ))
        }
        None => (text, None),
    };
    let local = local
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{local}` is not a local port number (1-65535)"))?;
    Ok((local, service))
}

/// What `tether __complete` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Completable {
    /// The namespace's workloads (the connected one, else the context's).
    Workloads,
    /// The active intercepts' names.
    Intercepts,
}

/// The image `install` uses unless told otherwise: the one `deploy/manager` names.
pub const DEFAULT_IMAGE: &str = tether_kube::install::BASE_IMAGE;

/// How `install --dry-run` prints manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ManifestFormat {
    /// A YAML stream, one document per object (what `kubectl apply -f -` reads).
    Yaml,
    /// A `v1` `List` of the objects.
    Json,
}

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
    /// The namespace the traffic manager runs in [default: the config file's
    /// `manager.namespace`, else `tether`].
    #[arg(long, env = "TETHER_MANAGER_NAMESPACE", value_name = "NAMESPACE", value_parser = parse_namespace)]
    pub manager_namespace: Option<String>,
}

impl KubeArgs {
    /// The traffic manager's namespace: given, else the default.
    pub fn manager_namespace(&self) -> &str {
        self.manager_namespace
            .as_deref()
            .unwrap_or(tether_kube::names::NAMESPACE)
    }

    /// The cluster these arguments name, with the manager where they say.
    pub async fn cluster(&self) -> Result<Cluster, ClusterError> {
        Ok(Cluster::load(self.kubeconfig.clone(), self.context.clone())
            .await?
            .with_manager_namespace(self.manager_namespace()))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The namespace short names resolve in and intercepts are made in [default: the context's
    /// namespace, else `default`].
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub options: ConnectOptions,
    /// A command to run while connected; tether disconnects when it exits.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// How to connect: what `connect` takes, and `intercept` when it connects first.
#[derive(Debug, Clone, Args)]
pub struct ConnectOptions {
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
}

#[cfg(test)]
mod tests;
