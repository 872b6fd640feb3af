//! `tether install` and `tether uninstall`: the manifests of `deploy/manager`, embedded at build
//! time, applied with server-side apply (field manager [`FIELD_MANAGER`]), then a wait until the
//! manager Deployment is available.
//!
//! Every error says what to do next; RBAC refusals name the verb and resource and point at a
//! cluster admin.

mod rollout;
#[cfg(test)]
mod tests;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Api, Client};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::info;

use rollout::Rollout;

pub use crate::names::FIELD_MANAGER;
pub use crate::names::MANAGER as DEPLOYMENT;
pub use crate::names::MANAGER_SELECTOR as POD_SELECTOR;
pub use crate::names::NAMESPACE;
/// How long [`install`] waits for the manager to become available.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long [`uninstall`] waits for everything to be gone.
pub const UNINSTALL_TIMEOUT: Duration = Duration::from_secs(120);
/// The image the manifests in `deploy/manager` name: this version's, under a registry name that
/// exists nowhere. `tether install --image`, or a kustomize overlay's `images:`, replaces it.
pub const BASE_IMAGE: &str = concat!("tether.local/tether-agent:", env!("CARGO_PKG_VERSION"));
const POLL: Duration = Duration::from_secs(1);

/// `deploy/manager`, in apply order (the namespace first; uninstall goes backwards).
pub const MANIFEST_FILES: [(&str, &str); 4] = [
    (
        "00-namespace.yaml",
        include_str!("../../deploy/manager/00-namespace.yaml"),
    ),
    (
        "10-rbac.yaml",
        include_str!("../../deploy/manager/10-rbac.yaml"),
    ),
    (
        "20-manager.yaml",
        include_str!("../../deploy/manager/20-manager.yaml"),
    ),
    (
        "30-client-role.yaml",
        include_str!("../../deploy/manager/30-client-role.yaml"),
    ),
];

/// Failure of install or uninstall.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// RBAC refuses the kubeconfig user something install/uninstall must do.
    #[error("forbidden: your kubeconfig user may not {verb} {resource}; ask a cluster admin to run `tether {command}`")]
    Forbidden {
        /// What was refused (`create or update`, `delete`, …).
        verb: &'static str,
        /// Resource and name (`clusterroles tether-manager`).
        resource: String,
        /// `install` or `uninstall`.
        command: &'static str,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// The namespace is still being deleted by an earlier uninstall.
    #[error("namespace {namespace} is still being deleted (an earlier `tether uninstall`); wait until `kubectl get namespace {namespace}` finds nothing, then run `tether install` again")]
    NamespaceTerminating {
        /// The manager's namespace.
        namespace: String,
    },
    /// The manager's namespace is not a namespace name.
    #[error("invalid manager namespace {0:?}: a namespace name is at most 63 lowercase letters, digits and `-`, starting and ending with a letter or digit")]
    InvalidNamespace(String),
    /// Another API failure.
    #[error("could not {verb} {resource}; check that your kubeconfig reaches the cluster, then try again")]
    Api {
        /// What was attempted.
        verb: &'static str,
        /// Resource and name.
        resource: String,
        /// The failure.
        #[source]
        source: kube::Error,
    },
    /// The image argument cannot be put in a manifest.
    #[error("invalid image reference {0:?}: give one like `registry.example/tether-agent:1.0`")]
    InvalidImage(String),
    /// An embedded manifest does not parse: a defect of this build.
    #[error("embedded manifest {file} is invalid ({problem}); this build of tether is broken, please report it")]
    Manifest {
        /// File under deploy/manager.
        file: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The manager's pod cannot start with this image, and will not by waiting.
    #[error("the traffic manager's image {image} cannot be run: {reason} ({message}); push the image to a registry the cluster's nodes pull from (for the local cluster, `cargo xtask images` pushes it), give a pull secret with --image-pull-secret, or install with another image")]
    ImageUnusable {
        /// The image.
        image: String,
        /// The container's waiting reason (`ErrImageNeverPull`, `InvalidImageName`).
        reason: String,
        /// The kubelet's message.
        message: String,
    },
    /// The manager did not become available in time.
    #[error("the traffic manager did not become available within {}s: {detail}; see `kubectl -n {namespace} describe pod -l {POD_SELECTOR}`", waited.as_secs())]
    NotAvailable {
        /// The manager's namespace.
        namespace: String,
        /// How long install waited.
        waited: Duration,
        /// The last thing seen holding it up.
        detail: String,
    },
    /// Uninstall gave up waiting for objects to disappear.
    #[error("uninstall waited {}s but {remaining} still exist; check for stuck finalizers (`kubectl get namespace {namespace} -o yaml`) and run `tether uninstall` again", waited.as_secs())]
    StillPresent {
        /// The manager's namespace.
        namespace: String,
        /// How long uninstall waited.
        waited: Duration,
        /// What is left.
        remaining: String,
    },
}

/// One object of the manifests, with where it lives in the API.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it came from.
    pub file: &'static str,
    /// Its resource type.
    pub resource: ApiResource,
    /// Whether that type is namespaced.
    pub namespaced: bool,
    /// The object.
    pub object: DynamicObject,
}

impl Manifest {
    /// Its name (the manifests always set one).
    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    /// `plural name`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}", self.resource.plural, self.name())
    }

    fn api(&self, client: &Client) -> Api<DynamicObject> {
        if self.namespaced {
            let namespace = self
                .object
                .metadata
                .namespace
                .as_deref()
                .unwrap_or(NAMESPACE);
            Api::namespaced_with(client.clone(), namespace, &self.resource)
        } else {
            Api::all_with(client.clone(), &self.resource)
        }
    }
}

/// The manifests with `image` filled in, for a manager in `namespace` ([`NAMESPACE`] unless an
/// operator chose another), parsed, in apply order.
pub fn manifests(image: &str, namespace: &str) -> Result<Vec<Manifest>, InstallError> {
    if !is_namespace_name(namespace) {
        return Err(InstallError::InvalidNamespace(namespace.to_owned()));
    }
    let valid =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | ':' | '@' | '_' | '-');
    if image.is_empty() || !image.chars().all(valid) {
        return Err(InstallError::InvalidImage(image.to_owned()));
    }
    let mut out = Vec::new();
    for (file, text) in MANIFEST_FILES {
        let bad = |problem: String| InstallError::Manifest { file, problem };
        for document in serde_yaml::Deserializer::from_str(text) {
            let value = serde_json::Value::deserialize(document).map_err(|e| bad(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let object: DynamicObject =
                serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
            let types = object
                .types
                .clone()
                .ok_or_else(|| bad("an object without apiVersion/kind".into()))?;
            let (plural, namespaced) =
                resource_of(&types.api_version, &types.kind).ok_or_else(|| {
                    bad(format!(
                        "kind {} {} is not one install knows",
                        types.api_version, types.kind
                    ))
                })?;
            let gvk = GroupVersionKind::try_from(&types).map_err(|e| bad(e.to_string()))?;
            let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
            if object.metadata.name.is_none() {
                return Err(bad(format!("a {} without a name", types.kind)));
            }
            let mut object = object;
            if types.kind == "Deployment" && !set_image(&mut object.data, image) {
                return Err(bad(format!(
                    "the Deployment does not name image {BASE_IMAGE}"
                )));
            }
            in_namespace(&mut object, &types.kind, namespaced, namespace);
            out.push(Manifest {
                file,
                resource,
                namespaced,
                object,
            });
        }
    }
    Ok(out)
}

/// A namespace name (an RFC 1123 label): 1-63 lowercase letters, digits and inner `-`.
pub fn is_namespace_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Moves `object` into the manager's `namespace`, as kustomize's `namespace:` does: the
/// Namespace itself, every namespaced object, and the service accounts bindings name.
fn in_namespace(object: &mut DynamicObject, kind: &str, namespaced: bool, namespace: &str) {
    if kind == "Namespace" {
        object.metadata.name = Some(namespace.to_owned());
    } else if namespaced {
        object.metadata.namespace = Some(namespace.to_owned());
    }
    if let Some(subjects) = object
        .data
        .get_mut("subjects")
        .and_then(|s| s.as_array_mut())
    {
        for subject in subjects
            .iter_mut()
            .filter(|s| s["kind"] == "ServiceAccount")
        {
            subject["namespace"] = namespace.into();
        }
    }
}

/// The manager's namespace in `manifests`: the name of their Namespace.
fn namespace_of(manifests: &[Manifest]) -> &str {
    manifests
        .iter()
        .find(|m| m.resource.kind == "Namespace")
        .map_or(NAMESPACE, Manifest::name)
}

/// Puts `image` in place of [`BASE_IMAGE`] in the containers of a Deployment's pod template;
/// false if none named it.
fn set_image(deployment: &mut serde_json::Value, image: &str) -> bool {
    let mut found = false;
    let spec = &mut deployment["spec"]["template"]["spec"];
    for list in ["initContainers", "containers"] {
        // `get_mut`, not indexing: indexing a missing key would add it as `null`.
        let Some(containers) = spec.get_mut(list).and_then(|l| l.as_array_mut()) else {
            continue;
        };
        for container in containers {
            if container["image"] == BASE_IMAGE {
                container["image"] = image.into();
                found = true;
            }
        }
    }
    found
}

/// Has the manager's pods pull their image with the Secret `secret` (of the manager's
/// namespace).
pub fn with_image_pull_secret(manifests: &mut [Manifest], secret: &str) {
    for manifest in manifests {
        if manifest.resource.kind == "Deployment" {
            manifest.object.data["spec"]["template"]["spec"]["imagePullSecrets"] =
                serde_json::json!([{ "name": secret }]);
        }
    }
}

/// Plural and scope of the kinds the manifests use.
fn resource_of(api_version: &str, kind: &str) -> Option<(&'static str, bool)> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => ("namespaces", false),
        ("v1", "ServiceAccount") => ("serviceaccounts", true),
        ("v1", "Service") => ("services", true),
        ("v1", "Secret") => ("secrets", true),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => ("clusterroles", false),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => ("clusterrolebindings", false),
        ("rbac.authorization.k8s.io/v1", "Role") => ("roles", true),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => ("rolebindings", true),
        ("apps/v1", "Deployment") => ("deployments", true),
        _ => return None,
    })
}

/// Installs (or updates) the traffic manager with `image` in `namespace` and waits up to
/// [`INSTALL_TIMEOUT`] for it to be available.
pub async fn install(client: &Client, image: &str, namespace: &str) -> Result<(), InstallError> {
    install_with_timeout(client, image, namespace, INSTALL_TIMEOUT).await
}

/// [`install`] with another timeout.
pub async fn install_with_timeout(
    client: &Client,
    image: &str,
    namespace: &str,
    timeout: Duration,
) -> Result<(), InstallError> {
    let manifests = manifests(image, namespace)?;
    install_manifests(client, &manifests, image, timeout, &|_| {}).await
}

/// Applies `manifests` (from [`manifests`], perhaps changed) and waits up to `timeout` for the
/// manager, whose image is `image`, to be available. `progress` hears each step as it starts:
/// each object applied, then every change in what the rollout waits for.
pub async fn install_manifests(
    client: &Client,
    manifests: &[Manifest],
    image: &str,
    timeout: Duration,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), InstallError> {
    for manifest in manifests {
        progress(&format!("applying {}", manifest.describe()));
        apply(client, manifest, false).await?;
        info!(object = %manifest.describe(), "Applied");
    }
    wait_available(client, namespace_of(manifests), image, timeout, progress).await
}

/// Server-side applies `manifest` as [`FIELD_MANAGER`] (taking over conflicting fields);
/// `dry_run` has the API server check everything without persisting.
pub async fn apply(
    client: &Client,
    manifest: &Manifest,
    dry_run: bool,
) -> Result<DynamicObject, InstallError> {
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = dry_run;
    let applied = manifest
        .api(client)
        .patch(manifest.name(), &params, &Patch::Apply(&manifest.object))
        .await
        .map_err(|e| {
            let namespace = manifest.object.metadata.namespace.as_deref();
            classify(
                e,
                "create or update",
                manifest.describe(),
                "install",
                namespace.unwrap_or(manifest.name()),
            )
        })?;
    if manifest.resource.kind == "Namespace" && applied.data["status"]["phase"] == "Terminating" {
        return Err(InstallError::NamespaceTerminating {
            namespace: manifest.name().to_owned(),
        });
    }
    Ok(applied)
}

/// Polls until the manager Deployment is available, failing early on an image that cannot run.
async fn wait_available(
    client: &Client,
    namespace: &str,
    image: &str,
    timeout: Duration,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), InstallError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no manager pod yet");
    loop {
        let deployment = deployments.get_opt(DEPLOYMENT).await.map_err(|e| {
            classify(
                e,
                "get",
                format!("deployments {DEPLOYMENT}"),
                "install",
                namespace,
            )
        })?;
        let listed = pods
            .list(&ListParams::default().labels(POD_SELECTOR))
            .await
            .map_err(|e| classify(e, "list", "pods".to_owned(), "install", namespace))?;
        match rollout::rollout(deployment.as_ref(), &listed.items, image) {
            Rollout::Available => {
                info!(image, "The traffic manager is available");
                return Ok(());
            }
            Rollout::Unusable { reason, message } => {
                return Err(InstallError::ImageUnusable {
                    image: image.to_owned(),
                    reason,
                    message,
                });
            }
            Rollout::Waiting(detail) => {
                if detail != last {
                    info!(%detail, "Waiting for the traffic manager");
                    progress(&format!("waiting for the traffic manager: {detail}"));
                }
                last = detail;
            }
        }
        if Instant::now() >= deadline {
            return Err(InstallError::NotAvailable {
                namespace: namespace.to_owned(),
                waited: timeout,
                detail: last,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Deletes everything install created in `namespace` (the namespace last) and waits up to
/// [`UNINSTALL_TIMEOUT`] until it is gone. Objects already gone are fine.
pub async fn uninstall(client: &Client, namespace: &str) -> Result<(), InstallError> {
    uninstall_with_timeout(client, namespace, UNINSTALL_TIMEOUT).await
}

/// [`uninstall`] with another timeout.
pub async fn uninstall_with_timeout(
    client: &Client,
    namespace: &str,
    timeout: Duration,
) -> Result<(), InstallError> {
    // The image does not matter for deleting.
    let manifests = manifests(BASE_IMAGE, namespace)?;
    for manifest in manifests.iter().rev() {
        match manifest
            .api(client)
            .delete(manifest.name(), &DeleteParams::background())
            .await
        {
            Ok(_) => info!(object = %manifest.describe(), "Deleted"),
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => {
                return Err(classify(
                    e,
                    "delete",
                    manifest.describe(),
                    "uninstall",
                    namespace,
                ))
            }
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut remaining = Vec::new();
        for manifest in &manifests {
            let found = manifest.api(client).get_opt(manifest.name()).await;
            let found = found
                .map_err(|e| classify(e, "get", manifest.describe(), "uninstall", namespace))?;
            if found.is_some() {
                remaining.push(manifest.describe());
            }
        }
        if remaining.is_empty() {
            info!("The traffic manager is uninstalled");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(InstallError::StillPresent {
                namespace: namespace.to_owned(),
                waited: timeout,
                remaining: remaining.join(", "),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Turns an API failure into the error a person can act on.
fn classify(
    error: kube::Error,
    verb: &'static str,
    resource: String,
    command: &'static str,
    namespace: &str,
) -> InstallError {
    match &error {
        kube::Error::Api(status)
            if status.is_forbidden() && status.message.contains("being terminated") =>
        {
            InstallError::NamespaceTerminating {
                namespace: namespace.to_owned(),
            }
        }
        kube::Error::Api(status) if status.is_forbidden() => InstallError::Forbidden {
            verb,
            resource,
            command,
            source: error,
        },
        _ => InstallError::Api {
            verb,
            resource,
            source: error,
        },
    }
}
