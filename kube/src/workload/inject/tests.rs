use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use serde_json::{json, Value};

use super::*;
use crate::rollout::*;

fn settings() -> AgentSettings {
    AgentSettings {
        image: "ghcr.io/tether/agent:1".into(),
        manager: "10.0.0.5:7443".parse().unwrap(),
    }
}

fn workload(template: Value) -> Workload {
    Workload {
        kind: WorkloadKind::Deployment,
        name: "orders".into(),
        namespace: "shop".into(),
        annotations: BTreeMap::from([("owner".to_owned(), "team-a".to_owned())]),
        template: serde_json::from_value(template).unwrap(),
    }
}

fn service(name: &str, selector: Value, ports: Value) -> Service {
    let mut spec = json!({ "ports": ports, "type": "ClusterIP" });
    if !selector.is_null() {
        spec["selector"] = selector;
    }
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "shop", "resourceVersion": "7" },
        "spec": spec,
    }))
    .unwrap()
}

/// The orders app: `http` (8080) and `admin` (9090), probes and a hook by name and by number,
/// and a second container.
fn orders() -> Value {
    json!({
        "metadata": { "labels": { "app": "orders", "tier": "web" } },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "orders:1",
                    "ports": [
                        { "name": "http", "containerPort": 8080, "protocol": "TCP" },
                        { "name": "admin", "containerPort": 9090, "protocol": "TCP" },
                    ],
                    "livenessProbe": { "httpGet": { "path": "/healthz", "port": "http" } },
                    "readinessProbe": { "tcpSocket": { "port": 8080 } },
                    "startupProbe": { "httpGet": { "path": "/up", "port": "admin" } },
                    "lifecycle": { "preStop": { "httpGet": { "path": "/drain", "port": "http" } } },
                },
                { "name": "cache", "image": "redis:7", "ports": [{ "containerPort": 6379 }] },
            ],
            "volumes": [{ "name": "config", "configMap": { "name": "orders" } }],
        },
    })
}

fn orders_svc(ports: Value) -> Service {
    service("orders", json!({ "app": "orders" }), ports)
}

fn named_http() -> Vec<Service> {
    vec![orders_svc(
        json!([{ "name": "http", "port": 80, "targetPort": "http" }]),
    )]
}

fn numeric_http() -> Vec<Service> {
    vec![orders_svc(
        json!([{ "name": "http", "port": 80, "targetPort": 8080 }]),
    )]
}

fn container<'a>(template: &'a PodTemplateSpec, name: &str) -> &'a Container {
    let spec = template.spec.as_ref().unwrap();
    spec.containers.iter().find(|c| c.name == name).unwrap()
}

fn as_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

/// The Services with `changed` written over them, as the API server would hold them.
fn apply(services: &[Service], changed: &[Service]) -> Vec<Service> {
    services
        .iter()
        .map(|s| {
            changed
                .iter()
                .find(|c| c.metadata.name == s.metadata.name)
                .unwrap_or(s)
                .clone()
        })
        .collect()
}

/// Installs as `kube::install_agent` writes it: template, annotation, Services.
fn install(w: &Workload, services: &[Service]) -> (Workload, Vec<Service>, Injected) {
    install_with(w, services, &settings())
}

fn install_with(
    w: &Workload,
    services: &[Service],
    settings: &AgentSettings,
) -> (Workload, Vec<Service>, Injected) {
    let injected = inject(w, services, settings).unwrap();
    let mut after = w.clone();
    after.template = injected.template.clone();
    let mut annotations = Some(after.annotations.clone());
    annotate(&mut annotations, Some(&injected.record));
    after.annotations = annotations.unwrap_or_default();
    let services = apply(services, &injected.services);
    (after, services, injected)
}

/// Uninstalls as `kube::uninstall_agent` writes it.
fn uninstall(w: &Workload, services: &[Service]) -> (Workload, Vec<Service>) {
    let record = record_of(w).unwrap().expect("installed");
    let restored = restore(&w.template, services, &record);
    let mut after = w.clone();
    after.template = restored.template;
    let mut annotations = Some(after.annotations.clone());
    annotate(&mut annotations, None);
    after.annotations = annotations.unwrap_or_default();
    (after, apply(services, &restored.services))
}

#[test]
fn named_target_port_moves_its_name_to_the_agent() {
    let w = workload(orders());
    let injected = inject(&w, &named_http(), &settings()).unwrap();

    // The Service still says `http`; in new pods that is the agent.
    assert!(injected.services.is_empty());
    let agent = container(&injected.template, AGENT_CONTAINER);
    assert_eq!(
        as_json(&agent.ports),
        json!([
            { "name": "http", "containerPort": 9900, "protocol": "TCP" },
            { "name": "tether-metrics", "containerPort": 9899, "protocol": "TCP" },
        ])
    );
    let app = container(&injected.template, "app");
    assert_eq!(
        as_json(&app.ports),
        json!([
            { "name": "tx-http", "containerPort": 8080, "protocol": "TCP" },
            { "name": "admin", "containerPort": 9090, "protocol": "TCP" },
        ])
    );
    // Probes and hooks that named the port keep reaching the app; the others are unchanged.
    let app = as_json(app);
    assert_eq!(app["livenessProbe"]["httpGet"]["port"], "tx-http");
    assert_eq!(app["lifecycle"]["preStop"]["httpGet"]["port"], "tx-http");
    assert_eq!(app["readinessProbe"]["tcpSocket"]["port"], 8080);
    assert_eq!(app["startupProbe"]["httpGet"]["port"], "admin");

    let record = &injected.record;
    assert_eq!(
        record.ports,
        [PortMap {
            app_port: 8080,
            agent_port: 9900,
            container: "app".into(),
            name: "http".into(),
        }]
    );
    assert_eq!(
        record.renamed_ports,
        [RenamedPort {
            container: "app".into(),
            from: "http".into(),
            to: "tx-http".into(),
        }]
    );
    let probes: Vec<_> = record.probes.iter().map(|p| p.probe).collect();
    assert_eq!(probes, [ProbeKind::Liveness, ProbeKind::PreStop]);
    assert!(record.services.is_empty());
    assert!(injected.skipped.is_empty());
}

#[test]
fn numeric_target_port_points_the_service_at_the_agent() {
    let w = workload(orders());
    let injected = inject(&w, &numeric_http(), &settings()).unwrap();

    assert_eq!(injected.services.len(), 1);
    let ports = as_json(&injected.services[0].spec.as_ref().unwrap().ports);
    assert_eq!(
        ports,
        json!([{ "name": "http", "port": 80, "targetPort": 9900 }])
    );
    let agent = container(&injected.template, AGENT_CONTAINER);
    assert_eq!(
        as_json(&agent.ports),
        json!([
            { "name": "tx-8080", "containerPort": 9900, "protocol": "TCP" },
            { "name": "tether-metrics", "containerPort": 9899, "protocol": "TCP" },
        ])
    );
    // The app and its probes are untouched.
    assert_eq!(
        as_json(container(&injected.template, "app")),
        as_json(container(&w.template, "app"))
    );
    assert_eq!(
        injected.record.services,
        [RetargetedPort {
            service: "orders".into(),
            port: 80,
            protocol: "TCP".into(),
            agent_port: 9900,
            original_target_port: Some(IntOrString::Int(8080)),
        }]
    );
}

#[test]
fn absent_target_port_is_the_port_and_is_restored_absent() {
    let w = workload(orders());
    let services = vec![orders_svc(json!([{ "port": 8080 }]))];
    let (installed, installed_services, injected) = install(&w, &services);

    let ports = as_json(&installed_services[0].spec.as_ref().unwrap().ports);
    assert_eq!(ports, json!([{ "port": 8080, "targetPort": 9900 }]));
    assert_eq!(injected.record.ports[0].app_port, 8080);
    assert_eq!(injected.record.services[0].original_target_port, None);

    let (_, restored) = uninstall(&installed, &installed_services);
    let ports = as_json(&restored[0].spec.as_ref().unwrap().ports);
    assert_eq!(ports, json!([{ "port": 8080 }]));
}

#[test]
fn install_takes_over_every_tcp_port_of_every_selecting_service() {
    let w = workload(orders());
    let services = vec![
        orders_svc(json!([
            { "name": "http", "port": 80, "targetPort": "http" },
            { "name": "admin", "port": 9090 },
            { "name": "dns", "port": 53, "protocol": "UDP" },
        ])),
        // Same app port by number: shares the agent port.
        service(
            "orders-internal",
            json!({ "tier": "web" }),
            json!([{ "port": 8080 }]),
        ),
        service(
            "payments",
            json!({ "app": "payments" }),
            json!([{ "port": 80 }]),
        ),
        service("external", Value::Null, json!([{ "port": 80 }])),
    ];
    let injected = inject(&w, &services, &settings()).unwrap();

    let maps: Vec<_> = injected
        .record
        .ports
        .iter()
        .map(|p| (p.app_port, p.agent_port, p.name.as_str()))
        .collect();
    assert_eq!(maps, [(8080, 9900, "http"), (9090, 9901, "tx-9090")]);
    let agent = container(&injected.template, AGENT_CONTAINER);
    let args = agent.args.as_ref().unwrap();
    assert_eq!(
        args[args.len() - 4..],
        ["--forward", "9900=8080", "--forward", "9901=9090"]
    );

    let changed: Vec<_> = injected
        .services
        .iter()
        .map(|s| as_json(s)["spec"]["ports"].clone())
        .collect();
    assert_eq!(
        changed,
        [
            json!([
                { "name": "http", "port": 80, "targetPort": "http" },
                { "name": "admin", "port": 9090, "targetPort": 9901 },
                { "name": "dns", "port": 53, "protocol": "UDP" },
            ]),
            json!([{ "port": 8080, "targetPort": 9900 }]),
        ]
    );
}

#[test]
fn agent_ports_skip_ports_the_pod_declares() {
    let mut template = orders();
    template["spec"]["containers"][1]["ports"] =
        json!([{ "containerPort": 9900 }, { "containerPort": 9901, "protocol": "UDP" }]);
    // An undeclared app port in the range is skipped too.
    let services = vec![orders_svc(json!([
        { "name": "http", "port": 80, "targetPort": "http" },
        { "name": "legacy", "port": 9902 },
    ]))];
    let injected = inject(&workload(template), &services, &settings()).unwrap();
    let maps: Vec<_> = injected
        .record
        .ports
        .iter()
        .map(|p| (p.app_port, p.agent_port, p.container.as_str()))
        .collect();
    // 9902 is undeclared, so it is the first container's.
    assert_eq!(maps, [(8080, 9903, "app"), (9902, 9904, "app")]);
}

#[test]
fn agent_container_is_restricted_and_mounts_its_credential() {
    let w = workload(orders());
    let injected = inject(&w, &named_http(), &settings()).unwrap();
    let spec = injected.template.spec.as_ref().unwrap();
    // Appended: the app stays the pod's first (default) container.
    assert_eq!(spec.containers.first().unwrap().name, "app");
    assert_eq!(
        as_json(spec.containers.last().unwrap()),
        json!({
            "name": "tether-agent",
            "image": "ghcr.io/tether/agent:1",
            "imagePullPolicy": "IfNotPresent",
            "args": [
                "sidecar", "--manager", "10.0.0.5:7443", "--credentials", "/var/run/tether",
                "--workload", "Deployment/orders", "--metrics-port", "9899",
                "--forward", "9900=8080",
            ],
            "env": [
                { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                // The app mounts no volume; the kubelet gives every container the token.
                { "name": "TETHER_MOUNTS", "value": r#"[{"container":"app","path":"/var/run/secrets/kubernetes.io/serviceaccount","readOnly":true,"source":"/var/run/secrets/kubernetes.io/serviceaccount"}]"# },
            ],
            "ports": [
                { "name": "http", "containerPort": 9900, "protocol": "TCP" },
                { "name": "tether-metrics", "containerPort": 9899, "protocol": "TCP" },
            ],
            "volumeMounts": [{ "name": "tether-agent-tls", "mountPath": "/var/run/tether", "readOnly": true }],
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "allowPrivilegeEscalation": false,
                "capabilities": { "drop": ["ALL"] },
                "seccompProfile": { "type": "RuntimeDefault" },
                "readOnlyRootFilesystem": true,
            },
            "resources": {
                "requests": { "cpu": "10m", "memory": "16Mi" },
                "limits": { "memory": "64Mi" },
            },
        })
    );
    assert_eq!(
        as_json(spec.volumes.as_ref().unwrap().last().unwrap()),
        json!({ "name": "tether-agent-tls", "projected": { "sources": [
            { "secret": { "name": "tether-agent-tls" } },
            { "serviceAccountToken": { "audience": "tether", "expirationSeconds": 3600, "path": "token" } },
        ] } })
    );
}

#[test]
fn the_agent_mounts_the_app_containers_volumes_under_its_own_prefix() {
    let mut template = orders();
    template["spec"]["containers"][0]["volumeMounts"] = json!([
        { "name": "config", "mountPath": "/etc/orders/", "readOnly": true },
        { "name": "data", "mountPath": "/data", "subPath": "orders" },
        // The token is mounted by hand: the agent mounts the same, no kubelet copy is served.
        { "name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount" },
    ]);
    // The cache container's mounts are not the intercepted app's.
    template["spec"]["containers"][1]["volumeMounts"] =
        json!([{ "name": "cache", "mountPath": "/cache" }]);
    let injected = inject(&workload(template), &named_http(), &settings()).unwrap();
    let spec = injected.template.spec.as_ref().unwrap();
    let agent = as_json(spec.containers.last().unwrap());
    assert_eq!(
        agent["volumeMounts"],
        json!([
            { "name": "tether-agent-tls", "mountPath": "/var/run/tether", "readOnly": true },
            { "name": "config", "mountPath": "/tether/volumes/app/etc/orders", "readOnly": true },
            { "name": "data", "mountPath": "/tether/volumes/app/data", "readOnly": false, "subPath": "orders" },
            { "name": "token", "mountPath": "/tether/volumes/app/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": false },
        ])
    );
    let table: Value = serde_json::from_str(agent["env"][2]["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        table,
        json!([
            { "container": "app", "path": "/data", "source": "/tether/volumes/app/data", "readOnly": false },
            { "container": "app", "path": "/etc/orders", "source": "/tether/volumes/app/etc/orders", "readOnly": true },
            { "container": "app", "path": "/var/run/secrets/kubernetes.io/serviceaccount", "source": "/tether/volumes/app/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": false },
        ])
    );

    // A pod that opts out of the token gets none served.
    let mut template = orders();
    template["spec"]["automountServiceAccountToken"] = json!(false);
    let injected = inject(&workload(template), &named_http(), &settings()).unwrap();
    let agent = as_json(
        injected
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers
            .last()
            .unwrap(),
    );
    assert_eq!(agent["env"][2]["value"], "[]");
}

/// Two containers behind the Services mount different volumes at one path: the agent has both,
/// each under its container's name, and each container's table row points at its own.
#[test]
fn each_containers_volumes_have_their_own_rows_even_at_one_path() {
    let mut template = orders();
    template["spec"]["containers"][0]["volumeMounts"] =
        json!([{ "name": "config", "mountPath": "/etc/conf" }]);
    template["spec"]["containers"][1]["volumeMounts"] =
        json!([{ "name": "cache-config", "mountPath": "/etc/conf", "readOnly": true }]);
    let services = vec![orders_svc(json!([
        { "name": "http", "port": 80, "targetPort": "http" },
        { "name": "redis", "port": 6379, "targetPort": 6379 },
    ]))];
    let injected = inject(&workload(template), &services, &settings()).unwrap();
    let spec = injected.template.spec.as_ref().unwrap();
    let agent = as_json(spec.containers.last().unwrap());
    assert_eq!(
        agent["volumeMounts"],
        json!([
            { "name": "tether-agent-tls", "mountPath": "/var/run/tether", "readOnly": true },
            { "name": "config", "mountPath": "/tether/volumes/app/etc/conf", "readOnly": false },
            { "name": "cache-config", "mountPath": "/tether/volumes/cache/etc/conf", "readOnly": true },
        ])
    );
    let table: Value = serde_json::from_str(agent["env"][2]["value"].as_str().unwrap()).unwrap();
    let token = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(
        table,
        json!([
            { "container": "app", "path": "/etc/conf", "source": "/tether/volumes/app/etc/conf", "readOnly": false },
            { "container": "app", "path": token, "source": token, "readOnly": true },
            { "container": "cache", "path": "/etc/conf", "source": "/tether/volumes/cache/etc/conf", "readOnly": true },
            { "container": "cache", "path": token, "source": token, "readOnly": true },
        ])
    );
}

#[test]
fn uninstall_restores_workload_and_services_exactly() {
    let mut no_volumes = orders();
    no_volumes["spec"]
        .as_object_mut()
        .unwrap()
        .remove("volumes");
    let mut no_ports = orders();
    no_ports["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("ports");
    no_ports["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = json!(8080);
    no_ports["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("startupProbe");
    let cases = [
        ("named", orders(), named_http()),
        ("numeric", orders(), numeric_http()),
        (
            "absent",
            orders(),
            vec![orders_svc(json!([{ "port": 8080 }]))],
        ),
        ("no volumes before", no_volumes, named_http()),
        ("undeclared port", no_ports, numeric_http()),
        (
            "several services and ports",
            orders(),
            vec![
                orders_svc(json!([
                    { "name": "http", "port": 80, "targetPort": "http" },
                    { "name": "admin", "port": 9090, "targetPort": "admin" },
                    { "name": "dns", "port": 53, "protocol": "UDP" },
                    { "name": "cache", "port": 6379 },
                ])),
                service(
                    "orders-internal",
                    json!({ "tier": "web" }),
                    json!([
                        { "port": 8080, "targetPort": 8080 },
                        { "port": 9091, "targetPort": 9090 },
                    ]),
                ),
                service(
                    "payments",
                    json!({ "app": "payments" }),
                    json!([{ "port": 80 }]),
                ),
            ],
        ),
    ];
    for (case, template, services) in cases {
        let original = workload(template);
        let (installed, installed_services, injected) = install(&original, &services);
        assert_ne!(
            as_json(&installed.template),
            as_json(&original.template),
            "{case}"
        );
        assert!(
            installed.annotations.contains_key(AGENT_ANNOTATION),
            "{case}"
        );

        let (restored, restored_services) = uninstall(&installed, &installed_services);
        assert_eq!(
            as_json(&restored.template),
            as_json(&original.template),
            "{case}: template"
        );
        assert_eq!(
            as_json(&restored_services),
            as_json(&services),
            "{case}: services"
        );
        assert_eq!(
            restored.annotations, original.annotations,
            "{case}: annotations"
        );
        assert!(injected.skipped.is_empty(), "{case}");
    }
}

#[test]
fn uninstall_keeps_what_the_user_changed_meanwhile() {
    let original = workload(orders());
    let services = vec![orders_svc(json!([
        { "name": "http", "port": 80, "targetPort": "http" },
        { "name": "admin", "port": 9090 },
    ]))];
    let (mut installed, mut installed_services, _) = install(&original, &services);

    // Unrelated edits: a new image, an env var, a label, a new port on the Service.
    let edit = |template: &mut Value| {
        template["metadata"]["labels"]["version"] = json!("2");
        template["spec"]["containers"][0]["image"] = json!("orders:2");
        template["spec"]["containers"][0]["env"] = json!([{ "name": "MODE", "value": "fast" }]);
    };
    let mut template = as_json(&installed.template);
    edit(&mut template);
    installed.template = serde_json::from_value(template).unwrap();
    let mut svc = as_json(&installed_services[0]);
    svc["spec"]["ports"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "debug", "port": 5005 }));
    installed_services[0] = serde_json::from_value(svc).unwrap();

    let (restored, restored_services) = uninstall(&installed, &installed_services);
    let mut expected = as_json(&original.template);
    edit(&mut expected);
    assert_eq!(as_json(&restored.template), expected);
    assert_eq!(
        as_json(&restored_services[0])["spec"]["ports"],
        json!([
            { "name": "http", "port": 80, "targetPort": "http" },
            { "name": "admin", "port": 9090 },
            { "name": "debug", "port": 5005 },
        ])
    );
}

#[test]
fn uninstall_leaves_a_target_port_the_user_changed() {
    let original = workload(orders());
    let (installed, mut installed_services, _) = install(&original, &numeric_http());
    let mut svc = as_json(&installed_services[0]);
    svc["spec"]["ports"][0]["targetPort"] = json!(7070);
    installed_services[0] = serde_json::from_value(svc).unwrap();

    let (restored, restored_services) = uninstall(&installed, &installed_services);
    assert_eq!(as_json(&restored.template), as_json(&original.template));
    assert_eq!(
        as_json(&restored_services[0])["spec"]["ports"][0]["targetPort"],
        json!(7070)
    );
}

#[test]
fn reinstall_is_a_no_op_with_the_same_settings() {
    let original = workload(orders());
    let services = vec![orders_svc(json!([
        { "name": "http", "port": 80, "targetPort": "http" },
        { "name": "admin", "port": 9090 },
    ]))];
    let (installed, installed_services, first) = install(&original, &services);
    let again = inject(&installed, &installed_services, &settings()).unwrap();
    assert_eq!(again.record, first.record);
    assert_eq!(as_json(&again.template), as_json(&installed.template));
    assert!(again.services.is_empty());
    assert!(has_agent(&installed.template, &first.record));
    assert!(!has_agent(&original.template, &first.record));
    assert_eq!(record_of(&installed).unwrap(), Some(first.record));
}

#[test]
fn reinstall_with_new_settings_replaces_the_agent_in_one_change() {
    let original = workload(orders());
    let (installed, installed_services, first) = install(&original, &numeric_http());
    let newer = AgentSettings {
        image: "ghcr.io/tether/agent:2".into(),
        ..settings()
    };
    let (reinstalled, reinstalled_services, second) =
        install_with(&installed, &installed_services, &newer);
    assert_ne!(second.record, first.record);
    assert_eq!(second.record.settings, newer);
    assert_eq!(second.record.ports, first.record.ports);
    // Same agent ports: the Services need no change.
    assert!(second.services.is_empty());
    let agents = reinstalled
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .filter(|c| c.name == AGENT_CONTAINER)
        .count();
    assert_eq!(agents, 1);
    assert_eq!(
        container(&reinstalled.template, AGENT_CONTAINER)
            .image
            .as_deref(),
        Some("ghcr.io/tether/agent:2")
    );

    let (restored, restored_services) = uninstall(&reinstalled, &reinstalled_services);
    assert_eq!(as_json(&restored.template), as_json(&original.template));
    assert_eq!(as_json(&restored_services), as_json(&numeric_http()));
}

#[test]
fn reinstall_takes_over_a_service_created_since() {
    let original = workload(orders());
    let (installed, mut installed_services, first) = install(&original, &named_http());
    installed_services.push(service(
        "orders-admin",
        json!({ "app": "orders" }),
        json!([{ "port": 9090 }]),
    ));
    let again = inject(&installed, &installed_services, &settings()).unwrap();
    assert_ne!(again.record, first.record);
    assert_eq!(again.record.ports.len(), 2);
    assert_eq!(again.services.len(), 1);
    assert_eq!(
        again.services[0].metadata.name.as_deref(),
        Some("orders-admin")
    );
}

#[test]
fn a_container_tether_did_not_add_is_refused() {
    let mut template = orders();
    template["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "tether-agent", "image": "x" }));
    let err = inject(&workload(template), &named_http(), &settings()).unwrap_err();
    assert!(
        matches!(
            err,
            PlanError::NameTaken {
                what: "container",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "Deployment orders already has a container named tether-agent that tether did not add (no tether.dev/agent annotation); remove it and try again"
    );
}

#[test]
fn unresolvable_ports_are_skipped_and_reported() {
    let services = vec![orders_svc(json!([
        { "name": "http", "port": 80, "targetPort": "http" },
        { "name": "grpc", "port": 50051, "targetPort": "grpc" },
    ]))];
    let injected = inject(&workload(orders()), &services, &settings()).unwrap();
    assert_eq!(injected.record.ports.len(), 1);
    assert_eq!(
        injected
            .skipped
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>(),
        ["service orders targets port `grpc`, which no container of Deployment orders declares"]
    );

    let only_broken = vec![orders_svc(json!([{ "port": 50051, "targetPort": "grpc" }]))];
    let err = inject(&workload(orders()), &only_broken, &settings()).unwrap_err();
    assert!(
        matches!(err, PlanError::NamedPortNotFound { .. }),
        "{err:?}"
    );

    let only_udp = vec![orders_svc(json!([{ "port": 53, "protocol": "UDP" }]))];
    let err = inject(&workload(orders()), &only_udp, &settings()).unwrap_err();
    assert!(matches!(err, PlanError::NoTcpPort { .. }), "{err:?}");
}

#[test]
fn two_names_for_one_port_number_move_only_the_first() {
    let mut template = orders();
    template["spec"]["containers"][1]["ports"] = json!([{ "name": "web", "containerPort": 8080 }]);
    let services = vec![orders_svc(json!([
        { "name": "http", "port": 80, "targetPort": "http" },
        { "name": "web", "port": 81, "targetPort": "web" },
    ]))];
    let original = workload(template);
    let (installed, installed_services, injected) = install(&original, &services);
    assert_eq!(injected.record.ports.len(), 1);
    assert!(matches!(
        injected.skipped.as_slice(),
        [PlanError::SharedPort { port: 8080, .. }]
    ));
    let (restored, _) = uninstall(&installed, &installed_services);
    assert_eq!(as_json(&restored.template), as_json(&original.template));
}

#[test]
fn long_names_are_truncated_and_stay_distinct() {
    let template = json!({
        "metadata": { "labels": { "app": "orders" } },
        "spec": { "containers": [{
            "name": "app",
            "ports": [
                { "name": "metrics-http-a", "containerPort": 8080 },
                { "name": "metrics-http-b", "containerPort": 8081 },
            ],
        }] },
    });
    let services = vec![orders_svc(json!([
        { "name": "a", "port": 80, "targetPort": "metrics-http-a" },
        { "name": "b", "port": 81, "targetPort": "metrics-http-b" },
    ]))];
    let injected = inject(&workload(template), &services, &settings()).unwrap();
    let renamed: Vec<_> = injected
        .record
        .renamed_ports
        .iter()
        .map(|r| r.to.as_str())
        .collect();
    assert_eq!(renamed, ["tx-metrics-http", "tx1-metrics-htt"]);
    assert!(renamed.iter().all(|n| is_iana_svc_name(n)));
}

#[test]
fn fresh_port_names_are_valid_iana_service_names() {
    let none = BTreeSet::new();
    assert_eq!(fresh_port_name("http", &none), "tx-http");
    assert_eq!(fresh_port_name("8080", &none), "tx-8080");
    // Cut at a '-': the trailing '-' goes.
    assert_eq!(fresh_port_name("abcdefghijk-lm", &none), "tx-abcdefghijk");
    let taken: BTreeSet<String> = ["tx-http".to_owned(), "tx1-http".to_owned()].into();
    assert_eq!(fresh_port_name("http", &taken), "tx2-http");
    for name in [
        "http",
        "a",
        "abcdefghijk-lm",
        "x-y-z-w-v-u-t-s",
        "80",
        "65535",
    ] {
        let fresh = fresh_port_name(name, &none);
        assert!(is_iana_svc_name(&fresh), "{name} -> {fresh}");
    }
}

#[test]
fn iana_service_names() {
    for ok in ["http", "tx-http", "h2c", "a-b-c", "abcdefghijklmno"] {
        assert!(is_iana_svc_name(ok), "{ok}");
    }
    for bad in [
        "",
        "8080",
        "-http",
        "http-",
        "a--b",
        "HTTP",
        "abcdefghijklmnop",
        "a_b",
    ] {
        assert!(!is_iana_svc_name(bad), "{bad}");
    }
}

#[test]
fn services_select_by_subset_of_labels() {
    let template: PodTemplateSpec = serde_json::from_value(orders()).unwrap();
    let services = [
        service(
            "exact",
            json!({ "app": "orders", "tier": "web" }),
            json!([]),
        ),
        service("subset", json!({ "app": "orders" }), json!([])),
        service("other", json!({ "app": "payments" }), json!([])),
        service("more", json!({ "app": "orders", "tier": "db" }), json!([])),
        service("no-selector", Value::Null, json!([])),
        service("empty-selector", json!({}), json!([])),
    ];
    let names: Vec<_> = services_selecting(&template, &services)
        .iter()
        .map(|s| s.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["exact", "subset"]);
}

/// A query for `--port LOCAL:PORT` alone.
fn q(port: Option<&str>) -> PortQuery<'_> {
    PortQuery {
        port,
        ..PortQuery::default()
    }
}

fn two_ports() -> Vec<Service> {
    vec![orders_svc(json!([
        { "name": "http", "port": 80, "targetPort": "http" },
        { "name": "admin", "port": 9090, "targetPort": 9090 },
    ]))]
}

#[test]
fn choose_port_by_name_or_number_gives_the_app_port() {
    let w = workload(orders());
    let expected = PortChoice {
        service: "orders".into(),
        service_port: 80,
        service_port_name: Some("http".into()),
        container: "app".into(),
        app_port: 8080,
    };
    assert_eq!(
        choose_port(&w, &two_ports(), q(Some("http"))).unwrap(),
        expected
    );
    assert_eq!(
        choose_port(&w, &two_ports(), q(Some("80"))).unwrap(),
        expected
    );
    assert_eq!(
        choose_port(&w, &two_ports(), q(Some("orders/http"))).unwrap(),
        expected
    );
    assert_eq!(choose_port(&w, &named_http(), q(None)).unwrap(), expected);
    let admin = choose_port(&w, &two_ports(), q(Some("admin"))).unwrap();
    assert_eq!((admin.service_port, admin.app_port), (9090, 9090));
}

#[test]
fn a_replace_takes_the_containers_other_exposed_ports() {
    let w = workload(orders());
    let services = vec![
        orders_svc(json!([
            { "name": "http", "port": 80, "targetPort": "http" },
            { "name": "admin", "port": 9090, "targetPort": 9090 },
            { "name": "redis", "port": 6379, "targetPort": 6379 },
            { "name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP" },
        ])),
        // A second Service reaching the same app port adds nothing.
        service(
            "orders-admin",
            json!({ "app": "orders" }),
            json!([{ "name": "admin", "port": 19090, "targetPort": "admin" }]),
        ),
    ];
    let http = choose_port(&w, &services, q(Some("http"))).unwrap();
    let others = other_ports(&w, &services, &http).unwrap();
    let got: Vec<_> = others
        .iter()
        .map(|o| (o.service.as_str(), o.service_port, o.app_port))
        .collect();
    // 6379 is the cache container's, UDP is not intercepted, 9090 once.
    assert_eq!(got, [("orders", 9090, 9090)]);
    let admin = choose_port(&w, &services, q(Some("admin"))).unwrap();
    let others = other_ports(&w, &services, &admin).unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!((others[0].service_port, others[0].app_port), (80, 8080));
}

#[test]
fn choose_port_after_install_still_gives_the_app_port() {
    let original = workload(orders());
    let (installed, installed_services, injected) = install(&original, &two_ports());
    // The agent has http (9900) and the admin Service port points at 9901.
    assert_eq!(injected.record.ports.len(), 2);
    for asked in ["http", "admin"] {
        assert_eq!(
            choose_port(&installed, &installed_services, q(Some(asked))).unwrap(),
            choose_port(&original, &two_ports(), q(Some(asked))).unwrap(),
            "{asked}"
        );
    }
    assert_eq!(
        choose_port(&installed, &installed_services, q(Some("http")))
            .unwrap()
            .app_port,
        8080
    );
}

#[test]
fn choose_port_errors_say_what_to_do() {
    let w = workload(orders());
    let err = choose_port(&w, &two_ports(), q(Some("grpc"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service orders has no port `grpc`; its ports are: http (80→http), admin (9090→9090)"
    );

    let err = choose_port(&w, &two_ports(), q(None)).unwrap_err();
    assert!(matches!(err, PlanError::AmbiguousPort { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Deployment orders serves several ports: http (80→http), admin (9090→9090); choose one with `--port LOCAL:NAME`"
    );

    let err = choose_port(&w, &[], q(Some("http"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Deployment orders is not exposed by any Service: tether intercepts a Service's traffic"
    );

    let udp = vec![orders_svc(json!([
        { "name": "dns", "port": 53, "protocol": "UDP" },
        { "name": "http", "port": 80, "targetPort": "http" },
    ]))];
    let err = choose_port(&w, &udp, q(Some("dns"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "port dns of service orders is UDP: tether intercepts TCP only"
    );
    // UDP ports do not make the choice ambiguous.
    assert_eq!(choose_port(&w, &udp, q(None)).unwrap().app_port, 8080);

    let broken = vec![orders_svc(
        json!([{ "name": "grpc", "port": 50051, "targetPort": "grpc" }]),
    )];
    let err = choose_port(&w, &broken, q(Some("grpc"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service orders targets port `grpc`, which no container of Deployment orders declares"
    );
}

#[test]
fn choose_port_across_services() {
    let w = workload(orders());
    // Two Services, same port name, same app port: either is fine.
    let same = vec![
        orders_svc(json!([{ "name": "http", "port": 80, "targetPort": "http" }])),
        service(
            "orders-internal",
            json!({ "tier": "web" }),
            json!([{ "name": "http", "port": 8080 }]),
        ),
    ];
    let choice = choose_port(&w, &same, q(Some("http"))).unwrap();
    assert_eq!((choice.service.as_str(), choice.app_port), ("orders", 8080));
    assert_eq!(choose_port(&w, &same, q(None)).unwrap().app_port, 8080);

    // Same name, different app ports: ambiguous, unless the Service is named.
    let different = vec![
        orders_svc(json!([{ "name": "http", "port": 80, "targetPort": "http" }])),
        service(
            "orders-admin",
            json!({ "tier": "web" }),
            json!([{ "name": "http", "port": 80, "targetPort": 9090 }]),
        ),
    ];
    let err = choose_port(&w, &different, q(Some("http"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "port `http` of Deployment orders could be orders/http (80→http) or orders-admin/http (80→9090); choose the Service with --service orders or --service orders-admin"
    );
    // --service decides, as `SERVICE/NAME` does.
    let query = PortQuery {
        port: Some("http"),
        service: Some("orders-admin"),
        container: None,
    };
    let choice = choose_port(&w, &different, query).unwrap();
    assert_eq!(
        (choice.service.as_str(), choice.app_port),
        ("orders-admin", 9090)
    );
    let err = choose_port(&w, &different, q(None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Deployment orders is behind several Services: orders/http (80→http), orders-admin/http (80→9090); choose one with --service orders or --service orders-admin"
    );
    let choice = choose_port(&w, &different, q(Some("orders-admin/http"))).unwrap();
    assert_eq!(
        (choice.service.as_str(), choice.app_port),
        ("orders-admin", 9090)
    );

    let err = choose_port(&w, &different, q(Some("grpc"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "services orders, orders-admin have no port `grpc`; their ports are: orders/http (80→http), orders-admin/http (80→9090)"
    );
}

#[test]
fn choose_port_in_a_container() {
    let w = workload(orders());
    let in_container = |port, container| PortQuery {
        port,
        service: None,
        container: Some(container),
    };
    let err = choose_port(&w, &two_ports(), in_container(None, "nope")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Deployment orders has no container nope; its containers are: app, cache"
    );
    let err = choose_port(&w, &two_ports(), in_container(None, "cache")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container cache serves none of these ports: http (80→http) is container app's, \
         admin (9090→9090) is container app's; choose another port or container"
    );
    // Of several ports, --container keeps the ones it serves: no ambiguity left.
    let services = vec![orders_svc(json!([
        { "name": "http", "port": 80, "targetPort": "http" },
        { "name": "redis", "port": 6379 },
        { "name": "other", "port": 7000 },
    ]))];
    let redis = choose_port(&w, &services, in_container(Some("redis"), "cache")).unwrap();
    assert_eq!((redis.container.as_str(), redis.app_port), ("cache", 6379));
    let http = choose_port(&w, &services, in_container(None, "app"));
    assert!(
        matches!(&http, Err(PlanError::AmbiguousPort { ports, .. }) if ports.len() == 2),
        "http, and 7000 (no container declares it: the first one's) {http:?}"
    );
    // A port no container declares is the named container's.
    let other = choose_port(&w, &services, in_container(Some("other"), "cache")).unwrap();
    assert_eq!((other.container.as_str(), other.app_port), ("cache", 7000));
    let other = choose_port(&w, &services, q(Some("other"))).unwrap();
    assert_eq!(other.container, "app");
}

#[test]
fn record_annotation_round_trips_and_bad_ones_are_refused() {
    let original = workload(orders());
    assert!(record_of(&original).unwrap().is_none());
    let services = vec![orders_svc(json!([{ "port": 8080 }]))];
    let (installed, _, injected) = install(&original, &services);
    assert_eq!(
        record_of(&installed).unwrap(),
        Some(injected.record.clone())
    );
    let json: Value = serde_json::from_str(&installed.annotations[AGENT_ANNOTATION]).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["settings"]["manager"], "10.0.0.5:7443");
    // An absent targetPort is recorded as such.
    assert_eq!(json["services"][0]["originalTargetPort"], Value::Null);
    assert_eq!(json["services"][0]["agentPort"], 9900);

    let with = |value: &str| {
        let mut w = original.clone();
        w.annotations.insert(AGENT_ANNOTATION.into(), value.into());
        record_of(&w)
    };
    let err = with("{not json").unwrap_err();
    assert!(matches!(err, PlanError::BadRecord { .. }), "{err:?}");
    assert!(err
        .to_string()
        .starts_with("the tether.dev/agent annotation of Deployment orders cannot be read"));
    assert!(std::error::Error::source(&err).is_some());

    let mut unknown = json.clone();
    unknown["sidecarInjector"] = json!(true);
    let err = with(&unknown.to_string()).unwrap_err();
    assert!(matches!(err, PlanError::BadRecord { .. }), "{err:?}");

    let mut newer = json;
    newer["version"] = json!(2);
    newer["somethingNew"] = json!([]);
    let err = with(&newer.to_string()).unwrap_err();
    assert!(
        matches!(err, PlanError::NewerRecord { version: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn annotate_adds_and_removes_only_the_record() {
    let record = inject(&workload(orders()), &named_http(), &settings())
        .unwrap()
        .record;
    let mut none = None;
    annotate(&mut none, Some(&record));
    assert_eq!(none.as_ref().map(|a| a.len()), Some(1));
    annotate(&mut none, None);
    assert_eq!(none, None);

    let mut some = Some(BTreeMap::from([("owner".to_owned(), "a".to_owned())]));
    annotate(&mut some, Some(&record));
    // The manager's list of intercepts goes with the agent.
    some.as_mut().unwrap().insert(
        INTERCEPTS_ANNOTATION.to_owned(),
        "ann (x-dev=ann) → 8080".to_owned(),
    );
    annotate(&mut some, None);
    assert_eq!(
        some,
        Some(BTreeMap::from([("owner".to_owned(), "a".to_owned())]))
    );
}

#[test]
fn workload_kinds_and_references() {
    for (s, kind) in [
        ("Deployment", WorkloadKind::Deployment),
        ("deploy", WorkloadKind::Deployment),
        ("DEPLOYMENTS", WorkloadKind::Deployment),
        ("sts", WorkloadKind::StatefulSet),
        ("StatefulSet", WorkloadKind::StatefulSet),
        ("rs", WorkloadKind::ReplicaSet),
        ("replicaset", WorkloadKind::ReplicaSet),
    ] {
        assert_eq!(s.parse::<WorkloadKind>().unwrap(), kind, "{s}");
    }
    assert_eq!(WorkloadKind::StatefulSet.to_string(), "StatefulSet");
    assert!(matches!(
        "pod".parse::<WorkloadKind>(),
        Err(PlanError::UnknownKind(_))
    ));

    assert_eq!(parse_workload_ref("orders").unwrap(), (None, "orders"));
    assert_eq!(
        parse_workload_ref("deploy/orders").unwrap(),
        (Some(WorkloadKind::Deployment), "orders")
    );
    assert_eq!(
        parse_workload_ref("deployment.apps/orders").unwrap(),
        (Some(WorkloadKind::Deployment), "orders")
    );
    assert_eq!(
        parse_workload_ref("sts/db").unwrap(),
        (Some(WorkloadKind::StatefulSet), "db")
    );
    for bad in ["", "deploy/", "a/b/c"] {
        assert!(
            matches!(parse_workload_ref(bad), Err(PlanError::BadWorkloadRef(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        parse_workload_ref("job/x"),
        Err(PlanError::UnknownKind(_))
    ));
    let w = workload(orders());
    assert_eq!(
        (w.id(), w.to_string()),
        ("Deployment/orders".into(), "Deployment orders".into())
    );
}

/// A Secret with the given string data.
fn secret_with(data: &[(&str, &str)]) -> Secret {
    Secret {
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

#[test]
fn only_a_credential_for_this_namespace_from_this_ca_is_current() {
    let identity = tether_tunnel::Identity::generate().unwrap();
    let ca = identity.ca_pem();
    let issued = |role, name| identity.issue_client(role, name).unwrap();
    let stored = |c: &tether_tunnel::ClientCredential| {
        secret_with(&[
            ("ca.crt", &c.ca_pem),
            ("tls.crt", &c.cert_pem),
            ("tls.key", &c.key_pem),
        ])
    };
    let shop = issued(tether_tunnel::Role::Agent, "shop");
    assert!(agent_credential_is_current(
        "shop",
        Some(&stored(&shop)),
        ca
    ));
    // Another namespace's, a client's, the shared one older managers issued, another CA's.
    assert!(!agent_credential_is_current(
        "web",
        Some(&stored(&shop)),
        ca
    ));
    let client = issued(tether_tunnel::Role::Client, "shop");
    assert!(!agent_credential_is_current(
        "shop",
        Some(&stored(&client)),
        ca
    ));
    let shared = issued(tether_tunnel::Role::Agent, "tether-agent");
    assert!(!agent_credential_is_current(
        "shop",
        Some(&stored(&shared)),
        ca
    ));
    let other = tether_tunnel::Identity::generate().unwrap();
    assert!(!agent_credential_is_current(
        "shop",
        Some(&stored(&shop)),
        other.ca_pem()
    ));
    // Half a credential, a pending request, none at all.
    let no_key = secret_with(&[("ca.crt", &shop.ca_pem), ("tls.crt", &shop.cert_pem)]);
    assert!(!agent_credential_is_current("shop", Some(&no_key), ca));
    let request = agent_request_secret("shop", "00ff");
    assert!(!agent_credential_is_current("shop", Some(&request), ca));
    assert!(!agent_credential_is_current("shop", None, ca));
}

#[test]
fn a_request_then_the_credential_replacing_it() {
    assert_eq!(
        as_json(&agent_request_secret("shop", "00ff")),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "tether-agent-tls",
                "namespace": "shop",
                "labels": { "app.kubernetes.io/managed-by": "tether" },
            },
            "type": "Opaque",
            "data": { "request-00ff": "MDBmZg==" },
        })
    );
    assert_eq!(
        agent_request_patch("00ff"),
        json!({ "data": { "request-00ff": "MDBmZg==" } })
    );
    let credential = tether_proto::AgentCredential {
        ca_pem: "ca".into(),
        cert_pem: "cert".into(),
        key_pem: "key".into(),
    };
    assert_eq!(
        agent_credential_patch("00ff", &credential),
        json!({ "data": {
            "ca.crt": "Y2E=", "tls.crt": "Y2VydA==", "tls.key": "a2V5", "request-00ff": null,
        } })
    );
}

#[test]
fn deployment_rollout() {
    let deployment = |status: Value| -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "orders", "generation": 3 },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
            "status": status,
        }))
        .unwrap()
    };
    let done = json!({ "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2 });
    assert_eq!(deployment_progress(&deployment(done)), Progress::Done);
    for (status, why) in [
        (
            json!({ "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2 }),
            "the Deployment controller has not seen the change yet",
        ),
        (
            json!({ "observedGeneration": 3, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2 }),
            "1 of 2 replicas updated",
        ),
        (
            json!({ "observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2 }),
            "1 old replicas still running",
        ),
        (
            json!({ "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1 }),
            "1 of 2 updated replicas available",
        ),
    ] {
        assert_eq!(
            deployment_progress(&deployment(status)),
            Progress::Waiting(why.into())
        );
    }
}

#[test]
fn statefulset_rollout() {
    let sts = |strategy: &str, status: Value| -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": { "name": "db", "generation": 1 },
            "spec": {
                "replicas": 2, "selector": {}, "template": {}, "serviceName": "db",
                "updateStrategy": { "type": strategy },
            },
            "status": status,
        }))
        .unwrap()
    };
    let rolling = json!({
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
        "currentRevision": "db-1", "updateRevision": "db-2",
    });
    assert_eq!(
        statefulset_progress(&sts("RollingUpdate", rolling.clone())),
        Progress::Waiting("the rolling update has not completed".into())
    );
    // OnDelete sets never move their current revision.
    assert!(is_on_delete(&sts("OnDelete", rolling.clone())));
    assert_eq!(
        statefulset_progress(&sts("OnDelete", rolling)),
        Progress::Done
    );
    let done = json!({
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
        "currentRevision": "db-2", "updateRevision": "db-2",
    });
    assert_eq!(
        statefulset_progress(&sts("RollingUpdate", done)),
        Progress::Done
    );
}

fn pod(name: &str, owner: &str, agent_image: Option<&str>, ready: bool) -> Pod {
    let mut containers = vec![json!({ "name": "app", "image": "orders:1" })];
    if let Some(image) = agent_image {
        containers.push(json!({ "name": "tether-agent", "image": image, "args": ["sidecar"] }));
    }
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": owner, "controller": true }],
        },
        "spec": { "containers": containers },
        "status": { "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] },
    }))
    .unwrap()
}

#[test]
fn replicaset_pods_are_replaced_until_all_run_the_template() {
    let template: PodTemplateSpec = serde_json::from_value(json!({
        "spec": { "containers": [
            { "name": "app", "image": "orders:1" },
            { "name": "tether-agent", "image": "agent:1", "args": ["sidecar"] },
        ] },
    }))
    .unwrap();
    let pods = [
        pod("old", "uid-1", None, true),
        pod("older-agent", "uid-1", Some("agent:0"), true),
        pod("new", "uid-1", Some("agent:1"), true),
        pod("someone-elses", "uid-2", None, true),
    ];
    assert_eq!(
        pods_to_replace("uid-1", &template, &pods),
        ["old", "older-agent"]
    );
    assert_eq!(
        pods_progress(2, "uid-1", &template, &pods),
        Progress::Waiting("2 pods still run the previous spec".into())
    );
    let pods = [
        pod("new", "uid-1", Some("agent:1"), true),
        pod("new-2", "uid-1", Some("agent:1"), false),
    ];
    assert_eq!(
        pods_progress(2, "uid-1", &template, &pods),
        Progress::Waiting("1 of 2 pods ready".into())
    );
    // Not yet recreated counts as not ready.
    assert_eq!(
        pods_progress(2, "uid-1", &template, &pods[..1]),
        Progress::Waiting("1 of 2 pods ready".into())
    );
    let pods = [
        pod("new", "uid-1", Some("agent:1"), true),
        pod("new-2", "uid-1", Some("agent:1"), true),
    ];
    assert_eq!(pods_progress(2, "uid-1", &template, &pods), Progress::Done);

    // After an uninstall the template has no agent: pods with one are the stale ones.
    let bare: PodTemplateSpec = serde_json::from_value(
        json!({ "spec": { "containers": [{ "name": "app", "image": "orders:1" }] } }),
    )
    .unwrap();
    assert_eq!(pods_to_replace("uid-1", &bare, &pods), ["new", "new-2"]);
}

#[test]
fn pod_problem_names_the_failing_agent_first() {
    let with_status = |name: &str, status: Value| -> Pod {
        serde_json::from_value(json!({ "metadata": { "name": name }, "status": status })).unwrap()
    };
    let not_ready = with_status(
        "orders-a",
        json!({ "conditions": [{ "type": "Ready", "status": "False" }] }),
    );
    let pulling = with_status(
        "orders-b",
        json!({
            "conditions": [{ "type": "Ready", "status": "False" }],
            "containerStatuses": [
                { "name": "app", "ready": true, "restartCount": 0, "image": "", "imageID": "", "state": { "running": {} } },
                {
                    "name": "tether-agent", "ready": false, "restartCount": 0, "image": "", "imageID": "",
                    "state": { "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image \"agent:9\"" } },
                },
            ],
        }),
    );
    assert_eq!(
        pod_problem(std::slice::from_ref(&not_ready)).unwrap(),
        "pod orders-a is not ready"
    );
    assert_eq!(
        pod_problem(&[not_ready.clone(), pulling]).unwrap(),
        "pod orders-b: container tether-agent: ImagePullBackOff (Back-off pulling image \"agent:9\")"
    );

    let crashing = with_status(
        "orders-c",
        json!({
            "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 4, "image": "", "imageID": "",
                "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                "lastState": { "terminated": { "reason": "OOMKilled", "exitCode": 137 } },
            }],
        }),
    );
    assert_eq!(
        pod_problem(&[not_ready.clone(), crashing]).unwrap(),
        "pod orders-c: container app: CrashLoopBackOff, last exit: OOMKilled, code 137"
    );

    let unschedulable = with_status(
        "orders-d",
        json!({ "conditions": [{ "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available" }] }),
    );
    assert_eq!(
        pod_problem(&[not_ready, unschedulable]).unwrap(),
        "pod orders-d cannot be scheduled: 0/1 nodes are available"
    );
    assert_eq!(pod_problem(&[]), None);
}

#[test]
fn controller_of_names_the_owner() {
    let owned: Pod = serde_json::from_value(json!({ "metadata": { "ownerReferences": [
        { "apiVersion": "apps/v1", "kind": "Deployment", "name": "orders", "uid": "u", "controller": true },
    ] } }))
    .unwrap();
    assert_eq!(
        controller_of(&owned.metadata).as_deref(),
        Some("Deployment orders")
    );
    assert_eq!(controller_of(&ObjectMeta::default()), None);
}

#[test]
fn a_reapplied_manifest_is_detected_and_reinstalled_cleanly() {
    let original = workload(orders());
    let services = vec![orders_svc(json!([
        { "name": "http", "port": 80, "targetPort": "http" },
    ]))];
    let (installed, installed_services, first) = install(&original, &services);
    // `kubectl apply` of the original manifest: the app's port and probes get their old name
    // back, the agent container (not in the manifest) stays.
    let mut reapplied = installed.clone();
    let spec = reapplied.template.spec.as_mut().unwrap();
    let app = spec
        .containers
        .iter_mut()
        .find(|c| c.name != AGENT_CONTAINER)
        .unwrap();
    let original_app = original.template.spec.as_ref().unwrap().containers[0].clone();
    app.ports = original_app.ports.clone();
    app.readiness_probe = original_app.readiness_probe.clone();
    app.liveness_probe = original_app.liveness_probe.clone();
    assert!(has_container(&reapplied.template, AGENT_CONTAINER));
    assert!(
        !has_agent(&reapplied.template, &first.record),
        "the Service's named port reaches the app directly now"
    );
    let again = inject(&reapplied, &installed_services, &settings()).unwrap();
    assert_eq!(as_json(&again.template), as_json(&installed.template));
    assert_eq!(again.record, first.record);
}

#[test]
fn an_agent_from_another_tether_is_not_current() {
    let w = workload(orders());
    let injected = inject(&w, &named_http(), &settings()).unwrap();
    assert!(agent_is_current(&injected.template, &settings()));
    assert!(
        !agent_is_current(&w.template, &settings()),
        "no agent at all"
    );

    let newer = AgentSettings {
        image: "ghcr.io/tether/agent:2".into(),
        ..settings()
    };
    assert!(!agent_is_current(&injected.template, &newer));

    // A reinstalled manager has a new Service address: the old agent would dial nothing.
    let moved = AgentSettings {
        manager: "10.96.7.7:7443".parse().unwrap(),
        ..settings()
    };
    assert!(!agent_is_current(&injected.template, &moved));

    // An older tether mounted the credential alone, without the pod's token.
    let mut old = injected.template.clone();
    for v in old.spec.as_mut().unwrap().volumes.iter_mut().flatten() {
        if v.name == AGENT_VOLUME {
            v.projected = None;
            v.secret = Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                secret_name: Some(AGENT_SECRET.to_owned()),
                ..Default::default()
            });
        }
    }
    assert!(!agent_is_current(&old, &settings()));
}
