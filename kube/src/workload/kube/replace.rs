//! The writes of `--replace`: the patches [`replace`](crate::workload::replace) plans, applied
//! with a JSON patch (its `test` operations are the optimistic concurrency), planned again from a
//! fresh read when another writer got there first.

use kube::api::{Api, Patch, PatchParams};

use super::*;
use crate::workload::replace;

/// Takes `container` out of `workload`'s pods for `--replace` (the object is read afresh); false
/// if it was out already. The rollout is the caller's to await.
pub async fn replace_container(
    client: &Client,
    workload: &Workload,
    container: &str,
    by: &str,
) -> Result<bool, WorkloadError> {
    let plan = |w: &Workload| replace::remove_patch(w, container, by);
    match workload.kind {
        WorkloadKind::Deployment => patch_with::<Deployment>(client, workload, plan).await,
        WorkloadKind::StatefulSet => patch_with::<StatefulSet>(client, workload, plan).await,
        WorkloadKind::ReplicaSet => patch_with::<ReplicaSet>(client, workload, plan).await,
    }
}

/// Puts back the container `--replace` took out of `workload` (`Deployment/orders`); false if
/// none was out. Used by the daemon on `leave` and by the manager when a replace intercept ends
/// (whichever comes second finds nothing to do).
pub async fn restore_container(
    client: &Client,
    namespace: &str,
    workload: &str,
) -> Result<bool, WorkloadError> {
    let (kind, name) = inject::parse_workload_ref(workload)?;
    let kind = kind.unwrap_or(WorkloadKind::Deployment);
    let w = Workload {
        kind,
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        annotations: Default::default(),
        template: Default::default(),
    };
    let plan = replace::restore_patch;
    match kind {
        WorkloadKind::Deployment => patch_with::<Deployment>(client, &w, plan).await,
        WorkloadKind::StatefulSet => patch_with::<StatefulSet>(client, &w, plan).await,
        WorkloadKind::ReplicaSet => patch_with::<ReplicaSet>(client, &w, plan).await,
    }
}

/// Reads the workload, plans a patch with `plan` and applies it, again from a fresh read while
/// the patch's tests fail; false if `plan` found nothing to do.
async fn patch_with<K: Object>(
    client: &Client,
    workload: &Workload,
    plan: impl Fn(&Workload) -> Result<Option<json_patch::Patch>, replace::ReplaceError>,
) -> Result<bool, WorkloadError> {
    let (namespace, name) = (workload.namespace.as_str(), workload.name.as_str());
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    for attempt in 1..=WRITE_ATTEMPTS {
        let obj = get_object::<K>(client, namespace, name).await?;
        let current = workload_of(&obj);
        let Some(patch) = plan(&current)? else {
            return Ok(false);
        };
        match api.patch(name, &params, &Patch::Json::<()>(patch)).await {
            Ok(written) => {
                replace_stale_pods(client, &written).await?;
                return Ok(true);
            }
            // A failed `test` (422) or a write between read and patch (409): plan again.
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => {
                debug!(workload = %current, attempt, reason = %s.message, "Patch did not apply, retrying");
            }
            Err(e) => return Err(api_error::<K>(e, "patch", Some(name), namespace)),
        }
    }
    Err(WorkloadError::Conflict {
        object: workload.to_string(),
    })
}
