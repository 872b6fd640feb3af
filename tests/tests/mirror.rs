//! `tether intercept … --mirror`: the app still answers every caller, and a copy of each matching
//! request reaches the developer's process, whose answers are discarded.
//!
//! Requests come from inside the cluster (`kubectl exec deploy/client -- tether-testapp get`).
//! The developer's process is Python's `http.server`, which logs every request it gets: the
//! test reads that log to see the copies. The workloads are in `deploy/sample/intercept.yaml`.

use std::{process::Stdio, time::Duration};

use tether_e2e::{
    answered_by, cluster_ip, eventually, from_cluster, in_ns, tether, Connected, Laptop, WS,
};

/// The requests for `path` in http.server's log (`"GET /path HTTP/1.1" 200 -`).
fn logged(log: &std::path::Path, path: &str) -> usize {
    let needle = format!("\"GET {path} HTTP/1.1\"");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

#[test]
fn a_mirror_gets_copies_of_its_requests_while_the_app_answers() {
    let ws = Connected::new(WS, &[]);
    let dir = std::env::temp_dir().join("tether-e2e-mirror");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("http.log");
    let _ = std::fs::remove_file(&log);
    let child = in_ns(WS, "/usr/bin/python3")
        .args([
            "-m",
            "http.server",
            "18095",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting python3 -m http.server");
    let _laptop = Laptop::adopt(child);
    eventually(Duration::from_secs(10), "http.server listens", || {
        tether_e2e::curl(Some(WS), &["http://127.0.0.1:18095/"])
            .ok
            .then_some(())
    });
    let out = tether(
        WS,
        &[
            "intercept",
            "orders",
            "--name",
            "orders-mirror",
            "--port",
            "18095:http",
            "--mirror",
            "--http-header",
            "x-session=mirror",
        ],
    )
    .expect_ok("tether intercept --mirror");
    assert!(out.contains("Mirroring orders-mirror"), "{out}");

    // Every caller gets the app's answer, header or not; only the header's requests are copied.
    let base = format!("http://{}:80", cluster_ip("orders"));
    let plain = from_cluster(&format!("{base}/not-copied"), &[]).expect_ok("a plain request");
    assert!(answered_by(&plain)[0].starts_with("orders-"), "{plain}");
    let url = format!("{base}/copied");
    let got = from_cluster(&url, &["--header", "x-session:mirror", "--repeat", "3"])
        .expect_ok("requests with the header");
    let who = answered_by(&got);
    assert_eq!(who.len(), 3, "{got}");
    assert!(
        who.iter().all(|w| w.starts_with("orders-")),
        "the app answers: {got}"
    );

    eventually(
        Duration::from_secs(15),
        "3 copies in the laptop's log",
        || (logged(&log, "/copied") == 3).then_some(()),
    );
    assert_eq!(logged(&log, "/not-copied"), 0);

    // `tether status` shows the mirror and its copies (the agents report about once a second).
    let status = eventually(Duration::from_secs(15), "3 copies sent in status", || {
        let status = ws.status();
        (status["intercepts"][0]["copies"]["sent"] == 3).then_some(status)
    });
    let mirror = &status["intercepts"][0];
    assert_eq!(mirror["mode"], "mirror", "{status}");
    assert_eq!(mirror["copies"]["dropped"], 0, "{status}");
    let text = tether(WS, &["status"]).expect_ok("tether status");
    assert!(text.contains("copies: 3 sent, 0 dropped"), "{text}");
    let list = tether(WS, &["list"]).expect_ok("tether list");
    assert!(list.contains("mirror orders-mirror on port"), "{list}");

    tether(WS, &["leave", "orders-mirror"]).expect_ok("tether leave");
    from_cluster(&url, &["--header", "x-session:mirror"]).expect_ok("a request after leave");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(logged(&log, "/copied"), 3, "no copies after leave");
}
