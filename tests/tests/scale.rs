//! Many developers on one manager: five workstations (network namespaces), each with its own
//! daemon and its own Kubernetes user, connected at once, each with a personal intercept of the
//! same workload and its own header, each opening 20 connections at once while callers in the
//! cluster send requests for all of them. Every request must land where it should.
//!
//! The benchmark (`cargo xtask bench --only scale`) runs the large version and measures; this is
//! the correctness check, with no timing in it.

use std::process::{Child, Command, Stdio};

use tether_e2e::*;

/// Connections each developer opens at once.
const FLOWS: usize = 20;
/// Rounds of requests each caller in the cluster sends (one per developer and one for the app
/// in each round).
const ROUNDS: usize = 4;

struct Developer {
    user: String,
    ns: &'static str,
    _laptop: Laptop,
    _connected: Connected,
}

/// `FLOWS` GETs of `hello` at once from `ns` (curl's parallel mode): the output names who
/// answered each.
fn flows(ns: &str) -> Child {
    let mut cmd = in_ns(ns, "curl");
    cmd.args([
        "-sS",
        "--max-time",
        "30",
        "--parallel",
        "--parallel-immediate",
    ])
    .args(["--parallel-max", &FLOWS.to_string()]);
    for i in 0..FLOWS {
        cmd.arg(format!("http://hello.default/flow-{i}"));
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl")
}

/// A caller in the cluster: `ROUNDS` × (each developer's header, then none) to `orders`.
fn caller(url: &str, users: &[String]) -> Child {
    let mut args = vec![
        "--kubeconfig".to_owned(),
        kubeconfig().display().to_string(),
        "exec".into(),
        "deploy/client".into(),
        "-c".into(),
        "app".into(),
        "--".into(),
        "tether-testapp".into(),
        "get".into(),
        url.into(),
        "--repeat".into(),
        (ROUNDS * (users.len() + 1)).to_string(),
    ];
    for user in users {
        args.extend(["--each-header".into(), format!("x-dev:{user}")]);
    }
    args.extend(["--each-header".into(), String::new()]);
    Command::new("kubectl")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl exec")
}

fn output(child: Child, what: &str) -> String {
    let out = child.wait_with_output().expect(what);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn five_developers_with_personal_intercepts_of_one_workload_each_get_their_own_requests() {
    let mut bindings = Bindings::default();
    let pid = std::process::id();
    let mut developers = Vec::new();
    for (i, ns) in WORKSTATIONS.into_iter().enumerate() {
        let user = format!("dev{}-{pid}", i + 1);
        bindings.client(&user);
        bindings.bind(&[
            "rolebinding",
            &format!("tether-e2e-{user}-intercept"),
            "--clusterrole=tether-intercept",
            &format!("--user={user}"),
            "-n",
            "default",
        ]);
        let kc = user_kubeconfig(&user);
        let connected = Connected::new(ns, &["--kubeconfig", kc.to_str().unwrap()]);
        let laptop = Laptop::start(ns, 18090, &format!("laptop-{user}"));
        tether(
            ns,
            &[
                "intercept",
                "orders",
                "--port",
                "18090:http",
                "--http-header",
                &format!("x-dev={user}"),
            ],
        )
        .expect_ok(&format!("{user}'s intercept"));
        developers.push(Developer {
            user,
            ns,
            _laptop: laptop,
            _connected: connected,
        });
    }
    let users: Vec<String> = developers.iter().map(|d| d.user.clone()).collect();

    // Everything at once: every developer's own connections, and two callers in the cluster.
    let url = format!("http://{}:80/", cluster_ip("orders"));
    let own: Vec<Child> = developers.iter().map(|d| flows(d.ns)).collect();
    let callers: Vec<Child> = (0..2).map(|_| caller(&url, &users)).collect();

    for (d, child) in developers.iter().zip(own) {
        let out = output(child, &format!("{}'s connections", d.user));
        // Each body is the echo: its first line names the pod.
        let answered: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_once("hello from ").map(|(_, who)| who.trim()))
            .collect();
        assert_eq!(answered.len(), FLOWS, "{}: {out}", d.user);
        assert!(
            answered.iter().all(|who| who.starts_with("hello-")),
            "{}: {out}",
            d.user
        );
    }
    for child in callers {
        let out = output(child, "a caller in the cluster");
        let answered = answered_by(&out);
        assert_eq!(answered.len(), ROUNDS * (users.len() + 1), "{out}");
        for (i, who) in answered.iter().enumerate() {
            match users.get(i % (users.len() + 1)) {
                Some(user) => assert_eq!(who, &format!("laptop-{user}"), "request {i}: {out}"),
                None => assert!(who.starts_with("orders-"), "request {i}: {out}"),
            }
        }
    }

    // Each sees only its own intercept's requests counted (2 callers × ROUNDS each).
    for d in &developers {
        let top = tether(d.ns, &["top", "--once", "-o", "json"]).expect_ok("tether top --once");
        let top: serde_json::Value = serde_json::from_str(&top).expect("top JSON");
        let intercepts = top["intercepts"].as_array().expect("intercepts");
        assert_eq!(intercepts.len(), 1, "{}: {top}", d.user);
        eventually(
            std::time::Duration::from_secs(10),
            "the laptop's requests counted",
            || {
                let top = tether(d.ns, &["top", "--once", "-o", "json"]).stdout;
                let top: serde_json::Value = serde_json::from_str(&top).ok()?;
                let laptop = top["intercepts"][0]["laptop"]["requests"].as_u64()?;
                (laptop == 2 * ROUNDS as u64).then_some(())
            },
        );
    }
    for d in &developers {
        tether(d.ns, &["leave", "orders"]).expect_ok("leave");
    }
}
