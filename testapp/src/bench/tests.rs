use super::*;

fn counts(warmup: u32, max_errors: u32) -> Counts {
    Counts {
        requests: 1000,
        warmup,
        timeout_ms: 1000,
        max_errors,
    }
}

#[test]
fn percentiles_use_nearest_rank() {
    let mut r = Recorder::new(&counts(0, 10));
    for us in (1..=200).rev() {
        assert!(!r.record(us, Ok(Duration::from_micros(us.into()))));
    }
    assert!(!r.record(201, Err("refused".into())));
    let r = r.report();
    assert_eq!(r["p50_us"], 100.0);
    assert_eq!(r["p99_us"], 198.0);
    assert_eq!(r["min_us"], 1.0);
    assert_eq!(r["max_us"], 200.0);
    assert_eq!(r["ok"], 200);
    assert_eq!(r["errors"], 1);
}

#[test]
fn warmup_is_not_counted_and_errors_stop_the_run() {
    let mut r = Recorder::new(&counts(2, 2));
    assert!(!r.record(0, Err("warm-up".into())));
    assert!(!r.record(1, Ok(Duration::from_secs(9))));
    assert!(!r.record(2, Ok(Duration::from_micros(5))));
    assert!(!r.record(3, Err("first".into())));
    assert!(r.record(4, Err("second".into())));
    let r = r.report();
    assert_eq!(r["ok"], 1);
    assert_eq!(r["errors"], 2);
    assert_eq!(r["max_us"], 5.0);
    assert_eq!(r["last_error"], "second");
}

#[test]
fn no_samples_means_no_percentiles() {
    let mut r = Recorder::new(&counts(0, 10));
    r.record(0, Err("refused".into()));
    let r = r.report();
    assert!(r["p50_us"].is_null());
    assert!(r["mean_us"].is_null());
}

#[test]
fn targets_keep_port_and_query() {
    let t = Target::parse(&"http://10.0.0.1:8080/bytes?n=5".parse().unwrap()).unwrap();
    assert_eq!((t.host.as_str(), t.port), ("10.0.0.1", 8080));
    assert_eq!(t.authority, "10.0.0.1:8080");
    assert_eq!(t.path, "/bytes?n=5");
    assert!(Target::parse(&"https://x/".parse().unwrap()).is_err());
}

#[test]
fn dns_queries_carry_id_and_name() {
    let m = Message::from_vec(&dns_query(7, "hello.default.svc.cluster.local").unwrap()).unwrap();
    assert_eq!(m.metadata.id, 7);
    assert!(m.metadata.recursion_desired);
    assert_eq!(
        m.queries[0].name().to_ascii(),
        "hello.default.svc.cluster.local."
    );
}
