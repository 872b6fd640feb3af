//! The agents' credential Secret of a namespace: whether it is current, asking the manager for
//! one, storing the answer, and removing it when no workload uses it.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use tracing::{debug, info, warn};

use super::inject::{self, AGENT_ANNOTATION, AGENT_SECRET};

use super::*;

/// Whether the agents' Secret in `namespace` holds a credential the manager (whose CA is
/// `ca_pem`) accepts for that namespace.
pub async fn agent_credential_is_current(
    client: &Client,
    namespace: &str,
    ca_pem: &str,
) -> Result<bool, WorkloadError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(AGENT_SECRET)
        .await
        .map_err(|e| api_error::<Secret>(e, "get", Some(AGENT_SECRET), namespace))?;
    Ok(inject::agent_credential_is_current(
        namespace,
        secret.as_ref(),
        ca_pem,
    ))
}

/// Writes a fresh request nonce into the agents' Secret of `namespace` (creating it if needed)
/// and returns it: the manager issues an agent credential to whoever can show it.
pub async fn request_agent_credential(
    client: &Client,
    namespace: &str,
) -> Result<String, WorkloadError> {
    let nonce = nonce().map_err(WorkloadError::Nonce)?;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let exists = api
        .get_opt(AGENT_SECRET)
        .await
        .map_err(|e| api_error::<Secret>(e, "get", Some(AGENT_SECRET), namespace))?
        .is_some();
    if exists {
        api.patch(
            AGENT_SECRET,
            &PatchParams::default(),
            &Patch::Merge(inject::agent_request_patch(&nonce)),
        )
        .await
        .map_err(|e| api_error::<Secret>(e, "patch", Some(AGENT_SECRET), namespace))?;
    } else {
        api.create(
            &PostParams::default(),
            &inject::agent_request_secret(namespace, &nonce),
        )
        .await
        .map_err(|e| api_error::<Secret>(e, "create", Some(AGENT_SECRET), namespace))?;
    }
    Ok(nonce)
}

/// Stores the manager's answer to the request `nonce` in the agents' Secret of `namespace`.
pub async fn store_agent_credential(
    client: &Client,
    namespace: &str,
    nonce: &str,
    credential: &tether_proto::AgentCredential,
) -> Result<(), WorkloadError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    api.patch(
        AGENT_SECRET,
        &PatchParams::default(),
        &Patch::Merge(inject::agent_credential_patch(nonce, credential)),
    )
    .await
    .map_err(|e| api_error::<Secret>(e, "patch", Some(AGENT_SECRET), namespace))?;
    debug!(namespace, "Agent credential stored");
    Ok(())
}

/// 128 random bits from the OS, as hex.
pub(super) fn nonce() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Deletes the agent Secret of `namespace` unless a workload there still has an agent.
/// Best effort: the uninstall itself has succeeded.
pub(super) async fn remove_secret_if_unused(client: &Client, namespace: &str) {
    match all_workloads(client, namespace).await {
        Ok(all)
            if all
                .iter()
                .any(|(w, ..)| w.annotations.contains_key(AGENT_ANNOTATION)) =>
        {
            return
        }
        Ok(_) => {}
        Err(e) => {
            warn!(namespace, error = %tether_proto::error_chain(&e), "Agent credential kept: cannot tell whether it is in use");
            return;
        }
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.delete(AGENT_SECRET, &DeleteParams::default()).await {
        Ok(_) => info!(namespace, "Agent credential removed"),
        Err(kube::Error::Api(s)) if s.is_not_found() => {}
        Err(e) => {
            warn!(namespace, error = %tether_proto::error_chain(&e), "Agent credential not removed")
        }
    }
}
