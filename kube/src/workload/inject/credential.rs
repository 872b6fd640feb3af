//! The agents' credential Secret: whether it holds a usable credential, and the request and
//! answer patches.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use tether_proto::AgentCredentialRequest;

use super::*;

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
pub(super) fn base64(bytes: &[u8]) -> serde_json::Value {
    serde_json::to_value(ByteString(bytes.to_vec())).unwrap_or_default()
}
