//! What `tether intercept TARGET` names: a workload (`orders`, `deploy/orders`) or a Service
//! (`orders`, `svc/orders`), and which workload and Service that means.
//!
//! Telepresence's and the Kubernetes guide's `intercept SERVICE --port LOCAL:REMOTE` and tether's
//! own `intercept WORKLOAD` share one argument. A bare name is a workload or a Service; it is
//! ambiguous only when both exist and mean different workloads (the usual `orders` Deployment
//! behind the `orders` Service is not). Sans-IO: the caller reads the objects, this decides.

use k8s_openapi::api::core::v1::Service;

use super::*;

/// `TARGET` as written: a workload reference, a Service reference, or a bare name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetRef<'a> {
    /// `KIND/NAME`.
    Workload(WorkloadKind, &'a str),
    /// `svc/NAME` (also `service/NAME`, `services/NAME`).
    Service(&'a str),
    /// `NAME`: a workload or a Service.
    Bare(&'a str),
}

impl<'a> TargetRef<'a> {
    /// Parses `TARGET`.
    pub fn parse(text: &'a str) -> Result<TargetRef<'a>, TargetError> {
        let bad = || TargetError::BadRef(text.to_owned());
        match text.split_once('/') {
            None if text.is_empty() => Err(bad()),
            None => Ok(TargetRef::Bare(text)),
            Some((_, name)) if name.is_empty() || name.contains('/') => Err(bad()),
            Some((kind, name)) => match kind.to_ascii_lowercase().as_str() {
                "svc" | "service" | "services" => Ok(TargetRef::Service(name)),
                _ => match parse_workload_ref(text) {
                    Ok((Some(kind), name)) => Ok(TargetRef::Workload(kind, name)),
                    _ => Err(TargetError::UnknownKind(kind.to_owned())),
                },
            },
        }
    }

    /// The workload name to look up, if `TARGET` can be a workload (`KIND/NAME` or `NAME`).
    pub fn workload_lookup(&self) -> Option<String> {
        match self {
            TargetRef::Workload(kind, name) => Some(format!("{kind}/{name}")),
            TargetRef::Bare(name) => Some((*name).to_owned()),
            TargetRef::Service(_) => None,
        }
    }

    /// The Service name `TARGET` could be (`svc/NAME` or `NAME`).
    pub fn service_name(&self) -> Option<&'a str> {
        match self {
            TargetRef::Service(name) | TargetRef::Bare(name) => Some(name),
            TargetRef::Workload(..) => None,
        }
    }
}

/// The `--service` and `--workload` flags: which Service, which workload, when the target alone
/// leaves a choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pick<'a> {
    pub service: Option<&'a str>,
    pub workload: Option<&'a str>,
}

/// What the target resolved to.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub workload: Workload,
    /// The Service whose ports the intercept chooses among (`None`: every Service selecting the
    /// workload).
    pub service: Option<String>,
}

/// Resolves `target` (parsed) with `pick`.
///
/// - `named`: the workload `TARGET` names, if it can be one and it exists;
/// - `workloads`: every workload of the namespace (needed only when `TARGET` is a Service; may
///   be empty otherwise);
/// - `services`: every Service of the namespace.
pub fn resolve_target(
    namespace: &str,
    target: TargetRef<'_>,
    pick: Pick<'_>,
    named: Option<&Workload>,
    workloads: &[Workload],
    services: &[Service],
) -> Result<Resolved, TargetError> {
    let service = target
        .service_name()
        .and_then(|n| services.iter().find(|s| name_of(s) == n));
    match (target, named, service) {
        (TargetRef::Workload(kind, name), None, _) => Err(TargetError::UnknownWorkload {
            what: kind.to_string(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }),
        (TargetRef::Service(name), _, None) => Err(TargetError::UnknownService {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }),
        (TargetRef::Bare(name), None, None) => Err(TargetError::Unknown {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }),
        (TargetRef::Workload(..), Some(w), _) | (TargetRef::Bare(_), Some(w), None) => {
            by_workload(w, pick, services)
        }
        (TargetRef::Service(_), _, Some(s)) | (TargetRef::Bare(_), None, Some(s)) => {
            by_service(s, pick, workloads)
        }
        (TargetRef::Bare(name), Some(w), Some(s)) => {
            if selects(s, w) {
                // `orders` the Deployment behind `orders` the Service: one meaning.
                by_workload(w, pick, services)
            } else {
                Err(TargetError::Both {
                    name: name.to_owned(),
                    workload: w.to_string(),
                    kind: short_kind(w.kind),
                    selected: selected_by(s, workloads),
                })
            }
        }
    }
}

fn by_workload(
    workload: &Workload,
    pick: Pick<'_>,
    services: &[Service],
) -> Result<Resolved, TargetError> {
    if let Some(asked) = pick.workload {
        if !names(workload, asked) {
            return Err(TargetError::OtherWorkload {
                asked: asked.to_owned(),
                target: workload.to_string(),
            });
        }
    }
    if let Some(asked) = pick.service {
        let fronting: Vec<String> = services
            .iter()
            .filter(|s| selects(s, workload))
            .map(|s| name_of(s).to_owned())
            .collect();
        if !fronting.iter().any(|s| s == asked) {
            return Err(TargetError::ServiceNotSelecting {
                service: asked.to_owned(),
                workload: workload.to_string(),
                services: fronting,
            });
        }
    }
    Ok(Resolved {
        workload: workload.clone(),
        service: pick.service.map(str::to_owned),
    })
}

fn by_service(
    service: &Service,
    pick: Pick<'_>,
    workloads: &[Workload],
) -> Result<Resolved, TargetError> {
    let name = name_of(service);
    if let Some(asked) = pick.service {
        if asked != name {
            return Err(TargetError::OtherService {
                asked: asked.to_owned(),
                target: name.to_owned(),
            });
        }
    }
    let selected: Vec<&Workload> = workloads.iter().filter(|w| selects(service, w)).collect();
    let chosen =
        match (pick.workload, selected.as_slice()) {
            (Some(asked), _) => selected.iter().find(|w| names(w, asked)).ok_or_else(|| {
                TargetError::NotSelected {
                    service: name.to_owned(),
                    asked: asked.to_owned(),
                    selected: selected_by(service, workloads),
                }
            })?,
            (None, []) => return Err(TargetError::SelectsNothing(name.to_owned())),
            (None, [one]) => one,
            (None, _) => {
                return Err(TargetError::SeveralWorkloads {
                    service: name.to_owned(),
                    selected: selected_by(service, workloads),
                })
            }
        };
    Ok(Resolved {
        workload: (*chosen).clone(),
        service: Some(name.to_owned()),
    })
}

/// Whether `service` selects the pods of `workload`.
fn selects(service: &Service, workload: &Workload) -> bool {
    !services_selecting(&workload.template, std::slice::from_ref(service)).is_empty()
}

/// Whether `asked` (`NAME` or `KIND/NAME`) names `workload`.
fn names(workload: &Workload, asked: &str) -> bool {
    match parse_workload_ref(asked) {
        Ok((kind, name)) => name == workload.name && kind.is_none_or(|k| k == workload.kind),
        Err(_) => false,
    }
}

/// `deploy/orders`, `sts/db`, `rs/legacy`: how a user writes each of the workloads `service`
/// selects.
fn selected_by(service: &Service, workloads: &[Workload]) -> Vec<String> {
    workloads
        .iter()
        .filter(|w| selects(service, w))
        .map(|w| format!("{}/{}", short_kind(w.kind), w.name))
        .collect()
}

fn short_kind(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "deploy",
        WorkloadKind::StatefulSet => "sts",
        WorkloadKind::ReplicaSet => "rs",
    }
}

/// Why `TARGET` does not name one workload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not `NAME`, `KIND/NAME` or `svc/NAME`.
    #[error(
        "`{0}` is not a workload or a Service: write NAME, KIND/NAME (deploy/orders) or svc/NAME"
    )]
    BadRef(String),
    /// `KIND/NAME` with a kind tether does not intercept.
    #[error("unknown kind `{0}`: write deploy/NAME, sts/NAME, rs/NAME or svc/NAME")]
    UnknownKind(String),
    /// Neither a workload nor a Service has that name.
    #[error(
        "no Deployment, StatefulSet, ReplicaSet or Service named {name} in namespace {namespace}"
    )]
    Unknown { name: String, namespace: String },
    /// `KIND/NAME` that does not exist.
    #[error("no {what} named {name} in namespace {namespace}")]
    UnknownWorkload {
        what: String,
        name: String,
        namespace: String,
    },
    /// `svc/NAME` that does not exist.
    #[error("no Service named {name} in namespace {namespace}")]
    UnknownService { name: String, namespace: String },
    /// A bare name that is a workload and a Service that does not select it.
    #[error("{name} is both {workload} and a Service that selects {}: write {kind}/{name} for the workload or svc/{name} for the Service", list_or_nothing(.selected))]
    Both {
        name: String,
        workload: String,
        kind: &'static str,
        selected: Vec<String>,
    },
    /// The Service selects several workloads.
    #[error("Service {service} selects several workloads: {}; choose one with --workload (e.g. --workload {})", .selected.join(", "), .selected.first().map(String::as_str).unwrap_or_default())]
    SeveralWorkloads {
        service: String,
        selected: Vec<String>,
    },
    /// The Service selects no workload tether can intercept.
    #[error("Service {0} selects no Deployment, StatefulSet or ReplicaSet: tether intercepts a workload's pods")]
    SelectsNothing(String),
    /// `--workload` names none of the Service's workloads.
    #[error("Service {service} does not select {asked}; it selects {}", list_or_nothing(.selected))]
    NotSelected {
        service: String,
        asked: String,
        selected: Vec<String>,
    },
    /// `--workload` names another workload than `TARGET`.
    #[error("--workload {asked} is not {target}, the workload being intercepted")]
    OtherWorkload { asked: String, target: String },
    /// `--service` names another Service than `TARGET`.
    #[error("--service {asked} is not {target}, the Service being intercepted")]
    OtherService { asked: String, target: String },
    /// `--service` names a Service that does not select the workload.
    #[error("Service {service} does not select {workload}; {}", fronting(.services))]
    ServiceNotSelecting {
        service: String,
        workload: String,
        services: Vec<String>,
    },
}

fn list_or_nothing(items: &[String]) -> String {
    if items.is_empty() {
        "no workload".to_owned()
    } else {
        items.join(", ")
    }
}

fn fronting(services: &[String]) -> String {
    if services.is_empty() {
        "no Service selects it".to_owned()
    } else {
        format!("the Services that do: {}", services.join(", "))
    }
}

#[cfg(test)]
mod tests;
