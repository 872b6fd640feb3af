//! `tether intercept --replace`: the app container leaves the workload's pods while the intercept
//! lasts, and comes back exactly as it was. Sans-IO: a [`Workload`] in, a JSON patch out.
//!
//! The removed container is kept, whole and with its index, in the workload's
//! [`REPLACED_ANNOTATION`], written by the same patch that removes it, so there is never a
//! workload without its container and without the record of it. Putting it back is the reverse
//! patch, and both start with a JSON-patch `test` of what they expect (the container's name at
//! its index, the annotation's exact value): a concurrent edit, or a second restorer (the
//! daemon on `leave` and the manager at the intercept's end both restore), makes the patch fail
//! instead of doing the work twice. Nothing else of the workload is touched, so the user's edits
//! made meanwhile survive.
//!
//! The pods of a bare ReplicaSet are not replaced when its template changes, so nothing would
//! bring the app back when the manager restores one: `--replace` refuses them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::inject::{Workload, WorkloadKind};
pub use crate::names::{AGENT_CONTAINER, REPLACED_ANNOTATION};

/// The [`Replaced`] format this tether writes and reads.
pub const REPLACED_VERSION: u32 = 1;

/// What `--replace` took out of the template, stored in [`REPLACED_ANNOTATION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replaced {
    /// [`REPLACED_VERSION`] at the time of writing.
    pub version: u32,
    /// Who replaced it (`user@host`), for messages.
    pub by: String,
    /// Its index among the template's containers.
    pub index: usize,
    /// The container, as it was.
    pub container: Container,
}

/// Why the container cannot be taken out or put back.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// A bare ReplicaSet (see the module docs).
    #[error("{workload} is a bare ReplicaSet, whose pods do not follow its template: --replace works on Deployments and StatefulSets")]
    Unsupported { workload: String },
    /// The container is not in the template.
    #[error("{workload} has no container {container} to replace")]
    NoContainer { workload: String, container: String },
    /// The agent is the one container that must stay.
    #[error("the traffic agent's container cannot be replaced")]
    Agent,
    /// The pod would have nothing but the agent left to run, and no agent either.
    #[error(
        "{workload} has no traffic agent: it is installed before the app container is replaced"
    )]
    NoAgent { workload: String },
    /// Another container was replaced already.
    #[error("container {replaced} of {workload} is already replaced (by {by})")]
    OtherReplaced {
        workload: String,
        replaced: String,
        by: String,
    },
    /// The annotation does not hold a record this tether reads.
    #[error(
        "the {REPLACED_ANNOTATION} annotation of {workload} is not one this tether reads: {source}"
    )]
    Record {
        workload: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The record of a replaced container, if the workload has one.
pub fn replaced_of(workload: &Workload) -> Result<Option<Replaced>, ReplaceError> {
    let Some(json) = workload.annotations.get(REPLACED_ANNOTATION) else {
        return Ok(None);
    };
    serde_json::from_str(json)
        .map(Some)
        .map_err(|source| ReplaceError::Record {
            workload: workload.to_string(),
            source,
        })
}

/// Whether `container` of `workload` can be replaced at all, before anything changes (the
/// agent may not be installed yet: [`remove_patch`] checks the rest).
pub fn check(workload: &Workload, container: &str) -> Result<(), ReplaceError> {
    if workload.kind == WorkloadKind::ReplicaSet {
        return Err(ReplaceError::Unsupported {
            workload: workload.to_string(),
        });
    }
    if container == AGENT_CONTAINER {
        return Err(ReplaceError::Agent);
    }
    match replaced_of(workload)? {
        Some(replaced) if replaced.container.name != container => {
            Err(ReplaceError::OtherReplaced {
                workload: workload.to_string(),
                replaced: replaced.container.name,
                by: replaced.by,
            })
        }
        _ => Ok(()),
    }
}

/// The patch that takes `container` out of `workload`'s pods and records it; `None` when it is
/// out already.
pub fn remove_patch(
    workload: &Workload,
    container: &str,
    by: &str,
) -> Result<Option<json_patch::Patch>, ReplaceError> {
    let who = workload.to_string();
    check(workload, container)?;
    if replaced_of(workload)?.is_some() {
        return Ok(None);
    }
    let containers = containers(&workload.template);
    if !containers.iter().any(|c| c.name == AGENT_CONTAINER) {
        return Err(ReplaceError::NoAgent { workload: who });
    }
    let Some(index) = containers.iter().position(|c| c.name == container) else {
        return Err(ReplaceError::NoContainer {
            workload: who,
            container: container.to_owned(),
        });
    };
    let record = Replaced {
        version: REPLACED_VERSION,
        by: by.to_owned(),
        index,
        container: containers[index].clone(),
    };
    // Plain structs with string keys: serializing cannot fail.
    let value = serde_json::to_string(&record).expect("a record serializes");
    let path = format!("/spec/template/spec/containers/{index}");
    let ops = vec![
        json!({"op": "test", "path": format!("{path}/name"), "value": container}),
        json!({"op": "remove", "path": path}),
        annotation_add(&workload.annotations, value),
    ];
    Ok(Some(patch(ops)))
}

/// The patch that puts the replaced container back where it was and drops the record; `None`
/// when nothing is replaced. A container of the same name that the user added meanwhile stays,
/// and only the record goes.
pub fn restore_patch(workload: &Workload) -> Result<Option<json_patch::Patch>, ReplaceError> {
    let Some(replaced) = replaced_of(workload)? else {
        return Ok(None);
    };
    let value = workload.annotations[REPLACED_ANNOTATION].clone();
    let annotation = format!("/metadata/annotations/{}", escape(REPLACED_ANNOTATION));
    let mut ops = vec![json!({"op": "test", "path": annotation, "value": value})];
    let containers = containers(&workload.template);
    if !containers.iter().any(|c| c.name == replaced.container.name) {
        let index = replaced.index.min(containers.len());
        ops.push(json!({
            "op": "add",
            "path": format!("/spec/template/spec/containers/{index}"),
            "value": replaced.container,
        }));
    }
    ops.push(json!({"op": "remove", "path": annotation}));
    Ok(Some(patch(ops)))
}

/// Puts the replaced container back into `template` and drops the record from `annotations`
/// (for `uninstall`, which rewrites the whole object); false if nothing was replaced.
pub fn restore_in(
    workload: &Workload,
    template: &mut PodTemplateSpec,
    annotations: &mut Option<BTreeMap<String, String>>,
) -> Result<bool, ReplaceError> {
    let Some(replaced) = replaced_of(workload)? else {
        return Ok(false);
    };
    let spec = template.spec.get_or_insert_with(Default::default);
    if !spec
        .containers
        .iter()
        .any(|c| c.name == replaced.container.name)
    {
        let index = replaced.index.min(spec.containers.len());
        spec.containers.insert(index, replaced.container);
    }
    if let Some(map) = annotations.as_mut() {
        map.remove(REPLACED_ANNOTATION);
    }
    Ok(true)
}

fn containers(template: &PodTemplateSpec) -> &[Container] {
    template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
}

/// Adds the record to the workload's annotations (the map itself when there is none).
fn annotation_add(annotations: &BTreeMap<String, String>, value: String) -> Value {
    if annotations.is_empty() {
        json!({"op": "add", "path": "/metadata/annotations", "value": {REPLACED_ANNOTATION: value}})
    } else {
        let path = format!("/metadata/annotations/{}", escape(REPLACED_ANNOTATION));
        json!({"op": "add", "path": path, "value": value})
    }
}

/// A JSON-pointer token (RFC 6901): `~` and `/` escaped.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn patch(ops: Vec<Value>) -> json_patch::Patch {
    // Built above from valid operations: they always parse.
    serde_json::from_value(Value::Array(ops)).expect("a valid JSON patch")
}

#[cfg(test)]
mod tests;
