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
//! ([`agent_credential_is_current`]) is here for the same reason: it is a decision. The rollout checks are in
//! [`rollout`](crate::rollout).
//!
//! # Layout
//! This file holds the record, its writer ([`inject`]) and its undo ([`restore`]) side by side:
//! a change to one without the others breaks the exact restore. Around them: `kind` (which
//! workload), `target` (which workload and Service `intercept TARGET` means), `ports` (which
//! Service ports, which one an intercept means, in which container), `container` (the
//! agent container and volume), `credential` (the agents' Secret) and `error`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{PodTemplateSpec, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

pub use crate::names::{
    AGENT_ANNOTATION, AGENT_CONTAINER, AGENT_SECRET, INTERCEPTS_ANNOTATION, MANAGED_BY,
};

mod container;
mod credential;
mod error;
mod kind;
mod ports;
mod target;

pub use container::*;
pub use credential::*;
pub use error::*;
pub use kind::*;
pub use ports::*;
pub use target::*;

/// The first agent port tried.
pub const FIRST_AGENT_PORT: u16 = 9900;
/// The [`AgentRecord`] format this tether writes and reads.
pub const RECORD_VERSION: u32 = 1;

/// Longest container port name (IANA_SVC_NAME).
const MAX_PORT_NAME: usize = 15;

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
            match land(&who, &template, s, p, None) {
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
    let mounts = app_mounts(spec, &ports);
    spec.containers
        .push(agent_container(workload, settings, &ports, &mounts));
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

/// Sets (`Some`) or removes (`None`, with the manager's [`INTERCEPTS_ANNOTATION`]) the record
/// annotation in a workload's annotations. An emptied map becomes `None`, as the API server
/// would return it.
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
                // The manager's list of intercepts goes with the agent (no agent, no intercept).
                map.remove(INTERCEPTS_ANNOTATION);
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

/// Where `port` of `service` lands in the pod. A numeric port no container declares lands in
/// `prefer` if given (`--container`), else in the pod's first container.
fn land(
    who: &str,
    template: &PodTemplateSpec,
    service: &Service,
    port: &ServicePort,
    prefer: Option<&str>,
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
            .or_else(|| prefer.and_then(|p| containers.iter().find(|c| c.name == p)))
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

#[cfg(test)]
mod tests;
