//! Why an intercept request failed. The daemon sends it to the CLI as one line, the error and
//! its causes (`tether_proto::error_chain`).

use tether_kube::workload::{
    env::EnvError, PlanError, TargetError, WorkloadError, AGENT_CONTAINER,
};

use super::effect::NotInEffect;
use super::to_pod::BindError;
use super::AGENTS_TIMEOUT;
use crate::cluster::ClusterError;
use crate::session::SessionError;

/// Why `tether intercept`, `leave`, `list` or the wait after `uninstall` failed.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// No session to the manager right now.
    #[error("the tunnel to the traffic manager is down (reconnecting); try again in a moment")]
    NoSession,
    /// Both `--mirror` and `--replace`.
    #[error("--mirror and --replace exclude each other: a mirror needs the app to answer")]
    MirrorAndReplace,
    /// `--port 0`.
    #[error("--port needs a local port number between 1 and 65535")]
    NoLocalPort,
    /// The user already has an intercept of that name.
    #[error("you already have an intercept named `{0}`; end it with `tether leave {0}` or choose another with --name")]
    NameTaken(String),
    /// The user has no intercept of that name.
    #[error("you have no intercept named `{0}`; `tether list` shows them")]
    NoSuchIntercept(String),
    /// `--also-port` names no other port of the replaced container.
    #[error("--also-port {port}: container {container} of {workload} has no other port {port} that a Service exposes; {}", match .others.as_slice() { [] => "it has none".to_owned(), others => format!("its other ports: {}", others.join(", ")) })]
    UnknownAlsoPort {
        port: u16,
        container: String,
        workload: String,
        others: Vec<String>,
    },
    /// The intercept is one of a replace's other ports: it ends with the replace.
    #[error("`{name}` takes another port of the container that `{replace}` replaced; it ends with it: `tether leave {replace}`")]
    PartOfReplace { name: String, replace: String },
    /// Reading or writing the workload failed.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// The target names no workload, or several.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A `--to-pod` port cannot be listened on.
    #[error(transparent)]
    ToPod(#[from] BindError),
    /// The pod `--to-pod` should reach has no IP yet.
    #[error("pod {0} has no IP for --to-pod")]
    NoPodIp(String),
    /// The workload or the port cannot be intercepted.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The manager refused or did not answer.
    #[error(transparent)]
    Manager(#[from] SessionError),
    /// Reading the manager's objects failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The container's environment could not be read.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// Callers of the Service do not reach what they should in time.
    #[error(transparent)]
    NotInEffect(#[from] NotInEffect),
    /// The agents' credential could not be made.
    #[error("cannot give the traffic agents a credential")]
    Credential(#[source] Box<InterceptError>),
    /// Pods without the agent still get the Service's traffic.
    #[error("pods of {workload} without the traffic agent still serve ({}): is a rollout stuck? `kubectl rollout status {}` tells", .pods.join(", "), .workload.to_lowercase())]
    PodsWithoutAgent { workload: String, pods: Vec<String> },
    /// The workload has no ready pod.
    #[error("{0} has no ready pod")]
    NoReadyPod(String),
    /// Some ready pods' agents never linked to the manager.
    #[error("the agents of {} did not reach the traffic manager in {} s; see `kubectl logs -n {namespace} {} -c {AGENT_CONTAINER}`", .pods.join(", "), AGENTS_TIMEOUT.as_secs(), .pods.first().map(String::as_str).unwrap_or_default())]
    AgentsNotLinked {
        namespace: String,
        pods: Vec<String>,
    },
    /// Listing the workload's pods failed.
    #[error("listing the pods of {workload}")]
    ListPods {
        workload: String,
        #[source]
        source: kube::Error,
    },
    /// No pod to read the environment from.
    #[error("no pod to read the environment from")]
    NoPod,
    /// Reading the pod whose environment is wanted failed.
    #[error("reading pod {pod}")]
    ReadPod {
        pod: String,
        #[source]
        source: kube::Error,
    },
    /// The intercept ended at the manager, but callers still reach it.
    #[error("the intercept {name} has ended, but {source}")]
    StillInEffect { name: String, source: NotInEffect },
}
