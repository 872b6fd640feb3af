//! Which workload: its kind, `KIND/NAME` references, what injection needs of it, and the
//! agent's settings.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::{Deserialize, Serialize};

use super::*;

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
