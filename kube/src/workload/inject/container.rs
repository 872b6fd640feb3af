//! The traffic agent's container and volume, and whether a template has the current one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, ObjectFieldSelector,
    PodTemplateSpec, ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretProjection,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tether_proto::AGENT_TOKEN_AUDIENCE;

use crate::names::{AGENT_METRICS_PORT, METRICS_PORT_NAME};

use super::*;

/// The pod volume that mounts [`AGENT_SECRET`] and the pod's token for the manager.
pub const AGENT_VOLUME: &str = "tether-agent-tls";
/// Where the agent finds its credential (and `token`).
pub const CREDENTIALS_PATH: &str = "/var/run/tether";
/// Lifetime asked for the agent's pod token; the kubelet renews it well before.
pub(super) const TOKEN_SECONDS: i64 = 3600;

/// The agent container for `ports`.
pub(super) fn agent_container(
    workload: &Workload,
    settings: &AgentSettings,
    ports: &[PortMap],
    mounts: &AppMounts,
) -> Container {
    let mut args = vec![
        "sidecar".to_owned(),
        "--manager".to_owned(),
        settings.manager.to_string(),
        "--credentials".to_owned(),
        CREDENTIALS_PATH.to_owned(),
        "--workload".to_owned(),
        workload.id(),
        "--metrics-port".to_owned(),
        AGENT_METRICS_PORT.to_string(),
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
            EnvVar {
                name: MOUNTS_ENV.to_owned(),
                value: Some(mounts.table_json()),
                ..Default::default()
            },
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
                .chain([ContainerPort {
                    name: Some(METRICS_PORT_NAME.to_owned()),
                    container_port: AGENT_METRICS_PORT.into(),
                    protocol: Some("TCP".to_owned()),
                    ..Default::default()
                }])
                .collect(),
        ),
        volume_mounts: Some(
            [VolumeMount {
                name: AGENT_VOLUME.to_owned(),
                mount_path: CREDENTIALS_PATH.to_owned(),
                read_only: Some(true),
                ..Default::default()
            }]
            .into_iter()
            .chain(mounts.volume_mounts.iter().cloned())
            .collect(),
        ),
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

/// The environment variable that tells the agent which of its paths serve which container paths
/// (see the sidecar's `files` module).
pub const MOUNTS_ENV: &str = "TETHER_MOUNTS";
/// Where the agent mounts the app containers' volumes: each at this prefix + the container's name
/// + its path in the container.
pub const VOLUMES_PATH: &str = "/tether/volumes";
/// Where the kubelet mounts the service-account token in every container that does not mount
/// something else there.
pub const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// One row of the agent's mount table: an app container's mount, and where the agent has it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MountRow {
    /// The app container that mounts it.
    pub container: String,
    /// Its path in that container.
    pub path: String,
    /// Its path in the agent.
    pub source: String,
    pub read_only: bool,
}

/// The app containers' volumes as the agent mounts them, for `intercept --mount`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppMounts {
    /// The agent's copies of the app's volume mounts, under [`VOLUMES_PATH`].
    pub volume_mounts: Vec<VolumeMount>,
    /// Sorted by container, then path.
    pub table: Vec<MountRow>,
}

impl AppMounts {
    /// The table as the agent reads it from [`MOUNTS_ENV`]:
    /// `[{"container": …, "path": …, "source": …, "readOnly": …}]`.
    pub fn table_json(&self) -> String {
        let rows: Vec<serde_json::Value> = self
            .table
            .iter()
            .map(|row| {
                serde_json::json!({
                    "container": row.container,
                    "path": row.path,
                    "source": row.source,
                    "readOnly": row.read_only,
                })
            })
            .collect();
        serde_json::Value::Array(rows).to_string()
    }
}

/// The volume mounts of the app containers behind `ports` (the first container's when none
/// is named), as the agent mounts them: the same volume, sub-path and read-only flag, at
/// [`VOLUMES_PATH`] + the container's name + the container path. Each container has its own
/// rows, so two containers that mount different volumes at one path are both served. The
/// service-account token, which the kubelet mounts in every container (the agent's too) unless
/// the pod opts out, is served from the agent's own mount of the same volume.
pub(super) fn app_mounts(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    ports: &[PortMap],
) -> AppMounts {
    let mut names: Vec<&str> = ports.iter().map(|p| p.container.as_str()).collect();
    if names.is_empty() {
        names.extend(spec.containers.first().map(|c| c.name.as_str()));
    }
    names.sort_unstable();
    names.dedup();
    let mut mounts = AppMounts::default();
    for name in names {
        let Some(container) = spec.containers.iter().find(|c| c.name == name) else {
            continue;
        };
        let mut seen = std::collections::BTreeSet::new();
        for m in container.volume_mounts.iter().flatten() {
            let path = normalize(&m.mount_path);
            if path == "/" || !seen.insert(path.clone()) {
                continue;
            }
            let source = format!("{VOLUMES_PATH}/{name}{path}");
            let read_only = m.read_only.unwrap_or(false);
            mounts.volume_mounts.push(VolumeMount {
                name: m.name.clone(),
                mount_path: source.clone(),
                read_only: Some(read_only),
                sub_path: m.sub_path.clone(),
                sub_path_expr: m.sub_path_expr.clone(),
                ..Default::default()
            });
            mounts.table.push(MountRow {
                container: name.to_owned(),
                path,
                source,
                read_only,
            });
        }
        if !seen.contains(SERVICE_ACCOUNT_PATH)
            && spec.automount_service_account_token != Some(false)
        {
            mounts.table.push(MountRow {
                container: name.to_owned(),
                path: SERVICE_ACCOUNT_PATH.to_owned(),
                source: SERVICE_ACCOUNT_PATH.to_owned(),
                read_only: true,
            });
        }
    }
    mounts.table.sort();
    mounts
}

/// `/a//b/` → `/a/b`: the kubelet's reading of a mount path.
pub fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// The credential from [`AGENT_SECRET`], and a token the kubelet issues for this pod (audience
/// [`AGENT_TOKEN_AUDIENCE`]) with which the manager ties the agent to its pod.
pub(super) fn agent_volume() -> Volume {
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

/// Whether the template's agent is the one this tether installs: its image, the manager's
/// current address, and a volume that carries the pod's token. An agent from an older tether is
/// replaced (the manager would refuse it), and so is one that dials a manager no longer there (a
/// reinstalled manager's Service has a new address); either rolls the pods.
pub fn agent_is_current(template: &PodTemplateSpec, settings: &AgentSettings) -> bool {
    let Some(spec) = template.spec.as_ref() else {
        return false;
    };
    let agent = spec.containers.iter().find(|c| c.name == AGENT_CONTAINER);
    let image = agent.and_then(|c| c.image.as_deref());
    let metrics = agent.and_then(|c| c.ports.as_ref()).is_some_and(|ports| {
        ports
            .iter()
            .any(|p| p.name.as_deref() == Some(METRICS_PORT_NAME))
    });
    let manager = agent
        .and_then(|c| c.args.as_ref())
        .and_then(|args| args.windows(2).find(|w| w[0] == "--manager"))
        .map(|w| w[1].as_str());
    let token = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == AGENT_VOLUME)
        .and_then(|v| v.projected.as_ref())
        .and_then(|p| p.sources.as_ref())
        .is_some_and(|sources| sources.iter().any(|s| s.service_account_token.is_some()));
    // An agent from before `--mount` serves no files.
    let mounts = agent
        .and_then(|c| c.env.as_ref())
        .is_some_and(|env| env.iter().any(|e| e.name == MOUNTS_ENV));
    image == Some(settings.image.as_str())
        && manager == Some(settings.manager.to_string().as_str())
        && metrics
        && token
        && mounts
}

pub(super) fn has_container(template: &PodTemplateSpec, name: &str) -> bool {
    template
        .spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().any(|c| c.name == name))
}

pub(super) fn has_volume(template: &PodTemplateSpec, name: &str) -> bool {
    template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.name == name))
}
