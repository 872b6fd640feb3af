//! The manager's audit trail: one JSON line per security-relevant action (sessions, session
//! certificates, intercepts, agent credentials, agents, refused dials), in the shape of the
//! Kubernetes API server's own audit log (`audit.k8s.io/v1` `Event`, level `Metadata`, stage
//! `ResponseComplete`), so the same pipeline can ship both.
//!
//! How tether's actions map onto the Event's fields:
//!
//! | action (`tether.dev/action`) | verb      | objectRef                                      |
//! |------------------------------|-----------|------------------------------------------------|
//! | `session-started`/`-refused` | `create`  | `sessions.tether.dev` NAME = session id        |
//! | `session-ended`              | `delete`  | `sessions.tether.dev`                          |
//! | `certificate-issued`/`-refused` | `sign` | `certificatesigningrequests.certificates.k8s.io` |
//! | `intercept-created`/`-refused`  | `create` | `intercepts.tether.dev` in the namespace     |
//! | `intercept-ended`            | `delete`  | `intercepts.tether.dev` in the namespace       |
//! | `container-restored`         | `patch`   | `intercepts.tether.dev` in the namespace (the manager put a `--replace`d container back in the workload) |
//! | `agent-credential-issued`/`-refused` | `create` | `agentcredentials.tether.dev` in the namespace |
//! | `agent-refused`              | `connect` | `agents.tether.dev`, NAME = the pod            |
//! | `dial-refused`               | `connect` | `dials.tether.dev`, NAME = the destination     |
//!
//! `user` is the verified Kubernetes user (from the session certificate, or the request the API
//! server authenticated); `sourceIPs` the peer's address as the manager sees it (behind a
//! port-forward, the pod's loopback); `userAgent` the client's own description of its machine
//! (`ann@laptop`, a hint anyone can fake). tether's own fields (workload, port, filter, mode, why) are
//! `annotations` under `tether.dev/`.
//!
//! This file is sans-IO: a [`Record`] says what happened, [`event`] turns it into the [`Event`]
//! with the id and times passed in. [`sink`] writes the lines.

pub mod sink;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tether_proto::{InterceptFilter, InterceptInfo};

use crate::authz::Subject;

pub use sink::{AuditLog, AuditTarget, SinkError};

/// The `apiVersion` of every line.
pub const API_VERSION: &str = "audit.k8s.io/v1";
/// The API group of tether's virtual resources (as RBAC names them).
pub const GROUP: &str = crate::authz::GROUP;

/// A security-relevant action of the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A person's session was accepted.
    SessionStarted,
    /// A person's session was refused (RBAC).
    SessionRefused,
    /// A person's session ended (for any reason: the reason is in `tether.dev/reason`).
    SessionEnded,
    /// A session certificate was signed.
    CertificateIssued,
    /// A session certificate request was denied.
    CertificateRefused,
    /// An intercept was registered.
    InterceptCreated,
    /// An intercept request was refused (RBAC, a conflict, a bad request).
    InterceptRefused,
    /// An intercept ended (left, or its session ended).
    InterceptEnded,
    /// The manager put a replace intercept's container back in its workload (the manager's one
    /// write to a workload's spec).
    ContainerRestored,
    /// A namespace's agents got a credential.
    AgentCredentialIssued,
    /// A request for an agent credential was refused.
    AgentCredentialRefused,
    /// A traffic agent was refused (its credential, its pod, its workload).
    AgentRefused,
    /// A session's dial was refused by the dial policy.
    DialRefused,
    /// A session opened the files of one of its intercepts' pods (`intercept --mount`).
    FilesOpened,
    /// A session was refused a pod's files (not its intercept, no agent).
    FilesRefused,
}

impl Action {
    /// The `tether.dev/action` annotation: what a person greps for.
    pub fn name(self) -> &'static str {
        match self {
            Action::SessionStarted => "session-started",
            Action::SessionRefused => "session-refused",
            Action::SessionEnded => "session-ended",
            Action::CertificateIssued => "certificate-issued",
            Action::CertificateRefused => "certificate-refused",
            Action::InterceptCreated => "intercept-created",
            Action::InterceptRefused => "intercept-refused",
            Action::InterceptEnded => "intercept-ended",
            Action::ContainerRestored => "container-restored",
            Action::AgentCredentialIssued => "agent-credential-issued",
            Action::AgentCredentialRefused => "agent-credential-refused",
            Action::AgentRefused => "agent-refused",
            Action::DialRefused => "dial-refused",
            Action::FilesOpened => "files-opened",
            Action::FilesRefused => "files-refused",
        }
    }

    /// The Event's `verb`.
    fn verb(self) -> &'static str {
        match self {
            Action::SessionEnded | Action::InterceptEnded => "delete",
            Action::ContainerRestored => "patch",
            Action::CertificateIssued | Action::CertificateRefused => "sign",
            Action::AgentRefused
            | Action::DialRefused
            | Action::FilesOpened
            | Action::FilesRefused => "connect",
            _ => "create",
        }
    }

    /// The API group and resource of the Event's `objectRef`.
    fn resource(self) -> (&'static str, &'static str) {
        match self {
            Action::SessionStarted | Action::SessionRefused | Action::SessionEnded => {
                (GROUP, "sessions")
            }
            Action::CertificateIssued | Action::CertificateRefused => {
                ("certificates.k8s.io", "certificatesigningrequests")
            }
            Action::InterceptCreated
            | Action::InterceptRefused
            | Action::InterceptEnded
            | Action::ContainerRestored => (GROUP, "intercepts"),
            Action::AgentCredentialIssued | Action::AgentCredentialRefused => {
                (GROUP, "agentcredentials")
            }
            Action::AgentRefused => (GROUP, "agents"),
            Action::DialRefused => (GROUP, "dials"),
            Action::FilesOpened | Action::FilesRefused => (GROUP, "files"),
        }
    }

    /// The status code of an allowed action (a refusal is 403).
    fn allowed_code(self) -> u16 {
        match self.verb() {
            "create" => 201,
            _ => 200,
        }
    }
}

/// What happened, by whom, to what: the input of [`event`].
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub action: Action,
    /// The verified user and groups.
    pub subject: Subject,
    /// The peer's address, if there is a peer.
    pub source: Option<IpAddr>,
    /// The client's own description of its machine (a hint).
    pub client: Option<String>,
    /// The object's namespace, if it has one.
    pub namespace: Option<String>,
    /// The object's name.
    pub name: Option<String>,
    /// Why it was refused; `None`: allowed.
    pub refusal: Option<String>,
    /// tether's own fields, keys under `tether.dev/`.
    pub annotations: BTreeMap<String, String>,
    /// When the request arrived.
    pub received: SystemTime,
}

impl Record {
    /// An allowed `action` of `subject`, received at `received`, with nothing else known yet.
    pub fn new(action: Action, subject: &Subject, received: SystemTime) -> Record {
        Record {
            action,
            subject: subject.clone(),
            source: None,
            client: None,
            namespace: None,
            name: None,
            refusal: None,
            annotations: BTreeMap::new(),
            received,
        }
    }

    /// From `source`, a client that calls itself `client`.
    pub fn peer(mut self, source: IpAddr, client: &str) -> Record {
        self.source = Some(source);
        if !client.is_empty() {
            self.client = Some(client.to_owned());
        }
        self
    }

    /// On the object `name` (in `namespace`, if any).
    pub fn object(mut self, namespace: Option<&str>, name: &str) -> Record {
        self.namespace = namespace.map(str::to_owned);
        self.name = Some(name.to_owned());
        self
    }

    /// Refused, for `why`.
    pub fn refused(mut self, why: impl Into<String>) -> Record {
        self.refusal = Some(why.into());
        self
    }

    /// Adds `tether.dev/KEY: value`.
    pub fn note(mut self, key: &str, value: impl ToString) -> Record {
        self.annotations
            .insert(format!("{GROUP}/{key}"), value.to_string());
        self
    }

    /// On an intercept: its namespace and name, workload, port, filter, mode (`take` or
    /// `mirror`), id and session.
    pub fn intercept(self, i: &InterceptInfo) -> Record {
        self.object(Some(&i.namespace), &i.name)
            .note("workload", &i.workload)
            .note("port", i.port)
            .note("service-port", &i.service_port)
            .note("filter", filter_text(&i.filter))
            .note("mode", i.mode)
            .note("intercept-id", i.id)
            .note("session", &i.session_id)
    }
}

/// An intercept's filter in words: `x-dev=ann`, `x-dev=ann, path /api`, or `all requests`.
pub fn filter_text(filter: &InterceptFilter) -> String {
    let mut parts: Vec<String> = filter.headers.clone();
    if let Some(prefix) = &filter.path_prefix {
        parts.push(format!("path {prefix}"));
    }
    if parts.is_empty() {
        "all requests".to_owned()
    } else {
        parts.join(", ")
    }
}

/// One line of the audit log: the fields of `audit.k8s.io/v1` `Event` tether fills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: String,
    pub api_version: String,
    pub level: String,
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: String,
    /// The virtual path of the object, as if tether's resources were served.
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub verb: String,
    pub user: UserInfo,
    #[serde(rename = "sourceIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub object_ref: ObjectReference,
    pub response_status: Status,
    pub request_received_timestamp: String,
    pub stage_timestamp: String,
    pub annotations: BTreeMap<String, String>,
}

/// `Event.user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub username: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// `Event.objectRef`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub api_group: String,
}

/// `Event.responseStatus` (a `meta/v1` `Status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub code: u16,
    /// `Success` or `Failure`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The Event for `record`, with its id and the time the action completed.
pub fn event(record: Record, audit_id: &str, completed: SystemTime) -> Event {
    let action = record.action;
    let (api_group, resource) = action.resource();
    let response_status = match record.refusal {
        None => Status {
            code: action.allowed_code(),
            status: "Success".to_owned(),
            reason: None,
            message: None,
        },
        Some(message) => Status {
            code: 403,
            status: "Failure".to_owned(),
            reason: Some("Forbidden".to_owned()),
            message: Some(message),
        },
    };
    let mut annotations = record.annotations;
    annotations.insert(format!("{GROUP}/action"), action.name().to_owned());
    Event {
        kind: "Event".to_owned(),
        api_version: API_VERSION.to_owned(),
        level: "Metadata".to_owned(),
        audit_id: audit_id.to_owned(),
        stage: "ResponseComplete".to_owned(),
        request_uri: request_uri(
            api_group,
            resource,
            record.namespace.as_deref(),
            record.name.as_deref(),
        ),
        verb: action.verb().to_owned(),
        user: UserInfo {
            username: record.subject.user,
            groups: record.subject.groups,
        },
        source_ips: record.source.map(|ip| ip.to_string()).into_iter().collect(),
        user_agent: record.client,
        object_ref: ObjectReference {
            resource: resource.to_owned(),
            namespace: record.namespace,
            name: record.name,
            api_group: api_group.to_owned(),
        },
        response_status,
        request_received_timestamp: micro_time(record.received),
        stage_timestamp: micro_time(completed),
        annotations,
    }
}

/// `/apis/GROUP/v1/namespaces/NS/RESOURCE/NAME`, the path the object would have if served.
fn request_uri(group: &str, resource: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    let mut uri = format!("/apis/{group}/v1");
    if let Some(namespace) = namespace {
        uri.push_str(&format!("/namespaces/{namespace}"));
    }
    uri.push_str(&format!("/{resource}"));
    if let Some(name) = name {
        uri.push_str(&format!("/{name}"));
    }
    uri
}

/// RFC 3339 in UTC with microseconds, as the API server writes its audit timestamps
/// (`2024-05-01T12:00:00.123456Z`).
pub fn micro_time(t: SystemTime) -> String {
    use k8s_openapi::jiff::Timestamp;
    // Out of jiff's range (years -9999..=9999) only for a clock gone mad: show the epoch.
    let ts = Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

#[cfg(test)]
mod tests;
