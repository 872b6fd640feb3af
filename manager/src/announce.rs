//! Intercepts told where people look: each start and end is a Kubernetes Event on the workload
//! (`kubectl describe deploy/orders` shows `Intercepted … intercepted by ann (x-dev=ann) to port
//! 8080 …` and `InterceptEnded`), and the workload's annotation [`INTERCEPTS_ANNOTATION`] lists
//! the active ones in words (`ann (x-dev=ann) → 8080; bob (all requests) → 8080`; a mirror says
//! so: `carol (mirror: all requests) → 8080`), removed with the last.
//!
//! The manager writes both under its own service account: only it knows every intercept, and
//! when a vanished laptop's intercepts end. The annotation is a merge patch of metadata only;
//! the workload's spec (the agent) is written by the developer's own tether, under their name.
//!
//! Sans-IO first (the words, the patch, the Event object, time passed in); [`Announcer`] does
//! the two API calls. Announcing never holds up or fails an intercept: a failed write is logged.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use tether_proto::{InterceptInfo, InterceptMode};
use tracing::{debug, warn};

use crate::audit::filter_text;
use crate::authz;

pub use tether_kube::names::INTERCEPTS_ANNOTATION;

/// The Event reason of a started intercept.
pub const STARTED: &str = "Intercepted";
/// The Event reason of an ended intercept.
pub const ENDED: &str = "InterceptEnded";
/// The Events' `source.component` and `reportingComponent`.
pub const COMPONENT: &str = "tether-manager";
/// How long announcing one change may take before the intercept's answer goes out anyway.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// One intercept in words: `ann (x-dev=ann) → 8080`, or `ann (mirror: x-dev=ann) → 8080`.
pub fn describe(i: &InterceptInfo) -> String {
    format!(
        "{} ({}{}) → {}",
        authz::owner_user(&i.owner),
        mirror_prefix(i),
        filter_text(&i.filter),
        i.port
    )
}

fn mirror_prefix(i: &InterceptInfo) -> &'static str {
    match i.mode {
        InterceptMode::Take => "",
        InterceptMode::Mirror => "mirror: ",
        InterceptMode::Replace => "replace: ",
    }
}

/// What the intercept does, as the Events say it: `intercepted`, `mirrored` or `replaced`.
fn verb(i: &InterceptInfo) -> (&'static str, &'static str) {
    match i.mode {
        InterceptMode::Take => ("intercepted", "intercept"),
        InterceptMode::Mirror => ("mirrored", "mirror"),
        InterceptMode::Replace => ("replaced", "replace"),
    }
}

/// The annotation's value for a workload's active intercepts (oldest first); `None`: remove it.
pub fn summary(intercepts: &[InterceptInfo]) -> Option<String> {
    let mut sorted: Vec<&InterceptInfo> = intercepts.iter().collect();
    sorted.sort_by_key(|i| i.id);
    let parts: Vec<String> = sorted.into_iter().map(describe).collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The merge patch that sets (or removes) the annotation and touches nothing else.
pub fn annotation_patch(summary: Option<&str>) -> serde_json::Value {
    json!({"metadata": {"annotations": {INTERCEPTS_ANNOTATION: summary}}})
}

/// The Event message of a started intercept.
pub fn started_message(i: &InterceptInfo) -> String {
    let (done, noun) = verb(i);
    format!(
        "{done} by {} ({}) to port {} (service port {}), {noun} {:?} from {}",
        authz::owner_user(&i.owner),
        filter_text(&i.filter),
        i.port,
        i.service_port,
        i.name,
        i.owner
    )
}

/// The Event message of an ended intercept; `why`: `left`, `its session ended`.
pub fn ended_message(i: &InterceptInfo, why: &str) -> String {
    let (_, noun) = verb(i);
    format!(
        "{noun} by {} ({}) to port {} ended: {why}",
        authz::owner_user(&i.owner),
        filter_text(&i.filter),
        i.port
    )
}

/// A workload as an Event names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Involved {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub uid: Option<String>,
}

/// The core/v1 Event (`reason`, `message`) on `involved`, at `now`, reported by `instance`.
pub fn event(
    involved: &Involved,
    reason: &str,
    message: String,
    now: Timestamp,
    instance: &str,
) -> Event {
    let (key, value) = tether_kube::names::MANAGED_BY;
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", involved.name.to_lowercase())),
            namespace: Some(involved.namespace.clone()),
            labels: Some([(key.to_owned(), value.to_owned())].into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("apps/v1".to_owned()),
            kind: Some(involved.kind.clone()),
            name: Some(involved.name.clone()),
            namespace: Some(involved.namespace.clone()),
            uid: involved.uid.clone(),
            ..Default::default()
        },
        reason: Some(reason.to_owned()),
        message: Some(message),
        type_: Some("Normal".to_owned()),
        action: Some(
            if reason == STARTED {
                "Intercept"
            } else {
                "Leave"
            }
            .to_owned(),
        ),
        source: Some(EventSource {
            component: Some(COMPONENT.to_owned()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    }
}

/// Why a workload could not be announced on.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The intercept names no workload tether injects (`Kind/name`).
    #[error("{0:?} is not a Deployment, StatefulSet or ReplicaSet")]
    Kind(String),
    /// The annotation could not be written.
    #[error("cannot annotate {workload}")]
    Annotate {
        workload: String,
        #[source]
        source: kube::Error,
    },
    /// The Event could not be created.
    #[error("cannot create an Event on {workload}")]
    Event {
        workload: String,
        #[source]
        source: kube::Error,
    },
    /// It took longer than [`TIMEOUT`].
    #[error("announcing on {0} took longer than {TIMEOUT:?}")]
    Timeout(String),
}

/// Writes the annotation and Events. Changes are announced one at a time (the caller holds
/// [`Announcer::lock`] while it reads the registry and writes), so a slower write never
/// overwrites a newer list.
pub struct Announcer {
    client: Client,
    /// The manager pod's name (the Events' `reportingInstance`).
    instance: String,
    lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `kube::Client` has no Debug.
        f.debug_struct("Announcer")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Announcer {
    pub fn new(client: Client, instance: String) -> Announcer {
        Announcer {
            client,
            instance,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Held while one change is announced.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Sets the annotation of `i`'s workload to `active` (its intercepts now) and creates the
    /// Event (`reason`, `message`), within [`TIMEOUT`].
    pub async fn announce(
        &self,
        i: &InterceptInfo,
        active: &[InterceptInfo],
        reason: &str,
        message: String,
    ) -> Result<(), AnnounceError> {
        let work = async {
            let involved = self.annotate(i, summary(active).as_deref()).await?;
            let event = event(&involved, reason, message, Timestamp::now(), &self.instance);
            let api: Api<Event> = Api::namespaced(self.client.clone(), &i.namespace);
            api.create(&PostParams::default(), &event)
                .await
                .map_err(|source| AnnounceError::Event {
                    workload: i.workload.clone(),
                    source,
                })?;
            debug!(workload = %i.workload, reason, "Announced");
            Ok(())
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err(AnnounceError::Timeout(i.workload.clone())))
    }

    /// Patches the annotation; the workload as the Event names it.
    async fn annotate(
        &self,
        i: &InterceptInfo,
        summary: Option<&str>,
    ) -> Result<Involved, AnnounceError> {
        let (kind, name) = i
            .workload
            .split_once('/')
            .ok_or_else(|| AnnounceError::Kind(i.workload.clone()))?;
        let patch = annotation_patch(summary);
        let uid = match kind {
            "Deployment" => self.patch::<Deployment>(i, name, &patch).await?,
            "StatefulSet" => self.patch::<StatefulSet>(i, name, &patch).await?,
            "ReplicaSet" => self.patch::<ReplicaSet>(i, name, &patch).await?,
            _ => return Err(AnnounceError::Kind(i.workload.clone())),
        };
        Ok(Involved {
            kind: kind.to_owned(),
            name: name.to_owned(),
            namespace: i.namespace.clone(),
            uid,
        })
    }

    async fn patch<K>(
        &self,
        i: &InterceptInfo,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<Option<String>, AnnounceError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &i.namespace);
        let written = api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|source| AnnounceError::Annotate {
                workload: i.workload.clone(),
                source,
            })?;
        Ok(written.meta().uid.clone())
    }
}

/// Logs a failed announcement: the intercept itself stands.
pub fn log_failure(error: &AnnounceError) {
    warn!(error = %tether_proto::error_chain(error), "Intercept not announced on its workload");
}

#[cfg(test)]
mod tests;
