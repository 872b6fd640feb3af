//! The daemon's session certificate: a key pair made here and a certificate the traffic manager
//! signs for the Kubernetes user of the kubeconfig.
//!
//! The daemon creates a CertificateSigningRequest (signer `tether.dev/session`) with the user's
//! own credentials, so the API server records who asks; the manager approves and signs it if
//! RBAC lets that user `create sessions.tether.dev`, or denies it saying what is missing. The
//! daemon reads the certificate back, deletes the request and keeps the key in memory only.
//!
//! [`outcome`] reads a request's state (plain code, unit-tested); [`session_credential`] does the
//! API calls.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::Api;
use tether_tunnel::{ClientCredential, SessionRequest};
use tracing::{debug, info, warn};

use crate::cluster::{Cluster, ClusterError};

pub use tether_kube::names::{SESSION_REQUEST_PREFIX as NAME_PREFIX, SIGNER_NAME};
/// How long the daemon waits for the manager to answer a request.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the request is read while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No answer yet.
    Pending,
    /// Signed: the certificate, PEM.
    Issued(String),
    /// Denied or failed, with the manager's message.
    Refused(String),
}

/// Reads a request's conditions and certificate.
pub fn outcome(csr: &CertificateSigningRequest) -> Outcome {
    let Some(status) = &csr.status else {
        return Outcome::Pending;
    };
    for condition in status.conditions.iter().flatten() {
        if (condition.type_ == "Denied" || condition.type_ == "Failed")
            && condition.status != "False"
        {
            let message = condition
                .message
                .clone()
                .or_else(|| condition.reason.clone())
                .unwrap_or_else(|| condition.type_.to_lowercase());
            return Outcome::Refused(message);
        }
    }
    match &status.certificate {
        Some(cert) if !cert.0.is_empty() => {
            Outcome::Issued(String::from_utf8_lossy(&cert.0).into_owned())
        }
        _ => Outcome::Pending,
    }
}

/// The request the daemon creates for `csr_pem`.
pub fn request_object(csr_pem: &str) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(NAME_PREFIX.to_owned()),
            labels: Some(
                [tether_kube::names::MANAGED_BY]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            signer_name: SIGNER_NAME.to_owned(),
            usages: Some(vec!["client auth".to_owned()]),
            request: ByteString(csr_pem.as_bytes().to_vec()),
            ..Default::default()
        },
        status: None,
    }
}

/// When to renew a certificate valid until `expiry`, got at `now`: after two thirds of what is
/// left.
pub fn renew_after(now: SystemTime, expiry: SystemTime) -> Duration {
    expiry.duration_since(now).unwrap_or_default() * 2 / 3
}

/// A fresh session credential for the kubeconfig's user: the manager's CA certificate (from
/// its Secret) and a certificate the manager signed for a key made here.
pub async fn session_credential(cluster: &Cluster) -> Result<ClientCredential, ClusterError> {
    let ca_pem = cluster.manager_ca().await?;
    let request =
        SessionRequest::generate().map_err(|e| ClusterError::BadCredential(e.to_string()))?;
    let api: Api<CertificateSigningRequest> = Api::all(cluster.client.clone());
    let created = api
        .create(&PostParams::default(), &request_object(&request.csr_pem))
        .await
        .map_err(|e| cluster.map("create certificatesigningrequests", e))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    debug!(request = %name, "Asked for a session certificate");
    let answer = wait(&api, &name).await;
    // The request holds nothing secret, but it is ours to clean up (the manager deletes what is
    // left after an hour).
    if let Err(error) = api.delete(&name, &DeleteParams::default()).await {
        warn!(request = %name, %error, "Could not delete the session request");
    }
    let cert_pem = match answer {
        Ok(Outcome::Issued(cert)) => cert,
        Ok(Outcome::Refused(message)) => return Err(ClusterError::SessionRefused(message)),
        Ok(Outcome::Pending) => {
            return Err(ClusterError::NoSigner {
                waited: ANSWER_TIMEOUT,
                namespace: cluster.manager_namespace.clone(),
            })
        }
        Err(e) => return Err(cluster.map(&format!("get certificatesigningrequest {name}"), e)),
    };
    info!("Got a session certificate");
    Ok(request.into_credential(ca_pem, cert_pem))
}

/// Polls the request until it is answered or [`ANSWER_TIMEOUT`] passes (then `Pending`).
///
/// A poll, not a watch (`await_condition`): the client role grants `get` on requests, not
/// `list`/`watch`, which would show a user everyone's requests.
async fn wait(api: &Api<CertificateSigningRequest>, name: &str) -> Result<Outcome, kube::Error> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        let outcome = outcome(&api.get(name).await?);
        if outcome != Outcome::Pending || Instant::now() >= deadline {
            return Ok(outcome);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };

    use super::*;

    fn with(conditions: &[(&str, &str)], cert: Option<&str>) -> CertificateSigningRequest {
        let mut csr = request_object("-----BEGIN CERTIFICATE REQUEST-----");
        csr.status = Some(CertificateSigningRequestStatus {
            conditions: Some(
                conditions
                    .iter()
                    .map(|(kind, message)| CertificateSigningRequestCondition {
                        type_: kind.to_string(),
                        status: "True".to_owned(),
                        message: Some(message.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            certificate: cert.map(|c| ByteString(c.as_bytes().to_vec())),
        });
        csr
    }

    #[test]
    fn the_request_asks_the_tether_signer_for_client_auth_only() {
        let csr = request_object("PEM");
        assert_eq!(csr.spec.signer_name, "tether.dev/session");
        assert_eq!(csr.spec.usages, Some(vec!["client auth".to_owned()]));
        assert_eq!(
            csr.metadata.generate_name.as_deref(),
            Some("tether-session-")
        );
        // Who asks is for the API server to fill in.
        assert_eq!(csr.spec.username, None);
        assert_eq!(csr.spec.groups, None);
    }

    #[test]
    fn outcomes() {
        assert_eq!(outcome(&request_object("PEM")), Outcome::Pending);
        assert_eq!(
            outcome(&with(&[("Approved", "ok")], None)),
            Outcome::Pending
        );
        assert_eq!(
            outcome(&with(&[("Approved", "ok")], Some("CERT"))),
            Outcome::Issued("CERT".to_owned())
        );
        assert_eq!(
            outcome(&with(
                &[("Denied", "bind the ClusterRole tether-client")],
                None
            )),
            Outcome::Refused("bind the ClusterRole tether-client".to_owned())
        );
        assert_eq!(
            outcome(&with(&[("Approved", "ok"), ("Failed", "bad key")], None)),
            Outcome::Refused("bad key".to_owned())
        );
    }

    #[test]
    fn renewal_at_two_thirds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(renew_after(now, now + hours(9)), hours(6));
        assert_eq!(renew_after(now, now - hours(1)), Duration::ZERO);
    }
}
