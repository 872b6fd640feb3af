use std::net::Ipv4Addr;

use super::*;

fn latency(p50: f64) -> Latency {
    Latency {
        p50_us: Some(p50),
        p99_us: Some(p50 * 2.0),
        ok: 100,
        ..Latency::default()
    }
}

fn path(path: Path, mb_s: &[f64], keep_alive: f64, new_connection: f64) -> PathResult {
    PathResult {
        path,
        bulk_mb_s: mb_s.to_vec(),
        bulk_errors: Vec::new(),
        upload_mb_s: mb_s.iter().map(|m| m / 2.0).collect(),
        keep_alive: latency(keep_alive),
        new_connection: latency(new_connection),
        cpu_per_gb: None,
    }
}

fn dns(with: Option<Path>, lookup: Lookup, p50: f64) -> DnsResult {
    DnsResult {
        with,
        lookup,
        server: Ipv4Addr::new(10, 250, 1, 1).into(),
        latency: latency(p50),
    }
}

fn secs(v: &[f64]) -> Vec<Duration> {
    v.iter().copied().map(Duration::from_secs_f64).collect()
}

fn sample() -> Report {
    Report {
        meta: vec![("namespace".into(), "tether-ws2".into())],
        paths: vec![
            path(Path::Direct, &[2000.0, 1900.0], 40.0, 90.0),
            path(Path::KubectlPortForward, &[200.0, 240.0], 500.0, 900.0),
            path(Path::TetherUdp, &[700.0, 750.0], 200.0, 600.0),
            path(Path::TetherPortForward, &[150.0], 400.0, 800.0),
        ],
        connects: vec![
            ConnectResult {
                path: Path::TetherUdp,
                returned: secs(&[0.1, 0.3, 0.2]),
                first_ok: secs(&[0.2, 0.4, 0.3]),
            },
            ConnectResult {
                path: Path::TetherPortForward,
                returned: secs(&[2.5, 2.4, 2.6]),
                first_ok: secs(&[2.6, 2.5, 2.7]),
            },
        ],
        dns: vec![
            dns(None, Lookup::NonCluster, 30.0),
            dns(Some(Path::TetherUdp), Lookup::NonCluster, 45.0),
            dns(Some(Path::TetherPortForward), Lookup::NonCluster, 60.0),
            dns(None, Lookup::NonClusterUncached, 30.0),
            dns(Some(Path::TetherUdp), Lookup::NonClusterUncached, 70.0),
            dns(Some(Path::TetherUdp), Lookup::Cluster, 50.0),
        ],
        quic_ceiling_mb_s: Some(480.0),
        ..Report::default()
    }
}

fn check<'a>(checks: &'a [Check], what: &str) -> &'a Check {
    Check::find(checks, what)
}

#[test]
fn throughput_ratios_use_the_best_run_against_kubectl() {
    let checks = sample().checks();
    let udp = check(&checks, "throughput: tether, udp");
    assert_eq!(udp.measured, "3.12×");
    let ceiling = check(&checks, "throughput: QUIC alone");
    assert_eq!((ceiling.measured.as_str(), ceiling.pass), ("2.00×", None));
    assert_eq!(udp.pass, Some(true));
    let pf = check(&checks, "throughput: tether, port-forward");
    assert_eq!(pf.measured, "0.62×");
    assert_eq!(pf.pass, Some(false));
}

#[test]
fn added_latency_is_over_direct_and_judged_for_tether_only() {
    let checks = sample().checks();
    let c = check(&checks, "added p50 over direct, keep-alive: tether, udp");
    assert_eq!((c.measured.as_str(), c.pass), ("160 µs", Some(true)));
    let c = check(
        &checks,
        "added p50 over direct, new connection: tether, udp",
    );
    assert_eq!((c.measured.as_str(), c.pass), ("510 µs", Some(false)));
    let c = check(&checks, "added p50 over direct, keep-alive: kubectl");
    assert_eq!((c.measured.as_str(), c.pass), ("460 µs", None));
}

#[test]
fn connect_time_is_the_median_until_the_first_request() {
    let checks = sample().checks();
    let c = check(
        &checks,
        "connect until the first request succeeds: tether, udp",
    );
    assert_eq!((c.measured.as_str(), c.pass), ("0.30 s", Some(true)));
    let c = check(
        &checks,
        "connect until the first request succeeds: tether, port-forward",
    );
    assert_eq!((c.measured.as_str(), c.pass), ("2.60 s", Some(false)));
}

#[test]
fn dns_noise_allows_a_little_added_latency_only() {
    let checks = sample().checks();
    let again = "added p50 on DNS lookups of the same non-cluster name again";
    let c = check(&checks, &format!("{again}: tether, udp"));
    assert_eq!((c.measured.as_str(), c.pass), ("15 µs", Some(true)));
    let c = check(&checks, &format!("{again}: tether, port-forward"));
    assert_eq!((c.measured.as_str(), c.pass), ("30 µs", Some(false)));
    // Each kind of lookup against its own baseline; a path not measured has no check.
    let new = "added p50 on DNS lookups of a new non-cluster name each time";
    let c = check(&checks, &format!("{new}: tether, udp"));
    assert_eq!((c.measured.as_str(), c.pass), ("40 µs", Some(false)));
    assert!(!checks
        .iter()
        .any(|c| c.what == format!("{new}: tether, port-forward")));
    assert_eq!(dns_noise_us(1000.0), 100.0);
}

#[test]
fn missing_measurements_are_not_passes() {
    let mut r = sample();
    r.paths.retain(|p| p.path != Path::KubectlPortForward);
    r.dns.retain(|d| d.with.is_some());
    let checks = r.checks();
    let c = check(&checks, "throughput: tether, udp");
    assert_eq!((c.measured.as_str(), c.pass), ("n/a", None));
    let c = check(
        &checks,
        "added p50 on DNS lookups of the same non-cluster name again: tether, udp",
    );
    assert_eq!(c.pass, None);
}

#[test]
fn markdown_has_every_path_and_the_failures() {
    let mut r = sample();
    r.paths[3].bulk_errors.push("connection reset".into());
    let md = r.markdown();
    for p in [
        Path::Direct,
        Path::KubectlPortForward,
        Path::TetherUdp,
        Path::TetherPortForward,
    ] {
        assert!(md.contains(&format!("| {} |", p.label())), "{md}");
    }
    assert!(
        md.contains(
            "| tether, udp transport | 750 | 375 | 200 / 400 | 600 / 1200 | +160 / +510 | 0 |"
        ),
        "{md}"
    );
    assert!(
        md.contains("| udp | 0.20 s | 0.30 s | 0.20, 0.40, 0.30 |"),
        "{md}"
    );
    assert!(md.contains("**FAIL**"), "{md}");
    assert!(
        md.contains("- tether, port-forward transport: connection reset"),
        "{md}"
    );
}

#[test]
fn uploads_are_shown_against_kubectl_and_direct_through_an_emulated_link() {
    // 375 / 120 MB/s, no target.
    let checks = sample().checks();
    let c = check(
        &checks,
        "upload throughput: tether, udp transport / kubectl",
    );
    assert_eq!((c.measured.as_str(), c.pass), ("3.12×", None));
    assert!(!checks
        .iter()
        .any(|c| c.what.starts_with("upload throughput") && c.what.ends_with("same link")));
    let wan = Report {
        profile_name: "wan20".into(),
        profile_rtt: Some(Duration::from_millis(20)),
        ..sample()
    };
    // 375 / 1000 MB/s.
    let checks = wan.checks();
    let c = check(
        &checks,
        "upload throughput: tether, udp transport / direct through the same link",
    );
    assert_eq!((c.measured.as_str(), c.pass), ("0.38×", None));
}

#[test]
fn median_of_even_and_empty() {
    assert_eq!(median(&secs(&[3.0, 1.0])), Some(Duration::from_secs(1)));
    assert_eq!(median(&[]), None);
}

#[test]
fn an_emulated_link_is_judged_against_direct_through_it() {
    let lossy = Report {
        profile_name: "lossy50".into(),
        profile_rtt: Some(Duration::from_millis(50)),
        ..sample()
    };
    let checks = lossy.checks();
    // 750 / 2000.
    let c = check(&checks, "throughput: tether, udp transport / direct");
    assert_eq!((c.measured.as_str(), c.pass), ("0.38×", Some(false)));
    // 600 - 90 µs, within one 50 ms round trip.
    let c = check(&checks, "new connection, time to the first byte");
    assert_eq!((c.measured.as_str(), c.pass), ("+510 µs", Some(true)));
    let md = lossy.markdown();
    assert!(
        md.starts_with("# tether connect: benchmark, link profile `lossy50`"),
        "{md}"
    );
    assert!(md.contains("direct (workstation → pod IP)"), "{md}");
    assert!(!md.contains("(host → "), "{md}");

    // wan20 shows the direct ratio for reference only; lan has neither check.
    let wan = Report {
        profile_name: "wan20".into(),
        profile_rtt: Some(Duration::from_millis(20)),
        ..sample()
    };
    let checks = wan.checks();
    let c = check(&checks, "throughput: tether, udp transport / direct");
    assert_eq!(c.pass, None);
    // wan20's keep-alive target is direct + 2 ms; new connections have the RTT check only.
    let c = check(&checks, "added p50 over direct, keep-alive: tether, udp");
    assert_eq!(c.target, "≤ 2000 µs");
    let c = check(
        &checks,
        "added p50 over direct, new connection: tether, udp",
    );
    assert_eq!(c.pass, None);
    let lossy_checks = lossy.checks();
    let c = check(
        &lossy_checks,
        "added p50 over direct, keep-alive: tether, udp",
    );
    assert_eq!(c.pass, None);
    // The link's rate bounds every path: shown against kubectl's throughput.
    let capped = Report {
        profile_rate_mb_s: Some(25.0),
        ..wan
    };
    let kubectl = capped
        .path(Path::KubectlPortForward)
        .and_then(PathResult::best_mb_s)
        .unwrap();
    let capped_checks = capped.checks();
    let c = check(&capped_checks, "throughput: the link's rate");
    assert_eq!(c.measured, format!("{:.2}×", 25.0 / kubectl));
    assert!(!sample()
        .checks()
        .iter()
        .any(|c| c.what.contains("/ direct through")));
    assert!(sample().markdown().contains("direct (host → pod IP)"));
}

#[test]
fn cpu_per_gb_is_checked_against_kubectls_processes() {
    use crate::bench::cpu::Cpu;
    let mut kubectl = path(Path::KubectlPortForward, &[100.0], 500.0, 900.0);
    kubectl.cpu_per_gb = Some(Cpu {
        workstation_s: 4.0,
        cluster_s: 10.0,
    });
    let mut udp = path(Path::TetherUdp, &[300.0], 500.0, 900.0);
    udp.cpu_per_gb = Some(Cpu {
        workstation_s: 3.0,
        cluster_s: 2.0,
    });
    let report = Report {
        paths: vec![kubectl, udp],
        ..Report::default()
    };
    let checks = report.checks();
    let daemon = Check::find(
        &checks,
        "CPU seconds per GB, tether, udp transport: the daemon",
    );
    assert_eq!(
        (daemon.measured.as_str(), daemon.pass),
        ("0.75×", Some(false))
    );
    let manager = Check::find(
        &checks,
        "CPU seconds per GB, tether, udp transport: the manager",
    );
    assert_eq!(
        (manager.measured.as_str(), manager.pass),
        ("0.20×", Some(true))
    );
    assert!(report
        .markdown()
        .contains("| kubectl port-forward (host → 127.0.0.1) | 4.00 | 10.00 |"));
}
