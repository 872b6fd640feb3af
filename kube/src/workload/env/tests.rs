use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use serde_json::{json, Value};

use super::*;

/// Pod `shop/web-1` (created 2024-01-01T00:00:00Z, service links off) whose container `app`
/// has `fields`; a second container is called `sidecar`.
fn app(fields: Value) -> Pod {
    app_in(json!({ "enableServiceLinks": false }), fields)
}

/// Like [`app`], with `spec` fields merged into the pod spec.
fn app_in(spec: Value, fields: Value) -> Pod {
    let mut container = json!({ "name": "app" });
    container
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    let mut pod_spec = json!({
        "containers": [container, { "name": "sidecar" }],
        "nodeName": "node-7",
        "serviceAccountName": "shop-sa",
    });
    pod_spec
        .as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "uid": "0d5a3c1e-0000-4000-8000-000000000001",
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "labels": { "app": "web", "tier": "front" },
            "annotations": { "owner": "team-a" },
        },
        "spec": pod_spec,
        "status": {
            "hostIP": "192.168.1.7",
            "hostIPs": [{ "ip": "192.168.1.7" }, { "ip": "fd00::7" }],
            "podIP": "10.1.2.3",
            "podIPs": [{ "ip": "10.1.2.3" }, { "ip": "fd00:1::3" }],
        },
    }))
    .unwrap()
}

fn config_map(name: &str, data: Value) -> (String, ConfigMap) {
    let cm = serde_json::from_value(json!({ "metadata": { "name": name }, "data": data }));
    (name.to_owned(), cm.unwrap())
}

fn secret(name: &str, data: &[(&str, &[u8])]) -> (String, Secret) {
    let data = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
        .collect();
    let secret = Secret {
        data: Some(data),
        ..Secret::default()
    };
    (name.to_owned(), secret)
}

fn service(namespace: &str, name: &str, ip: &str, ports: Value, created: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": namespace, "creationTimestamp": created },
        "spec": { "clusterIP": ip, "ports": ports },
    }))
    .unwrap()
}

fn kubernetes_service() -> Service {
    let ports = json!([{ "name": "https", "port": 443, "protocol": "TCP" }]);
    service(
        "default",
        "kubernetes",
        "10.96.0.1",
        ports,
        "2023-06-01T00:00:00Z",
    )
}

fn sources(
    config_maps: Vec<(String, ConfigMap)>,
    secrets: Vec<(String, Secret)>,
    services: Vec<Service>,
) -> Sources {
    Sources {
        config_maps: config_maps.into_iter().collect(),
        secrets: secrets.into_iter().collect(),
        services,
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn resolve_app(fields: Value, sources: &Sources) -> Result<Vec<(String, String)>, EnvError> {
    resolve(&app(fields), "app", sources)
}

const KUBERNETES_VARS: &[(&str, &str)] = &[
    ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
    ("KUBERNETES_SERVICE_PORT", "443"),
    ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
    ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
    ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
    ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
    ("KUBERNETES_PORT_443_TCP_PORT", "443"),
    ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
];

// --- containers and plain values ---

#[test]
fn unknown_container_names_the_ones_that_exist() {
    let err = resolve(&app(json!({})), "db", &Sources::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container `db` not found in pod web-1 (containers: app, sidecar)"
    );
}

#[test]
fn plain_values_in_order_and_empty_values_kept() {
    let env = json!({ "env": [
        { "name": "B", "value": "2" },
        { "name": "A", "value": "1" },
        { "name": "EMPTY" },
        { "name": "ALSO_EMPTY", "value": "" },
    ]});
    let got = resolve_app(env, &Sources::default()).unwrap();
    assert_eq!(
        got,
        vars(&[("B", "2"), ("A", "1"), ("EMPTY", ""), ("ALSO_EMPTY", "")])
    );
}

#[test]
fn no_env_at_all_is_empty() {
    assert_eq!(resolve_app(json!({}), &Sources::default()).unwrap(), vec![]);
}

// --- expansion ---

#[test]
fn expand_follows_kubernetes_semantics() {
    let known = BTreeMap::from([("A", "alpha"), ("B", "$(A)"), ("EMPTY", "")]);
    let expand = |s: &str| expand(s, |name| known.get(name).copied());
    assert_eq!(expand("$(A)"), "alpha");
    assert_eq!(expand("x$(A)y$(A)z"), "xalphayalphaz");
    assert_eq!(expand("$$(A)"), "$(A)");
    assert_eq!(expand("$$$(A)"), "$alpha");
    assert_eq!(expand("$$$$"), "$$");
    assert_eq!(expand("$(UNKNOWN)"), "$(UNKNOWN)");
    assert_eq!(expand("$(EMPTY)-"), "-");
    // Values are not expanded again.
    assert_eq!(expand("$(B)"), "$(A)");
    // Unterminated references and lone operators stay as written.
    assert_eq!(expand("$(A"), "$(A");
    assert_eq!(expand("a $( b"), "a $( b");
    assert_eq!(expand("$(A $(A)"), "$(A $(A)");
    assert_eq!(expand("$()"), "$()");
    assert_eq!(expand("$"), "$");
    assert_eq!(expand("cost: 5$"), "cost: 5$");
    assert_eq!(expand("$A ${A} $1"), "$A ${A} $1");
    assert_eq!(expand("$é$(A)ü"), "$éalphaü");
    assert_eq!(expand(""), "");
    assert_eq!(expand("no refs"), "no refs");
}

#[test]
fn env_values_expand_against_earlier_definitions_only() {
    let env = json!({
        "envFrom": [{ "configMapRef": { "name": "cfg" } }],
        "env": [
            { "name": "HOST", "value": "db.$(ZONE)" },
            { "name": "URL", "value": "postgres://$(HOST):$(PORT)/$(LATER)" },
            { "name": "LATER", "value": "x" },
            { "name": "LITERAL", "value": "$$(HOST)" },
        ],
    });
    let src = sources(
        vec![config_map("cfg", json!({ "ZONE": "eu", "PORT": "5432" }))],
        vec![],
        vec![],
    );
    let got = resolve_app(env, &src).unwrap();
    assert_eq!(
        got,
        vars(&[
            ("PORT", "5432"),
            ("ZONE", "eu"),
            ("HOST", "db.eu"),
            ("URL", "postgres://db.eu:5432/$(LATER)"),
            ("LATER", "x"),
            ("LITERAL", "$(HOST)"),
        ])
    );
}

#[test]
fn values_from_sources_are_not_expanded() {
    let env = json!({ "env": [
        { "name": "A", "value": "1" },
        { "name": "B", "valueFrom": { "configMapKeyRef": { "name": "cfg", "key": "b" } } },
    ]});
    let src = sources(
        vec![config_map("cfg", json!({ "b": "$(A)" }))],
        vec![],
        vec![],
    );
    let got = resolve_app(env, &src).unwrap();
    assert_eq!(got, vars(&[("A", "1"), ("B", "$(A)")]));
}

// --- override order ---

#[test]
fn later_definitions_win_at_the_first_position() {
    let env = json!({
        "envFrom": [
            { "configMapRef": { "name": "cfg" } },
            { "secretRef": { "name": "creds" } },
        ],
        "env": [
            { "name": "Z", "value": "from-env" },
            { "name": "NEW", "value": "1" },
            { "name": "Z", "value": "again-$(Z)" },
        ],
    });
    let src = sources(
        vec![config_map("cfg", json!({ "A": "cm", "Z": "cm" }))],
        vec![secret("creds", &[("A", b"secret"), ("B", b"secret")])],
        vec![],
    );
    let got = resolve_app(env, &src).unwrap();
    assert_eq!(
        got,
        vars(&[
            ("A", "secret"),
            ("Z", "again-from-env"),
            ("B", "secret"),
            ("NEW", "1"),
        ])
    );
}

#[test]
fn a_definition_that_resolves_to_nothing_keeps_the_earlier_value() {
    let env = json!({
        "envFrom": [{ "configMapRef": { "name": "cfg" } }],
        "env": [
            { "name": "A", "valueFrom": { "configMapKeyRef": { "name": "cfg", "key": "nope", "optional": true } } },
            { "name": "B", "valueFrom": { "secretKeyRef": { "name": "gone", "key": "k", "optional": true } } },
        ],
    });
    let src = sources(
        vec![config_map("cfg", json!({ "A": "kept" }))],
        vec![],
        vec![],
    );
    assert_eq!(resolve_app(env, &src).unwrap(), vars(&[("A", "kept")]));
}

// --- envFrom ---

#[test]
fn env_from_prefix_and_invalid_keys() {
    let env = json!({ "envFrom": [
        { "configMapRef": { "name": "cfg" }, "prefix": "CFG_" },
        { "configMapRef": { "name": "cfg" } },
    ]});
    let data = json!({ "ok": "1", "1st": "2", "has space": "3", "dotted.name-x": "4" });
    let src = sources(vec![config_map("cfg", data)], vec![], vec![]);
    let got = resolve_app(env, &src).unwrap();
    assert_eq!(
        got,
        vars(&[
            ("CFG_1st", "2"),
            ("CFG_dotted.name-x", "4"),
            ("CFG_ok", "1"),
            // `1st` and `has space` are not env var names without the prefix.
            ("dotted.name-x", "4"),
            ("ok", "1"),
        ])
    );
}

#[test]
fn env_var_names_follow_kubernetes() {
    for good in ["A", "a_b", "_x", "-x", ".x", "x.y-z", "X1", "._"] {
        assert!(is_env_var_name(good), "{good}");
    }
    for bad in ["", "1A", "a b", "a=b", ".", "..", "..x", "é", "a\n"] {
        assert!(!is_env_var_name(bad), "{bad:?}");
    }
}

#[test]
fn env_from_missing_sources() {
    let optional = json!({ "envFrom": [
        { "configMapRef": { "name": "cfg", "optional": true } },
        { "secretRef": { "name": "creds", "optional": true } },
    ]});
    assert_eq!(resolve_app(optional, &Sources::default()).unwrap(), vec![]);

    let required = json!({ "envFrom": [{ "secretRef": { "name": "creds" } }] });
    let err = resolve_app(required, &Sources::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Secret `creds` referenced by envFrom of container `app` not found in namespace shop"
    );
    let required = json!({ "envFrom": [{ "configMapRef": { "name": "cfg", "optional": false } }] });
    let err = resolve_app(required, &Sources::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ConfigMap `cfg` referenced by envFrom of container `app` not found in namespace shop"
    );
}

#[test]
fn env_from_secret_must_be_text() {
    let env = json!({ "envFrom": [{ "secretRef": { "name": "creds" }, "prefix": "S_" }] });
    let src = sources(
        vec![],
        vec![secret("creds", &[("key", b"\xff\xfe")])],
        vec![],
    );
    let err = resolve_app(env, &src).unwrap_err();
    assert_eq!(
        err.to_string(),
        "key `key` of Secret `creds` (env var `S_key`) is not UTF-8 text"
    );
}

#[test]
fn env_from_ignores_binary_data_of_config_maps() {
    let env = json!({ "envFrom": [{ "configMapRef": { "name": "cfg" } }] });
    let (name, mut cm) = config_map("cfg", json!({ "TEXT": "t" }));
    cm.binary_data = Some(BTreeMap::from([(
        "BIN".to_owned(),
        ByteString(b"b".to_vec()),
    )]));
    let src = sources(vec![(name, cm)], vec![], vec![]);
    assert_eq!(resolve_app(env, &src).unwrap(), vars(&[("TEXT", "t")]));
}

// --- valueFrom: ConfigMap and Secret keys ---

#[test]
fn key_refs() {
    let env = json!({ "env": [
        { "name": "LEVEL", "valueFrom": { "configMapKeyRef": { "name": "cfg", "key": "log.level" } } },
        { "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "password" } } },
        { "name": "MAYBE", "valueFrom": { "configMapKeyRef": { "name": "absent", "key": "k", "optional": true } } },
        { "name": "MAYBE_KEY", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "nope", "optional": true } } },
    ]});
    let src = sources(
        vec![config_map("cfg", json!({ "log.level": "debug" }))],
        vec![secret("creds", &[("password", "s3cr\u{e9}t\n".as_bytes())])],
        vec![],
    );
    let got = resolve_app(env, &src).unwrap();
    assert_eq!(
        got,
        vars(&[("LEVEL", "debug"), ("PASSWORD", "s3cr\u{e9}t\n")])
    );
}

#[test]
fn key_ref_errors_name_the_object_and_the_variable() {
    let src = sources(
        vec![config_map("cfg", json!({}))],
        vec![secret("creds", &[("bin", b"\x00\x9f")])],
        vec![],
    );
    let cases = [
        (
            json!({ "configMapKeyRef": { "name": "other", "key": "k" } }),
            "ConfigMap `other` referenced by env var `V` not found in namespace shop",
        ),
        (
            json!({ "configMapKeyRef": { "name": "cfg", "key": "k" } }),
            "key `k` not found in ConfigMap `cfg` referenced by env var `V`",
        ),
        (
            json!({ "secretKeyRef": { "name": "nope", "key": "k" } }),
            "Secret `nope` referenced by env var `V` not found in namespace shop",
        ),
        (
            json!({ "secretKeyRef": { "name": "creds", "key": "k", "optional": false } }),
            "key `k` not found in Secret `creds` referenced by env var `V`",
        ),
        (
            json!({ "secretKeyRef": { "name": "creds", "key": "bin" } }),
            "key `bin` of Secret `creds` (env var `V`) is not UTF-8 text",
        ),
        (
            json!({ "fieldRef": { "fieldPath": "spec.hostname" } }),
            "env var `V`: fieldRef `spec.hostname` is not supported",
        ),
        (
            json!({ "resourceFieldRef": { "resource": "limits.nvidia.com/gpu" } }),
            "env var `V`: resourceFieldRef `limits.nvidia.com/gpu` is not supported",
        ),
        (
            json!({ "resourceFieldRef": { "resource": "requests.cpu", "divisor": "a lot" } }),
            "env var `V`: `a lot` is not a usable Kubernetes quantity",
        ),
    ];
    for (value_from, message) in cases {
        let env = json!({ "env": [{ "name": "V", "valueFrom": value_from }] });
        let err = resolve_app(env, &src).unwrap_err();
        assert_eq!(err.to_string(), message);
    }
}

#[test]
fn a_value_wins_over_value_from() {
    let env = json!({ "env": [{
        "name": "V",
        "value": "literal",
        "valueFrom": { "configMapKeyRef": { "name": "absent", "key": "k" } },
    }]});
    let got = resolve_app(env, &Sources::default()).unwrap();
    assert_eq!(got, vars(&[("V", "literal")]));
}

// --- valueFrom: fieldRef ---

#[test]
fn field_refs() {
    let paths = [
        ("NAME", "metadata.name", "web-1"),
        ("NS", "metadata.namespace", "shop"),
        (
            "UID",
            "metadata.uid",
            "0d5a3c1e-0000-4000-8000-000000000001",
        ),
        ("APP", "metadata.labels['app']", "web"),
        ("NO_LABEL", "metadata.labels['absent']", ""),
        ("OWNER", "metadata.annotations['owner']", "team-a"),
        ("NODE", "spec.nodeName", "node-7"),
        ("SA", "spec.serviceAccountName", "shop-sa"),
        ("HOST_IP", "status.hostIP", "192.168.1.7"),
        ("HOST_IPS", "status.hostIPs", "192.168.1.7,fd00::7"),
        ("POD_IP", "status.podIP", "10.1.2.3"),
        ("POD_IPS", "status.podIPs", "10.1.2.3,fd00:1::3"),
    ];
    let env: Vec<Value> = paths
        .iter()
        .map(|(name, path, _)| {
            json!({ "name": name, "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": path } } })
        })
        .collect();
    let got = resolve_app(json!({ "env": env }), &Sources::default()).unwrap();
    let want: Vec<_> = paths.iter().map(|(n, _, v)| (*n, *v)).collect();
    assert_eq!(got, vars(&want));
}

#[test]
fn field_subscripts_parse_like_kubernetes() {
    assert_eq!(
        split_subscript("metadata.labels['a.b/c']"),
        Some(("metadata.labels", "a.b/c"))
    );
    assert_eq!(split_subscript("metadata.labels"), None);
    assert_eq!(split_subscript("['k']"), None);
    assert_eq!(split_subscript("metadata.labels['k'"), None);
}

// --- valueFrom: resourceFieldRef ---

#[test]
fn resource_field_refs() {
    let resources = json!({
        "limits": { "cpu": "1500m", "memory": "256Mi", "ephemeral-storage": "1Gi", "hugepages-2Mi": "4Mi" },
        "requests": { "cpu": "0.1", "memory": "100M" },
    });
    let refs = [
        ("CPU_LIMIT", "limits.cpu", None, Some("2")),
        ("CPU_LIMIT_M", "limits.cpu", Some("1m"), Some("1500")),
        ("CPU_REQ_M", "requests.cpu", Some("1m"), Some("100")),
        ("CPU_REQ", "requests.cpu", Some("0"), Some("1")),
        ("MEM_LIMIT", "limits.memory", None, Some("268435456")),
        ("MEM_LIMIT_MI", "limits.memory", Some("1Mi"), Some("256")),
        ("MEM_REQ_MI", "requests.memory", Some("1Mi"), Some("96")),
        (
            "DISK_LIMIT_M",
            "limits.ephemeral-storage",
            Some("1M"),
            Some("1074"),
        ),
        ("DISK_REQ", "requests.ephemeral-storage", None, Some("0")),
        (
            "HUGE_LIMIT_MI",
            "limits.hugepages-2Mi",
            Some("1Mi"),
            Some("4"),
        ),
        ("HUGE_REQ", "requests.hugepages-2Mi", None, Some("0")),
    ];
    let env: Vec<Value> = refs
        .iter()
        .map(|(name, resource, divisor, _)| {
            let mut sel = json!({ "containerName": "app", "resource": resource });
            if let Some(d) = divisor {
                sel["divisor"] = json!(d);
            }
            json!({ "name": name, "valueFrom": { "resourceFieldRef": sel } })
        })
        .collect();
    let got = resolve_app(
        json!({ "env": env, "resources": resources }),
        &Sources::default(),
    );
    let want: Vec<_> = refs.iter().map(|(n, _, _, v)| (*n, v.unwrap())).collect();
    assert_eq!(got.unwrap(), vars(&want));
}

#[test]
fn missing_limits_are_left_out_but_missing_requests_are_zero() {
    let env = json!({ "env": [
        { "name": "CPU", "valueFrom": { "resourceFieldRef": { "resource": "limits.cpu" } } },
        { "name": "MEM", "valueFrom": { "resourceFieldRef": { "resource": "limits.memory" } } },
        { "name": "DISK", "valueFrom": { "resourceFieldRef": { "resource": "limits.ephemeral-storage" } } },
        { "name": "CPU_REQ", "valueFrom": { "resourceFieldRef": { "resource": "requests.cpu" } } },
    ]});
    let got = resolve_app(env, &Sources::default()).unwrap();
    assert_eq!(got, vars(&[("CPU_REQ", "0")]));
}

#[test]
fn quantities_parse_exactly() {
    let milli = |s: &str| ParsedQuantity::parse(s).and_then(|q| q.scaled_ceil(3));
    let units = |s: &str| ParsedQuantity::parse(s).and_then(|q| q.scaled_ceil(0));
    assert_eq!(milli("0.1"), Some(100));
    assert_eq!(milli("100m"), Some(100));
    assert_eq!(milli("1"), Some(1000));
    assert_eq!(milli(".5"), Some(500));
    assert_eq!(milli("5."), Some(5000));
    assert_eq!(milli("+2"), Some(2000));
    assert_eq!(milli("1n"), Some(1));
    assert_eq!(milli("1500u"), Some(2));
    assert_eq!(milli("0"), Some(0));
    assert_eq!(units("1.5Gi"), Some(1_610_612_736));
    assert_eq!(units("1Ki"), Some(1024));
    assert_eq!(units("1Ei"), Some(1 << 60));
    assert_eq!(units("128974848"), Some(128_974_848));
    assert_eq!(units("129e6"), Some(129_000_000));
    assert_eq!(units("129E+6"), Some(129_000_000));
    assert_eq!(units("1e-3"), Some(1));
    assert_eq!(units("2k"), Some(2000));
    assert_eq!(units("1E"), Some(1_000_000_000_000_000_000));
    assert_eq!(units("123Mi"), Some(128_974_848));
    assert_eq!(units("-1.5"), Some(-2));
    for bad in [
        "", ".", "-", "Ki", "1.2.3", "1Ki2", "1 Ki", "1e", "1e+", "1e1.5", "1x", "1ki",
    ] {
        assert_eq!(ParsedQuantity::parse(bad), None, "{bad:?}");
    }
    assert_eq!(units("99999999999999999999999999999999999999999"), None);
}

#[test]
fn ceil_div_rounds_up() {
    assert_eq!(ceil_div(1500, 1000), 2);
    assert_eq!(ceil_div(2000, 1000), 2);
    assert_eq!(ceil_div(0, 7), 0);
    assert_eq!(ceil_div(-1500, 1000), -1);
}

// --- service links ---

fn shop_services() -> Vec<Service> {
    vec![
        kubernetes_service(),
        service(
            "shop",
            "my-db",
            "10.0.0.5",
            json!([
                { "name": "pg", "port": 5432 },
                { "name": "metrics-http", "port": 9187, "protocol": "TCP" },
            ]),
            "2023-12-31T23:59:59Z",
        ),
        service(
            "shop",
            "dns",
            "fd00::a",
            json!([{ "port": 53, "protocol": "UDP" }]),
            "2023-12-01T00:00:00Z",
        ),
        // Headless, missing IP, other namespace, created after the pod: none of them.
        service(
            "shop",
            "headless",
            "None",
            json!([{ "port": 80 }]),
            "2023-01-01T00:00:00Z",
        ),
        service(
            "shop",
            "pending",
            "",
            json!([{ "port": 80 }]),
            "2023-01-01T00:00:00Z",
        ),
        service(
            "other",
            "elsewhere",
            "10.0.0.9",
            json!([{ "port": 80 }]),
            "2023-01-01T00:00:00Z",
        ),
        service(
            "shop",
            "newer",
            "10.0.0.10",
            json!([{ "port": 80 }]),
            "2024-01-01T00:00:01Z",
        ),
        // Same second as the pod: kubelet certainly saw it.
        service(
            "shop",
            "same-second",
            "10.0.0.11",
            json!([{ "port": 80 }]),
            "2024-01-01T00:00:00Z",
        ),
    ]
}

#[test]
fn service_links_name_every_port() {
    let pod = app_in(json!({}), json!({}));
    let got = resolve(&pod, "app", &sources(vec![], vec![], shop_services())).unwrap();
    let mut want = vars(&[
        ("DNS_SERVICE_HOST", "fd00::a"),
        ("DNS_SERVICE_PORT", "53"),
        ("DNS_PORT", "udp://[fd00::a]:53"),
        ("DNS_PORT_53_UDP", "udp://[fd00::a]:53"),
        ("DNS_PORT_53_UDP_PROTO", "udp"),
        ("DNS_PORT_53_UDP_PORT", "53"),
        ("DNS_PORT_53_UDP_ADDR", "fd00::a"),
    ]);
    want.extend(vars(KUBERNETES_VARS));
    want.extend(vars(&[
        ("MY_DB_SERVICE_HOST", "10.0.0.5"),
        ("MY_DB_SERVICE_PORT", "5432"),
        ("MY_DB_SERVICE_PORT_PG", "5432"),
        ("MY_DB_SERVICE_PORT_METRICS_HTTP", "9187"),
        ("MY_DB_PORT", "tcp://10.0.0.5:5432"),
        ("MY_DB_PORT_5432_TCP", "tcp://10.0.0.5:5432"),
        ("MY_DB_PORT_5432_TCP_PROTO", "tcp"),
        ("MY_DB_PORT_5432_TCP_PORT", "5432"),
        ("MY_DB_PORT_5432_TCP_ADDR", "10.0.0.5"),
        ("MY_DB_PORT_9187_TCP", "tcp://10.0.0.5:9187"),
        ("MY_DB_PORT_9187_TCP_PROTO", "tcp"),
        ("MY_DB_PORT_9187_TCP_PORT", "9187"),
        ("MY_DB_PORT_9187_TCP_ADDR", "10.0.0.5"),
        ("SAME_SECOND_SERVICE_HOST", "10.0.0.11"),
        ("SAME_SECOND_SERVICE_PORT", "80"),
        ("SAME_SECOND_PORT", "tcp://10.0.0.11:80"),
        ("SAME_SECOND_PORT_80_TCP", "tcp://10.0.0.11:80"),
        ("SAME_SECOND_PORT_80_TCP_PROTO", "tcp"),
        ("SAME_SECOND_PORT_80_TCP_PORT", "80"),
        ("SAME_SECOND_PORT_80_TCP_ADDR", "10.0.0.11"),
    ]));
    assert_eq!(got, want);
}

#[test]
fn disabled_service_links_keep_the_kubernetes_service() {
    let got = resolve_app(json!({}), &sources(vec![], vec![], shop_services())).unwrap();
    assert_eq!(got, vars(KUBERNETES_VARS));
}

#[test]
fn the_container_start_decides_which_services_were_seen() {
    let mut pod = app_in(json!({}), json!({}));
    let status: k8s_openapi::api::core::v1::ContainerStatus = serde_json::from_value(json!({
        "name": "app", "image": "web", "imageID": "", "ready": true, "restartCount": 1,
        "state": { "running": { "startedAt": "2024-02-01T00:00:00Z" } },
    }))
    .unwrap();
    pod.status.as_mut().unwrap().container_statuses = Some(vec![status]);
    let got = resolve(&pod, "app", &sources(vec![], vec![], shop_services())).unwrap();
    assert!(got
        .iter()
        .any(|(k, v)| k == "NEWER_SERVICE_HOST" && v == "10.0.0.10"));
    // The sidecar has no status: the pod's creation counts.
    let got = resolve(&pod, "sidecar", &sources(vec![], vec![], shop_services())).unwrap();
    assert!(!got.iter().any(|(k, _)| k.starts_with("NEWER_")));
}

#[test]
fn a_local_kubernetes_service_shadows_the_default_one() {
    let local = service(
        "shop",
        "kubernetes",
        "10.0.0.99",
        json!([{ "port": 8080 }]),
        "2023-01-01T00:00:00Z",
    );
    for services in [
        vec![kubernetes_service(), local.clone()],
        vec![local.clone(), kubernetes_service()],
    ] {
        let pod = app_in(json!({}), json!({}));
        let got = resolve(&pod, "app", &sources(vec![], vec![], services)).unwrap();
        assert_eq!(
            got[0],
            ("KUBERNETES_SERVICE_HOST".to_owned(), "10.0.0.99".to_owned())
        );
    }
    // Without service links only `default/kubernetes` counts.
    let got = resolve_app(
        json!({}),
        &sources(vec![], vec![], vec![local, kubernetes_service()]),
    );
    assert_eq!(got.unwrap(), vars(KUBERNETES_VARS));
}

#[test]
fn env_overrides_service_links_and_can_use_them() {
    let env = json!({ "env": [
        { "name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)" },
        { "name": "KUBERNETES_SERVICE_PORT", "value": "6443" },
    ]});
    let got = resolve_app(env, &sources(vec![], vec![], vec![kubernetes_service()])).unwrap();
    let mut want = vars(KUBERNETES_VARS);
    want[1].1 = "6443".to_owned();
    want.extend(vars(&[("API", "https://10.96.0.1:443")]));
    assert_eq!(got, want);
}

// --- what container_env fetches ---

#[test]
fn references_are_the_sources_actually_read() {
    let pod = app(json!({
        "envFrom": [
            { "configMapRef": { "name": "cfg" } },
            { "secretRef": { "name": "creds" } },
        ],
        "env": [
            { "name": "A", "valueFrom": { "configMapKeyRef": { "name": "cfg2", "key": "k" } } },
            { "name": "B", "valueFrom": { "secretKeyRef": { "name": "tls", "key": "k" } } },
            { "name": "C", "value": "x", "valueFrom": { "secretKeyRef": { "name": "unused", "key": "k" } } },
        ],
    }));
    let (config_maps, secrets) = references(find_container(&pod, "app").unwrap());
    assert_eq!(Vec::from_iter(config_maps), ["cfg", "cfg2"]);
    assert_eq!(Vec::from_iter(secrets), ["creds", "tls"]);
}

// --- rendering ---

/// Values that break naive quoting.
fn tricky() -> Vec<(String, String)> {
    vars(&[
        ("PLAIN", "hello"),
        ("EMPTY", ""),
        ("SPACES", "  two  spaces  "),
        ("SINGLE", "it's 'quoted'"),
        ("DOUBLE", "say \"hi\""),
        ("DOLLAR", "$HOME $(whoami) ${X} `id`"),
        ("BACKSLASH", r"C:\path\n\\ \'"),
        ("NEWLINES", "line1\nline2\n"),
        ("TRAILING_NL", "x\n\n"),
        ("CR", "a\rb"),
        ("TAB", "a\tb"),
        ("UNICODE", "gr\u{fc}\u{df} \u{1f600}"),
        ("HASH", "#not a comment"),
        ("EQUALS", "a=b=c"),
        ("GLOB", "* ? [a-z]"),
    ])
}

#[test]
fn sh_quotes_with_single_quotes() {
    let rendered = render(&vars(&[("A", "it's"), ("B", "$x\n")]), EnvSyntax::Sh);
    assert_eq!(rendered.text, "A='it'\\''s'\nB='$x\n'\n");
    assert!(rendered.skipped.is_empty());
}

#[test]
fn sh_skips_what_a_shell_cannot_assign() {
    let input = vars(&[("my.var", "1"), ("1X", "2"), ("OK_1", "3"), ("NUL", "a\0b")]);
    let rendered = render(&input, EnvSyntax::Sh);
    assert_eq!(rendered.text, "OK_1='3'\n");
    let skipped: Vec<_> = rendered
        .skipped
        .iter()
        .map(|s| (s.name.as_str(), s.reason))
        .collect();
    assert_eq!(
        skipped,
        [
            ("my.var", SkipReason::NotShellName),
            ("1X", SkipReason::NotShellName),
            ("NUL", SkipReason::Nul),
        ]
    );
}

/// A file of its own in the temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("tether-env-test-{}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn sh_file_sourced_by_a_real_shell_reproduces_every_byte() {
    let input = tricky();
    let rendered = render(&input, EnvSyntax::Sh);
    assert!(rendered.skipped.is_empty());
    let dir = TempDir::new();
    std::fs::write(dir.0.join("env-file"), &rendered.text).unwrap();
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg("set -a; . ./env-file; env -0")
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let seen: BTreeMap<&str, &str> = stdout
        .split('\0')
        .filter_map(|entry| entry.split_once('='))
        .collect();
    for (name, value) in &input {
        assert_eq!(seen.get(name.as_str()), Some(&value.as_str()), "{name}");
    }
}

/// `docker run --env-file`'s reader: lines (`\n`, a `\r` before it dropped), leading whitespace
/// trimmed, `#` comments, `NAME=value` with the value untouched.
fn parse_docker_env_file(text: &str) -> Vec<(String, String)> {
    text.split_terminator('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line).trim_start())
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap();
            assert!(!name.contains([' ', '\t']), "docker rejects {name:?}");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn docker_round_trip_and_skips() {
    let mut input = tricky();
    input.extend(vars(&[
        ("ENDS_CR", "a\r"),
        ("#HASHED", "1"),
        ("has space", "1"),
        ("my.var", "kept"),
    ]));
    input.push(("HUGE".to_owned(), "x".repeat(64 * 1024)));
    let rendered = render(&input, EnvSyntax::Docker);
    let skipped: Vec<_> = rendered
        .skipped
        .iter()
        .map(|s| (s.name.as_str(), s.reason))
        .collect();
    assert_eq!(
        skipped,
        [
            ("NEWLINES", SkipReason::LineBreak),
            ("TRAILING_NL", SkipReason::LineBreak),
            ("ENDS_CR", SkipReason::LineBreak),
            ("#HASHED", SkipReason::NotDockerName),
            ("has space", SkipReason::NotDockerName),
            ("HUGE", SkipReason::TooLong),
        ]
    );
    let written: Vec<_> = input
        .iter()
        .filter(|(name, _)| !skipped.iter().any(|(s, _)| s == name))
        .cloned()
        .collect();
    assert_eq!(parse_docker_env_file(&rendered.text), written);
    assert!(rendered
        .text
        .starts_with("PLAIN=hello\nEMPTY=\nSPACES=  two  spaces  \n"));
}

#[test]
fn json_keeps_order_and_round_trips() {
    let input = tricky();
    let rendered = render(&input, EnvSyntax::Json);
    assert!(rendered.skipped.is_empty());
    let parsed: BTreeMap<String, String> = serde_json::from_str(&rendered.text).unwrap();
    assert_eq!(parsed, input.iter().cloned().collect());
    let positions: Vec<_> = input
        .iter()
        .map(|(name, _)| rendered.text.find(&format!("\"{name}\": ")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
}

#[test]
fn json_text() {
    let rendered = render(&vars(&[("A", "1"), ("my.var", "\"x\"\n")]), EnvSyntax::Json);
    assert_eq!(
        rendered.text,
        "{\n  \"A\": \"1\",\n  \"my.var\": \"\\\"x\\\"\\n\"\n}\n"
    );
    assert_eq!(render(&[], EnvSyntax::Json).text, "{}\n");
    assert_eq!(render(&[], EnvSyntax::Sh).text, "");
}

#[test]
fn syntax_names_on_the_command_line_and_the_wire() {
    use clap::ValueEnum;
    for (syntax, name) in [
        (EnvSyntax::Sh, "sh"),
        (EnvSyntax::Docker, "docker"),
        (EnvSyntax::Json, "json"),
    ] {
        assert_eq!(EnvSyntax::from_str(name, false), Ok(syntax));
        assert_eq!(
            serde_json::to_string(&syntax).unwrap(),
            format!("\"{name}\"")
        );
        assert_eq!(
            serde_json::from_str::<EnvSyntax>(&format!("\"{name}\"")).unwrap(),
            syntax
        );
    }
}

#[test]
fn skipped_reads_well() {
    let skipped = Skipped {
        name: "my.var".to_owned(),
        reason: SkipReason::NotShellName,
    };
    assert_eq!(
        skipped.to_string(),
        "`my.var`: not a valid shell variable name (use --env-syntax json)"
    );
}
