//! What installing the traffic agent changes in a workload and its Services, and how to undo
//! exactly that. Sans-IO: k8s-openapi objects in, k8s-openapi objects out, so every decision is
//! an ordinary unit test; [`kube`](super::kube) only reads and writes what these functions say.
//!
//! [`inject`] takes over every TCP port of every Service that selects the workload's pods:
//! - a **named** `targetPort` (`http`): the app container's port of that name is renamed
//!   (`tx-http`) and the agent container declares the original name on its own port. The Service
//!   is untouched: the endpoints controller now resolves `http` to the agent, pod by pod. Probes
//!   and lifecycle hooks of the app container that named the port follow the rename, so they
//!   keep hitting the app directly;
//! - a **numeric** (or absent) `targetPort`: the Service port is retargeted to the agent port.
//!   Probes by number already reach the app and are left alone.
//!
//! Every app port gets one agent port (9900, 9901, … skipping the pod's declared ports), and the
//! agent forwards `agent=app`. Everything changed is listed in an [`AgentRecord`], stored as JSON
//! in the workload's [`AGENT_ANNOTATION`]; [`restore`] undoes those changes and nothing else, so
//! edits the user made meanwhile survive, and a field the user changed after us is left as the
//! user set it.
//!
//! [`choose_port`] resolves `--port LOCAL:NAME` to the app port it means, before or after the
//! agent is there. Whether the agent's Secret holds a usable credential
//! ([`agent_credential_is_current`]) is here for the same reason: it is a decision. The rollout checks are in [`rollout`](super::rollout).
//!
//! This file is longer than most: the record, its writer and its undo must stay side by side
//! (a change to one without the others breaks the exact restore).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, ObjectFieldSelector,
    PodTemplateSpec, ProjectedVolumeSource, ResourceRequirements, SeccompProfile, Secret,
    SecretProjection, SecurityContext, Service, ServiceAccountTokenProjection, ServicePort, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use serde::{Deserialize, Serialize};
use tether_proto::{AgentCredentialRequest, AGENT_TOKEN_AUDIENCE};

pub use crate::names::{AGENT_ANNOTATION, AGENT_CONTAINER, AGENT_SECRET, MANAGED_BY};
/// The pod volume that mounts [`AGENT_SECRET`] and the pod's token for the manager.
pub const AGENT_VOLUME: &str = "tether-agent-tls";
/// Where the agent finds its credential (and `token`).
pub const CREDENTIALS_PATH: &str = "/var/run/tether";
/// Lifetime asked for the agent's pod token; the kubelet renews it well before.
const TOKEN_SECONDS: i64 = 3600;
/// The first agent port tried.
pub const FIRST_AGENT_PORT: u16 = 9900;
/// The [`AgentRecord`] format this tether writes and reads.
pub const RECORD_VERSION: u32 = 1;

/// Longest container port name (IANA_SVC_NAME).
const MAX_PORT_NAME: usize = 15;

/// The kinds of workload tether can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    ReplicaSet,
}

impl WorkloadKind {
    /// The order a bare name is looked up in.
    pub const ALL: [WorkloadKind; 3] = [Self::Deployment, Self::StatefulSet, Self::ReplicaSet];

    /// `Deployment`, `StatefulSet`, `ReplicaSet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::ReplicaSet => "ReplicaSet",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkloadKind {
    type Err = PlanError;

    /// Case-insensitive; accepts kubectl's singular, plural and short names.
    fn from_str(s: &str) -> Result<Self, PlanError> {
        match s.to_ascii_lowercase().as_str() {
            "deployment" | "deployments" | "deploy" => Ok(Self::Deployment),
            "statefulset" | "statefulsets" | "sts" => Ok(Self::StatefulSet),
            "replicaset" | "replicasets" | "rs" => Ok(Self::ReplicaSet),
            _ => Err(PlanError::UnknownKind(s.to_owned())),
        }
    }
}

/// Splits `KIND/NAME` (`deploy/orders`, `deployment.apps/orders`) or a bare `NAME`.
pub fn parse_workload_ref(s: &str) -> Result<(Option<WorkloadKind>, &str), PlanError> {
    let bad = || PlanError::BadWorkloadRef(s.to_owned());
    match s.split_once('/') {
        None if s.is_empty() => Err(bad()),
        None => Ok((None, s)),
        Some((_, name)) if name.is_empty() || name.contains('/') => Err(bad()),
        Some((kind, name)) => {
            let kind = kind.strip_suffix(".apps").unwrap_or(kind);
            Ok((Some(kind.parse()?), name))
        }
    }
}

/// A workload as far as injection cares.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
    pub namespace: String,
    /// The workload's own annotations (not the pod template's).
    pub annotations: BTreeMap<String, String>,
    pub template: PodTemplateSpec,
}

impl Workload {
    /// `Deployment/orders`: how the agent and `uninstall_all` name it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

impl fmt::Display for Workload {
    /// `Deployment orders`, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// What the agent runs with. Different settings mean a reinstall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// The agent image.
    pub image: String,
    /// The traffic manager's address, as the agent dials it.
    pub manager: SocketAddr,
}

/// Everything [`inject`] changed, stored in [`AGENT_ANNOTATION`] so [`restore`] can undo it.
///
/// Unknown fields are refused: a newer tether may record changes this one would not undo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentRecord {
    /// [`RECORD_VERSION`] at the time of writing.
    pub version: u32,
    /// The settings the agent was installed with.
    pub settings: AgentSettings,
    /// The agent container added.
    pub container: String,
    /// The credential volume added.
    pub volume: String,
    /// The agent's ports, one per app port, by app port.
    pub ports: Vec<PortMap>,
    /// App container ports renamed so their name could move to the agent.
    #[serde(default)]
    pub renamed_ports: Vec<RenamedPort>,
    /// Probes and lifecycle hooks that followed a rename.
    #[serde(default)]
    pub probes: Vec<RewrittenProbe>,
    /// Service ports pointed at the agent.
    #[serde(default)]
    pub services: Vec<RetargetedPort>,
}

/// One agent port and the app port behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMap {
    /// The app's port (the container port number).
    pub app_port: u16,
    /// The agent's port in front of it.
    pub agent_port: u16,
    /// The app container that listens on `app_port` (the pod's first container if none
    /// declares it).
    pub container: String,
    /// The agent port's name: the app port's former name, or `tx-<app_port>`.
    pub name: String,
}

/// A container port renamed from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenamedPort {
    pub container: String,
    pub from: String,
    pub to: String,
}

/// Where a named port can be used in a container besides its port list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
    /// The `postStart` lifecycle hook (resolves named ports like a probe).
    PostStart,
    /// The `preStop` lifecycle hook.
    PreStop,
}

/// A probe whose `httpGet`/`tcpSocket` port name changed from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewrittenProbe {
    pub container: String,
    pub probe: ProbeKind,
    pub from: String,
    pub to: String,
}

/// A Service port whose `targetPort` now is `agent_port`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetargetedPort {
    pub service: String,
    /// The Service port's `port`.
    pub port: i32,
    /// The Service port's protocol (`TCP`).
    pub protocol: String,
    pub agent_port: u16,
    /// The `targetPort` before, `None` if it was absent.
    pub original_target_port: Option<IntOrString>,
}

/// The service port an intercept asked for, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortChoice {
    pub service: String,
    pub service_port: u16,
    pub service_port_name: Option<String>,
    /// The app container behind it.
    pub container: String,
    /// The app's own port (never the agent's).
    pub app_port: u16,
}

/// What [`inject`] produced.
#[derive(Debug)]
pub struct Injected {
    /// The new pod template.
    pub template: PodTemplateSpec,
    /// The Services that changed (a Service absent here is to be left as it is).
    pub services: Vec<Service>,
    /// What to store in [`AGENT_ANNOTATION`].
    pub record: AgentRecord,
    /// Service ports that could not be taken over, and why; the others were.
    pub skipped: Vec<PlanError>,
}

/// What [`restore`] produced.
#[derive(Debug)]
pub struct Restored {
    /// The pod template without the agent.
    pub template: PodTemplateSpec,
    /// The Services that changed.
    pub services: Vec<Service>,
}

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
    #[error("{}", ambiguous_port(.workload, .asked.as_deref(), .ports))]
    AmbiguousPort {
        workload: String,
        asked: Option<String>,
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

fn unknown_port(services: &[String], asked: &str, available: &[String]) -> String {
    let (who, have, its) = match services {
        [one] => (format!("service {one}"), "has", "its"),
        many => (format!("services {}", many.join(", ")), "have", "their"),
    };
    format!(
        "{who} {have} no port `{asked}`; {its} ports are: {}",
        available.join(", ")
    )
}

fn ambiguous_port(workload: &str, asked: Option<&str>, ports: &[String]) -> String {
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

/// The Services whose selector matches the template's labels. Services without a selector
/// (endpoints managed by hand) are ignored.
pub fn services_selecting<'a>(
    template: &PodTemplateSpec,
    services: &'a [Service],
) -> Vec<&'a Service> {
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    services
        .iter()
        .filter(|s| {
            let Some(selector) = s.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                return false;
            };
            !selector.is_empty()
                && selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .collect()
}

/// Resolves `asked` (a Service port name or number, optionally `SERVICE/PORT`; `None` when the
/// Services have a single TCP port) to the app port behind it.
///
/// Works on the workload as it was before the agent: with an agent installed, a named port
/// resolves to the app's renamed port and a retargeted port to the app port, never the agent's.
pub fn choose_port(
    workload: &Workload,
    services: &[Service],
    asked: Option<&str>,
) -> Result<PortChoice, PlanError> {
    let who = workload.to_string();
    let (template, services) = original_view(workload, services)?;
    let selecting = services_selecting(&template, &services);
    if selecting.is_empty() {
        return Err(PlanError::NoService { workload: who });
    }
    let all: Vec<(&Service, &ServicePort)> = selecting
        .iter()
        .flat_map(|s| ports_of(s).iter().map(move |p| (*s, p)))
        .collect();
    let several = selecting.len() > 1;
    let describe = |s: &Service, p: &ServicePort| describe_port(several.then(|| name_of(s)), p);

    let matched: Vec<(&Service, &ServicePort)> = match asked {
        None => all.clone(),
        Some(asked) => {
            let (service, port) = match asked.split_once('/') {
                Some((service, port)) => (Some(service), port),
                None => (None, asked),
            };
            let matched: Vec<_> = all
                .iter()
                .filter(|(s, p)| {
                    service.is_none_or(|n| n == name_of(s))
                        && (p.name.as_deref() == Some(port) || p.port.to_string() == port)
                })
                .copied()
                .collect();
            if matched.is_empty() {
                return Err(PlanError::UnknownPort {
                    services: selecting.iter().map(|s| name_of(s).to_owned()).collect(),
                    asked: asked.to_owned(),
                    available: all.iter().map(|(s, p)| describe(s, p)).collect(),
                });
            }
            matched
        }
    };

    let tcp: Vec<_> = matched.iter().filter(|(_, p)| is_tcp(p)).collect();
    if tcp.is_empty() {
        return Err(match (asked, matched.first()) {
            (Some(_), Some((s, p))) => PlanError::UdpPort {
                service: name_of(s).to_owned(),
                port: p.name.clone().unwrap_or_else(|| p.port.to_string()),
                protocol: protocol_of(p).to_owned(),
            },
            _ => PlanError::NoTcpPort { workload: who },
        });
    }
    let mut landed = Vec::new();
    let mut first_error = None;
    for (s, p) in tcp {
        match land(&who, &template, s, p) {
            Ok(l) => landed.push((*s, *p, l)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let Some((service, port, landing)) = landed.first() else {
        return Err(first_error.unwrap_or(PlanError::NoTcpPort { workload: who }));
    };
    let app_ports: BTreeSet<u16> = landed.iter().map(|(_, _, l)| l.app_port).collect();
    if app_ports.len() > 1 {
        return Err(PlanError::AmbiguousPort {
            workload: who,
            asked: asked.map(str::to_owned),
            ports: landed.iter().map(|(s, p, _)| describe(s, p)).collect(),
        });
    }
    Ok(PortChoice {
        service: name_of(service).to_owned(),
        service_port: port_number(port.port).unwrap_or_default(),
        service_port_name: port.name.clone(),
        container: landing.container.clone(),
        app_port: landing.app_port,
    })
}

/// Plans the agent's installation: the new template, the changed Services and the record.
///
/// An agent already there is first [restored](restore) away, so the result always starts from
/// the original workload: calling this again with the same inputs gives the same record, and
/// new settings or new Services give a clean reinstall.
pub fn inject(
    workload: &Workload,
    services: &[Service],
    settings: &AgentSettings,
) -> Result<Injected, PlanError> {
    let who = workload.to_string();
    let (mut template, mut base) = original_view(workload, services)?;
    let taken = if has_container(&template, AGENT_CONTAINER) {
        Some(("container", AGENT_CONTAINER))
    } else if has_volume(&template, AGENT_VOLUME) {
        Some(("volume", AGENT_VOLUME))
    } else {
        None
    };
    if let Some((what, name)) = taken {
        return Err(PlanError::NameTaken {
            workload: who,
            what,
            name: name.to_owned(),
        });
    }

    // Every TCP port of every Service that selects the pods.
    let selecting = services_selecting(&template, &base);
    if selecting.is_empty() {
        return Err(PlanError::NoService { workload: who });
    }
    let mut skipped = Vec::new();
    let mut takeovers = Vec::new();
    for s in selecting {
        for p in ports_of(s).iter().filter(|p| is_tcp(p)) {
            match land(&who, &template, s, p) {
                Ok(landing) => takeovers.push(Takeover {
                    service: name_of(s).to_owned(),
                    port: p.port,
                    protocol: protocol_of(p).to_owned(),
                    landing,
                }),
                Err(e) => skipped.push(e),
            }
        }
    }
    if takeovers.is_empty() {
        let first = (!skipped.is_empty()).then(|| skipped.remove(0));
        return Err(first.unwrap_or(PlanError::NoTcpPort { workload: who }));
    }
    takeovers.sort_by(|a, b| {
        (a.landing.app_port, &a.landing.named, &a.service, a.port).cmp(&(
            b.landing.app_port,
            &b.landing.named,
            &b.service,
            b.port,
        ))
    });

    // One agent port per app port. Named targets first: their name moves to the agent port.
    let mut numbers = declared_numbers(&template);
    numbers.extend(takeovers.iter().map(|t| t.landing.app_port));
    let mut names = declared_names(&template);
    let mut by_app: BTreeMap<u16, PortMap> = BTreeMap::new();
    let mut renames: Vec<RenamedPort> = Vec::new();
    for t in &takeovers {
        let Some(name) = &t.landing.named else {
            continue;
        };
        let app_port = t.landing.app_port;
        match by_app.get(&app_port) {
            Some(existing) if existing.name == *name => {}
            Some(existing) => skipped.push(PlanError::SharedPort {
                workload: who.clone(),
                port: app_port,
                first: existing.name.clone(),
                second: name.clone(),
            }),
            None => {
                let to = fresh_port_name(name, &names);
                names.insert(to.clone());
                renames.push(RenamedPort {
                    container: t.landing.container.clone(),
                    from: name.clone(),
                    to,
                });
                by_app.insert(app_port, port_map(&t.landing, name.clone()));
            }
        }
    }
    for t in &takeovers {
        by_app.entry(t.landing.app_port).or_insert_with(|| {
            let name = fresh_port_name(&t.landing.app_port.to_string(), &names);
            names.insert(name.clone());
            port_map(&t.landing, name)
        });
    }
    let mut next = FIRST_AGENT_PORT;
    for map in by_app.values_mut() {
        while numbers.contains(&next) {
            next = next.checked_add(1).ok_or_else(|| PlanError::NoFreePort {
                workload: who.clone(),
            })?;
        }
        map.agent_port = next;
        numbers.insert(next);
    }
    let ports: Vec<PortMap> = by_app.into_values().collect();

    // The pod template.
    let spec = template.spec.get_or_insert_with(Default::default);
    let mut probes = Vec::new();
    for r in &renames {
        let Some(c) = spec.containers.iter_mut().find(|c| c.name == r.container) else {
            continue;
        };
        for p in c.ports.iter_mut().flatten() {
            if p.name.as_deref() == Some(r.from.as_str()) {
                p.name = Some(r.to.clone());
            }
        }
        for (probe, port) in check_ports(c) {
            if *port == IntOrString::String(r.from.clone()) {
                *port = IntOrString::String(r.to.clone());
                probes.push(RewrittenProbe {
                    container: r.container.clone(),
                    probe,
                    from: r.from.clone(),
                    to: r.to.clone(),
                });
            }
        }
    }
    spec.containers
        .push(agent_container(workload, settings, &ports));
    spec.volumes
        .get_or_insert_with(Vec::new)
        .push(agent_volume());

    // The Services: numeric targets now point at the agent.
    let mut retargeted = Vec::new();
    for t in takeovers.iter().filter(|t| t.landing.named.is_none()) {
        let Some(agent_port) = ports
            .iter()
            .find(|m| m.app_port == t.landing.app_port)
            .map(|m| m.agent_port)
        else {
            continue;
        };
        let Some(port) = base
            .iter_mut()
            .filter(|s| name_of(s) == t.service)
            .flat_map(|s| s.spec.iter_mut().flat_map(|s| s.ports.iter_mut().flatten()))
            .find(|p| p.port == t.port && protocol_of(p) == t.protocol)
        else {
            continue;
        };
        retargeted.push(RetargetedPort {
            service: t.service.clone(),
            port: t.port,
            protocol: t.protocol.clone(),
            agent_port,
            original_target_port: port.target_port.clone(),
        });
        port.target_port = Some(IntOrString::Int(agent_port.into()));
    }
    retargeted.sort_by(|a, b| (&a.service, a.port).cmp(&(&b.service, b.port)));

    Ok(Injected {
        template,
        services: changed(services, base),
        record: AgentRecord {
            version: RECORD_VERSION,
            settings: settings.clone(),
            container: AGENT_CONTAINER.to_owned(),
            volume: AGENT_VOLUME.to_owned(),
            ports,
            renamed_ports: renames,
            probes,
            services: retargeted,
        },
        skipped,
    })
}

/// Undoes what `record` says was changed, and only that. A field that no longer holds the value
/// tether wrote (the user changed it since) is left as the user set it.
pub fn restore(template: &PodTemplateSpec, services: &[Service], record: &AgentRecord) -> Restored {
    let mut template = template.clone();
    if let Some(spec) = template.spec.as_mut() {
        spec.containers.retain(|c| c.name != record.container);
        if let Some(volumes) = spec.volumes.as_mut() {
            volumes.retain(|v| v.name != record.volume);
            // The API server omits empty lists, so an emptied list was an absent one.
            if volumes.is_empty() {
                spec.volumes = None;
            }
        }
        for r in &record.probes {
            let Some(c) = spec.containers.iter_mut().find(|c| c.name == r.container) else {
                continue;
            };
            for (probe, port) in check_ports(c) {
                if probe == r.probe && *port == IntOrString::String(r.to.clone()) {
                    *port = IntOrString::String(r.from.clone());
                }
            }
        }
        for r in &record.renamed_ports {
            // Renaming back onto a name the user has since reused would make the pod invalid.
            let reused = spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .any(|p| p.name.as_deref() == Some(r.from.as_str()));
            let Some(c) = spec.containers.iter_mut().find(|c| c.name == r.container) else {
                continue;
            };
            for p in c.ports.iter_mut().flatten() {
                if p.name.as_deref() == Some(r.to.as_str()) && !reused {
                    p.name = Some(r.from.clone());
                }
            }
        }
    }

    let mut base = services.to_vec();
    for r in &record.services {
        let ours = Some(IntOrString::Int(r.agent_port.into()));
        let port = base
            .iter_mut()
            .filter(|s| name_of(s) == r.service)
            .flat_map(|s| s.spec.iter_mut().flat_map(|s| s.ports.iter_mut().flatten()))
            .find(|p| p.port == r.port && protocol_of(p) == r.protocol && p.target_port == ours);
        if let Some(port) = port {
            port.target_port = r.original_target_port.clone();
        }
    }
    Restored {
        template,
        services: changed(services, base),
    }
}

/// The record in the workload's annotation, if any.
pub fn record_of(workload: &Workload) -> Result<Option<AgentRecord>, PlanError> {
    let Some(json) = workload.annotations.get(AGENT_ANNOTATION) else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    // A newer format fails the strict parse below; say why instead.
    if let Ok(Version { version }) = serde_json::from_str::<Version>(json) {
        if version > RECORD_VERSION {
            return Err(PlanError::NewerRecord {
                workload: workload.to_string(),
                version,
            });
        }
    }
    serde_json::from_str(json)
        .map(Some)
        .map_err(|source| PlanError::BadRecord {
            workload: workload.to_string(),
            source,
        })
}

/// Sets (`Some`) or removes (`None`) the record annotation in a workload's annotations. An
/// emptied map becomes `None`, as the API server would return it.
pub fn annotate(annotations: &mut Option<BTreeMap<String, String>>, record: Option<&AgentRecord>) {
    match record {
        Some(record) => {
            // Plain structs with string keys: serializing cannot fail.
            let json = serde_json::to_string(record).expect("a record serializes");
            annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(AGENT_ANNOTATION.to_owned(), json);
        }
        None => {
            if let Some(map) = annotations.as_mut() {
                map.remove(AGENT_ANNOTATION);
                if map.is_empty() {
                    *annotations = None;
                }
            }
        }
    }
}

/// The workload and Services as they were before the agent.
fn original_view(
    workload: &Workload,
    services: &[Service],
) -> Result<(PodTemplateSpec, Vec<Service>), PlanError> {
    match record_of(workload)? {
        None => Ok((workload.template.clone(), services.to_vec())),
        Some(record) => {
            let restored = restore(&workload.template, services, &record);
            let services = services
                .iter()
                .map(|s| {
                    restored
                        .services
                        .iter()
                        .find(|r| name_of(r) == name_of(s))
                        .unwrap_or(s)
                        .clone()
                })
                .collect();
            Ok((restored.template, services))
        }
    }
}

/// The Services of `after` that differ from the same position in `before`.
fn changed(before: &[Service], after: Vec<Service>) -> Vec<Service> {
    after
        .into_iter()
        .zip(before)
        .filter(|(a, b)| a != *b)
        .map(|(a, _)| a)
        .collect()
}

/// A Service port to take over.
#[derive(Debug)]
struct Takeover {
    service: String,
    port: i32,
    protocol: String,
    landing: Landing,
}

/// Where a Service port's traffic lands in the pod.
#[derive(Debug, Clone)]
struct Landing {
    container: String,
    app_port: u16,
    /// The `targetPort` name, when it is one.
    named: Option<String>,
}

fn land(
    who: &str,
    template: &PodTemplateSpec,
    service: &Service,
    port: &ServicePort,
) -> Result<Landing, PlanError> {
    let containers = template.spec.as_ref().map_or(&[][..], |s| &s.containers);
    let number = match &port.target_port {
        Some(IntOrString::String(name)) => {
            return containers
                .iter()
                .find_map(|c| {
                    let p = c.ports.iter().flatten().find(|p| {
                        p.name.as_deref() == Some(name.as_str())
                            && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                    })?;
                    Some(Landing {
                        container: c.name.clone(),
                        app_port: port_number(p.container_port)?,
                        named: Some(name.clone()),
                    })
                })
                .ok_or_else(|| PlanError::NamedPortNotFound {
                    service: name_of(service).to_owned(),
                    name: name.clone(),
                    workload: who.to_owned(),
                });
        }
        Some(IntOrString::Int(n)) => *n,
        None => port.port,
    };
    let app_port = port_number(number).ok_or_else(|| PlanError::InvalidPort {
        service: name_of(service).to_owned(),
        port: number,
    })?;
    let declaring = containers.iter().find(|c| {
        c.ports
            .iter()
            .flatten()
            .any(|p| p.container_port == number && p.protocol.as_deref().unwrap_or("TCP") == "TCP")
    });
    Ok(Landing {
        container: declaring
            .or(containers.first())
            .map(|c| c.name.clone())
            .unwrap_or_default(),
        app_port,
        named: None,
    })
}

fn port_map(landing: &Landing, name: String) -> PortMap {
    PortMap {
        app_port: landing.app_port,
        agent_port: 0,
        container: landing.container.clone(),
        name,
    }
}

/// `tx-<name>`, cut to 15 characters; `tx1-`, `tx2-`, … when that is taken. Always a valid
/// IANA_SVC_NAME when `name` is one (or a port number).
fn fresh_port_name(name: &str, taken: &BTreeSet<String>) -> String {
    // Candidates differ in their prefix, so among `taken.len() + 1` of them one is free.
    (0..=taken.len())
        .map(|i| {
            let prefix = if i == 0 {
                "tx-".to_owned()
            } else {
                format!("tx{i}-")
            };
            let mut candidate = format!("{prefix}{name}");
            candidate.truncate(MAX_PORT_NAME);
            candidate.trim_end_matches('-').to_owned()
        })
        .find(|c| !taken.contains(c))
        .expect("one of taken.len() + 1 distinct candidates is free")
}

/// Whether `name` is a valid IANA_SVC_NAME (what a container port name must be).
pub fn is_iana_svc_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PORT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// The `httpGet`/`tcpSocket` ports of a container's probes and lifecycle hooks.
fn check_ports(c: &mut Container) -> Vec<(ProbeKind, &mut IntOrString)> {
    let mut out = Vec::new();
    for (kind, probe) in [
        (ProbeKind::Liveness, c.liveness_probe.as_mut()),
        (ProbeKind::Readiness, c.readiness_probe.as_mut()),
        (ProbeKind::Startup, c.startup_probe.as_mut()),
    ] {
        if let Some(p) = probe {
            out.extend(p.http_get.as_mut().map(|h| (kind, &mut h.port)));
            out.extend(p.tcp_socket.as_mut().map(|t| (kind, &mut t.port)));
        }
    }
    if let Some(l) = c.lifecycle.as_mut() {
        for (kind, hook) in [
            (ProbeKind::PostStart, l.post_start.as_mut()),
            (ProbeKind::PreStop, l.pre_stop.as_mut()),
        ] {
            if let Some(h) = hook {
                out.extend(h.http_get.as_mut().map(|h| (kind, &mut h.port)));
                out.extend(h.tcp_socket.as_mut().map(|t| (kind, &mut t.port)));
            }
        }
    }
    out
}

/// The agent container for `ports`.
fn agent_container(workload: &Workload, settings: &AgentSettings, ports: &[PortMap]) -> Container {
    let mut args = vec![
        "sidecar".to_owned(),
        "--manager".to_owned(),
        settings.manager.to_string(),
        "--credentials".to_owned(),
        CREDENTIALS_PATH.to_owned(),
        "--workload".to_owned(),
        workload.id(),
    ];
    for p in ports {
        args.push("--forward".to_owned());
        args.push(format!("{}={}", p.agent_port, p.app_port));
    }
    let field_env = |name: &str, path: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let quantities = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect::<BTreeMap<_, _>>()
    };
    Container {
        name: AGENT_CONTAINER.to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(args),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(
            ports
                .iter()
                .map(|p| ContainerPort {
                    name: Some(p.name.clone()),
                    container_port: p.agent_port.into(),
                    protocol: Some("TCP".to_owned()),
                    ..Default::default()
                })
                .collect(),
        ),
        volume_mounts: Some(vec![VolumeMount {
            name: AGENT_VOLUME.to_owned(),
            mount_path: CREDENTIALS_PATH.to_owned(),
            read_only: Some(true),
            ..Default::default()
        }]),
        // The restricted Pod Security Standard, so the agent fits any namespace.
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..Default::default()
            }),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "10m"), ("memory", "16Mi")])),
            limits: Some(quantities(&[("memory", "64Mi")])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The credential from [`AGENT_SECRET`], and a token the kubelet issues for this pod (audience
/// [`AGENT_TOKEN_AUDIENCE`]) with which the manager ties the agent to its pod.
fn agent_volume() -> Volume {
    Volume {
        name: AGENT_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: AGENT_SECRET.to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(AGENT_TOKEN_AUDIENCE.to_owned()),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        path: "token".to_owned(),
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether `secret` (the namespace's [`AGENT_SECRET`], if any) holds an agent credential the
/// manager accepts: signed by its CA (`ca_pem`) and issued for `namespace`.
pub fn agent_credential_is_current(namespace: &str, secret: Option<&Secret>, ca_pem: &str) -> bool {
    let text = |key: &str| {
        secret?
            .data
            .as_ref()?
            .get(key)
            .and_then(|v| std::str::from_utf8(&v.0).ok())
    };
    let issued_here = text("tls.crt")
        .and_then(tether_tunnel::Peer::from_pem)
        .is_some_and(|peer| peer.role == tether_tunnel::Role::Agent && peer.name == namespace);
    text("ca.crt") == Some(ca_pem) && text("tls.key").is_some() && issued_here
}

/// The agent Secret holding only a credential request (`nonce`), for a namespace that has none.
pub fn agent_request_secret(namespace: &str, nonce: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(AGENT_SECRET.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_owned(),
                MANAGED_BY.1.to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            AgentCredentialRequest::secret_key(nonce),
            ByteString(nonce.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// A merge patch that puts a credential request (`nonce`) into an existing agent Secret.
pub fn agent_request_patch(nonce: &str) -> serde_json::Value {
    let key = AgentCredentialRequest::secret_key(nonce);
    serde_json::json!({ "data": { key: base64(nonce.as_bytes()) } })
}

/// A merge patch that stores the manager's answer to the request `nonce` as the agents mount it
/// (`ca.crt`, `tls.crt`, `tls.key`) and removes that request.
pub fn agent_credential_patch(
    nonce: &str,
    credential: &tether_proto::AgentCredential,
) -> serde_json::Value {
    let key = AgentCredentialRequest::secret_key(nonce);
    serde_json::json!({ "data": {
        "ca.crt": base64(credential.ca_pem.as_bytes()),
        "tls.crt": base64(credential.cert_pem.as_bytes()),
        "tls.key": base64(credential.key_pem.as_bytes()),
        key: null,
    } })
}

/// Secret data as JSON (base64, as the API server expects it). ByteString does the encoding,
/// which cannot fail.
fn base64(bytes: &[u8]) -> serde_json::Value {
    serde_json::to_value(ByteString(bytes.to_vec())).unwrap_or_default()
}

/// Whether the template has the agent container and its volume (the annotation alone does not
/// prove it: they may have been removed by hand).
///
/// Nor does the container: a re-applied manifest (GitOps, `kubectl apply`) can put the app's
/// port names back while leaving the agent in place, and then a named Service port reaches the
/// app directly. So every port the record renamed must still carry its new name, and its old
/// name must belong to the agent alone.
pub fn has_agent(template: &PodTemplateSpec, record: &AgentRecord) -> bool {
    let containers = template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let renames_hold = record.renamed_ports.iter().all(|r| {
        let renamed = containers.iter().any(|c| {
            c.name == r.container
                && c.ports
                    .iter()
                    .flatten()
                    .any(|p| p.name.as_deref() == Some(r.to.as_str()))
        });
        let old_name_is_the_agents = containers
            .iter()
            .filter(|c| c.name != record.container)
            .all(|c| {
                c.ports
                    .iter()
                    .flatten()
                    .all(|p| p.name.as_deref() != Some(r.from.as_str()))
            });
        renamed && old_name_is_the_agents
    });
    has_container(template, &record.container)
        && has_volume(template, &record.volume)
        && renames_hold
}

/// Whether the template's agent is the one this tether installs: its image, and a volume that
/// carries the pod's token. An agent from an older tether is replaced (the manager would refuse
/// it), which rolls the pods.
pub fn agent_is_current(template: &PodTemplateSpec, settings: &AgentSettings) -> bool {
    let Some(spec) = template.spec.as_ref() else {
        return false;
    };
    let image = spec
        .containers
        .iter()
        .find(|c| c.name == AGENT_CONTAINER)
        .and_then(|c| c.image.as_deref());
    let token = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == AGENT_VOLUME)
        .and_then(|v| v.projected.as_ref())
        .and_then(|p| p.sources.as_ref())
        .is_some_and(|sources| sources.iter().any(|s| s.service_account_token.is_some()));
    image == Some(settings.image.as_str()) && token
}

fn has_container(template: &PodTemplateSpec, name: &str) -> bool {
    template
        .spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().any(|c| c.name == name))
}

fn has_volume(template: &PodTemplateSpec, name: &str) -> bool {
    template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.name == name))
}

/// Every container (and init container) port of the pod.
fn declared_ports(template: &PodTemplateSpec) -> impl Iterator<Item = &ContainerPort> {
    template.spec.iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
    })
}

fn declared_numbers(template: &PodTemplateSpec) -> BTreeSet<u16> {
    declared_ports(template)
        .filter_map(|p| port_number(p.container_port))
        .collect()
}

fn declared_names(template: &PodTemplateSpec) -> BTreeSet<String> {
    declared_ports(template)
        .filter_map(|p| p.name.clone())
        .collect()
}

fn name_of(s: &Service) -> &str {
    s.metadata.name.as_deref().unwrap_or("")
}

fn ports_of(s: &Service) -> &[ServicePort] {
    s.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[])
}

fn protocol_of(p: &ServicePort) -> &str {
    p.protocol.as_deref().unwrap_or("TCP")
}

fn is_tcp(p: &ServicePort) -> bool {
    protocol_of(p) == "TCP"
}

fn port_number(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|&p| p != 0)
}

/// `http (80→http)`, or `orders/http (80→http)` when several Services are involved.
fn describe_port(service: Option<&str>, p: &ServicePort) -> String {
    let label = p.name.clone().unwrap_or_else(|| p.port.to_string());
    let target = match &p.target_port {
        None => p.port.to_string(),
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
    };
    let prefix = service.map(|s| format!("{s}/")).unwrap_or_default();
    format!("{prefix}{label} ({}→{target})", p.port)
}

#[cfg(test)]
mod tests;
