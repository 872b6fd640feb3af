use serde_json::json;

use super::*;
use crate::bench::report::Check;
use guard::unix_ns_line;
use memory::{is_agent, vm_rss_kib};

fn latency(p50: f64) -> Latency {
    Latency {
        p50_us: Some(p50),
        p99_us: Some(p50 * 3.0),
        ok: 2000,
        ..Latency::default()
    }
}

fn load(path: LoadPath, p50: f64, elapsed_s: f64, rss: u64) -> LoadResult {
    LoadResult {
        path,
        latency: latency(p50),
        elapsed_s: Some(elapsed_s),
        max_rss_kib: Some(rss),
    }
}

fn trials(first: &[f64]) -> Vec<Trial> {
    first
        .iter()
        .map(|s| Trial {
            returned: Duration::from_secs_f64(s / 2.0),
            first_request: Duration::from_secs_f64(*s),
        })
        .collect()
}

fn sample() -> Report {
    Report {
        meta: vec![("workload".into(), "deployment/orders".into())],
        times: vec![
            Times {
                agent: Agent::NotInstalled,
                trials: trials(&[9.5]),
                errors: vec!["rollout timed out".into()],
            },
            Times {
                agent: Agent::Installed,
                trials: trials(&[0.4, 1.2, 0.6]),
                errors: Vec::new(),
            },
        ],
        loads: vec![
            load(LoadPath::Direct, 100.0, 0.2, 9000),
            load(LoadPath::Agent, 180.0, 0.4, 11000),
            load(LoadPath::NonMatching, 190.0, 0.4, 11500),
            load(LoadPath::Matching, 900.0, 2.0, 12000),
        ],
        idle_rss_kib: Some(8 * 1024),
        idle_after_rss_kib: Some(9 * 1024),
        errors: Vec::new(),
    }
}

fn check<'a>(checks: &'a [Check], what: &str) -> &'a Check {
    Check::find(checks, what)
}

#[test]
fn first_request_is_judged_on_the_installed_median_only() {
    let checks = sample().checks();
    let c = check(
        &checks,
        "`tether intercept` until the first intercepted request, agent already",
    );
    assert_eq!((c.measured.as_str(), c.pass), ("0.60 s", Some(true)));
    let c = check(
        &checks,
        "`tether intercept` until the first intercepted request, agent not",
    );
    assert_eq!((c.measured.as_str(), c.pass), ("9.50 s", None));
}

#[test]
fn agent_pass_through_is_judged_against_direct() {
    let checks = sample().checks();
    let c = check(
        &checks,
        "added p50 over direct: through the agent, no intercept",
    );
    assert_eq!((c.measured.as_str(), c.pass), ("80 µs", Some(true)));
    let c = check(
        &checks,
        "added p50 over direct: through the agent, header intercept, matching",
    );
    assert_eq!((c.measured.as_str(), c.pass), ("800 µs", None));
    let mut slow = sample();
    slow.loads[1].latency.p50_us = Some(250.0);
    let checks = slow.checks();
    let c = check(
        &checks,
        "added p50 over direct: through the agent, no intercept",
    );
    assert_eq!(c.pass, Some(false));
}

#[test]
fn memory_is_judged_idle_and_reported_under_load() {
    let checks = sample().checks();
    let c = check(&checks, "agent RSS, idle");
    assert_eq!((c.measured.as_str(), c.pass), ("8.0", Some(true)));
    let c = check(&checks, "agent RSS, under load");
    assert_eq!((c.measured.as_str(), c.pass), ("11.7", None));
    let mut r = sample();
    r.idle_rss_kib = None;
    let checks = r.checks();
    assert_eq!(check(&checks, "agent RSS, idle").pass, None);
}

#[test]
fn markdown_has_rates_ratios_and_failures() {
    let mut r = sample();
    r.loads[3].latency.last_error = Some("HTTP 502".into());
    let md = r.markdown();
    assert!(
        md.contains(
            "| direct to the app (pod IP, app port) | 10000 | — | 100 / 300 | — | 8.8 | 0 |"
        ),
        "{md}"
    );
    assert!(
        md.contains(
            "| through the agent, no intercept | 5000 | 0.50× | 180 / 540 | +80 | 10.7 | 0 |"
        ),
        "{md}"
    );
    assert!(
        md.contains("| already installed | 0.30 s | 0.60 s | 0.40, 1.20, 0.60 | 0 |"),
        "{md}"
    );
    assert!(
        md.contains("| not installed (install + rollout) | 4.75 s | 9.50 s | 9.50 | 1 |"),
        "{md}"
    );
    assert!(
        md.contains("- intercept, agent not installed (install + rollout): rollout timed out"),
        "{md}"
    );
    assert!(md.contains("HTTP 502"), "{md}");
}

#[test]
fn missing_runs_are_not_passes() {
    let mut r = sample();
    r.loads.retain(|l| l.path != LoadPath::Direct);
    r.times.clear();
    let checks = r.checks();
    let c = check(
        &checks,
        "added p50 over direct: through the agent, no intercept",
    );
    assert_eq!((c.measured.as_str(), c.pass), ("n/a", None));
    let c = check(
        &checks,
        "`tether intercept` until the first intercepted request, agent already",
    );
    assert_eq!((c.measured.as_str(), c.pass), ("n/a", None));
    assert!(r
        .markdown()
        .contains("| through the agent, no intercept | 5000 | n/a |"));
}

#[test]
fn a_rate_needs_successes_and_time() {
    let mut l = load(LoadPath::Agent, 100.0, 0.0, 1);
    assert_eq!(l.req_per_s(), None);
    l.elapsed_s = Some(0.5);
    l.latency.ok = 0;
    assert_eq!(l.req_per_s(), None);
}

#[test]
fn the_agent_process_is_recognised_by_its_command_line() {
    let argv = [
        "/usr/local/bin/tether-agent",
        "sidecar",
        "--manager",
        "10.0.0.5:8443",
        "--workload",
        "Deployment/orders",
        "--forward",
        "9900=8080",
    ];
    assert!(is_agent(&argv, "Deployment/orders"));
    assert!(!is_agent(&argv, "Deployment/order"));
    assert!(!is_agent(&argv, "StatefulSet/orders"));
    let mut manager = argv;
    manager[1] = "manager";
    assert!(!is_agent(&manager, "Deployment/orders"));
    let mut other = argv;
    other[0] = "/bin/not-tether-agent";
    assert!(!is_agent(&other, "Deployment/orders"));
    assert!(!is_agent(&[], "Deployment/orders"));
}

#[test]
fn rss_comes_from_the_vmrss_line() {
    let status = "Name:\ttether-agent\nVmHWM:\t   20000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
    assert_eq!(vm_rss_kib(status), Some(12345));
    assert_eq!(vm_rss_kib("Name:\tkthreadd\n"), None);
}

#[test]
fn waiter_lines_are_unix_nanoseconds() {
    let t = unix_ns_line(
        "first_match_unix_ns=1700000000123456789\n",
        "first_match_unix_ns",
    );
    assert_eq!(
        t,
        Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789))
    );
    assert_eq!(unix_ns_line("attempts=3", "first_match_unix_ns"), None);
    assert_eq!(
        unix_ns_line("first_match_unix_ns_x=3", "first_match_unix_ns"),
        None
    );
}

fn pod(name: &str, phase: &str, deleting: bool, agent_port: Option<u16>) -> serde_json::Value {
    let mut containers =
        vec![json!({"name": "app", "ports": [{"name": "tx-http", "containerPort": 8080}]})];
    if let Some(port) = agent_port {
        containers.push(json!({
            "name": "tether-agent",
            "ports": [{"name": "admin", "containerPort": 9901}, {"name": "http", "containerPort": port}],
        }));
    }
    json!({
        "metadata": if deleting {
            json!({"name": name, "deletionTimestamp": "2024-01-01T00:00:00Z"})
        } else {
            json!({"name": name})
        },
        "spec": {"containers": containers},
        "status": {"phase": phase, "podIP": "10.244.0.9"},
    })
}

#[test]
fn the_orders_pod_is_the_running_one_with_the_agent() {
    let pods = json!({"items": [
        pod("orders-old", "Running", true, Some(9900)),
        pod("orders-new", "Running", false, Some(9900)),
        pod("orders-pending", "Pending", false, Some(9900)),
    ]});
    assert_eq!(
        orders_pod(&pods).unwrap(),
        OrdersPod {
            name: "orders-new".into(),
            ip: "10.244.0.9".into(),
            agent_port: 9900,
        }
    );
    let none = json!({"items": [pod("orders-plain", "Running", false, None)]});
    assert!(orders_pod(&none).is_err());
    let two = json!({"items": [
        pod("orders-a", "Running", false, Some(9900)),
        pod("orders-b", "Running", false, Some(9900)),
    ]});
    assert!(orders_pod(&two).is_err());
}

#[test]
fn bench_arguments_are_consistent() {
    use clap::Args as _;
    crate::bench::Args::augment_args(clap::Command::new("bench")).debug_assert();
}

#[test]
fn terminating_pods_with_the_agent_count_until_they_are_gone() {
    let pods = json!({"items": [
        pod("orders-old", "Running", true, Some(9900)),
        pod("orders-new", "Running", false, None),
    ]});
    assert_eq!(agent_pods(&pods), ["orders-old"]);
    let pods = json!({"items": [pod("orders-new", "Running", false, None)]});
    assert!(agent_pods(&pods).is_empty());
}
