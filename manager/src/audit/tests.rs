use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tether_proto::{InterceptFilter, InterceptInfo, InterceptMode};

use super::*;

fn ann() -> Subject {
    Subject {
        user: "ann".into(),
        groups: vec!["devs".into(), "system:authenticated".into()],
    }
}

/// 2024-05-01T12:00:00Z plus `micros`.
fn at(micros: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800) + Duration::from_micros(micros)
}

fn orders(filter: InterceptFilter) -> InterceptInfo {
    InterceptInfo {
        id: 7,
        name: "orders".into(),
        namespace: "shop".into(),
        workload: "Deployment/orders".into(),
        port: 8080,
        service_port: "http".into(),
        owner: "ann (ann@laptop)".into(),
        session_id: "00000000000000aa".into(),
        filter,
        mode: InterceptMode::Take,
    }
}

fn personal() -> InterceptFilter {
    InterceptFilter {
        headers: vec!["x-dev=ann".into()],
        path_prefix: None,
    }
}

fn line(record: Record) -> Value {
    let event = event(record, "6f1c1a2e-1b7e-4a43-9d43-0d1c2b8f9e10", at(2_500));
    serde_json::to_value(event).unwrap()
}

#[test]
fn an_intercept_is_an_audit_event_with_the_user_and_the_filter() {
    let record = Record::new(Action::InterceptCreated, &ann(), at(1_000))
        .peer("10.244.0.1".parse().unwrap(), "ann@laptop")
        .intercept(&orders(personal()));
    assert_eq!(
        line(record),
        json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": "6f1c1a2e-1b7e-4a43-9d43-0d1c2b8f9e10",
            "stage": "ResponseComplete",
            "requestURI": "/apis/tether.dev/v1/namespaces/shop/intercepts/orders",
            "verb": "create",
            "user": {"username": "ann", "groups": ["devs", "system:authenticated"]},
            "sourceIPs": ["10.244.0.1"],
            "userAgent": "ann@laptop",
            "objectRef": {
                "resource": "intercepts",
                "namespace": "shop",
                "name": "orders",
                "apiGroup": "tether.dev"
            },
            "responseStatus": {"code": 201, "status": "Success"},
            "requestReceivedTimestamp": "2024-05-01T12:00:00.001000Z",
            "stageTimestamp": "2024-05-01T12:00:00.002500Z",
            "annotations": {
                "tether.dev/action": "intercept-created",
                "tether.dev/workload": "Deployment/orders",
                "tether.dev/port": "8080",
                "tether.dev/service-port": "http",
                "tether.dev/filter": "x-dev=ann",
                "tether.dev/mode": "take",
                "tether.dev/intercept-id": "7",
                "tether.dev/session": "00000000000000aa"
            }
        })
    );
}

#[test]
fn a_mirror_is_audited_as_one() {
    let mirror = InterceptInfo {
        mode: InterceptMode::Mirror,
        ..orders(InterceptFilter::default())
    };
    let record = Record::new(Action::InterceptEnded, &ann(), at(0)).intercept(&mirror);
    let v = line(record);
    assert_eq!(v["annotations"]["tether.dev/mode"], "mirror");
    assert_eq!(v["annotations"]["tether.dev/filter"], "all requests");
    assert_eq!(v["verb"], "delete");
}

#[test]
fn a_refusal_is_a_403_with_the_reason() {
    let why = "forbidden by RBAC: user \"bob\" may not create intercepts.tether.dev in namespace \"kube-system\"";
    let bob = Subject {
        user: "bob".into(),
        groups: Vec::new(),
    };
    let record = Record::new(Action::InterceptRefused, &bob, at(0))
        .object(Some("kube-system"), "coredns")
        .note("workload", "Deployment/coredns")
        .refused(why);
    let v = line(record);
    assert_eq!(v["verb"], "create");
    assert_eq!(
        v["responseStatus"],
        json!({"code": 403, "status": "Failure", "reason": "Forbidden", "message": why})
    );
    assert_eq!(v["annotations"]["tether.dev/action"], "intercept-refused");
    // Nothing unknown is made up: no groups, no source, no client.
    assert_eq!(v["user"], json!({"username": "bob"}));
    assert!(v.get("sourceIPs").is_none() && v.get("userAgent").is_none());
}

#[test]
fn each_action_has_its_verb_and_resource() {
    let cases = [
        (
            Action::SessionStarted,
            "create",
            "sessions",
            "tether.dev",
            201,
        ),
        (
            Action::SessionEnded,
            "delete",
            "sessions",
            "tether.dev",
            200,
        ),
        (
            Action::CertificateIssued,
            "sign",
            "certificatesigningrequests",
            "certificates.k8s.io",
            200,
        ),
        (
            Action::InterceptEnded,
            "delete",
            "intercepts",
            "tether.dev",
            200,
        ),
        (
            Action::ContainerRestored,
            "patch",
            "intercepts",
            "tether.dev",
            200,
        ),
        (
            Action::AgentCredentialIssued,
            "create",
            "agentcredentials",
            "tether.dev",
            201,
        ),
        (Action::AgentRefused, "connect", "agents", "tether.dev", 200),
        (Action::DialRefused, "connect", "dials", "tether.dev", 200),
        (Action::FilesOpened, "connect", "files", "tether.dev", 200),
    ];
    for (action, verb, resource, group, code) in cases {
        let v = line(Record::new(action, &ann(), at(0)).object(None, "x"));
        assert_eq!(v["verb"], verb, "{action:?}");
        assert_eq!(v["objectRef"]["resource"], resource, "{action:?}");
        assert_eq!(v["objectRef"]["apiGroup"], group, "{action:?}");
        assert_eq!(v["responseStatus"]["code"], code, "{action:?}");
        assert_eq!(v["annotations"]["tether.dev/action"], action.name());
        assert_eq!(
            v["requestURI"],
            format!("/apis/{group}/v1/{resource}/x"),
            "{action:?}"
        );
    }
}

#[test]
fn filters_read_as_words() {
    assert_eq!(filter_text(&InterceptFilter::default()), "all requests");
    assert_eq!(filter_text(&personal()), "x-dev=ann");
    let both = InterceptFilter {
        headers: vec!["x-dev=ann".into(), "x-tenant=7".into()],
        path_prefix: Some("/api".into()),
    };
    assert_eq!(filter_text(&both), "x-dev=ann, x-tenant=7, path /api");
}

#[test]
fn timestamps_are_rfc3339_utc_with_microseconds() {
    assert_eq!(micro_time(at(0)), "2024-05-01T12:00:00.000000Z");
    assert_eq!(micro_time(at(123_456)), "2024-05-01T12:00:00.123456Z");
    // Nanoseconds below a microsecond are cut, not rounded into the next one.
    assert_eq!(
        micro_time(at(1) + Duration::from_nanos(999)),
        "2024-05-01T12:00:00.000001Z"
    );
}

#[test]
fn a_client_hint_that_is_empty_is_left_out() {
    let v =
        line(Record::new(Action::SessionStarted, &ann(), at(0)).peer([127, 0, 0, 1].into(), ""));
    assert_eq!(v["sourceIPs"], json!(["127.0.0.1"]));
    assert!(v.get("userAgent").is_none());
}

#[test]
fn the_target_is_stdout_a_file_or_off() {
    assert_eq!("-".parse::<AuditTarget>().unwrap(), AuditTarget::Stdout);
    assert_eq!("off".parse::<AuditTarget>().unwrap(), AuditTarget::Off);
    assert_eq!(
        "/var/log/tether/audit.log".parse::<AuditTarget>().unwrap(),
        AuditTarget::File("/var/log/tether/audit.log".into())
    );
}

#[tokio::test]
async fn the_file_sink_writes_one_json_line_per_record_in_order() {
    let dir = std::env::temp_dir().join(format!("tether-audit-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.log");
    let _ = std::fs::remove_file(&path);
    let log = AuditLog::start(&AuditTarget::File(path.clone()))
        .await
        .unwrap();
    for action in [
        Action::SessionStarted,
        Action::InterceptCreated,
        Action::SessionEnded,
    ] {
        log.record(Record::new(action, &ann(), SystemTime::now()));
    }
    drop(log);
    let lines = lines_of(&path, 3).await;
    let actions: Vec<String> = lines
        .iter()
        .map(|l| {
            let e: Event = serde_json::from_str(l).unwrap();
            assert_eq!(e.user.username, "ann");
            assert_eq!(e.audit_id.len(), 36, "a UUID: {}", e.audit_id);
            e.annotations["tether.dev/action"].clone()
        })
        .collect();
    assert_eq!(
        actions,
        ["session-started", "intercept-created", "session-ended"]
    );
    let ids: std::collections::HashSet<_> = lines.iter().collect();
    assert_eq!(ids.len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The file's lines once it has `n` (the writer task runs beside the test).
async fn lines_of(path: &std::path::Path, n: usize) -> Vec<String> {
    loop {
        let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::task::yield_now().await;
    }
}

#[test]
fn an_unopenable_file_is_an_error_naming_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let target = AuditTarget::File("/nonexistent-dir/audit.log".into());
    let error = rt.block_on(AuditLog::start(&target)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot open the audit log /nonexistent-dir/audit.log"
    );
}
