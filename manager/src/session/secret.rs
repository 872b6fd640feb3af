//! The manager's Secrets, and the check behind an agent credential.
//!
//! - [`SECRET_NAME`] holds only the CA certificate (`ca.crt`): clients need it to check the
//!   manager's server certificate. No private key is in anything a client can read; people get
//!   their own short-lived certificate through a CertificateSigningRequest (see
//!   [`signer`](crate::signer)).
//! - [`CA_SECRET_NAME`] holds the CA's key, so that a restarted manager keeps its CA and every
//!   credential already handed out (agents' mounted copies included) stays valid. Only the
//!   manager's ServiceAccount may read it: with the key anyone could pose as the manager.
//! - Agents get a credential per namespace, on request over the tunnel, once the client has
//!   shown it may write Secrets in that namespace ([`check_agent_request`]).

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Secret, ByteString};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use tether_kube::names;
use tether_tunnel::ClientCredential;

pub use tether_kube::names::{MANAGER_CA_SECRET as CA_SECRET_NAME, MANAGER_SECRET as SECRET_NAME};
/// The key of [`CA_SECRET_NAME`] holding the CA's private key (next to `ca.crt`).
pub const CA_KEY_KEY: &str = "ca.key";
/// The agents' Secret in a workload's namespace: the credential they mount, and the client's
/// proof of write access while it asks for one.
pub use tether_kube::names::AGENT_SECRET as AGENT_SECRET_NAME;

/// Publishes the CA certificate for clients and keeps the CA's key for the next manager.
pub async fn publish(
    client: &Client,
    namespace: &str,
    ca_pem: &str,
    ca_key_pem: &str,
) -> Result<(), kube::Error> {
    let ca = BTreeMap::from([
        (ClientCredential::CA_KEY.to_owned(), ca_pem.to_owned()),
        (CA_KEY_KEY.to_owned(), ca_key_pem.to_owned()),
    ]);
    // The CA first: a manager that dies in between then still finds the CA its clients trust.
    apply(client, namespace, CA_SECRET_NAME, ca).await?;
    // Server-side apply with exactly `ca.crt`: the shared client certificate and key that
    // earlier managers kept here are removed.
    apply(client, namespace, SECRET_NAME, public_data(ca_pem)).await
}

/// What clients may read: the CA certificate, nothing else.
pub fn public_data(ca_pem: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(ClientCredential::CA_KEY.to_owned(), ca_pem.to_owned())])
}

/// Server-side applies an Opaque Secret with exactly `data` (keys this field manager set before
/// and `data` lacks are removed, e.g. the keys older managers kept here).
async fn apply(
    client: &Client,
    namespace: &str,
    name: &str,
    data: BTreeMap<String, String>,
) -> Result<(), kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [
                    names::MANAGED_BY,
                    ("app.kubernetes.io/name", names::MANAGER),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    secrets
        .patch(
            name,
            &PatchParams::apply(names::FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

/// The CA a previous manager kept, as (certificate, key) PEM; `None` if there is none or it
/// cannot be read (the manager then makes a new one). Older managers kept it in [`SECRET_NAME`].
pub async fn previous_ca(client: &Client, namespace: &str) -> Option<(String, String)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in [CA_SECRET_NAME, SECRET_NAME] {
        let Ok(Some(secret)) = secrets.get_opt(name).await else {
            continue;
        };
        let text = |key: &str| {
            secret
                .data
                .as_ref()?
                .get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        if let (Some(ca), Some(key)) = (text(ClientCredential::CA_KEY), text(CA_KEY_KEY)) {
            return Some((ca, key));
        }
    }
    None
}

/// Why an agent credential is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentRequestError {
    /// The namespace's agent Secret does not exist.
    #[error("there is no Secret {AGENT_SECRET_NAME} in namespace {0}")]
    NoSecret(String),
    /// It exists but does not hold the client's nonce.
    #[error("Secret {AGENT_SECRET_NAME} in namespace {0} does not hold this request")]
    Mismatch(String),
    /// The nonce is too short to prove anything.
    #[error("the request's nonce is too short")]
    WeakNonce,
}

/// Shortest nonce accepted, in bytes of text (128 bits as hex).
const MIN_NONCE_LEN: usize = 32;

/// Whether `secret` (the namespace's [`AGENT_SECRET_NAME`], if any) proves that the client
/// asking with `nonce` may write Secrets in `namespace`.
pub fn check_agent_request(
    namespace: &str,
    secret: Option<&Secret>,
    nonce: &str,
) -> Result<(), AgentRequestError> {
    if nonce.len() < MIN_NONCE_LEN {
        return Err(AgentRequestError::WeakNonce);
    }
    let secret = secret.ok_or_else(|| AgentRequestError::NoSecret(namespace.to_owned()))?;
    let key = tether_proto::AgentCredentialRequest::secret_key(nonce);
    let stored = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&key))
        .map(|v| v.0.as_slice());
    if stored == Some(nonce.as_bytes()) {
        Ok(())
    } else {
        Err(AgentRequestError::Mismatch(namespace.to_owned()))
    }
}

/// Reads the namespace's agent Secret (`None` if there is none).
pub async fn agent_secret(client: &Client, namespace: &str) -> Result<Option<Secret>, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    secrets.get_opt(AGENT_SECRET_NAME).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "0123456789abcdef0123456789abcdef";

    fn secret(request: Option<&str>) -> Secret {
        let mut data = BTreeMap::from([("ca.crt".to_owned(), ByteString(b"ca".to_vec()))]);
        if let Some(r) = request {
            data.insert(
                tether_proto::AgentCredentialRequest::secret_key(r),
                ByteString(r.as_bytes().to_vec()),
            );
        }
        Secret {
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn clients_can_read_no_private_key() {
        let data = public_data("-----BEGIN CERTIFICATE-----");
        assert_eq!(data.keys().collect::<Vec<_>>(), ["ca.crt"]);
        assert!(data.values().all(|v| !v.contains("PRIVATE KEY")));
    }

    #[test]
    fn the_stored_nonce_is_the_proof() {
        assert_eq!(
            check_agent_request("shop", Some(&secret(Some(NONCE))), NONCE),
            Ok(())
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let other = "ffffffffffffffffffffffffffffffff";
        assert_eq!(
            check_agent_request("shop", Some(&secret(Some(other))), NONCE),
            Err(AgentRequestError::Mismatch("shop".into()))
        );
        assert_eq!(
            check_agent_request("shop", Some(&secret(None)), NONCE),
            Err(AgentRequestError::Mismatch("shop".into()))
        );
        // Another client's proof, under its own key, proves nothing for this one.
        let mut both = secret(Some(other));
        assert_eq!(
            check_agent_request("shop", Some(&both), NONCE),
            Err(AgentRequestError::Mismatch("shop".into()))
        );
        both.data.as_mut().unwrap().insert(
            tether_proto::AgentCredentialRequest::secret_key(NONCE),
            ByteString(NONCE.as_bytes().to_vec()),
        );
        assert_eq!(check_agent_request("shop", Some(&both), NONCE), Ok(()));
        assert_eq!(
            check_agent_request("shop", None, NONCE),
            Err(AgentRequestError::NoSecret("shop".into()))
        );
        // An empty or short nonce would match a Secret someone else left with an empty request.
        assert_eq!(
            check_agent_request("shop", Some(&secret(Some(""))), ""),
            Err(AgentRequestError::WeakNonce)
        );
    }
}
