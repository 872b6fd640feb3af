//! Why an injection or a port choice cannot be made.

use super::*;

/// Why an injection or a port choice cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No Service selects the workload's pods.
    #[error("{workload} is not exposed by any Service: tether intercepts a Service's traffic")]
    NoService { workload: String },
    /// The Services that select the workload have no usable TCP port.
    #[error("the Services of {workload} have no TCP port: tether intercepts TCP only")]
    NoTcpPort { workload: String },
    /// The asked port is none of the Services' ports.
    #[error("{}", unknown_port(.services, .asked, .available))]
    UnknownPort {
        services: Vec<String>,
        asked: String,
        /// The ports there are, described as `http (80→http)`.
        available: Vec<String>,
    },
    /// Several ports could be meant.
    #[error("{}", ambiguous_port(.workload, .asked.as_deref(), .ports, .services))]
    AmbiguousPort {
        workload: String,
        asked: Option<String>,
        ports: Vec<String>,
        /// The Services those ports belong to, each once.
        services: Vec<String>,
    },
    /// `--container` names no container of the pod.
    #[error("{workload} has no container {asked}; its containers are: {}", .containers.join(", "))]
    UnknownContainer {
        workload: String,
        asked: String,
        containers: Vec<String>,
    },
    /// `--container` serves none of the ports the intercept could mean.
    #[error("container {container} serves none of these ports: {}; choose another port or container", .ports.join(", "))]
    NotInContainer {
        container: String,
        /// `http (80→http) is container app's`.
        ports: Vec<String>,
    },
    /// A named `targetPort` that no container declares.
    #[error("service {service} targets port `{name}`, which no container of {workload} declares")]
    NamedPortNotFound {
        service: String,
        name: String,
        workload: String,
    },
    /// A `targetPort` number out of range.
    #[error("service {service} targets port {port}, which is not a valid port")]
    InvalidPort { service: String, port: i32 },
    /// Two containers name the same port number differently; only one name can move.
    #[error("ports `{first}` and `{second}` of {workload} are both port {port}: tether takes over `{first}` only")]
    SharedPort {
        workload: String,
        port: u16,
        first: String,
        second: String,
    },
    /// The asked port is not TCP.
    #[error("port {port} of service {service} is {protocol}: tether intercepts TCP only")]
    UdpPort {
        service: String,
        port: String,
        protocol: String,
    },
    /// The record annotation is not JSON this tether reads.
    #[error("the {AGENT_ANNOTATION} annotation of {workload} cannot be read, so tether cannot undo its changes; remove the agent and the annotation by hand (kubectl edit)")]
    BadRecord {
        workload: String,
        #[source]
        source: serde_json::Error,
    },
    /// The record was written by a newer tether.
    #[error("the agent in {workload} was installed by a newer tether (record format {version}); uninstall it with that version")]
    NewerRecord { workload: String, version: u32 },
    /// A name tether needs is taken by something it did not add.
    #[error("{workload} already has a {what} named {name} that tether did not add (no {AGENT_ANNOTATION} annotation); remove it and try again")]
    NameTaken {
        workload: String,
        what: &'static str,
        name: String,
    },
    /// Every port from 9900 up is taken.
    #[error("no free port for the traffic agent in {workload}")]
    NoFreePort { workload: String },
    /// `KIND/NAME` with an unknown kind.
    #[error("unknown workload kind `{0}`: write deploy/NAME, sts/NAME or rs/NAME")]
    UnknownKind(String),
    /// Not a workload reference at all.
    #[error("`{0}` is not a workload: write NAME or KIND/NAME (e.g. deploy/orders)")]
    BadWorkloadRef(String),
}

pub(super) fn unknown_port(services: &[String], asked: &str, available: &[String]) -> String {
    let (who, have, its) = match services {
        [one] => (format!("service {one}"), "has", "its"),
        many => (format!("services {}", many.join(", ")), "have", "their"),
    };
    format!(
        "{who} {have} no port `{asked}`; {its} ports are: {}",
        available.join(", ")
    )
}

pub(super) fn ambiguous_port(
    workload: &str,
    asked: Option<&str>,
    ports: &[String],
    services: &[String],
) -> String {
    if services.len() > 1 {
        let choices: Vec<String> = services.iter().map(|s| format!("--service {s}")).collect();
        let choices = choices.join(" or ");
        return match asked {
            None => format!(
                "{workload} is behind several Services: {}; choose one with {choices}",
                ports.join(", ")
            ),
            Some(asked) => format!(
                "port `{asked}` of {workload} could be {}; choose the Service with {choices}",
                ports.join(" or ")
            ),
        };
    }
    match asked {
        None => format!(
            "{workload} serves several ports: {}; choose one with `--port LOCAL:NAME`",
            ports.join(", ")
        ),
        Some(asked) => format!(
            "port `{asked}` of {workload} could be {}; choose one with `--port LOCAL:SERVICE/NAME`",
            ports.join(" or ")
        ),
    }
}
