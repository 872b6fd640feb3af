//! Fetching what a container's environment is made of (ConfigMaps, Secrets, Services), then
//! resolving it.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::{api::ListParams, Api};
use tracing::warn;

use super::*;

/// The environment of `container` in `pod`: fetches the ConfigMaps and Secrets it references
/// and the Services it may see, then [`resolve`]s.
pub async fn container_env(
    client: &kube::Client,
    pod: &Pod,
    container: &str,
) -> Result<Vec<(String, String)>, EnvError> {
    let spec = find_container(pod, container)?;
    let namespace = pod_namespace(pod);
    let (config_maps, secrets) = references(spec);
    let mut sources = Sources::default();

    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in config_maps {
        if let Some(cm) = get(&api, SourceKind::ConfigMap, &name, namespace).await? {
            sources.config_maps.insert(name, cm);
        }
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in secrets {
        if let Some(secret) = get(&api, SourceKind::Secret, &name, namespace).await? {
            sources.secrets.insert(name, secret);
        }
    }

    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    if links {
        let api: Api<Service> = Api::namespaced(client.clone(), namespace);
        match api.list(&ListParams::default()).await {
            Ok(list) => sources.services.extend(list.items),
            Err(kube::Error::Api(s)) if s.code == 403 => {
                warn!(namespace, "You may not list Services (RBAC): the env file lacks their service-link variables");
            }
            Err(source) => {
                let what = format!("the Services of namespace {namespace}");
                return Err(EnvError::Api { what, source });
            }
        }
    }
    if !(links && namespace == "default") {
        let api: Api<Service> = Api::namespaced(client.clone(), "default");
        match api.get_opt("kubernetes").await {
            Ok(service) => sources.services.extend(service),
            Err(kube::Error::Api(s)) if s.code == 403 => {
                warn!("You may not read Service default/kubernetes (RBAC): the env file lacks the KUBERNETES_* variables");
            }
            Err(source) => {
                let what = "Service default/kubernetes".to_owned();
                return Err(EnvError::Api { what, source });
            }
        }
    }
    resolve(pod, container, &sources)
}

/// The names of the ConfigMaps and Secrets a container's environment refers to.
pub(super) fn references(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut config_maps, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            config_maps.insert(r.name.clone());
        } else if let Some(r) = &from.secret_ref {
            secrets.insert(r.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        // A non-empty `value` wins; its `valueFrom` is never read.
        if var.value.as_deref().is_some_and(|v| !v.is_empty()) {
            continue;
        }
        let Some(from) = &var.value_from else {
            continue;
        };
        if from.field_ref.is_some() || from.resource_field_ref.is_some() {
            continue;
        }
        if let Some(sel) = &from.config_map_key_ref {
            config_maps.insert(sel.name.clone());
        } else if let Some(sel) = &from.secret_key_ref {
            secrets.insert(sel.name.clone());
        }
    }
    (config_maps, secrets)
}

pub(super) async fn get<K>(
    api: &Api<K>,
    kind: SourceKind,
    name: &str,
    namespace: &str,
) -> Result<Option<K>, EnvError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(object) => Ok(object),
        Err(kube::Error::Api(s)) if s.code == 403 => Err(EnvError::Forbidden {
            kind,
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }),
        Err(source) => Err(EnvError::Api {
            what: format!("{kind} `{name}` in namespace {namespace}"),
            source,
        }),
    }
}
