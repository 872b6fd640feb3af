//! [`FakeApi`]: a Kubernetes API server in-process, behind a real `kube::Client`.
//!
//! The manager's code calls the API server through `kube`; the harness answers those calls
//! instead of mocking them at a trait. It answers what the tunnel server asks:
//!
//! | request | answer |
//! |---|---|
//! | `POST subjectaccessreviews` (authorization.k8s.io/v1) | allowed if a [`Rule`] matches the user or one of its groups |
//! | `POST tokenreviews` (authentication.k8s.io/v1) | a pod's service-account token ([`FakeApi::add_pod`]) for audience `tether`, else not authenticated |
//! | `GET` a pod, a ReplicaSet | those [`FakeApi::add_pod`] made |
//! | `GET` a Secret | those [`FakeApi::put_secret`] stored |
//! | merge `PATCH` of a Deployment's, StatefulSet's or ReplicaSet's annotations | applied to its annotations ([`FakeApi::annotations`]); the object with a uid |
//! | `POST` an Event | recorded ([`FakeApi::events`]) |
//! | anything else | `404 NotFound`, and the request is listed in [`FakeApi::unanswered`] |
//!
//! Every SubjectAccessReview is recorded ([`FakeApi::reviews`]): a test can check whom the
//! manager asked about, not only what it decided.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewStatus};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use serde_json::json;
use tether_proto::AGENT_TOKEN_AUDIENCE;

/// One RBAC grant: `subject` (a user or a group name) may `verb` `resource` (of the
/// `tether.dev` group) in `namespace`, or in every namespace and cluster-wide if `None`.
/// `"*"` as verb or resource matches any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// A user or group name.
    pub subject: String,
    /// `create`, `list`, or `*`.
    pub verb: String,
    /// `sessions`, `intercepts`, or `*`.
    pub resource: String,
    /// Where the grant holds; `None`: everywhere.
    pub namespace: Option<String>,
}

/// One question the manager asked: may `user` (in `groups`) `verb` `resource` in `namespace`?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// The user asked about.
    pub user: String,
    /// The user's groups, as the manager sent them.
    pub groups: Vec<String>,
    /// The verb.
    pub verb: String,
    /// The resource.
    pub resource: String,
    /// The namespace; `None` for cluster-scoped resources.
    pub namespace: Option<String>,
    /// What the fake answered.
    pub allowed: bool,
}

/// The service account and pod a token belongs to.
#[derive(Debug, Clone)]
struct PodToken {
    namespace: String,
    pod: String,
}

type Key = (String, String);

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    reviews: Vec<Review>,
    tokens: BTreeMap<String, PodToken>,
    pods: BTreeMap<Key, Pod>,
    replica_sets: BTreeMap<Key, ReplicaSet>,
    secrets: BTreeMap<Key, Secret>,
    /// Workload annotations by (namespace, `resource/name`).
    annotations: BTreeMap<Key, BTreeMap<String, String>>,
    events: Vec<serde_json::Value>,
    unanswered: Vec<String>,
}

/// The fake API server. Cloning gives another handle to the same server.
#[derive(Debug, Clone, Default)]
pub struct FakeApi(Arc<Mutex<State>>);

impl FakeApi {
    /// A server that allows nothing and knows no objects.
    pub fn new() -> FakeApi {
        FakeApi::default()
    }

    /// A `kube::Client` whose every request this server answers. Must be called within a tokio
    /// runtime (the client spawns its request buffer).
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(request).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Grants `subject` (a user or group) `verb` on `resource` in `namespace` (`None`:
    /// everywhere).
    pub fn allow(&self, subject: &str, verb: &str, resource: &str, namespace: Option<&str>) {
        self.lock().rules.push(Rule {
            subject: subject.to_owned(),
            verb: verb.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
        });
    }

    /// Grants `subject` everything tether asks about, everywhere.
    pub fn allow_everything(&self, subject: &str) {
        self.allow(subject, "*", "*", None);
    }

    /// Removes every grant of `subject`.
    pub fn revoke(&self, subject: &str) {
        self.lock().rules.retain(|r| r.subject != subject);
    }

    /// Every SubjectAccessReview asked so far, oldest first.
    pub fn reviews(&self) -> Vec<Review> {
        self.lock().reviews.clone()
    }

    /// The annotations merge patches gave a workload (`resource` is `deployments`,
    /// `statefulsets` or `replicasets`).
    pub fn annotations(
        &self,
        namespace: &str,
        resource: &str,
        name: &str,
    ) -> BTreeMap<String, String> {
        let key = key(namespace, &format!("{resource}/{name}"));
        self.lock()
            .annotations
            .get(&key)
            .cloned()
            .unwrap_or_default()
    }

    /// The Events created, as sent, oldest first.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.lock().events.clone()
    }

    /// Requests answered `404` because the fake does not know them (`METHOD path`).
    pub fn unanswered(&self) -> Vec<String> {
        self.lock().unanswered.clone()
    }

    /// Adds pod `pod` of `workload` (`Kind/name`) in `namespace`, and returns the token its
    /// agent presents. A Deployment's pod is owned by a ReplicaSet the Deployment owns, as in a
    /// cluster; other kinds own their pods directly.
    pub fn add_pod(&self, namespace: &str, workload: &str, pod: &str) -> String {
        let (kind, name) = workload.split_once('/').unwrap_or(("Deployment", workload));
        let mut state = self.lock();
        let pod_owner = if kind == "Deployment" {
            let set = format!("{name}-7c9f5d");
            let replica_set = ReplicaSet {
                metadata: meta(namespace, &set, Some(("apps/v1", kind, name))),
                ..ReplicaSet::default()
            };
            let key = (namespace.to_owned(), set.clone());
            state.replica_sets.insert(key, replica_set);
            ("apps/v1".to_owned(), "ReplicaSet".to_owned(), set)
        } else {
            ("apps/v1".to_owned(), kind.to_owned(), name.to_owned())
        };
        let (api_version, kind, owner) = &pod_owner;
        let object = Pod {
            metadata: meta(namespace, pod, Some((api_version, kind, owner))),
            ..Pod::default()
        };
        state
            .pods
            .insert((namespace.to_owned(), pod.to_owned()), object);
        let token = format!("token-of-{namespace}-{pod}");
        state.tokens.insert(
            token.clone(),
            PodToken {
                namespace: namespace.to_owned(),
                pod: pod.to_owned(),
            },
        );
        token
    }

    /// Stores Secret `namespace/name` with `data` (replacing one of that name).
    pub fn put_secret(&self, namespace: &str, name: &str, data: BTreeMap<String, Vec<u8>>) {
        let secret = Secret {
            metadata: meta(namespace, name, None),
            data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            ..Secret::default()
        };
        self.lock()
            .secrets
            .insert((namespace.to_owned(), name.to_owned()), secret);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent maps.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn handle(&self, request: Request<kube::client::Body>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "unreadable body");
        };
        let path = parts.uri.path();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let answer = match (&parts.method, segments.as_slice()) {
            (&Method::POST, ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"]) => {
                self.access_review(&body)
            }
            (&Method::POST, ["apis", "authentication.k8s.io", "v1", "tokenreviews"]) => {
                self.token_review(&body)
            }
            (&Method::GET, ["api", "v1", "namespaces", ns, "pods", name]) => {
                self.get(|s| s.pods.get(&key(ns, name)).map(serde_json::to_vec))
            }
            (&Method::GET, ["apis", "apps", "v1", "namespaces", ns, "replicasets", name]) => {
                self.get(|s| s.replica_sets.get(&key(ns, name)).map(serde_json::to_vec))
            }
            (&Method::GET, ["api", "v1", "namespaces", ns, "secrets", name]) => {
                self.get(|s| s.secrets.get(&key(ns, name)).map(serde_json::to_vec))
            }
            (&Method::PATCH, ["apis", "apps", "v1", "namespaces", ns, resource, name])
                if ["deployments", "statefulsets", "replicasets"].contains(resource) =>
            {
                Some(self.patch_annotations(ns, resource, name, &body))
            }
            (&Method::POST, ["api", "v1", "namespaces", _, "events"]) => {
                Some(match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(event) => {
                        self.lock().events.push(event.clone());
                        respond(StatusCode::CREATED, event.to_string().into_bytes())
                    }
                    Err(error) => bad_request(&error),
                })
            }
            _ => None,
        };
        answer.unwrap_or_else(|| {
            tracing::debug!(method = %parts.method, %path, "The fake API server does not know this");
            self.lock()
                .unanswered
                .push(format!("{} {path}", parts.method));
            status(StatusCode::NOT_FOUND, "NotFound", &format!("{path} not found"))
        })
    }

    /// Applies a merge patch's `metadata.annotations` (a null value removes the key); answers
    /// with the object's metadata and a uid.
    fn patch_annotations(
        &self,
        ns: &str,
        resource: &str,
        name: &str,
        body: &[u8],
    ) -> Response<Full<Bytes>> {
        let patch: serde_json::Value = match serde_json::from_slice(body) {
            Ok(patch) => patch,
            Err(error) => return bad_request(&error),
        };
        let mut state = self.lock();
        let annotations = state
            .annotations
            .entry(key(ns, &format!("{resource}/{name}")))
            .or_default();
        if let Some(changes) = patch["metadata"]["annotations"].as_object() {
            for (k, v) in changes {
                match v.as_str() {
                    Some(v) => annotations.insert(k.clone(), v.to_owned()),
                    None => annotations.remove(k),
                };
            }
        }
        let object = json!({
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": format!("uid-{resource}-{name}"),
                "annotations": annotations,
            }
        });
        ok(object.to_string().into_bytes())
    }

    /// An object from the maps, serialized; `None` (404) if absent.
    fn get(
        &self,
        find: impl FnOnce(&State) -> Option<serde_json::Result<Vec<u8>>>,
    ) -> Option<Response<Full<Bytes>>> {
        match find(&self.lock())? {
            Ok(json) => Some(ok(json)),
            Err(error) => Some(internal(&error)),
        }
    }

    fn access_review(&self, body: &[u8]) -> Option<Response<Full<Bytes>>> {
        let mut review: SubjectAccessReview = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(error) => return Some(bad_request(&error)),
        };
        let spec = &review.spec;
        let attributes = spec.resource_attributes.clone().unwrap_or_default();
        let asked = Review {
            user: spec.user.clone().unwrap_or_default(),
            groups: spec.groups.clone().unwrap_or_default(),
            verb: attributes.verb.unwrap_or_default(),
            resource: attributes.resource.unwrap_or_default(),
            namespace: attributes.namespace.filter(|n| !n.is_empty()),
            allowed: false,
        };
        let mut state = self.lock();
        let allowed = state.rules.iter().any(|rule| grants(rule, &asked));
        state.reviews.push(Review { allowed, ..asked });
        drop(state);
        review.status = Some(SubjectAccessReviewStatus {
            allowed,
            reason: Some(if allowed {
                "allowed by the harness's rules".to_owned()
            } else {
                "no harness rule allows it".to_owned()
            }),
            ..SubjectAccessReviewStatus::default()
        });
        Some(json_of(&review))
    }

    fn token_review(&self, body: &[u8]) -> Option<Response<Full<Bytes>>> {
        let mut review: TokenReview = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(error) => return Some(bad_request(&error)),
        };
        let token = review.spec.token.clone().unwrap_or_default();
        let asked_for_us = review
            .spec
            .audiences
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|a| a == AGENT_TOKEN_AUDIENCE);
        let found = self.lock().tokens.get(&token).cloned();
        review.status = Some(match found {
            Some(owner) if asked_for_us => TokenReviewStatus {
                authenticated: Some(true),
                audiences: Some(vec![AGENT_TOKEN_AUDIENCE.to_owned()]),
                user: Some(UserInfo {
                    username: Some(format!("system:serviceaccount:{}:default", owner.namespace)),
                    extra: Some(BTreeMap::from([(
                        "authentication.kubernetes.io/pod-name".to_owned(),
                        vec![owner.pod],
                    )])),
                    ..UserInfo::default()
                }),
                ..TokenReviewStatus::default()
            },
            _ => TokenReviewStatus {
                authenticated: Some(false),
                error: Some("[invalid bearer token]".to_owned()),
                ..TokenReviewStatus::default()
            },
        });
        Some(json_of(&review))
    }
}

/// Whether `rule` grants what `review` asks.
fn grants(rule: &Rule, review: &Review) -> bool {
    let subject = rule.subject == review.user || review.groups.contains(&rule.subject);
    let verb = rule.verb == "*" || rule.verb == review.verb;
    let resource = rule.resource == "*" || rule.resource == review.resource;
    let namespace = rule.namespace.is_none() || rule.namespace == review.namespace;
    subject && verb && resource && namespace
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

/// Metadata of a namespaced object, with its controller if it has one
/// (`(apiVersion, kind, name)`).
fn meta(namespace: &str, name: &str, controller: Option<(&str, &str, &str)>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        uid: Some(format!("uid-{namespace}-{name}")),
        owner_references: controller.map(|(api_version, kind, owner)| {
            vec![OwnerReference {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
                name: owner.to_owned(),
                uid: format!("uid-{namespace}-{owner}"),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]
        }),
        ..ObjectMeta::default()
    }
}

fn json_of<T: serde::Serialize>(object: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(object) {
        Ok(json) => ok(json),
        Err(error) => internal(&error),
    }
}

fn ok(json: Vec<u8>) -> Response<Full<Bytes>> {
    respond(StatusCode::OK, json)
}

fn bad_request(error: &serde_json::Error) -> Response<Full<Bytes>> {
    status(StatusCode::BAD_REQUEST, "BadRequest", &error.to_string())
}

fn internal(error: &serde_json::Error) -> Response<Full<Bytes>> {
    status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        &error.to_string(),
    )
}

/// A `Status` failure, as the API server sends it.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    respond(code, body.to_string().into_bytes())
}

fn respond(code: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
