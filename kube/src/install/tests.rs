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
    let manifests = manifests(IMAGE, NAMESPACE).unwrap();
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
            {"name": "health", "containerPort": 7445, "protocol": "TCP"},
            {"name": "tether-metrics", "containerPort": 7446, "protocol": "TCP"},
        ])
    );
    assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], "health");
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
    // The relay is reached by port-forward only, never through the Service.
    assert_eq!(ports, [(json!("quic"), json!(7443), json!("UDP"))]);
}

/// Whether `role`'s rules allow `verb` on `resource` (`group/resource`, core group without a
/// slash) for an object called `name` (`None`: a request without a name, such as a list or a
/// create), as RBAC evaluates it.
fn allows(role: &Value, resource: &str, verb: &str, name: Option<&str>) -> bool {
    // A group has a dot; `pods/portforward` is a subresource of the core group.
    let (group, resource) = match resource.split_once('/') {
        Some((group, rest)) if group.contains('.') => (group, rest),
        _ => ("", resource),
    };
    let has = |rule: &Value, key: &str, value: &str| {
        rule[key]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x == value || x == "*"))
    };
    role["rules"].as_array().unwrap().iter().any(|rule| {
        has(rule, "apiGroups", group)
            && has(rule, "resources", resource)
            && has(rule, "verbs", verb)
            && match rule["resourceNames"].as_array() {
                None => true,
                Some(names) => name.is_some_and(|n| names.iter().any(|x| x == n)),
            }
    })
}

/// A role's rules that mention `resource`, as (resourceNames, verbs).
fn rules_for(role: &Value, resource: &str) -> Vec<(Value, Value)> {
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == resource)
        })
        .map(|r| (r["resourceNames"].clone(), r["verbs"].clone()))
        .collect()
}

#[test]
fn the_manager_reads_cluster_wide_and_signs_only_its_own_signer() {
    let manifests = manifests(IMAGE, NAMESPACE).unwrap();
    let cluster_role = find(&manifests, "ClusterRole", "tether-manager");
    for rule in cluster_role["rules"].as_array().unwrap() {
        let resources = rule["resources"].clone();
        let expected = if resources == json!(["secrets"]) {
            // Only the agents' Secret of a namespace, to check a credential request.
            (json!(["tether-agent-tls"]), json!(["get"]))
        } else if resources == json!(["tokenreviews"])
            || resources == json!(["subjectaccessreviews"])
        {
            // Asking the API server writes nothing.
            (Value::Null, json!(["create"]))
        } else if resources == json!(["certificatesigningrequests"]) {
            (Value::Null, json!(["get", "list", "watch", "delete"]))
        } else if resources
            == json!([
                "certificatesigningrequests/approval",
                "certificatesigningrequests/status"
            ])
        {
            (Value::Null, json!(["update"]))
        } else if resources == json!(["events"]) {
            // An Event on a workload at each intercept's start and end.
            (Value::Null, json!(["create"]))
        } else if resources == json!(["deployments", "statefulsets", "replicasets"]) {
            // The tether.dev/intercepts annotation (a merge patch), a replaced container put back
            // (a JSON patch) and an agent's pod's owner, read one at a time; never list, update
            // or delete.
            (Value::Null, json!(["get", "patch"]))
        } else if resources == json!(["signers"]) {
            (json!(["tether.dev/session"]), json!(["approve", "sign"]))
        } else {
            (Value::Null, json!(["get", "list", "watch"]))
        };
        assert_eq!(
            (rule["resourceNames"].clone(), rule["verbs"].clone()),
            expected,
            "{rule}"
        );
    }
    // It may approve and sign for its signer, not for the cluster's own.
    let signers = "certificates.k8s.io/signers";
    for verb in ["approve", "sign"] {
        assert!(allows(
            cluster_role,
            signers,
            verb,
            Some("tether.dev/session")
        ));
        assert!(!allows(
            cluster_role,
            signers,
            verb,
            Some("kubernetes.io/kube-apiserver-client")
        ));
        assert!(!allows(cluster_role, signers, verb, Some("tether.dev/*")));
    }
    assert!(allows(
        cluster_role,
        "authorization.k8s.io/subjectaccessreviews",
        "create",
        None
    ));

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
    // The service-range probe on clusters without the ServiceCIDR API (Kubernetes 1.20) creates
    // a Service; it may delete only the probe.
    assert!(allows(role, "services", "create", None));
    assert!(allows(
        role,
        "services",
        "delete",
        Some("tether-cidr-probe")
    ));
    assert!(!allows(role, "services", "delete", Some("tether-manager")));
}

#[test]
fn a_client_may_ask_for_a_session_and_read_no_key() {
    let manifests = manifests(IMAGE, NAMESPACE).unwrap();
    let client = find(&manifests, "ClusterRole", "tether-client");
    assert!(allows(client, "tether.dev/sessions", "create", None));
    let csrs = "certificates.k8s.io/certificatesigningrequests";
    for verb in ["create", "get", "delete"] {
        assert!(allows(client, csrs, verb, None), "{verb}");
    }
    // Not approving its own request, nor listing everyone's.
    for (resource, verb) in [
        (csrs, "list"),
        (csrs, "watch"),
        (csrs, "update"),
        (
            "certificates.k8s.io/certificatesigningrequests/approval",
            "update",
        ),
        (
            "certificates.k8s.io/certificatesigningrequests/status",
            "update",
        ),
        ("certificates.k8s.io/signers", "approve"),
        ("certificates.k8s.io/signers", "sign"),
    ] {
        assert!(
            !allows(client, resource, verb, Some("tether-session-x")),
            "{resource} {verb}"
        );
    }
    // The CA certificate's Secret and nothing else: not the CA's key, not agent credentials.
    assert_eq!(
        rules_for(client, "secrets"),
        [(json!(["tether-manager-tls"]), json!(["get"]))]
    );
    for name in ["tether-manager-ca", "tether-agent-tls"] {
        assert!(!allows(client, "secrets", "get", Some(name)));
    }
    // Bound cluster-wide, so everything namespaced in it is limited to the manager's objects.
    for rule in client["rules"].as_array().unwrap() {
        let cluster_scoped = rule["apiGroups"] == json!(["tether.dev"])
            || rule["apiGroups"] == json!(["certificates.k8s.io"]);
        assert!(cluster_scoped || rule["resourceNames"].is_array(), "{rule}");
    }
    // The manager's pod and the port-forward only in namespace tether (a Role).
    let role = find(&manifests, "Role", "tether-client");
    assert!(allows(role, "pods", "list", None));
    assert!(allows(
        role,
        "pods/portforward",
        "create",
        Some("tether-manager-x")
    ));
    assert!(!allows(role, "secrets", "get", Some("tether-manager-tls")));
}

#[test]
fn intercepting_needs_the_intercept_role_and_writes_only_the_agents_secret() {
    let manifests = manifests(IMAGE, NAMESPACE).unwrap();
    let intercept = find(&manifests, "ClusterRole", "tether-intercept");
    for verb in ["create", "list", "delete"] {
        assert!(
            allows(intercept, "tether.dev/intercepts", verb, None),
            "{verb}"
        );
    }
    assert!(!allows(intercept, "tether.dev/sessions", "create", None));
    // Reading any Secret (`--env-file`), creating one (a create has no name to limit), but
    // changing or deleting only the agents'.
    assert!(allows(intercept, "secrets", "get", Some("app-db-password")));
    assert!(allows(intercept, "secrets", "create", None));
    for verb in ["update", "patch", "delete"] {
        assert!(
            allows(intercept, "secrets", verb, Some("tether-agent-tls")),
            "{verb}"
        );
        assert!(
            !allows(intercept, "secrets", verb, Some("app-db-password")),
            "{verb}"
        );
    }
    let client = find(&manifests, "ClusterRole", "tether-client");
    for verb in ["create", "list", "delete"] {
        assert!(
            !allows(client, "tether.dev/intercepts", verb, None),
            "{verb}"
        );
    }
}

#[test]
fn images_that_would_break_the_yaml_are_refused() {
    for image in ["", "a b", "img\n  evil: true", "x\"y", "${AGENT_IMAGE}"] {
        assert!(
            matches!(
                manifests(image, NAMESPACE),
                Err(InstallError::InvalidImage(_))
            ),
            "{image:?}"
        );
    }
    assert!(manifests(
        "registry.example:5000/tether/agent@sha256:abc-1_2",
        NAMESPACE
    )
    .is_ok());
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
        NAMESPACE,
    );
    assert_eq!(
        error.to_string(),
        "forbidden: your kubeconfig user may not create or update clusterroles tether-manager; ask a cluster admin to run `tether install`"
    );
    let terminating = api_error(403, "Forbidden", "serviceaccounts \"tether-manager\" is forbidden: unable to create new content in namespace tether because it is being terminated");
    assert!(matches!(
        classify(terminating, "create or update", String::new(), "install", "tether"),
        InstallError::NamespaceTerminating { namespace } if namespace == "tether"
    ));
    let other = api_error(500, "InternalError", "etcdserver: request timed out");
    assert!(classify(other, "get", "pods".into(), "install", NAMESPACE)
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
    // A failed pull does not heal by waiting (a missing tag, a refused pull secret).
    assert!(matches!(
        rollout(Some(&pending), &[backoff], IMAGE),
        Rollout::Unusable { reason, .. } if reason == "ImagePullBackOff"
    ));
    let failed = pod(
        IMAGE,
        waiting(
            "ErrImagePull",
            "rpc error: code = NotFound desc = failed to pull and unpack image \"tether-agent:dev\": not found",
        ),
    );
    assert!(matches!(
        rollout(Some(&pending), &[failed], IMAGE),
        Rollout::Unusable { reason, message } if reason == "ErrImagePull" && message.contains("not found")
    ));

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

/// `kubectl apply -k deploy/manager` must apply the same files `tether install` does.
#[test]
fn the_kustomize_base_lists_the_files_install_applies() {
    let kustomization: Value =
        serde_yaml::from_str(include_str!("../../../deploy/manager/kustomization.yaml")).unwrap();
    let listed: Vec<_> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let applied: Vec<_> = MANIFEST_FILES.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(listed, applied);
}

#[test]
fn the_manifests_name_this_versions_image_and_take_a_pull_secret() {
    let base = manifests(BASE_IMAGE, NAMESPACE).unwrap();
    let deployment = find(&base, "Deployment", DEPLOYMENT);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        format!("tether.local/tether-agent:{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(pod["imagePullSecrets"].is_null());
    let mut pulled = manifests(IMAGE, NAMESPACE).unwrap();
    with_image_pull_secret(&mut pulled, "regcred");
    let deployment = find(&pulled, "Deployment", DEPLOYMENT);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}])
    );
}

#[test]
fn the_manifests_spell_the_cluster_contract() {
    use crate::names;
    let manifests = manifests(IMAGE, NAMESPACE).unwrap();
    assert_eq!(manifests[0].name(), names::NAMESPACE);
    let deployment = find(&manifests, "Deployment", names::MANAGER);
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    let (key, value) = names::MANAGER_SELECTOR.split_once('=').unwrap();
    assert_eq!(selector[key], json!(value));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let port = |name: &str| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == json!(name))
            .map(|p| p["containerPort"].clone())
    };
    assert_eq!(port("quic"), Some(json!(names::QUIC_PORT)));
    assert_eq!(port("health"), Some(json!(names::HEALTH_PORT)));
    let service = find(&manifests, "Service", names::MANAGER);
    assert_eq!(service["spec"]["ports"][0]["port"], json!(names::QUIC_PORT));
    let text =
        serde_json::to_string(&manifests.iter().map(|m| &m.object).collect::<Vec<_>>()).unwrap();
    for name in [
        names::MANAGER_SECRET,
        names::MANAGER_CA_SECRET,
        names::AGENT_SECRET,
    ] {
        assert!(text.contains(name), "no manifest names {name}");
    }
    assert!(text.contains(names::SIGNER_NAME));
    assert!(text.contains(names::RBAC_GROUP));
}

#[test]
fn setting_the_image_adds_nothing_else() {
    let installed = manifests(IMAGE, NAMESPACE).unwrap();
    let deployment = find(&installed, "Deployment", crate::names::MANAGER);
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["image"], json!(IMAGE));
    assert!(spec.get("initContainers").is_none(), "{spec}");
}

#[test]
fn another_manager_namespace_moves_every_object_as_kustomize_does() {
    let moved = manifests(IMAGE, "platform-tether").unwrap();
    let base = manifests(IMAGE, NAMESPACE).unwrap();
    assert_eq!(moved.len(), base.len());
    for (m, b) in moved.iter().zip(&base) {
        let text = serde_json::to_string(&m.object).unwrap();
        assert!(
            !text.contains("\"namespace\":\"tether\""),
            "{} still names namespace tether: {text}",
            m.describe()
        );
        match (m.resource.kind.as_str(), m.namespaced) {
            ("Namespace", _) => assert_eq!(m.name(), "platform-tether"),
            (_, true) => {
                assert_eq!(
                    m.object.metadata.namespace.as_deref(),
                    Some("platform-tether")
                );
                assert_eq!(m.name(), b.name());
            }
            (_, false) => assert_eq!(m.object.metadata.namespace, None),
        }
    }
    let bound: Vec<&Value> = moved
        .iter()
        .filter_map(|m| m.object.data.get("subjects").and_then(Value::as_array))
        .flatten()
        .filter(|s| s["kind"] == "ServiceAccount")
        .collect();
    assert!(!bound.is_empty());
    assert!(
        bound.iter().all(|s| s["namespace"] == "platform-tether"),
        "{bound:?}"
    );
}

#[test]
fn a_manager_namespace_that_is_no_namespace_name_is_refused() {
    for bad in [
        "",
        "Tether",
        "-tether",
        "tether-",
        "te_ther",
        "a.b",
        &"x".repeat(64),
    ] {
        assert!(
            matches!(
                manifests(IMAGE, bad),
                Err(InstallError::InvalidNamespace(_))
            ),
            "{bad:?}"
        );
    }
    assert!(manifests(IMAGE, &"x".repeat(63)).is_ok());
}
