//! The signer's I/O: a watch on session requests, SubjectAccessReviews, and the approval,
//! status and delete calls.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tether_tunnel::Identity;
use tracing::{debug, info, warn};

use super::{step, Step, SIGNER_NAME};
use crate::audit::{Action, AuditLog, Record};
use crate::authz::{self, review::review_spec, Access};

/// How often requests are listed for garbage collection (the watch sees changes, not age).
const SWEEP_INTERVAL: Duration = Duration::from_secs(300);

/// Signs session requests until the process ends. `identity` is the manager's CA.
pub async fn run(client: Client, identity: Arc<Identity>, lifetime: Duration, audit: AuditLog) {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let selector = format!("spec.signerName={SIGNER_NAME}");
    let sweep = {
        let (api, selector) = (api.clone(), selector.clone());
        async move {
            loop {
                tokio::time::sleep(SWEEP_INTERVAL).await;
                match api.list(&ListParams::default().fields(&selector)).await {
                    Ok(list) => {
                        for csr in list.items {
                            if step(&csr, k8s_openapi::jiff::Timestamp::now()) == Step::Delete {
                                delete(&api, &csr).await;
                            }
                        }
                    }
                    Err(error) => warn!(%error, "Cannot list session requests"),
                }
            }
        }
    };
    // The API server filters by signer (Kubernetes 1.18+ supports this field selector).
    let config = watcher::Config::default().fields(&selector);
    let watch = watcher::watcher(api.clone(), config)
        .default_backoff()
        .applied_objects()
        .for_each(|event| {
            let (client, api, identity) = (client.clone(), api.clone(), identity.clone());
            let audit = audit.clone();
            async move {
                match event {
                    Ok(csr) => handle(&client, &api, &identity, lifetime, &audit, csr).await,
                    Err(error) => warn!(%error, "Watching session requests"),
                }
            }
        });
    info!(signer = SIGNER_NAME, "Signing session certificates");
    tokio::join!(watch, sweep);
}

async fn handle(
    client: &Client,
    api: &Api<CertificateSigningRequest>,
    identity: &Identity,
    lifetime: Duration,
    audit: &AuditLog,
    csr: CertificateSigningRequest,
) {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let user = csr.spec.username.clone().unwrap_or_default();
    // The user the API server authenticated when the request was created.
    let record = Record::new(
        Action::CertificateIssued,
        &authz::Subject {
            user: user.clone(),
            groups: csr.spec.groups.clone().unwrap_or_default(),
        },
        SystemTime::now(),
    )
    .object(None, &name)
    .note("signer", SIGNER_NAME);
    let refused = |why: &str| {
        Record {
            action: Action::CertificateRefused,
            ..record.clone()
        }
        .refused(why)
    };
    match step(&csr, k8s_openapi::jiff::Timestamp::now()) {
        Step::Ignore => {}
        Step::Delete => delete(api, &csr).await,
        Step::Deny(message) => {
            info!(request = %name, %user, %message, "Session request refused");
            audit.record(refused(&message));
            decide(api, csr, "Denied", "TetherInvalidRequest", &message).await;
        }
        Step::Review { approved } => {
            let spec = SubjectAccessReviewSpec {
                user: csr.spec.username.clone(),
                groups: csr.spec.groups.clone(),
                uid: csr.spec.uid.clone(),
                extra: csr.spec.extra.clone(),
                ..Default::default()
            };
            let access = Access::create_session();
            match review_spec(client, spec, &access).await {
                Ok(true) => {
                    let csr = if approved {
                        csr
                    } else {
                        let message = format!("user {user:?} may {access}");
                        match decide(api, csr, "Approved", "TetherRBAC", &message).await {
                            Some(csr) => csr,
                            None => return,
                        }
                    };
                    if sign(api, identity, lifetime, csr).await {
                        audit.record(record.note("lifetime-seconds", lifetime.as_secs()));
                    }
                }
                Ok(false) => {
                    let subject = authz::Subject {
                        user: user.clone(),
                        groups: csr.spec.groups.clone().unwrap_or_default(),
                    };
                    let message = authz::refusal(&subject, &access);
                    info!(request = %name, %user, "Session request denied by RBAC");
                    audit.record(refused(&message));
                    decide(api, csr, "Denied", "TetherRBAC", &message).await;
                }
                // The next watch event (or the daemon's retry) tries again.
                Err(error) => {
                    warn!(request = %name, %user, %error, "Cannot review a session request")
                }
            }
        }
    }
}

/// Adds an Approved or Denied condition through the `/approval` subresource; returns the
/// updated request.
async fn decide(
    api: &Api<CertificateSigningRequest>,
    csr: CertificateSigningRequest,
    kind: &str,
    reason: &str,
    message: &str,
) -> Option<CertificateSigningRequest> {
    add_condition(api, csr, "approval", kind, reason, message).await
}

/// Adds a `kind` condition through `subresource`; returns the updated request.
async fn add_condition(
    api: &Api<CertificateSigningRequest>,
    mut csr: CertificateSigningRequest,
    subresource: &str,
    kind: &str,
    reason: &str,
    message: &str,
) -> Option<CertificateSigningRequest> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let status = csr.status.get_or_insert_with(Default::default);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: kind.to_owned(),
            status: "True".to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            last_transition_time: None,
        });
    match api
        .replace_subresource(subresource, &name, &PostParams::default(), &csr)
        .await
    {
        Ok(updated) => Some(updated),
        Err(error) => {
            // A conflict means someone else changed it; its next event brings it back.
            warn!(request = %name, %error, condition = kind, "Cannot update a session request");
            None
        }
    }
}

/// Writes the certificate into the approved request's status; true once it is there.
async fn sign(
    api: &Api<CertificateSigningRequest>,
    identity: &Identity,
    lifetime: Duration,
    mut csr: CertificateSigningRequest,
) -> bool {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let user = csr.spec.username.clone().unwrap_or_default();
    let groups = csr.spec.groups.clone().unwrap_or_default();
    let request = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let cert = match identity.sign_session(&request, &user, &groups, lifetime) {
        Ok(cert) => cert,
        Err(error) => {
            // The request cannot become a certificate: fail it so the daemon hears why.
            let message = format!(
                "tether cannot sign this request: {}",
                tether_proto::error_chain(&error)
            );
            info!(request = %name, %user, %message, "Session request failed");
            fail(api, csr, "TetherInvalidRequest", message).await;
            return false;
        }
    };
    let unsigned = csr.clone();
    let status = csr
        .status
        .get_or_insert_with(CertificateSigningRequestStatus::default);
    status.certificate = Some(ByteString(cert.into_bytes()));
    match api
        .replace_status(&name, &PostParams::default(), &csr)
        .await
    {
        Ok(_) => {
            info!(request = %name, %user, ?groups, "Session certificate issued");
            true
        }
        // Someone else changed the request meanwhile: the watch brings it back.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            info!(request = %name, "Session request changed while signing; retrying");
            false
        }
        Err(error) => {
            // The API server refused the certificate itself (or the write): fail the request
            // so the daemon shows why instead of waiting for a certificate that never comes.
            warn!(request = %name, %error, "Cannot write a session certificate");
            let message = format!("the traffic manager could not write the certificate: {error}");
            fail(api, unsigned, "TetherCannotWrite", message).await;
            false
        }
    }
}

/// Marks a request `Failed` with `reason` and `message` (through `/status`), which the daemon
/// shows its user.
async fn fail(
    api: &Api<CertificateSigningRequest>,
    csr: CertificateSigningRequest,
    reason: &str,
    message: String,
) {
    add_condition(api, csr, "status", "Failed", reason, &message).await;
}

async fn delete(api: &Api<CertificateSigningRequest>, csr: &CertificateSigningRequest) {
    let name = csr.metadata.name.clone().unwrap_or_default();
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => debug!(request = %name, "Old session request deleted"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(error) => warn!(request = %name, %error, "Cannot delete an old session request"),
    }
}
