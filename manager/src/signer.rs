//! The session signer: turns a person's CertificateSigningRequest into a short-lived session
//! certificate, once the API server's RBAC says that person may open sessions.
//!
//! The daemon creates a `certificates.k8s.io/v1` CSR with the user's own kubeconfig, signer
//! [`SIGNER_NAME`]. The API server fills in `spec.username`, `groups`, `uid` and `extra` from the
//! authenticated requester, so nobody can ask in someone else's name. For each pending request
//! the manager asks a SubjectAccessReview for exactly that user whether it may `create
//! sessions.tether.dev` ([`crate::authz`]); if so it approves the request and writes a
//! certificate naming the user and groups (nothing of the request but its public key is used),
//! else it denies it, naming the missing right.
//!
//! [`step`] decides what to do with a request (sans-IO, tested with plain objects); [`run`] is the
//! watch and the API calls.

mod run;

use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::jiff::Timestamp;

pub use run::run;

pub use tether_kube::names::{SESSION_REQUEST_PREFIX as NAME_PREFIX, SIGNER_NAME};
/// The only usage a session request may ask for.
pub const USAGE: &str = "client auth";
/// Requests older than this are deleted (the daemon deletes its own once it has the
/// certificate; these are the ones whose daemon died or timed out).
pub const GARBAGE_AGE: Duration = Duration::from_secs(3600);
/// Default lifetime of a session certificate (`--session-cert-lifetime`).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not ours, or already finished.
    Ignore,
    /// Old: delete it.
    Delete,
    /// Deny it without asking anyone: the request itself is wrong.
    Deny(String),
    /// Ask RBAC about `spec.username`; approve (unless `approved` already) and sign if allowed.
    Review {
        /// Already approved (a manager that died between approving and signing).
        approved: bool,
    },
}

/// Decides about `csr` at `now`.
pub fn step(csr: &CertificateSigningRequest, now: Timestamp) -> Step {
    let spec = &csr.spec;
    if spec.signer_name != SIGNER_NAME {
        return Step::Ignore;
    }
    if let Some(created) = &csr.metadata.creation_timestamp {
        let age = now.duration_since(created.0);
        if age.as_secs() >= GARBAGE_AGE.as_secs() as i64 {
            return Step::Delete;
        }
    }
    let status = csr.status.as_ref();
    if status.is_some_and(|s| s.certificate.as_ref().is_some_and(|c| !c.0.is_empty())) {
        return Step::Ignore;
    }
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let has = |kind: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == kind && c.status != "False")
    };
    if has("Denied") || has("Failed") {
        return Step::Ignore;
    }
    let approved = has("Approved");
    if !approved {
        let usages = spec.usages.as_deref().unwrap_or(&[]);
        if usages != [USAGE] {
            return Step::Deny(format!(
                "a tether session certificate is for {USAGE:?} only; this request asks for {usages:?}"
            ));
        }
        if spec.username.as_deref().unwrap_or("").trim().is_empty() {
            return Step::Deny("the request names no user".to_owned());
        }
    }
    Step::Review { approved }
}

#[cfg(test)]
mod tests;
