//! Which Service ports reach the workload, which one an intercept means, and reading the pod's
//! declared ports.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, ContainerPort, PodTemplateSpec, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;

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

/// Which Service port an intercept means: `--port LOCAL:PORT`, `--service` and `--container`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortQuery<'a> {
    /// A Service port name or number, optionally `SERVICE/PORT`; `None` when the Services have a
    /// single TCP port.
    pub port: Option<&'a str>,
    /// Only this Service's ports (`--service`, or the Service `TARGET` named).
    pub service: Option<&'a str>,
    /// Only ports served by this container (`--container`).
    pub container: Option<&'a str>,
}

/// Resolves `query` to the app port behind it.
///
/// Works on the workload as it was before the agent: with an agent installed, a named port
/// resolves to the app's renamed port and a retargeted port to the app port, never the agent's.
pub fn choose_port(
    workload: &Workload,
    services: &[Service],
    query: PortQuery<'_>,
) -> Result<PortChoice, PlanError> {
    let who = workload.to_string();
    let asked = query.port;
    let (template, services) = original_view(workload, services)?;
    if let Some(container) = query.container {
        let containers: Vec<String> = template
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
            .collect();
        if !containers.iter().any(|c| c == container) {
            return Err(PlanError::UnknownContainer {
                workload: who,
                asked: container.to_owned(),
                containers,
            });
        }
    }
    let selecting: Vec<&Service> = services_selecting(&template, &services)
        .into_iter()
        .filter(|s| query.service.is_none_or(|n| n == name_of(s)))
        .collect();
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
        match land(&who, &template, s, p, query.container) {
            Ok(l) => landed.push((*s, *p, l)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(container) = query.container {
        let elsewhere: Vec<String> = landed
            .iter()
            .filter(|(_, _, l)| l.container != container)
            .map(|(s, p, l)| format!("{} is container {}'s", describe(s, p), l.container))
            .collect();
        landed.retain(|(_, _, l)| l.container == container);
        if landed.is_empty() && !elsewhere.is_empty() {
            return Err(PlanError::NotInContainer {
                container: container.to_owned(),
                ports: elsewhere,
            });
        }
    }
    let Some((service, port, landing)) = landed.first() else {
        return Err(first_error.unwrap_or(PlanError::NoTcpPort { workload: who }));
    };
    let app_ports: BTreeSet<u16> = landed.iter().map(|(_, _, l)| l.app_port).collect();
    if app_ports.len() > 1 {
        let mut services: Vec<String> = landed
            .iter()
            .map(|(s, _, _)| name_of(s).to_owned())
            .collect();
        services.dedup();
        return Err(PlanError::AmbiguousPort {
            workload: who,
            asked: asked.map(str::to_owned),
            ports: landed.iter().map(|(s, p, _)| describe(s, p)).collect(),
            services,
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

/// `--replace`: the other TCP ports of `choice`'s container that the workload's Services expose,
/// one per app port (the first Service port reaching it), in Service order. The replaced
/// container no longer serves them, so they go where the replace goes.
pub fn other_ports(
    workload: &Workload,
    services: &[Service],
    choice: &PortChoice,
) -> Result<Vec<PortChoice>, PlanError> {
    let who = workload.to_string();
    let (template, services) = original_view(workload, services)?;
    let mut seen = BTreeSet::from([choice.app_port]);
    let mut others = Vec::new();
    for s in services_selecting(&template, &services) {
        for p in ports_of(s).iter().filter(|p| is_tcp(p)) {
            let Ok(landing) = land(&who, &template, s, p, Some(&choice.container)) else {
                continue;
            };
            if landing.container == choice.container && seen.insert(landing.app_port) {
                others.push(PortChoice {
                    service: name_of(s).to_owned(),
                    service_port: port_number(p.port).unwrap_or_default(),
                    service_port_name: p.name.clone(),
                    container: landing.container,
                    app_port: landing.app_port,
                });
            }
        }
    }
    Ok(others)
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
pub(super) fn check_ports(c: &mut Container) -> Vec<(ProbeKind, &mut IntOrString)> {
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

/// Every container (and init container) port of the pod.
pub(super) fn declared_ports(template: &PodTemplateSpec) -> impl Iterator<Item = &ContainerPort> {
    template.spec.iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
    })
}

pub(super) fn declared_numbers(template: &PodTemplateSpec) -> BTreeSet<u16> {
    declared_ports(template)
        .filter_map(|p| port_number(p.container_port))
        .collect()
}

pub(super) fn declared_names(template: &PodTemplateSpec) -> BTreeSet<String> {
    declared_ports(template)
        .filter_map(|p| p.name.clone())
        .collect()
}

pub(super) fn name_of(s: &Service) -> &str {
    s.metadata.name.as_deref().unwrap_or("")
}

pub(super) fn ports_of(s: &Service) -> &[ServicePort] {
    s.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[])
}

pub(super) fn protocol_of(p: &ServicePort) -> &str {
    p.protocol.as_deref().unwrap_or("TCP")
}

pub(super) fn is_tcp(p: &ServicePort) -> bool {
    protocol_of(p) == "TCP"
}

pub(super) fn port_number(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|&p| p != 0)
}

/// `http (80→http)`, or `orders/http (80→http)` when several Services are involved.
pub(super) fn describe_port(service: Option<&str>, p: &ServicePort) -> String {
    let label = p.name.clone().unwrap_or_else(|| p.port.to_string());
    let target = match &p.target_port {
        None => p.port.to_string(),
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
    };
    let prefix = service.map(|s| format!("{s}/")).unwrap_or_default();
    format!("{prefix}{label} ({}→{target})", p.port)
}
