use k8s_openapi::api::core::v1::Service;
use serde_json::{json, Value};

use super::*;

fn workload(kind: WorkloadKind, name: &str, labels: Value) -> Workload {
    Workload {
        kind,
        name: name.into(),
        namespace: "shop".into(),
        annotations: Default::default(),
        template: serde_json::from_value(json!({
            "metadata": { "labels": labels },
            "spec": { "containers": [{ "name": "app", "image": "app:1" }] },
        }))
        .unwrap(),
    }
}

fn service(name: &str, selector: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "shop" },
        "spec": { "selector": selector, "ports": [{ "name": "http", "port": 80 }] },
    }))
    .unwrap()
}

/// `orders` (behind the Service `orders`), `duo` and `duo-b` (both behind `duo-all`), the
/// Service `duo-side` (only `duo`) and the Service `duo-b`, which selects `duo`, not the
/// Deployment `duo-b`.
fn shop() -> (Vec<Workload>, Vec<Service>) {
    let workloads = vec![
        workload(
            WorkloadKind::Deployment,
            "orders",
            json!({ "app": "orders" }),
        ),
        workload(
            WorkloadKind::Deployment,
            "duo",
            json!({ "app": "duo", "tier": "duo" }),
        ),
        workload(
            WorkloadKind::StatefulSet,
            "duo-b",
            json!({ "app": "duo-b", "tier": "duo" }),
        ),
    ];
    let services = vec![
        service("orders", json!({ "app": "orders" })),
        service("duo-side", json!({ "app": "duo" })),
        service("duo-all", json!({ "tier": "duo" })),
        service("duo-b", json!({ "app": "duo" })),
        service("nobody", json!({ "app": "gone" })),
    ];
    (workloads, services)
}

/// Resolves `target` the way the daemon does: the named workload looked up by name.
fn resolve(target: &str, pick: Pick<'_>) -> Result<Resolved, TargetError> {
    let (workloads, services) = shop();
    let parsed = TargetRef::parse(target)?;
    let named = parsed
        .workload_lookup()
        .and_then(|asked| workloads.iter().find(|w| names(w, &asked)));
    resolve_target("shop", parsed, pick, named, &workloads, &services)
}

fn resolved(target: &str, pick: Pick<'_>) -> (String, Option<String>) {
    let r = resolve(target, pick).unwrap();
    (r.workload.id(), r.service)
}

fn error(target: &str, pick: Pick<'_>) -> String {
    resolve(target, pick).unwrap_err().to_string()
}

const NONE: Pick<'static> = Pick {
    service: None,
    workload: None,
};

#[test]
fn targets_parse() {
    assert_eq!(TargetRef::parse("orders"), Ok(TargetRef::Bare("orders")));
    assert_eq!(
        TargetRef::parse("deploy/orders"),
        Ok(TargetRef::Workload(WorkloadKind::Deployment, "orders"))
    );
    assert_eq!(
        TargetRef::parse("statefulset.apps/db"),
        Ok(TargetRef::Workload(WorkloadKind::StatefulSet, "db"))
    );
    for svc in ["svc/orders", "service/orders", "Services/orders"] {
        assert_eq!(
            TargetRef::parse(svc),
            Ok(TargetRef::Service("orders")),
            "{svc}"
        );
    }
    assert_eq!(
        TargetRef::parse("pod/orders").unwrap_err().to_string(),
        "unknown kind `pod`: write deploy/NAME, sts/NAME, rs/NAME or svc/NAME"
    );
    for bad in ["", "svc/", "a/b/c"] {
        assert!(
            matches!(TargetRef::parse(bad), Err(TargetError::BadRef(_))),
            "{bad}"
        );
    }
}

#[test]
fn a_workload_name_means_the_workload_as_before() {
    assert_eq!(resolved("orders", NONE), ("Deployment/orders".into(), None));
    assert_eq!(
        resolved("deploy/orders", NONE),
        ("Deployment/orders".into(), None)
    );
    // --service narrows the ports to one of the Services in front of it.
    let pick = Pick {
        service: Some("duo-side"),
        workload: None,
    };
    assert_eq!(
        resolved("duo", pick),
        ("Deployment/duo".into(), Some("duo-side".into()))
    );
    let pick = Pick {
        service: Some("orders"),
        workload: None,
    };
    assert_eq!(
        error("duo", pick),
        "Service orders does not select Deployment duo; the Services that do: duo-side, duo-all, duo-b"
    );
}

#[test]
fn a_service_name_means_the_workload_it_selects() {
    assert_eq!(
        resolved("duo-side", NONE),
        ("Deployment/duo".into(), Some("duo-side".into()))
    );
    assert_eq!(
        resolved("svc/orders", NONE),
        ("Deployment/orders".into(), Some("orders".into()))
    );
    // The Service `duo-b` is not the StatefulSet `duo-b`, but svc/ says which.
    assert_eq!(
        resolved("svc/duo-b", NONE),
        ("Deployment/duo".into(), Some("duo-b".into()))
    );
}

#[test]
fn a_service_of_several_workloads_needs_workload() {
    assert_eq!(
        error("duo-all", NONE),
        "Service duo-all selects several workloads: deploy/duo, sts/duo-b; choose one with \
         --workload (e.g. --workload deploy/duo)"
    );
    for asked in ["duo-b", "sts/duo-b"] {
        let pick = Pick {
            service: None,
            workload: Some(asked),
        };
        assert_eq!(
            resolved("duo-all", pick),
            ("StatefulSet/duo-b".into(), Some("duo-all".into())),
            "{asked}"
        );
    }
    let pick = Pick {
        service: None,
        workload: Some("orders"),
    };
    assert_eq!(
        error("duo-all", pick),
        "Service duo-all does not select orders; it selects deploy/duo, sts/duo-b"
    );
}

#[test]
fn a_name_of_both_that_disagree_is_ambiguous() {
    assert_eq!(
        error("duo-b", NONE),
        "duo-b is both StatefulSet duo-b and a Service that selects deploy/duo: write \
         sts/duo-b for the workload or svc/duo-b for the Service"
    );
    assert_eq!(
        resolved("sts/duo-b", NONE),
        ("StatefulSet/duo-b".into(), None)
    );
}

#[test]
fn unknown_names_and_contradicting_flags_are_refused() {
    assert_eq!(
        error("nope", NONE),
        "no Deployment, StatefulSet, ReplicaSet or Service named nope in namespace shop"
    );
    assert_eq!(
        error("svc/nope", NONE),
        "no Service named nope in namespace shop"
    );
    assert_eq!(
        error("sts/orders", NONE),
        "no StatefulSet named orders in namespace shop"
    );
    assert_eq!(
        error("nobody", NONE),
        "Service nobody selects no Deployment, StatefulSet or ReplicaSet: tether intercepts a \
         workload's pods"
    );
    let pick = Pick {
        service: None,
        workload: Some("duo"),
    };
    assert_eq!(
        error("orders", pick),
        "--workload duo is not Deployment orders, the workload being intercepted"
    );
    let pick = Pick {
        service: Some("orders"),
        workload: None,
    };
    assert_eq!(
        error("svc/duo-side", pick),
        "--service orders is not duo-side, the Service being intercepted"
    );
}
