//! Publishes the client credential in a Secret, so that exactly the users whom Kubernetes RBAC
//! lets read it can open a tunnel.
//!
//! The same Secret holds the agents' credential ([`AGENT_CERT_KEY`], [`AGENT_KEY_KEY`]): a user
//! who installs an agent copies it into the workload's namespace, so agents authenticate as
//! agents (a client certificate cannot pose as an agent, nor the other way round).

use k8s_openapi::{api::core::v1::Secret, ByteString};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use tether_tunnel::ClientCredential;

/// The Secret, in the manager's namespace.
pub const SECRET_NAME: &str = "tether-manager-tls";
/// The Secret's key holding the CA's private key, so that a restarted manager keeps the CA and
/// every credential already handed out (agents' mounted copies included) stays valid. Whoever may
/// read the Secret may already read the client and agent credentials, so it grants no more.
pub const CA_KEY_KEY: &str = "ca.key";
/// The Secret's key holding the agents' certificate.
pub const AGENT_CERT_KEY: &str = "agent.crt";
/// The Secret's key holding the agents' private key.
pub const AGENT_KEY_KEY: &str = "agent.key";

pub async fn publish_credential(
    client: &Client,
    namespace: &str,
    credential: &ClientCredential,
    agent: &ClientCredential,
    ca_key_pem: &str,
) -> Result<(), kube::Error> {
    let mut data = credential.to_secret_data();
    data.insert(CA_KEY_KEY.to_owned(), ca_key_pem.to_owned());
    data.insert(AGENT_CERT_KEY.to_owned(), agent.cert_pem.clone());
    data.insert(AGENT_KEY_KEY.to_owned(), agent.key_pem.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(SECRET_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [
                    ("app.kubernetes.io/managed-by", "tether"),
                    ("app.kubernetes.io/name", "tether-manager"),
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
            SECRET_NAME,
            &PatchParams::apply("tether").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

/// The CA a previous manager published, as (certificate, key) PEM; `None` if there is none or it
/// cannot be read (the manager then makes a new one).
pub async fn previous_ca(client: &Client, namespace: &str) -> Option<(String, String)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets.get_opt(SECRET_NAME).await.ok()??;
    let data = secret.data?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    Some((text(ClientCredential::CA_KEY)?, text(CA_KEY_KEY)?))
}
