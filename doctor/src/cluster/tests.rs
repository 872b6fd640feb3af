use std::time::Duration;

use super::*;
use crate::check::Status;

#[test]
fn api_failures_name_their_layer_and_a_next_step() {
    let server = "https://k8s.example:6443/";
    let cases = [
        (ApiOutcome::Dns("no such host".into()), "DNS:"),
        (ApiOutcome::Tcp("connection refused".into()), "TCP:"),
        (ApiOutcome::Tls("UnknownIssuer".into()), "TLS:"),
        (ApiOutcome::Auth("401 Unauthorized".into()), "auth:"),
        (ApiOutcome::TimedOut(Duration::from_secs(5)), "within 5 s"),
    ];
    for (outcome, layer) in cases {
        let check = api_check(server, "k8s.example:6443", &outcome);
        assert_eq!(check.id, "cluster.api");
        assert_eq!(check.status, Status::Fail, "{outcome:?}");
        assert!(check.found.contains(layer), "{}", check.found);
        assert!(check.next.is_some());
    }
    let up = ApiOutcome::Reached {
        version: "v1.20.2".into(),
        minor: Some(20),
        latency: Duration::from_millis(12),
    };
    let check = api_check(server, "k8s.example:6443", &up);
    assert_eq!(check.status, Status::Ok);
    assert!(check.found.contains("12 ms"));
}

#[test]
fn version_skew_of_kubelets() {
    let kubelets = |v: &[&str]| -> Vec<(String, String)> {
        v.iter()
            .enumerate()
            .map(|(i, v)| (format!("n{i}"), v.to_string()))
            .collect()
    };
    let ok = version_check("v1.20.2", Some(20), "0.1.0", &kubelets(&["v1.20.2"]));
    assert_eq!(ok.status, Status::Ok);
    assert_eq!(
        ok.found,
        "server v1.20.2, tether 0.1.0; kubelets v1.20.2 (1 nodes)"
    );
    let newer = version_check(
        "v1.28.1",
        Some(28),
        "0.1.0",
        &kubelets(&["v1.28.1", "v1.29.0"]),
    );
    assert_eq!(newer.status, Status::Warn);
    assert!(newer.found.contains("n1 (v1.29.0)"), "{}", newer.found);
    let old = version_check("v1.28.1", Some(28), "0.1.0", &kubelets(&["v1.25.3"]));
    assert_eq!(old.status, Status::Warn);
    let ancient = version_check("v1.16.0", Some(16), "0.1.0", &[]);
    assert_eq!(ancient.status, Status::Warn);
    assert_eq!(parse_minor("20+"), Some(20));
    assert_eq!(minor_of("v1.20.2-eks-1"), Some(20));
}

#[test]
fn clock_skew_thresholds() {
    assert_eq!(clock_check(1.0).status, Status::Ok);
    let warn = clock_check(-12.0);
    assert_eq!(warn.status, Status::Warn);
    assert!(warn.found.contains("12 s behind"), "{}", warn.found);
    assert_eq!(clock_check(3600.0).status, Status::Fail);
}

#[test]
fn metrics_not_served_is_no_fault() {
    assert_eq!(metrics_check(&Metrics::NotServed).status, Status::Ok);
    let served = metrics_check(&Metrics::Nodes(vec![(
        "n1".into(),
        0.25,
        512.0 * 1024.0 * 1024.0,
    )]));
    assert_eq!(served.found, "served; usage: n1 cpu 250m memory 512Mi");
}
