//! Observability: a real Prometheus (Debian's, started with the cluster) finds the traffic
//! manager and every traffic agent by Kubernetes pod discovery and scrapes them; the counts it
//! holds are the ones a platform team would graph. `promtool check metrics` accepts every
//! endpoint's output, the daemon's (`tether status --metrics`) included.
//!
//! Prometheus scrapes every 2 s, so each check waits until its query reaches the value the
//! requests made and then checks it stays there (never a timed assertion).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tether_e2e::{
    cluster_ip, curl, eventually, from_cluster, in_ns, kubectl, running_pods, runtime_dir, tether,
    tether_bin, Connected, Laptop, Tmux, WS,
};

/// Where the cluster's Prometheus listens (see `xtask/scripts/lib.sh`).
const PROMETHEUS: &str = "http://127.0.0.1:9090";

/// The value of an instant query that yields one sample (or none: `None`).
fn query(promql: &str) -> Option<f64> {
    let out = curl(
        None,
        &[
            "-G",
            &format!("{PROMETHEUS}/api/v1/query"),
            "--data-urlencode",
            &format!("query={promql}"),
        ],
    )
    .expect_ok("Prometheus query");
    let answer: Value = serde_json::from_str(&out).expect("Prometheus's JSON");
    assert_eq!(answer["status"], "success", "{promql}: {answer}");
    let result = answer["data"]["result"].as_array().expect("a vector");
    assert!(result.len() <= 1, "{promql}: one sample expected: {answer}");
    result
        .first()
        .map(|s| s["value"][1].as_str().unwrap().parse().expect("a number"))
}

/// Waits until `promql` is `want`, then checks it stays so over two more scrapes.
#[track_caller]
fn settles_at(promql: &str, want: f64) {
    let mut last = None;
    eventually(Duration::from_secs(60), promql, || {
        last = query(promql);
        (last == Some(want)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(query(promql), Some(want), "{promql} moved on");
}

/// `promtool check metrics` on `text`: exit 0 and no problems reported.
#[track_caller]
fn promtool_accepts(what: &str, text: &str) {
    use std::io::Write;
    assert!(text.contains("# TYPE tether_"), "{what}: {text}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "{what}: {said}"
    );
}

/// The `/metrics` of a pod's metrics port, fetched from the host as Prometheus does.
fn pod_metrics(namespace: &str, selector: &str, port: u16) -> String {
    let ip = kubectl(&[
        "-n",
        namespace,
        "get",
        "pods",
        "-l",
        selector,
        "--field-selector",
        "status.phase=Running",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ])
    .expect_ok("a pod's IP");
    curl(None, &[&format!("http://{ip}:{port}/metrics")]).expect_ok("its metrics")
}

/// Every target Prometheus found is up, the manager among them.
fn targets_up() -> Vec<Value> {
    let out = curl(
        None,
        &[&format!("{PROMETHEUS}/api/v1/targets?state=active")],
    )
    .expect_ok("Prometheus targets");
    let answer: Value = serde_json::from_str(&out).unwrap();
    answer["data"]["activeTargets"].as_array().unwrap().clone()
}

#[test]
fn prometheus_scrapes_the_manager_and_agents_and_promtool_accepts_every_endpoint() {
    let _ws = Connected::new(WS, &[]);
    // An agent in orders (a global intercept installs it; leave keeps it).
    let _laptop = Laptop::start(WS, 18081, "laptop-obs");
    tether(WS, &["intercept", "orders", "--port", "18081:http"]).expect_ok("tether intercept");
    tether(WS, &["leave", "orders"]).expect_ok("tether leave");

    eventually(
        Duration::from_secs(60),
        "manager and agent targets up",
        || {
            let targets = targets_up();
            let up = |container: &str| {
                targets
                    .iter()
                    .any(|t| t["labels"]["container"] == container && t["health"] == "up")
            };
            (up("manager") && up("tether-agent")).then_some(())
        },
    );

    promtool_accepts(
        "manager",
        &pod_metrics("tether", "app.kubernetes.io/name=tether-manager", 7446),
    );
    promtool_accepts("agent", &pod_metrics("default", "app=orders", 9899));
    let daemon = tether(WS, &["status", "--metrics"]).expect_ok("tether status --metrics");
    promtool_accepts("daemon", &daemon);
    assert!(
        daemon.contains("tether_workstation_connected 1\n"),
        "{daemon}"
    );
    // The workstation's own traffic shows: a request through tether, and its DNS lookup.
    let before = tether(WS, &["status", "--metrics"]).expect_ok("metrics");
    curl(Some(WS), &["http://hello.default/"]).expect_ok("hello by name");
    let after = tether(WS, &["status", "--metrics"]).expect_ok("metrics");
    let sample = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    for name in [
        "tether_workstation_flows_total{protocol=\"tcp\"}",
        "tether_workstation_dns_queries_total{kind=\"cluster\"}",
    ] {
        assert!(
            sample(&after, name) > sample(&before, name),
            "{name} did not rise:\n{after}"
        );
    }
    assert!(
        sample(
            &after,
            "tether_workstation_flow_bytes_total{direction=\"to_workstation\"}"
        ) > sample(
            &before,
            "tether_workstation_flow_bytes_total{direction=\"to_workstation\"}"
        )
    );
}

#[test]
fn a_personal_intercept_counts_exactly_the_requests_it_took_and_the_ones_it_left() {
    let _ws = Connected::new(WS, &[]);
    let _laptop = Laptop::start(WS, 18082, "laptop-count");
    tether(
        WS,
        &[
            "intercept",
            "orders",
            "--port",
            "18082:http",
            "--http-header",
            "x-dev=count",
        ],
    )
    .expect_ok("tether intercept");
    let pods: Vec<String> = running_pods("app=orders")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(!pods.is_empty());
    let pods = pods.join("|");
    // Prometheus scrapes the agents of the pods serving now.
    eventually(Duration::from_secs(60), "the agents are scraped", || {
        query(&format!(
            "min(up{{pod=~\"{pods}\",container=\"tether-agent\"}})"
        ))
        .filter(|up| *up == 1.0)
    });
    let count = |route: &str| {
        format!(
            "sum(tether_agent_requests_total{{pod=~\"{pods}\",route=\"{route}\",port=\"8080\"}}) or vector(0)"
        )
    };
    let laptop_before = query(&count("laptop")).unwrap_or(0.0);
    let app_before = query(&count("app")).unwrap_or(0.0);

    let url = format!("http://{}/", cluster_ip("orders"));
    from_cluster(&url, &["--repeat", "5", "--header", "x-dev:count"]).expect_ok("5 for the laptop");
    from_cluster(&url, &["--repeat", "3"]).expect_ok("3 for the app");

    settles_at(&count("laptop"), laptop_before + 5.0);
    settles_at(&count("app"), app_before + 3.0);
    tether(WS, &["leave", "orders"]).expect_ok("tether leave");
}

#[test]
fn the_session_gauge_is_one_while_connected_and_zero_after_quit() {
    let gauge = "sum(tether_sessions{user=\"admin\"}) or vector(0)";
    let ws = Connected::new(WS, &[]);
    settles_at(gauge, 1.0);
    drop(ws);
    settles_at(gauge, 0.0);
}

/// `tether top --once -o json`, parsed.
fn top_once() -> Value {
    let out = tether(WS, &["top", "--once", "-o", "json"]).expect_ok("tether top --once");
    serde_json::from_str(&out).expect("top's JSON")
}

/// The requests an intercept took to the laptop and left to the app, in a `top` snapshot.
fn intercept_counts(top: &Value, name: &str) -> (u64, u64) {
    let intercept = top["intercepts"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no intercept {name} in {top}"));
    let n = |route: &str| intercept[route]["requests"].as_u64().expect("a count");
    (n("laptop"), n("app"))
}

/// `tether top` in a real terminal: it shows the session, the intercept's requests as they come
/// (and their latency), a held flow with its Service's name, adapts to a smaller terminal and
/// quits on `q`. Its JSON snapshot counts exactly the requests sent, as the agents' metrics do,
/// and its byte totals are the daemon's metrics.
#[test]
fn tether_top_shows_the_session_live_and_its_snapshot_agrees_with_the_metrics() {
    let _ws = Connected::new(WS, &[]);
    let _laptop = Laptop::start(WS, 18083, "laptop-top");
    tether(
        WS,
        &[
            "intercept",
            "orders",
            "--port",
            "18083:http",
            "--http-header",
            "x-dev=top",
        ],
    )
    .expect_ok("tether intercept");
    // A connection the workstation holds open to a Service, with a request sent on it.
    let held = Laptop::adopt(
        in_ns(WS, "bash")
            .args([
                "-c",
                "exec 3<>/dev/tcp/hello.default/80 && \
                 printf 'GET / HTTP/1.1\\r\\nHost: hello\\r\\n\\r\\n' >&3 && exec sleep 300",
            ])
            .spawn()
            .expect("holding a connection"),
    );
    let runtime = format!("TETHER_RUNTIME_DIR={}", runtime_dir(WS).display());
    let bin = tether_bin();
    let name = format!("tether-e2e-top-{}", std::process::id());
    let argv = [
        "ip",
        "netns",
        "exec",
        WS,
        "env",
        &runtime,
        bin.to_str().unwrap(),
        "top",
    ];
    let top = Tmux::run(&name, (160, 40), &argv);
    top.expect("connected to");
    top.expect("orders");
    top.expect("x-dev=top");
    top.expect("hello.default.svc.cluster.local");

    let pods: Vec<String> = running_pods("app=orders")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let pods = pods.join("|");
    let count = |route: &str| {
        format!(
            "sum(tether_agent_requests_total{{pod=~\"{pods}\",route=\"{route}\",port=\"8080\"}}) or vector(0)"
        )
    };
    eventually(Duration::from_secs(60), "the agents are scraped", || {
        query(&format!(
            "min(up{{pod=~\"{pods}\",container=\"tether-agent\"}})"
        ))
        .filter(|up| *up == 1.0)
    });
    let metrics_before = query(&count("laptop")).unwrap_or(0.0);
    let (laptop_before, app_before) = intercept_counts(&top_once(), "orders");

    let url = format!("http://{}/", cluster_ip("orders"));
    from_cluster(&url, &["--repeat", "6", "--header", "x-dev:top"]).expect_ok("6 for the laptop");
    from_cluster(&url, &["--repeat", "4"]).expect_ok("4 for the app");

    // The live view: the intercept's row shows a rate and a median latency for the laptop.
    let screen = top.expect_screen("a laptop rate and latency on the orders row", |screen| {
        screen.lines().any(|line| {
            // Table rows sit between the box's borders.
            let cells: Vec<&str> = line.trim_matches('│').split_whitespace().collect();
            cells.first() == Some(&"orders")
                && cells.get(4).is_some_and(|rate| *rate != "0.0")
                && cells.get(5).is_some_and(|p50| *p50 != "-")
        })
    });
    assert!(screen.contains("q quits"), "{screen}");

    // The snapshot counts exactly what was sent, as the agents' own metrics do.
    let snapshot = eventually(Duration::from_secs(30), "top to count 6 and 4", || {
        let now = top_once();
        (intercept_counts(&now, "orders") == (laptop_before + 6, app_before + 4)).then_some(now)
    });
    settles_at(&count("laptop"), metrics_before + 6.0);
    let flow = snapshot["flows"]
        .as_array()
        .and_then(|flows| {
            flows
                .iter()
                .find(|f| f["name"] == "hello.default.svc.cluster.local")
        })
        .unwrap_or_else(|| panic!("the held flow, named: {snapshot}"));
    assert_eq!(flow["protocol"], "tcp");
    assert!(flow["bytes_out"].as_u64().unwrap() > 0, "{flow}");
    assert!(flow["bytes_in"].as_u64().unwrap() > 0, "{flow}");
    assert!(
        snapshot["carrier"]["rtt_ms"].as_f64().is_some(),
        "{snapshot}"
    );
    // Its byte totals are the daemon's metrics (read while no byte moves: the counters equal
    // before and after the snapshot).
    let metric = |text: &str, direction: &str| {
        let series = format!("tether_workstation_flow_bytes_total{{direction=\"{direction}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.parse::<u64>().ok())
            .expect("the daemon's byte counter")
    };
    let bytes = || {
        let text = tether(WS, &["status", "--metrics"]).expect_ok("metrics");
        (metric(&text, "to_cluster"), metric(&text, "to_workstation"))
    };
    eventually(
        Duration::from_secs(30),
        "top's totals = the metrics",
        || {
            let before = bytes();
            let now = top_once();
            let totals = &now["throughput"];
            let top = (
                totals["to_cluster_bytes"].as_u64(),
                totals["to_workstation_bytes"].as_u64(),
            );
            (before == bytes() && top == (Some(before.0), Some(before.1))).then_some(())
        },
    );

    // A smaller terminal still shows the intercept; `q` quits.
    top.resize((80, 16));
    top.expect_screen("the smaller screen redrawn", |screen| {
        screen.lines().count() <= 16 && screen.contains("orders")
    });
    top.keys(&["q"]);
    eventually(Duration::from_secs(10), "top to quit on q", || {
        (!top.alive()).then_some(())
    });
    drop(held);
    tether(WS, &["leave", "orders"]).expect_ok("tether leave");
}
