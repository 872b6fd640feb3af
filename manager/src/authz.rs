//! Who may do what through the manager, decided by the Kubernetes API server's RBAC.
//!
//! A session knows its user from the verified session certificate (user name and groups, as the
//! API server reported them when the certificate was requested). Every request that acts on a
//! namespace is checked with a SubjectAccessReview for that user against a virtual resource of
//! the API group [`GROUP`] (`tether.dev`), which RBAC rules can name like any other:
//!
//! | request                  | access asked                                    |
//! |--------------------------|-------------------------------------------------|
//! | a session (certificate)  | `create sessions.tether.dev` (cluster-scoped)   |
//! | `CreateIntercept`        | `create intercepts.tether.dev` in its namespace |
//! | `AgentCredentialRequest` | `create intercepts.tether.dev` in its namespace |
//! | `ListIntercepts`         | `list intercepts.tether.dev` in its namespace   |
//! | `RemoveIntercept`        | none: a session can only name its own           |
//!
//! This module is sans-IO: what to ask ([`Access`]), how a refusal reads ([`refusal`]), a
//! short-lived answer cache with time passed in ([`Cache`]) and the check itself over a
//! [`Reviewer`] (the API server in production, a fake in tests). The SubjectAccessReview call is
//! in [`review`].

pub mod review;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

pub use tether_kube::names::{
    RBAC_GROUP as GROUP, RBAC_INTERCEPTS as INTERCEPTS, RBAC_SESSIONS as SESSIONS,
};
/// How long an answer is reused: long enough to spare the API server a burst of requests, short
/// enough that a removed binding counts within seconds.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// The person a session belongs to, from its verified certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    /// The Kubernetes user name.
    pub user: String,
    /// The Kubernetes groups.
    pub groups: Vec<String>,
}

/// One access to ask the API server about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    /// `create`, `list`, `delete`.
    pub verb: &'static str,
    /// A resource of [`GROUP`].
    pub resource: &'static str,
    /// The namespace; `None` for the cluster-scoped `sessions`.
    pub namespace: Option<String>,
}

impl Access {
    /// May open a session.
    pub fn create_session() -> Access {
        Access {
            verb: "create",
            resource: SESSIONS,
            namespace: None,
        }
    }

    /// May intercept workloads in `namespace` (and get their agents a credential).
    pub fn create_intercept(namespace: &str) -> Access {
        Access::intercepts("create", namespace)
    }

    /// May see the intercepts and agents of `namespace`.
    pub fn list_intercepts(namespace: &str) -> Access {
        Access::intercepts("list", namespace)
    }

    fn intercepts(verb: &'static str, namespace: &str) -> Access {
        Access {
            verb,
            resource: INTERCEPTS,
            namespace: Some(namespace.to_owned()),
        }
    }

    /// The ClusterRole that grants this access, and how it is bound.
    fn remedy(&self) -> &'static str {
        match self.resource {
            SESSIONS => "bind the ClusterRole tether-client to them (a ClusterRoleBinding)",
            _ => "bind the ClusterRole tether-intercept there (a RoleBinding)",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}.{GROUP}", self.verb, self.resource)?;
        if let Some(namespace) = &self.namespace {
            write!(f, " in namespace {namespace:?}")?;
        }
        Ok(())
    }
}

/// The message a refused user sees: who, what, and which binding would allow it.
pub fn refusal(subject: &Subject, access: &Access) -> String {
    format!(
        "forbidden by RBAC: user {:?} may not {access}; {}",
        subject.user,
        access.remedy()
    )
}

/// How an owner is shown: the verified user, then the client's own description of its machine
/// (a hint only: anyone can claim any host).
pub fn owner(subject: &Subject, host_hint: &str) -> String {
    let hint: String = host_hint
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_HINT)
        .collect();
    if hint.is_empty() {
        subject.user.clone()
    } else {
        format!("{} ({hint})", subject.user)
    }
}

/// The verified user of an [`owner`]: the part before the host hint.
pub fn owner_user(owner: &str) -> &str {
    owner.split_once(" (").map_or(owner, |(user, _)| user)
}

/// Longest host hint kept, in characters.
const MAX_HINT: usize = 64;

/// Why an access could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The SubjectAccessReview request failed.
    #[error("asking the Kubernetes API server failed")]
    Api(#[source] kube::Error),
    /// The API server's answer had no status.
    #[error("the Kubernetes API server gave no answer")]
    NoStatus,
}

/// Asks whether a subject has an access: the API server, or a fake in tests.
pub trait Reviewer: Send + Sync {
    /// `Ok(true)` if allowed.
    fn review<'a>(
        &'a self,
        subject: &'a Subject,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<bool, ReviewError>>;
}

/// Checks `access` for `subject`; the error is the message for the user.
pub async fn check(
    reviewer: &dyn Reviewer,
    subject: &Subject,
    access: &Access,
) -> Result<(), String> {
    match reviewer.review(subject, access).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(refusal(subject, access)),
        Err(error) => Err(format!(
            "could not check whether user {:?} may {access}: {}",
            subject.user,
            tether_proto::error_chain(&error)
        )),
    }
}

/// Recent answers, each valid for a TTL from when it was stored.
#[derive(Debug)]
pub struct Cache {
    ttl: Duration,
    answers: HashMap<(Subject, Access), (Instant, bool)>,
}

/// Entries kept before expired ones are swept.
const CACHE_SWEEP: usize = 1024;

impl Cache {
    /// An empty cache whose answers live `ttl`.
    pub fn new(ttl: Duration) -> Cache {
        Cache {
            ttl,
            answers: HashMap::new(),
        }
    }

    /// A stored answer younger than the TTL at `now`.
    pub fn get(&self, now: Instant, subject: &Subject, access: &Access) -> Option<bool> {
        let (at, allowed) = self.answers.get(&(subject.clone(), access.clone()))?;
        (now.saturating_duration_since(*at) < self.ttl).then_some(*allowed)
    }

    /// Stores an answer obtained at `now`.
    pub fn put(&mut self, now: Instant, subject: &Subject, access: &Access, allowed: bool) {
        if self.answers.len() >= CACHE_SWEEP {
            let ttl = self.ttl;
            self.answers
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
        }
        self.answers
            .insert((subject.clone(), access.clone()), (now, allowed));
    }
}

#[cfg(test)]
mod tests;
