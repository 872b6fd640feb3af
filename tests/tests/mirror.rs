//! `tether intercept … --mirror`: the app still answers every caller, and a copy of each matching
//! request reaches the developer's process, whose answers are discarded.
//!
//! Requests come from inside the cluster (`kubectl exec deploy/client -- tether-testapp get`).
//! The developer's process is a Python `http.server` that takes 2 s over each request and logs
//! it: the test reads that log to see the copies. The workloads are in
//! `deploy/sample/intercept.yaml`.

use std::{path::Path, process::Stdio, time::Duration};

use tether_e2e::{
    answered_by, cluster_ip, eventually, from_cluster, in_ns, tether, Connected, Laptop, WS,
};

/// The requests for `path` in http.server's log (`"GET /path HTTP/1.1" 200 -`).
fn logged(log: &Path, path: &str) -> usize {
    let needle = format!("\"GET {path} HTTP/1.1\"");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

/// The developer's process: a threaded `http.server` on 127.0.0.1:18095 of the workstation that
/// sleeps 2 s before answering each request, appending its log lines to `log`.
fn slow_laptop(log: &Path) -> Laptop {
    const SERVER: &str = "
import http.server, time
class Slow(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        time.sleep(2)
        super().do_GET()
http.server.ThreadingHTTPServer(('127.0.0.1', 18095), Slow).serve_forever()
";
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = in_ns(WS, "/usr/bin/python3")
        .args(["-c", SERVER])
        .current_dir(log.parent().unwrap())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("starting python3's http.server");
    let laptop = Laptop::adopt(child);
    eventually(Duration::from_secs(10), "http.server listens", || {
        tether_e2e::curl(Some(WS), &["http://127.0.0.1:18095/"])
            .ok
            .then_some(())
    });
    laptop
}

/// Sends `n` requests for `path` with the mirror's header from inside the cluster; every one
/// must be answered by the app.
fn requests_answered_by_the_app(base: &str, path: &str, n: u32) {
    let n_text = n.to_string();
    let got = from_cluster(
        &format!("{base}{path}"),
        &["--header", "x-session:mirror", "--repeat", &n_text],
    )
    .expect_ok("requests with the header");
    let who = answered_by(&got);
    assert_eq!(who.len(), n as usize, "{got}");
    assert!(
        who.iter().all(|w| w.starts_with("orders-")),
        "the app answers: {got}"
    );
}

#[test]
fn a_mirror_gets_copies_of_its_requests_while_the_app_answers() {
    let ws = Connected::new(WS, &[]);
    let dir = std::env::temp_dir().join("tether-e2e-mirror");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("http.log");
    let _ = std::fs::remove_file(&log);
    let laptop = slow_laptop(&log);
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

    // Every caller gets the app's answer, header or not, while the laptop takes 2 s over each
    // copy; only the header's requests are copied.
    let base = format!("http://{}:80", cluster_ip("orders"));
    let plain = from_cluster(&format!("{base}/not-copied"), &[]).expect_ok("a plain request");
    assert!(answered_by(&plain)[0].starts_with("orders-"), "{plain}");
    requests_answered_by_the_app(&base, "/copied", 3);
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

    // The laptop's server gone: callers still get the app's answers, and the copies nobody
    // takes are counted as dropped.
    drop(laptop);
    requests_answered_by_the_app(&base, "/while-down", 4);
    let status = eventually(
        Duration::from_secs(45),
        "4 copies dropped in status",
        || {
            let status = ws.status();
            (status["intercepts"][0]["copies"]["dropped"] == 4).then_some(status)
        },
    );
    assert_eq!(status["intercepts"][0]["copies"]["sent"], 3, "{status}");
    assert_eq!(logged(&log, "/while-down"), 0);

    // After leave, nothing is copied, to a laptop that listens again.
    let _laptop = slow_laptop(&log);
    tether(WS, &["leave", "orders-mirror"]).expect_ok("tether leave");
    requests_answered_by_the_app(&base, "/copied", 1);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(logged(&log, "/copied"), 3, "no copies after leave");
}
