//! `tether intercept … --replace`: while it lasts the intercepted container runs in no pod of the
//! workload, and every request (HTTP or not) reaches the laptop; on `leave`, and when the
//! daemon is killed, the workload's spec comes back exactly.
//!
//! The workload is `worker` of `deploy/sample/intercept.yaml`: container `app` (the one replaced)
//! and `cache` (which stays), behind the Service `worker` (port 80 → 8080 by number).

use std::{process::Command, time::Duration};

use serde_json::Value;
use tether_e2e::{
    answered_by, cluster_ip, delete_manager_pod, eventually, from_cluster, in_ns, kubectl,
    manager_audit, run, tether, Connected, Laptop, WS,
};

/// The Service's address as pods reach it (the local cluster's pods have no cluster DNS).
fn url() -> String {
    format!("http://{}:80/", cluster_ip("worker"))
}

/// The Service's `admin` port, the container's other one.
fn admin_url() -> String {
    format!("http://{}:9090/", cluster_ip("worker"))
}

/// The laptop's servers on 127.0.0.1:18096 and 127.0.0.1:9090 of the workstation: answer an
/// HTTP GET with `replaced by the laptop` (`admin on the laptop` on 9090), and any other first
/// line with `laptop echo: LINE`. They serve one request per connection and say so
/// (`Connection: close`), as a server that closes must.
fn laptop() -> Laptop {
    const SERVER: &str = r#"
import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline()
        if line.startswith(b"GET "):
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            admin = self.server.server_address[1] == 9090
            body = b"admin on the laptop\n" if admin else b"replaced by the laptop\n"
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        else:
            self.wfile.write(b"laptop echo: " + line)
import threading
socketserver.ThreadingTCPServer.allow_reuse_address = True
admin = socketserver.ThreadingTCPServer(("127.0.0.1", 9090), H)
threading.Thread(target=admin.serve_forever, daemon=True).start()
socketserver.ThreadingTCPServer(("127.0.0.1", 18096), H).serve_forever()
"#;
    let child = in_ns(WS, "/usr/bin/python3")
        .args(["-c", SERVER])
        .spawn()
        .expect("starting the laptop's server");
    let laptop = Laptop::adopt(child);
    eventually(
        Duration::from_secs(10),
        "the laptop's server listens",
        || {
            (tether_e2e::curl(Some(WS), &["http://127.0.0.1:18096/"]).ok
                && tether_e2e::curl(Some(WS), &["http://127.0.0.1:9090/"]).ok)
                .then_some(())
        },
    );
    laptop
}

/// The Deployment's spec (what `leave` must restore; the status and metadata move on).
fn spec() -> Value {
    let out = kubectl(&["get", "deploy/worker", "-o", "json"]).expect_ok("kubectl get");
    let mut d: Value = serde_json::from_str(&out).unwrap();
    d["spec"].take()
}

/// The containers of each pod of `worker` (terminating ones too: they still run).
fn pod_containers() -> Vec<Vec<String>> {
    let out = kubectl(&["get", "pods", "-l", "app=worker", "-o", "json"]).expect_ok("get pods");
    let pods: Value = serde_json::from_str(&out).unwrap();
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

/// The address of a running pod of `worker` without the app container.
fn replaced_pod_ip() -> String {
    let out = kubectl(&["get", "pods", "-l", "app=worker", "-o", "json"]).expect_ok("get pods");
    let pods: Value = serde_json::from_str(&out).unwrap();
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["phase"] == "Running"
                && p["spec"]["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| c["name"] != "app")
        })
        .and_then(|p| p["status"]["podIP"].as_str())
        .expect("a running pod without the app")
        .to_owned()
}

/// A raw TCP exchange from the client pod: one line to the Service, the answer.
fn raw_tcp() -> String {
    let script = format!("echo ping | nc -w 5 {} 80", cluster_ip("worker"));
    kubectl(&[
        "exec",
        "deploy/client",
        "-c",
        "app",
        "--",
        "sh",
        "-c",
        &script,
    ])
    .expect_ok("nc to worker:80")
}

fn app_answers() {
    app_answers_on(&url());
    app_answers_on(&admin_url());
}

fn app_answers_on(url: &str) {
    let got = from_cluster(url, &[]).expect_ok("request to worker");
    let who = answered_by(&got);
    assert!(
        who.len() == 1 && who[0].starts_with("worker-"),
        "the app answers: {got}"
    );
}

/// The agent first (a plain intercept, left again), so the spec a replace must come back to is
/// the one with the agent; that spec.
fn spec_with_the_agent() -> Value {
    let args = [
        "intercept",
        "worker",
        "--port",
        "18096:http",
        "--mount=false",
    ];
    tether(WS, &args).expect_ok("tether intercept worker");
    tether(WS, &["leave", "worker"]).expect_ok("tether leave");
    spec()
}

/// Waits until callers of `worker:http` are answered by the app again (after a restore).
fn the_app_answers_again() {
    eventually(Duration::from_secs(90), "the app answers again", || {
        let got = from_cluster(&url(), &[]);
        (got.ok
            && answered_by(&got.stdout)
                .iter()
                .all(|w| w.starts_with("worker-")))
        .then_some(())
    });
}

/// Waits until no pod of `worker` runs `app` any more (the old pod is gone, not only the
/// rollout done), and checks `cache` and the agent run.
fn no_pod_runs_the_app() {
    let pods = eventually(Duration::from_secs(90), "no pod runs app", || {
        let pods = pod_containers();
        (!pods.is_empty() && pods.iter().all(|c| !c.iter().any(|n| n == "app"))).then_some(pods)
    });
    for containers in pods {
        assert_eq!(containers, ["cache", "tether-agent"]);
    }
}

/// `tether intercept worker --port 18096:http --replace EXTRA…`, which must succeed; its output.
fn replace_worker(extra: &[&str]) -> String {
    let mut args = vec![
        "intercept",
        "worker",
        "--port",
        "18096:http",
        "--replace",
        "--mount=false",
    ];
    args.extend_from_slice(extra);
    tether(WS, &args).expect_ok("tether intercept --replace")
}

#[test]
fn replace_removes_the_container_while_it_lasts_and_restores_the_spec_exactly() {
    settled();
    let c = Connected::new(WS, &[]);
    let _laptop = laptop();
    app_answers();

    let before = spec_with_the_agent();

    let out = replace_worker(&["--also-port", "9090"]);
    assert!(out.contains("Replacing worker"), "{out}");
    assert!(
        out.contains("container app no longer runs in the cluster"),
        "{out}"
    );
    assert!(
        out.contains(
            "worker:admin (container port 9090) goes to 127.0.0.1:9090 too (intercept \
             worker-9090, ending with worker)"
        ),
        "{out}"
    );
    no_pod_runs_the_app();

    // Every request reaches the laptop: HTTP, and a protocol the agent does not parse.
    let got = from_cluster(&url(), &["--repeat", "3"]).expect_ok("requests while replaced");
    assert_eq!(got.lines().count(), 3, "{got}");
    assert!(
        got.lines().all(|l| l == "200 replaced by the laptop"),
        "{got}"
    );
    assert_eq!(raw_tcp().trim(), "laptop echo: ping");
    // The container's other port too.
    let got = from_cluster(&admin_url(), &[]).expect_ok("request to worker:admin");
    assert_eq!(got.trim(), "200 admin on the laptop");
    // Callers of a pod's own address (a headless Service, a peer) reach the laptop too: the
    // agent listens on the container's ports while it is gone.
    let ip = replaced_pod_ip();
    let got = from_cluster(&format!("http://{ip}:8080/"), &[]).expect_ok("request to the pod");
    assert_eq!(got.trim(), "200 replaced by the laptop");
    let got = from_cluster(&format!("http://{ip}:9090/"), &[]).expect_ok("request to the pod");
    assert_eq!(got.trim(), "200 admin on the laptop");
    // It ends with the replace, not alone.
    let alone = tether(WS, &["leave", "worker-9090"]);
    assert!(
        !alone.ok && alone.stderr.contains("ends with it: `tether leave worker`"),
        "{}",
        alone.stderr
    );

    // Status and list say so; nobody (not even this user) can add an intercept meanwhile.
    let status = c.status();
    let listed = status.to_string();
    assert!(listed.contains("\"replace\""), "{listed}");
    let refused = tether(
        WS,
        &[
            "intercept",
            "worker",
            "--port",
            "18097:http",
            "--name",
            "copy",
            "--mirror",
        ],
    );
    assert!(!refused.ok, "a mirror of a replaced workload is refused");
    assert!(
        refused
            .stderr
            .contains("has replaced it (intercept `worker`)"),
        "{}",
        refused.stderr
    );

    // leave: the spec is the one before, exactly, and the app answers again.
    tether(WS, &["leave", "worker"]).expect_ok("tether leave");
    assert_eq!(spec(), before, "the spec after leave");
    app_answers();
    eventually(Duration::from_secs(90), "app runs again", || {
        pod_containers()
            .iter()
            .all(|c| c.iter().any(|n| n == "app"))
            .then_some(())
    });

    // Unasked, the container's other port does not come to this machine, though a server
    // listens there: whoever edits the workload's ports cannot open this machine's ports.
    let out = replace_worker(&[]);
    assert!(
        out.contains(
            "worker:admin (container port 9090) is not taken (nothing of the app answers it now)"
        ),
        "{out}"
    );
    no_pod_runs_the_app();
    let got = from_cluster(&admin_url(), &[]);
    assert!(
        !got.stdout.contains("admin on the laptop"),
        "an unasked port reached the laptop: {}",
        got.stdout
    );

    // The daemon killed: the manager puts the container back once the session is lost and
    // no replace came back for it (a minute, for a daemon that reconnects).
    let id = c.status()["intercepts"][0]["id"]
        .as_u64()
        .expect("the intercept's id");
    let daemon = c.status()["daemon_pid"].as_u64().expect("daemon pid");
    run(Command::new("kill").args(["-9", &daemon.to_string()]));
    eventually(
        Duration::from_secs(120),
        "the manager restores the spec",
        || (spec() == before).then_some(()),
    );
    // The manager's write to the workload is in its audit trail, under the developer's name.
    let restored = eventually(
        Duration::from_secs(30),
        "the manager's container-restored line",
        || {
            manager_audit().into_iter().find(|e| {
                e["annotations"]["tether.dev/action"] == "container-restored"
                    && e["annotations"]["tether.dev/intercept-id"].as_str()
                        == Some(&*id.to_string())
            })
        },
    );
    assert_eq!(restored["verb"], "patch", "{restored}");
    assert_eq!(
        restored["annotations"]["tether.dev/reason"],
        "its session was lost, and no replace came back for it",
        "{restored}"
    );
    the_app_answers_again();
}

/// The Deployment's revision: it moves with every rollout (a change of the pod template), not
/// with the manager's annotations (which do move `metadata.generation`).
fn revision() -> u64 {
    let out = kubectl(&[
        "get",
        "deploy/worker",
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ])
    .expect_ok("kubectl get revision");
    out.trim().parse().expect("a revision")
}

/// Waits until an earlier test's end has settled: every pod of `worker` runs the app, and the
/// app answers on both ports.
fn settled() {
    eventually(Duration::from_secs(120), "worker settles", || {
        let pods = pod_containers();
        let answers = |url: &str| {
            let got = from_cluster(url, &[]);
            got.ok && {
                let who = answered_by(&got.stdout);
                who.len() == 1 && who[0].starts_with("worker-")
            }
        };
        (!pods.is_empty()
            && pods.iter().all(|c| c.iter().any(|n| n == "app"))
            && answers(&url())
            && answers(&admin_url()))
        .then_some(())
    });
}

/// The laptop's link dropping for longer than the tunnel's idle timeout (a Wi-Fi switch, a
/// suspended laptop) loses the session; the daemon reconnects and takes its replace up again,
/// and the workload is not rolled out for it: the app never runs in between.
#[test]
fn a_replace_survives_the_laptop_reconnecting_and_the_app_never_runs_meanwhile() {
    settled();
    let c = Connected::new(WS, &[]);
    let _laptop = laptop();
    let before = spec_with_the_agent();
    replace_worker(&[]);
    no_pod_runs_the_app();
    let replaced = revision();
    let reconnects = c.status()["reconnects"].as_u64().unwrap_or(0);

    let down = tether_e2e::network::LinkDown::new(WS, "tws0");
    std::thread::sleep(Duration::from_secs(15));
    drop(down);
    eventually(
        Duration::from_secs(90),
        "the replace works again after the reconnect",
        || {
            let status = c.status();
            let got = from_cluster(&url(), &[]);
            (status["reconnects"].as_u64().unwrap_or(0) > reconnects
                && got.stdout.trim() == "200 replaced by the laptop")
                .then_some(())
        },
    );
    assert_eq!(
        revision(),
        replaced,
        "the workload was not rolled out for the reconnect"
    );
    no_pod_runs_the_app();

    tether(WS, &["leave", "worker"]).expect_ok("tether leave");
    assert_eq!(spec(), before);
    the_app_answers_again();
}

/// The traffic manager restarting leaves a replace alone (the daemon re-creates it on the next
/// manager, and the workload is not rolled out for it); when the daemon is gone for good as well,
/// the next manager puts the container back by itself, and its audit trail says so.
#[test]
fn a_replace_outlives_a_manager_restart_and_is_put_back_when_its_daemon_never_returns() {
    settled();
    let c = Connected::new(WS, &[]);
    let _laptop = laptop();
    let before = spec_with_the_agent();
    replace_worker(&["--also-port", "9090"]);
    no_pod_runs_the_app();
    let replaced = revision();

    // The manager restarts; the daemon reconnects and re-creates the replace.
    let session = c.status()["session_id"].clone();
    delete_manager_pod();
    eventually(
        Duration::from_secs(90),
        "the replace works on the next manager",
        || {
            let got = from_cluster(&url(), &[]);
            (c.status()["session_id"] != session
                && got.stdout.trim() == "200 replaced by the laptop")
                .then_some(())
        },
    );
    assert_eq!(
        revision(),
        replaced,
        "the workload was not rolled out for the manager's restart"
    );

    // The manager restarts again, and the daemon dies before it can come back.
    let daemon = c.status()["daemon_pid"].as_u64().expect("daemon pid");
    delete_manager_pod();
    run(Command::new("kill").args(["-9", &daemon.to_string()]));
    eventually(
        Duration::from_secs(240),
        "the next manager puts the container back",
        || (spec() == before).then_some(()),
    );
    let restored = eventually(
        Duration::from_secs(30),
        "the manager's own container-restored line",
        || {
            manager_audit().into_iter().find(|e| {
                e["annotations"]["tether.dev/action"] == "container-restored"
                    && e["objectRef"]["name"] == "Deployment/worker"
            })
        },
    );
    assert_eq!(
        restored["user"]["username"], "tether.dev/manager",
        "{restored}"
    );
    the_app_answers_again();
}

#[test]
fn replace_refuses_while_another_intercept_holds_the_workload_and_changes_nothing() {
    settled();
    let c = Connected::new(WS, &[]);
    let _laptop = laptop();
    tether(
        WS,
        &[
            "intercept",
            "worker",
            "--port",
            "18096:http",
            "--http-header",
            "x-dev=ann",
            "--mount=false",
        ],
    )
    .expect_ok("a personal intercept");
    let before = spec();
    let refused = tether(
        WS,
        &[
            "intercept",
            "worker",
            "--port",
            "18096:http",
            "--name",
            "all",
            "--replace",
            "--mount=false",
        ],
    );
    assert!(!refused.ok);
    assert!(
        refused
            .stderr
            .contains("cannot replace Deployment/worker: ")
            && refused
                .stderr
                .contains("holds intercept `worker` on it (x-dev=ann)"),
        "{}",
        refused.stderr
    );
    assert_eq!(spec(), before, "a refused replace changes nothing");
    tether(WS, &["leave", "worker"]).expect_ok("tether leave");

    // A port the container does not expose is refused before anything changes.
    let before = spec();
    let unknown = tether(
        WS,
        &[
            "intercept",
            "worker",
            "--port",
            "18096:http",
            "--replace",
            "--also-port",
            "5432",
            "--mount=false",
        ],
    );
    assert!(
        !unknown.ok
            && unknown.stderr.contains(
                "--also-port 5432: container app of Deployment/worker has no other port 5432 \
                 that a Service exposes; its other ports: 9090 (worker:admin)"
            ),
        "{}",
        unknown.stderr
    );
    assert_eq!(spec(), before, "a refused --also-port changes nothing");
    assert!(c.status()["intercepts"]
        .as_array()
        .is_none_or(|a| a.is_empty()));

    // Flags that contradict --replace are refused before anything is asked.
    let bad = tether(
        WS,
        &[
            "intercept",
            "worker",
            "--port",
            "18096:http",
            "--replace",
            "--mirror",
        ],
    );
    assert!(!bad.ok && bad.stderr.contains("--mirror"), "{}", bad.stderr);
}
