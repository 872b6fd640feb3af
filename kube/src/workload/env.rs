//! The environment of a container as its pod sees it, for `tether intercept --env-file`.
//!
//! - [`resolve`] is the sans-IO core. It follows kubelet's `makeEnvironmentVariables`: service
//!   links, then `envFrom`, then `env` with `$(VAR)` expansion and `valueFrom`.
//! - [`container_env`] (`fetch`) fetches the referenced ConfigMaps and Secrets and the Services, then
//!   resolves.
//! - [`render`] (`render`) writes the result for `sh` (`set -a; . file`), `docker run --env-file`, or JSON.
//!
//! # Where this differs from kubelet
//! - **Order.** kubelet collects the variables in a Go map, so its order is unspecified. Here the
//!   service-link variables come first (by Service name), then `envFrom` (sources in order, keys
//!   sorted), then `env` in order. A name defined twice keeps the position of its first
//!   definition and the value of its last.
//! - **Which Services.** kubelet uses the Services that exist when it starts the container. We
//!   only see today's Services, so we keep those created no later than the container's current
//!   start (`status.containerStatuses[].state.running.startedAt`), or than the pod's
//!   `creationTimestamp` when the container is not running. Services deleted since are lost.
//! - **`limits.*` without a limit.** kubelet reports the node's allocatable amount, which we
//!   do not know (and which means little on a workstation). The variable is left out (with a
//!   debug log) so the program falls back to its own default, as it would without a limit.
//! - **`$` before a non-ASCII character** in an `env[].value`: Go's `expansion.Expand` mangles
//!   that character's first byte; we keep the character.
//! - **Secret values must be UTF-8.** kubelet passes the raw bytes; we cannot write them into a
//!   text file faithfully, so [`resolve`] fails naming the Secret and key.
//! - **RBAC on Services.** When the user may not read the Services (`default/kubernetes` is often
//!   outside a namespaced user's reach), [`container_env`] logs a warning and leaves out their
//!   service-link variables rather than failing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, ObjectFieldSelector, Pod, Secret, Service, ServicePort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use tracing::debug;

mod fetch;
mod quantity;
mod render;

pub use fetch::*;
use quantity::*;
pub use render::*;

#[cfg(test)]
mod tests;

/// The objects a container's environment is made of.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// ConfigMaps of the pod's namespace by name; a missing name means "not found".
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// Secrets of the pod's namespace by name; a missing name means "not found".
    pub secrets: BTreeMap<String, Secret>,
    /// The Services of the pod's namespace and `default/kubernetes`; others are ignored. A
    /// Service without a namespace counts as being in the pod's namespace.
    pub services: Vec<Service>,
}

/// The kind of object an environment variable comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    ConfigMap,
    Secret,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::ConfigMap => "ConfigMap",
            SourceKind::Secret => "Secret",
        })
    }
}

/// What in the container spec refers to a ConfigMap or Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Referrer {
    /// `env[].valueFrom` of this variable.
    EnvVar(String),
    /// `envFrom` of this container.
    EnvFrom(String),
}

impl fmt::Display for Referrer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Referrer::EnvVar(name) => write!(f, "env var `{name}`"),
            Referrer::EnvFrom(container) => write!(f, "envFrom of container `{container}`"),
        }
    }
}

/// Why a container's environment cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The pod has no (regular) container of that name.
    #[error("container `{container}` not found in pod {pod} (containers: {available})")]
    ContainerNotFound {
        container: String,
        pod: String,
        available: String,
    },
    /// A ConfigMap or Secret that is not marked optional does not exist.
    #[error("{kind} `{name}` referenced by {by} not found in namespace {namespace}")]
    SourceNotFound {
        kind: SourceKind,
        name: String,
        by: Referrer,
        namespace: String,
    },
    /// A key that is not marked optional is missing from its ConfigMap or Secret.
    #[error("key `{key}` not found in {kind} `{name}` referenced by env var `{var}`")]
    KeyNotFound {
        kind: SourceKind,
        name: String,
        key: String,
        var: String,
    },
    /// A Secret value is binary, which a text env file cannot hold.
    #[error("key `{key}` of Secret `{name}` (env var `{var}`) is not UTF-8 text")]
    NotUtf8 {
        name: String,
        key: String,
        var: String,
    },
    /// A `fieldRef` this version does not know.
    #[error("env var `{var}`: fieldRef `{path}` is not supported")]
    UnsupportedField { var: String, path: String },
    /// A `resourceFieldRef` this version does not know.
    #[error("env var `{var}`: resourceFieldRef `{resource}` is not supported")]
    UnsupportedResource { var: String, resource: String },
    /// A resource amount or divisor that is not a usable quantity.
    #[error("env var `{var}`: `{quantity}` is not a usable Kubernetes quantity")]
    BadQuantity { var: String, quantity: String },
    /// RBAC forbids reading a ConfigMap or Secret.
    #[error("you may not read {kind} `{name}` in namespace {namespace} (RBAC): ask a cluster admin for `get` on it, or leave out --env-file")]
    Forbidden {
        kind: SourceKind,
        name: String,
        namespace: String,
    },
    /// Any other Kubernetes API failure.
    #[error("cannot read {what} from the Kubernetes API")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// The environment of `container` in `pod`, as kubelet builds it (see the module docs for the
/// differences), each name once.
pub fn resolve(
    pod: &Pod,
    container: &str,
    sources: &Sources,
) -> Result<Vec<(String, String)>, EnvError> {
    let spec = find_container(pod, container)?;
    let namespace = pod_namespace(pod);
    let mut env = Env::default();

    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let seen_at = env_computed_at(pod, container);
    for (name, value) in service_links(namespace, links, seen_at, &sources.services) {
        env.set(name, value);
    }

    // Env overrides envFrom, so envFrom goes first.
    for from in spec.env_from.iter().flatten() {
        let (kind, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (SourceKind::ConfigMap, &r.name, r.optional),
            (None, Some(r)) => (SourceKind::Secret, &r.name, r.optional),
            (None, None) => continue,
        };
        let by = || Referrer::EnvFrom(container.to_owned());
        let Some(data) = source_data(sources, kind, name, optional, by, namespace)? else {
            continue;
        };
        let prefix = from.prefix.as_deref().unwrap_or("");
        let mut invalid = Vec::new();
        for (key, value) in data.entries() {
            let var = format!("{prefix}{key}");
            if !is_env_var_name(&var) {
                invalid.push(var);
                continue;
            }
            let value = value.ok_or_else(|| not_utf8(name, key, &var))?;
            env.set(var, value.to_owned());
        }
        if !invalid.is_empty() {
            // kubelet skips these too (with a Warning event on the pod).
            debug!(?invalid, %name, "envFrom keys are not valid env var names: skipped");
        }
    }

    for var in spec.env.iter().flatten() {
        if let Some(value) = env_var_value(pod, spec, var, sources, &env)? {
            env.set(var.name.clone(), value);
        }
    }
    Ok(env.into_vec())
}

/// The value `var` defines, or `None` when it defines nothing (an optional source is missing,
/// or a limit is not set).
fn env_var_value(
    pod: &Pod,
    container: &Container,
    var: &EnvVar,
    sources: &Sources,
    env: &Env,
) -> Result<Option<String>, EnvError> {
    // As in kubelet: a non-empty `value` wins over `valueFrom`.
    let value = var.value.as_deref().unwrap_or("");
    if !value.is_empty() {
        return Ok(Some(expand(value, |name| env.get(name))));
    }
    let Some(from) = &var.value_from else {
        return Ok(Some(String::new()));
    };
    if let Some(sel) = &from.field_ref {
        return field_value(pod, &var.name, sel).map(Some);
    }
    if let Some(sel) = &from.resource_field_ref {
        return resource_value(container, &var.name, sel);
    }
    let (kind, name, key, optional) = match (&from.config_map_key_ref, &from.secret_key_ref) {
        (Some(s), _) => (SourceKind::ConfigMap, &s.name, &s.key, s.optional),
        (None, Some(s)) => (SourceKind::Secret, &s.name, &s.key, s.optional),
        (None, None) => {
            // A source newer than our API types (such as `fileKeyRef`): kubelet would know it.
            debug!(var = %var.name, "valueFrom has no source we know: using an empty value");
            return Ok(Some(String::new()));
        }
    };
    let by = || Referrer::EnvVar(var.name.clone());
    let namespace = pod_namespace(pod);
    let Some(data) = source_data(sources, kind, name, optional, by, namespace)? else {
        return Ok(None);
    };
    match data.get(key) {
        Some(Some(value)) => Ok(Some(value.to_owned())),
        Some(None) => Err(not_utf8(name, key, &var.name)),
        None if optional == Some(true) => Ok(None),
        None => Err(EnvError::KeyNotFound {
            kind,
            name: name.clone(),
            key: key.clone(),
            var: var.name.clone(),
        }),
    }
}

/// The ordered environment being built: first definition's position, last definition's value.
#[derive(Debug, Default)]
struct Env {
    names: Vec<String>,
    values: HashMap<String, String>,
}

impl Env {
    fn set(&mut self, name: String, value: String) {
        if self.values.insert(name.clone(), value).is_none() {
            self.names.push(name);
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn into_vec(mut self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(self.names.len());
        for name in self.names {
            // Every name in `names` was inserted into `values`, and names are unique.
            let value = self.values.remove(&name).unwrap_or_default();
            out.push((name, value));
        }
        out
    }
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Result<&'a Container, EnvError> {
    let containers = pod.spec.as_ref().map_or(&[][..], |s| &s.containers[..]);
    containers
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| EnvError::ContainerNotFound {
            container: name.to_owned(),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            available: containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// When kubelet computed the environment: the container's current start, else the pod's creation.
fn env_computed_at<'a>(pod: &'a Pod, container: &str) -> Option<&'a Time> {
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|s| s.name == container))
        .and_then(|s| s.state.as_ref()?.running.as_ref()?.started_at.as_ref());
    started.or(pod.metadata.creation_timestamp.as_ref())
}

/// The data of a ConfigMap or a Secret.
#[derive(Clone, Copy, Debug)]
enum Data<'a> {
    ConfigMap(Option<&'a BTreeMap<String, String>>),
    Secret(Option<&'a BTreeMap<String, ByteString>>),
}

impl<'a> Data<'a> {
    /// The value of `key` as text; `Some(None)` when it is not UTF-8.
    fn get(self, key: &str) -> Option<Option<&'a str>> {
        match self {
            Data::ConfigMap(data) => data?.get(key).map(|v| Some(v.as_str())),
            Data::Secret(data) => data?.get(key).map(|v| std::str::from_utf8(&v.0).ok()),
        }
    }

    /// Every key and its value as [`Data::get`] gives it, in key order.
    fn entries(self) -> Vec<(&'a str, Option<&'a str>)> {
        match self {
            Data::ConfigMap(data) => data
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), Some(v.as_str())))
                .collect(),
            Data::Secret(data) => data
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), std::str::from_utf8(&v.0).ok()))
                .collect(),
        }
    }
}

/// The `data` of ConfigMap or Secret `name` (never `binaryData`, as in kubelet); `Ok(None)`
/// when it is missing but optional.
fn source_data<'a>(
    sources: &'a Sources,
    kind: SourceKind,
    name: &str,
    optional: Option<bool>,
    by: impl FnOnce() -> Referrer,
    namespace: &str,
) -> Result<Option<Data<'a>>, EnvError> {
    let data = match kind {
        SourceKind::ConfigMap => sources
            .config_maps
            .get(name)
            .map(|cm| Data::ConfigMap(cm.data.as_ref())),
        SourceKind::Secret => sources
            .secrets
            .get(name)
            .map(|s| Data::Secret(s.data.as_ref())),
    };
    match data {
        Some(data) => Ok(Some(data)),
        None if optional == Some(true) => Ok(None),
        None => Err(EnvError::SourceNotFound {
            kind,
            name: name.to_owned(),
            by: by(),
            namespace: namespace.to_owned(),
        }),
    }
}

fn not_utf8(secret: &str, key: &str, var: &str) -> EnvError {
    EnvError::NotUtf8 {
        name: secret.to_owned(),
        key: key.to_owned(),
        var: var.to_owned(),
    }
}

/// Kubernetes' `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`, and not `.`, `..` or `..*`.
fn is_env_var_name(name: &str) -> bool {
    let ok = |c: u8, first: bool| {
        c.is_ascii_alphabetic() || matches!(c, b'-' | b'.' | b'_') || (!first && c.is_ascii_digit())
    };
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|c| ok(c, true))
        && bytes.all(|c| ok(c, false))
        && name != "."
        && !name.starts_with("..")
}

/// Kubernetes' `expansion.Expand`: `$(NAME)` becomes the value of `NAME` when `lookup` knows it
/// and stays as written otherwise, `$$` is a literal `$`, and any other `$` is itself.
fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let (mut checkpoint, mut cursor) = (0, 0);
    while cursor < bytes.len() {
        if bytes[cursor] != b'$' || cursor + 1 == bytes.len() {
            cursor += 1;
            continue;
        }
        out.push_str(&input[checkpoint..cursor]);
        match bytes[cursor + 1] {
            b'$' => {
                out.push('$');
                cursor += 2;
            }
            // `$` and `(` are ASCII, so `cursor + 2` is a char boundary.
            b'(' => match input[cursor + 2..].find(')') {
                Some(len) => {
                    let name = &input[cursor + 2..cursor + 2 + len];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    cursor += len + 3;
                }
                None => {
                    out.push_str("$(");
                    cursor += 2;
                }
            },
            // Not an expression: the `$` is literal and what follows is copied as it is.
            _ => {
                out.push('$');
                cursor += 1;
            }
        }
        checkpoint = cursor;
    }
    out.push_str(&input[checkpoint..]);
    out
}

/// The service-link variables: those of every Service of the pod's namespace (when `links`),
/// and always those of `default/kubernetes`, ordered by Service name.
fn service_links(
    namespace: &str,
    links: bool,
    seen_at: Option<&Time>,
    services: &[Service],
) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<&str, (&Service, &str)> = BTreeMap::new();
    for service in services {
        let Some(name) = service.metadata.name.as_deref() else {
            continue;
        };
        let Some(ip) = service
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        if let (Some(seen_at), Some(created)) = (seen_at, &service.metadata.creation_timestamp) {
            if created > seen_at {
                debug!(
                    service = name,
                    "Service newer than the container's environment: skipped"
                );
                continue;
            }
        }
        let service_ns = service.metadata.namespace.as_deref().unwrap_or(namespace);
        if service_ns == "default" && name == "kubernetes" {
            // A Service of the pod's own namespace with that name takes precedence (as in kubelet).
            chosen.entry(name).or_insert((service, ip));
        } else if service_ns == namespace && links {
            chosen.insert(name, (service, ip));
        }
    }
    let mut out = Vec::new();
    for (name, (service, ip)) in chosen {
        let ports = service.spec.as_ref().and_then(|s| s.ports.as_deref());
        service_vars(name, ip, ports.unwrap_or_default(), &mut out);
    }
    out
}

/// kubelet's `envvars.FromServices` for one Service.
fn service_vars(name: &str, ip: &str, ports: &[ServicePort], out: &mut Vec<(String, String)>) {
    let prefix = name.replace('-', "_").to_uppercase();
    out.push((format!("{prefix}_SERVICE_HOST"), ip.to_owned()));
    // A Service with a cluster IP has ports (API validation); be safe anyway.
    let Some(first) = ports.first() else { return };
    out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
    for port in ports {
        if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let port_name = port_name.replace('-', "_").to_uppercase();
            let var = format!("{prefix}_SERVICE_PORT_{port_name}");
            out.push((var, port.port.to_string()));
        }
    }
    // Docker link variables.
    let host_port = |port: i32| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    for (i, port) in ports.iter().enumerate() {
        let protocol = port.protocol.as_deref().filter(|p| !p.is_empty());
        let protocol = protocol.unwrap_or("TCP");
        let (lower, upper) = (protocol.to_lowercase(), protocol.to_uppercase());
        let url = format!("{lower}://{}", host_port(port.port));
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let var = format!("{prefix}_PORT_{}_{upper}", port.port);
        out.push((var.clone(), url));
        out.push((format!("{var}_PROTO"), lower));
        out.push((format!("{var}_PORT"), port.port.to_string()));
        out.push((format!("{var}_ADDR"), ip.to_owned()));
    }
}

/// kubelet's `podFieldSelectorRuntimeValue` for the paths allowed in `env`.
fn field_value(pod: &Pod, var: &str, sel: &ObjectFieldSelector) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let pod_ips = || {
        let ips = status
            .and_then(|s| s.pod_ips.as_deref())
            .unwrap_or_default();
        ips.iter().map(|ip| ip.ip.as_str()).collect::<Vec<_>>()
    };
    let value = match sel.field_path.as_str() {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => Some(pod_namespace(pod).to_owned()),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "status.hostIPs" => {
            let ips = status
                .and_then(|s| s.host_ips.as_deref())
                .unwrap_or_default();
            Some(
                ips.iter()
                    .map(|ip| ip.ip.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            )
        }
        "status.podIP" => status
            .and_then(|s| s.pod_ip.clone())
            .or_else(|| pod_ips().first().map(|ip| (*ip).to_owned())),
        "status.podIPs" => Some(pod_ips().join(",")),
        path => {
            let map = match split_subscript(path) {
                Some(("metadata.labels", key)) => meta.labels.as_ref().map(|m| (m, key)),
                Some(("metadata.annotations", key)) => meta.annotations.as_ref().map(|m| (m, key)),
                _ => {
                    return Err(EnvError::UnsupportedField {
                        var: var.to_owned(),
                        path: path.to_owned(),
                    })
                }
            };
            map.and_then(|(m, key)| m.get(key).cloned())
        }
    };
    Ok(value.unwrap_or_default())
}

/// `metadata.labels['key']` → `("metadata.labels", "key")` (Kubernetes'
/// `SplitMaybeSubscriptedPath`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let (field, key) = path.strip_suffix("']")?.split_once("['")?;
    (!field.is_empty()).then_some((field, key))
}
