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
    let at = (
        workload.kind,
        workload.namespace.as_str(),
        workload.name.as_str(),
    );
    patch_with(client, at, |w| replace::remove_patch(w, container, by)).await
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
    patch_with(client, (kind, namespace, name), replace::restore_patch).await
}

/// Reads the workload `(kind, namespace, name)`, plans a patch with `plan` and applies it, again
/// from a fresh read while the patch's tests fail; false if `plan` found nothing to do.
async fn patch_with(
    client: &Client,
    (kind, namespace, name): (WorkloadKind, &str, &str),
    plan: impl Fn(&Workload) -> Result<Option<json_patch::Patch>, replace::ReplaceError>,
) -> Result<bool, WorkloadError> {
    match kind {
        WorkloadKind::Deployment => patch_kind::<Deployment>(client, namespace, name, plan).await,
        WorkloadKind::StatefulSet => patch_kind::<StatefulSet>(client, namespace, name, plan).await,
        WorkloadKind::ReplicaSet => patch_kind::<ReplicaSet>(client, namespace, name, plan).await,
    }
}

async fn patch_kind<K: Object>(
    client: &Client,
    namespace: &str,
    name: &str,
    plan: impl Fn(&Workload) -> Result<Option<json_patch::Patch>, replace::ReplaceError>,
) -> Result<bool, WorkloadError> {
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
        object: format!("{} {name}", K::KIND),
    })
}
