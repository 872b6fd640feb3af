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
/// The Secret's key holding the agents' certificate.
pub const AGENT_CERT_KEY: &str = "agent.crt";
/// The Secret's key holding the agents' private key.
pub const AGENT_KEY_KEY: &str = "agent.key";

pub async fn publish_credential(
    client: &Client,
    namespace: &str,
    credential: &ClientCredential,
    agent: &ClientCredential,
) -> Result<(), kube::Error> {
    let mut data = credential.to_secret_data();
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
