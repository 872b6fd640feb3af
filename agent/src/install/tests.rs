use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::core::Status;
use serde_json::{json, Value};

use super::rollout::{rollout, Rollout};
use super::*;

const IMAGE: &str = "tether-agent:dev";

fn find<'a>(manifests: &'a [Manifest], kind: &str, name: &str) -> &'a Value {
    let manifest = manifests
        .iter()
        .find(|m| m.resource.kind == kind && m.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"));
    &manifest.object.data
}

#[test]
fn manifests_parse_in_apply_order_with_the_image_filled_in() {
    let manifests = manifests(IMAGE).unwrap();
    let kinds: Vec<_> = manifests.iter().map(|m| m.resource.kind.as_str()).collect();
    assert_eq!(
        kinds[0], "Namespace",
        "the namespace comes first (and is deleted last)"
    );
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing");
    }
    for manifest in &manifests {
        let labels = manifest.object.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("tether"),
            "{}",
            manifest.describe()
        );
        assert_eq!(
            labels.get("app.kubernetes.io/name").map(String::as_str),
            Some("tether-manager")
        );
        if manifest.namespaced {
            assert_eq!(
                manifest.object.metadata.namespace.as_deref(),
                Some(NAMESPACE),
                "{}",
                manifest.describe()
            );
        }
        assert!(!serde_json::to_string(&manifest.object)
            .unwrap()
            .contains("${"));
    }

    let deployment = find(&manifests, "Deployment", DEPLOYMENT);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], IMAGE);
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(container["args"], json!(["manager"]));
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        container["ports"],
        json!([
            {"name": "quic", "containerPort": 7443, "protocol": "UDP"},
            {"name": "relay", "containerPort": 7444, "protocol": "TCP"},
        ])
    );
    assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], "relay");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "tether-manager"
    );

    let service = find(&manifests, "Service", DEPLOYMENT);
    assert_eq!(service["spec"]["type"], "NodePort");
    let ports: Vec<_> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].clone(), p["port"].clone(), p["protocol"].clone()))
        .collect();
    assert_eq!(
        ports,
        [
            (json!("quic"), json!(7443), json!("UDP")),
            (json!("relay"), json!(7444), json!("TCP"))
        ]
    );
}

#[test]
fn the_manager_only_reads_cluster_wide() {
    let manifests = manifests(IMAGE).unwrap();
    let cluster_role = find(&manifests, "ClusterRole", "tether-manager");
    for rule in cluster_role["rules"].as_array().unwrap() {
        if rule["resources"] == json!(["secrets"]) {
            // Only the agents' Secret of a namespace, to check a credential request.
            assert_eq!(
                (rule["resourceNames"].clone(), rule["verbs"].clone()),
                (json!(["tether-agent-tls"]), json!(["get"])),
                "{rule}"
            );
        } else if rule["resources"] == json!(["tokenreviews"]) {
            // Asking whose token an agent presents writes nothing.
            assert_eq!(rule["verbs"], json!(["create"]), "{rule}");
        } else {
            assert_eq!(rule["verbs"], json!(["get", "list", "watch"]), "{rule}");
        }
    }
    let role = find(&manifests, "Role", "tether-manager");
    let secrets = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == json!(["secrets"]))
        .unwrap();
    assert_eq!(
        secrets["resourceNames"],
        json!(["tether-manager-tls", "tether-manager-ca"]),
        "only its own Secrets"
    );
    let client = find(&manifests, "ClusterRole", "tether-client");
    let secret_rule = client["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == json!(["secrets"]))
        .unwrap();
    assert_eq!(
        (
            secret_rule["resourceNames"].clone(),
            secret_rule["verbs"].clone()
        ),
        (json!(["tether-manager-tls"]), json!(["get"]))
    );
}

#[test]
fn images_that_would_break_the_yaml_are_refused() {
    for image in ["", "a b", "img\n  evil: true", "x\"y", "${AGENT_IMAGE}"] {
        assert!(
            matches!(manifests(image), Err(InstallError::InvalidImage(_))),
            "{image:?}"
        );
    }
    assert!(manifests("registry.example:5000/tether/agent@sha256:abc-1_2").is_ok());
}

fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
    kube::Error::Api(Status::failure(message, reason).with_code(code).boxed())
}

#[test]
fn errors_say_what_to_do() {
    let denied = api_error(403, "Forbidden", "clusterroles.rbac.authorization.k8s.io \"tether-manager\" is forbidden: User \"dev\" cannot patch resource \"clusterroles\"");
    let error = classify(
        denied,
        "create or update",
        "clusterroles tether-manager".into(),
        "install",
    );
    assert_eq!(
        error.to_string(),
        "forbidden: your kubeconfig user may not create or update clusterroles tether-manager; ask a cluster admin to run `tether install`"
    );
    let terminating = api_error(403, "Forbidden", "serviceaccounts \"tether-manager\" is forbidden: unable to create new content in namespace tether because it is being terminated");
    assert!(matches!(
        classify(terminating, "create or update", String::new(), "install"),
        InstallError::NamespaceTerminating
    ));
    let other = api_error(500, "InternalError", "etcdserver: request timed out");
    assert!(classify(other, "get", "pods".into(), "install")
        .to_string()
        .contains("check that your kubeconfig reaches the cluster"));
}

fn deployment(status: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "generation": 2},
        "spec": {"replicas": 1, "selector": {}, "template": {}},
        "status": status,
    }))
    .unwrap()
}

fn pod(image: &str, status: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "tether-manager-abc", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "manager", "image": image}]},
        "status": status,
    }))
    .unwrap()
}

fn waiting(reason: &str, message: &str) -> Value {
    json!({"phase": "Pending", "containerStatuses": [{
        "name": "manager", "image": IMAGE, "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": reason, "message": message}}
    }]})
}

#[test]
fn rollout_available_only_when_the_latest_spec_is_up() {
    let up = deployment(
        json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
    );
    assert_eq!(rollout(Some(&up), &[], IMAGE), Rollout::Available);
    let stale = deployment(
        json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
    );
    assert_ne!(rollout(Some(&stale), &[], IMAGE), Rollout::Available);
    let old_pod_left = deployment(
        json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1}),
    );
    assert_ne!(rollout(Some(&old_pod_left), &[], IMAGE), Rollout::Available);
    assert!(matches!(rollout(None, &[], IMAGE), Rollout::Waiting(_)));
}

#[test]
fn rollout_names_why_the_pod_waits() {
    let pending = deployment(json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1}));
    let never = pod(
        IMAGE,
        waiting(
            "ErrImageNeverPull",
            "Container image \"tether-agent:dev\" is not present with pull policy of Never",
        ),
    );
    assert_eq!(
        rollout(Some(&pending), std::slice::from_ref(&never), IMAGE),
        Rollout::Unusable {
            reason: "ErrImageNeverPull".into(),
            message:
                "Container image \"tether-agent:dev\" is not present with pull policy of Never"
                    .into()
        }
    );
    // The same failure in a pod of another image (an earlier install) does not count.
    assert!(matches!(
        rollout(
            Some(&pending),
            &[pod("old:1", waiting("ErrImageNeverPull", ""))],
            IMAGE
        ),
        Rollout::Waiting(_)
    ));

    let backoff = pod(
        IMAGE,
        waiting(
            "ImagePullBackOff",
            "Back-off pulling image \"tether-agent:dev\"",
        ),
    );
    let Rollout::Waiting(detail) = rollout(Some(&pending), &[backoff], IMAGE) else {
        panic!()
    };
    assert!(
        detail.contains("ImagePullBackOff: Back-off pulling image"),
        "{detail}"
    );

    let unschedulable = pod(
        IMAGE,
        json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 node(s) had taint {node.kubernetes.io/not-ready: }"
        }]}),
    );
    let Rollout::Waiting(detail) = rollout(Some(&pending), &[unschedulable], IMAGE) else {
        panic!()
    };
    assert!(
        detail.contains("cannot be scheduled: 0/1 nodes are available"),
        "{detail}"
    );

    let crashed = pod(
        IMAGE,
        json!({"phase": "Running", "containerStatuses": [{
            "name": "manager", "image": IMAGE, "imageID": "", "ready": false, "restartCount": 3,
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
        }]}),
    );
    let Rollout::Waiting(detail) = rollout(Some(&pending), &[crashed], IMAGE) else {
        panic!()
    };
    assert!(
        detail.contains("exited with code 1 (Error) and restarted 3 times"),
        "{detail}"
    );
}
