//! The one piece of I/O of authorization: a SubjectAccessReview per question. Only answers to
//! read-only questions (`list`) are cached, for [`CACHE_TTL`](super::CACHE_TTL): a request that
//! changes something is always asked afresh, so a removed binding refuses it at once.

use std::sync::Mutex;
use std::time::Instant;

use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::{api::PostParams, Api, Client};

use super::{Access, Cache, ReviewError, Reviewer, Subject, CACHE_TTL, GROUP};

/// Asks the API server (the manager's ServiceAccount may create SubjectAccessReviews).
pub struct ApiReviewer {
    client: Client,
    cache: Mutex<Cache>,
}

impl ApiReviewer {
    /// A reviewer with an empty cache.
    pub fn new(client: Client) -> ApiReviewer {
        ApiReviewer {
            client,
            cache: Mutex::new(Cache::new(CACHE_TTL)),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // Cache methods do not panic midway; a poisoned lock still holds consistent data.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the API server without the cache (the periodic session re-check wants today's
    /// answer, not one from a few seconds ago; it also refreshes the cache).
    pub async fn review_now(
        &self,
        subject: &Subject,
        access: &Access,
    ) -> Result<bool, ReviewError> {
        let allowed = subject_access_review(&self.client, subject, access).await?;
        self.cache().put(Instant::now(), subject, access, allowed);
        Ok(allowed)
    }
}

impl std::fmt::Debug for ApiReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `kube::Client` has no Debug.
        f.debug_struct("ApiReviewer").finish_non_exhaustive()
    }
}

impl Reviewer for ApiReviewer {
    fn review<'a>(
        &'a self,
        subject: &'a Subject,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<bool, ReviewError>> {
        Box::pin(async move {
            if access.verb == "list" {
                if let Some(allowed) = self.cache().get(Instant::now(), subject, access) {
                    return Ok(allowed);
                }
            }
            self.review_now(subject, access).await
        })
    }
}

/// One SubjectAccessReview for a session's subject (user and groups: what its certificate says).
pub async fn subject_access_review(
    client: &Client,
    subject: &Subject,
    access: &Access,
) -> Result<bool, ReviewError> {
    let spec = SubjectAccessReviewSpec {
        user: Some(subject.user.clone()),
        groups: Some(subject.groups.clone()),
        ..Default::default()
    };
    review_spec(client, spec, access).await
}

/// One SubjectAccessReview for the user the API server recorded in a CertificateSigningRequest:
/// `spec` carries its user, groups, uid and extra exactly; `access` is added here.
pub async fn review_spec(
    client: &Client,
    mut spec: SubjectAccessReviewSpec,
    access: &Access,
) -> Result<bool, ReviewError> {
    spec.resource_attributes = Some(ResourceAttributes {
        group: Some(GROUP.to_owned()),
        resource: Some(access.resource.to_owned()),
        verb: Some(access.verb.to_owned()),
        namespace: access.namespace.clone(),
        ..Default::default()
    });
    let review = SubjectAccessReview {
        spec,
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(ReviewError::Api)?;
    let status = answer.status.ok_or(ReviewError::NoStatus)?;
    Ok(status.allowed && status.denied != Some(true))
}
