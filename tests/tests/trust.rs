//! Who may do what: a session is a Kubernetes user's, with a short-lived certificate the manager
//! signs only for users RBAC lets `create sessions.tether.dev`; the manager checks every
//! intercept request against RBAC (`intercepts.tether.dev`) for that user, whatever the client
//! claims; a removed binding ends access within a minute; nothing a client can read holds a key.
//!
//! The hostile client (`src/bin/hostile.rs`) holds a real session certificate and talks to the
//! manager directly, skipping the CLI's own checks.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;
use tether_e2e::{
    answered_by, cluster_ip, curl, eventually, from_cluster, in_ns, kubectl, manager_pods, run,
    running_pods, tether, user_kubeconfig, Bindings, Connected, Run, WS, WS2,
};

/// A user's kubeconfig; its directory is removed on drop.
struct User {
    name: &'static str,
    kubeconfig: PathBuf,
}

impl User {
    fn new(name: &'static str) -> User {
        User {
            name,
            kubeconfig: user_kubeconfig(name),
        }
    }

    fn kc(&self) -> &str {
        self.kubeconfig.to_str().expect("UTF-8 path")
    }

    fn kubectl(&self, args: &[&str]) -> Run {
        run(Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args))
    }
}

impl Drop for User {
    fn drop(&mut self) {
        if let Some(dir) = self.kubeconfig.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn hostile_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tether-e2e-hostile")
}

fn hostile_cmd(kubeconfig: &Path, claim: &str, steps: &[&str]) -> Command {
    let mut cmd = Command::new(hostile_bin());
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--claim", claim])
        .args(steps);
    cmd
}

/// Runs the hostile client to the end; its answers, one JSON value per step.
fn hostile(user: &User, claim: &str, steps: &[&str]) -> Vec<Value> {
    let out = run(&mut hostile_cmd(&user.kubeconfig, claim, steps)).expect_ok("hostile client");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The hostile client until its `hold` step; killed on drop.
struct Holding {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Holding {
    /// Starts `steps` (ending in `hold`) and returns the answers before `hold`.
    fn start(user: &User, claim: &str, steps: &[&str]) -> (Holding, Vec<Value>) {
        let mut child = hostile_cmd(&user.kubeconfig, claim, steps)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the hostile client");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || read_lines(stdout, lines_tx));
        let holding = Holding { child, lines };
        let mut answers = Vec::new();
        loop {
            let line = holding
                .line(Duration::from_secs(60))
                .expect("the hostile client's answers");
            if line["step"] == "hold" {
                return (holding, answers);
            }
            answers.push(line);
        }
    }

    /// The next answer, if it comes within `timeout`.
    fn line(&self, timeout: Duration) -> Option<Value> {
        self.lines.recv_timeout(timeout).ok()
    }
}

fn read_lines(stdout: BufReader<ChildStdout>, lines_tx: mpsc::Sender<Value>) {
    for line in stdout.lines() {
        let Ok(line) = line else { return };
        let value = serde_json::from_str(&line).expect("a JSON line");
        if lines_tx.send(value).is_err() {
            return;
        }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP server on a workstation that answers every request and logs it (python3's
/// `http.server`, its access log in a file); killed on drop.
struct LoggingServer {
    child: Child,
    log: PathBuf,
}

impl LoggingServer {
    fn start(ns: &str, port: u16) -> LoggingServer {
        let log = std::env::temp_dir().join(format!("tether-e2e-{ns}-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = in_ns(ns, "/usr/bin/python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting python3 -m http.server");
        let server = LoggingServer { child, log };
        let url = format!("http://127.0.0.1:{port}/");
        eventually(Duration::from_secs(10), "http.server listens", || {
            curl(Some(ns), &[&url]).ok.then_some(())
        });
        // That request is not one a test asks about.
        std::fs::write(&server.log, "").expect("truncate the log");
        server
    }

    /// The access log's request lines so far.
    fn requests(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("\"GET ") || l.contains("\"POST "))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for LoggingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Requests from the cluster's client pod to `url`, in batches, until stopped: who answered
/// each.
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    batches: mpsc::Receiver<Vec<String>>,
    answered: Vec<String>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(url: &str) -> Traffic {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, batches) = mpsc::channel();
        let (url, flag) = (url.to_owned(), stop.clone());
        let worker = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let out = from_cluster(&url, &["--repeat", "20"]);
                if tx.send(answered_by(&out.stdout)).is_err() {
                    return;
                }
            }
        });
        Traffic {
            stop,
            batches,
            answered: Vec::new(),
            worker: Some(worker),
        }
    }

    /// Waits for the next whole batch of answers (so traffic flowed since the last call).
    fn wait_for_answers(&mut self) {
        let batch = self
            .batches
            .recv_timeout(Duration::from_secs(60))
            .expect("a batch of requests from the cluster");
        assert!(!batch.is_empty(), "no answers from the cluster");
        self.answered.extend(batch);
    }

    /// Stops and returns who answered every request.
    fn stop(mut self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        self.answered.extend(self.batches.try_iter().flatten());
        self.answered
    }
}

/// Asserts that an answer is the manager's RBAC refusal for `user` and `what`.
#[track_caller]
fn assert_refused(answer: &Value, user: &str, what: &str) {
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(
        answer["ok"] == false
            && message.contains(&format!(
                "forbidden by RBAC: user \"{user}\" may not {what}"
            )),
        "{answer}"
    );
}

/// The owner of intercept `name` on `workload` in `tether list`, as the admin sees it.
fn owner_in_list(ns: &str, workload: &str, name: &str) -> Option<String> {
    let list = tether(ns, &["list", "-o", "json"]).expect_ok("tether list");
    let list: Value = serde_json::from_str(&list).expect("JSON");
    list["workloads"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == workload)?["intercepts"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == name)
        .and_then(|i| i["owner"].as_str().map(str::to_owned))
}

/// A user who may only connect cannot intercept: not with the CLI, and not by sending the
/// requests herself to a workload whose agent an admin installed, in any namespace, nor list the
/// intercepts or get an agent credential. What she claims to be changes nothing but a hint.
#[test]
fn a_connect_only_user_may_not_intercept() {
    // The admin installs the agent in orders (intercept, then leave) and stays connected.
    let admin = Connected::new(WS, &[]);
    tether(WS, &["intercept", "orders", "--port", "18095:http"]).expect_ok("admin intercept");
    tether(WS, &["leave", "orders"]).expect_ok("admin leave");

    let alice = User::new("dev-alice-trust");
    let mut bindings = Bindings::default();
    bindings.client(alice.name);
    let _alice = Connected::new(WS2, &["--kubeconfig", alice.kc()]);
    // Her laptop app logs every request it gets; the cluster's callers keep calling orders.
    let laptop = LoggingServer::start(WS2, 18096);
    let mut traffic = Traffic::start(&format!("http://{}/", cluster_ip("orders")));
    traffic.wait_for_answers();
    let refused = tether(WS2, &["intercept", "orders", "--port", "18096:http"]);
    assert!(
        !refused.ok && refused.stderr.contains("RBAC"),
        "{refused:?}"
    );
    // Every request during and after the attempt went to the app, none to her laptop.
    traffic.wait_for_answers();
    let answered = traffic.stop();
    assert!(
        !answered.is_empty() && answered.iter().all(|w| w.starts_with("orders-")),
        "{answered:?}"
    );
    assert_eq!(
        laptop.requests(),
        "",
        "requests reached the refused user's laptop"
    );

    let answers = hostile(
        &alice,
        "admin",
        &[
            "create",
            "default",
            "Deployment/orders",
            "8080", // agent installed
            "create",
            "kube-system",
            "Deployment/coredns",
            "53", // another namespace
            "create",
            "default",
            "Deployment/hello",
            "8080", // global, no agent yet
            "list",
            "default",
            "agent",
            "default",
        ],
    );
    assert_eq!(answers.len(), 5, "{answers:?}");
    let user = alice.name;
    assert_refused(
        &answers[0],
        user,
        "create intercepts.tether.dev in namespace \"default\"",
    );
    assert_refused(
        &answers[1],
        user,
        "create intercepts.tether.dev in namespace \"kube-system\"",
    );
    assert_refused(
        &answers[2],
        user,
        "create intercepts.tether.dev in namespace \"default\"",
    );
    assert_refused(
        &answers[3],
        user,
        "list intercepts.tether.dev in namespace \"default\"",
    );
    assert_refused(
        &answers[4],
        user,
        "create intercepts.tether.dev in namespace \"default\"",
    );
    assert!(
        answers[0]["message"]
            .as_str()
            .unwrap()
            .contains("bind the ClusterRole tether-intercept there"),
        "{}",
        answers[0]
    );

    // Nothing was registered, the manager is up and the admin's session still works.
    assert_eq!(admin.status()["connected"], true);
    assert_eq!(owner_in_list(WS, "orders", "hostile-1"), None);
    tether(WS, &["intercept", "orders", "--port", "18095:http"]).expect_ok("admin intercept");
    tether(WS, &["leave", "orders"]).expect_ok("admin leave");

    // Allowed to intercept in default, she still cannot pass for the admin: the owner is her
    // verified name, her claim only the hint next to it.
    bindings.bind(&[
        "rolebinding",
        "tether-e2e-alice-trust-intercept",
        "--clusterrole=tether-intercept",
        &format!("--user={user}"),
        "-n",
        "default",
    ]);
    let (_held, answers) = Holding::start(
        &alice,
        "admin",
        &["create", "default", "Deployment/orders", "8080", "hold"],
    );
    assert_eq!(answers[0]["ok"], true, "{answers:?}");
    assert_eq!(answers[0]["owner"], format!("{user} (admin)"));
    let owner = owner_in_list(WS, "orders", "hostile-1");
    assert_eq!(owner.as_deref(), Some(format!("{user} (admin)").as_str()));
}

/// Removing a user's bindings takes effect without waiting for her certificate to expire: her
/// open session is closed within the manager's re-check interval and she cannot connect again;
/// a removed intercept binding is refused at the next request.
#[test]
fn removed_bindings_end_access() {
    let bob = User::new("dev-bob-trust");
    let mut bindings = Bindings::default();
    bindings.client(bob.name);
    let intercept_binding = [
        "rolebinding",
        "tether-e2e-bob-trust-intercept",
        "--clusterrole=tether-intercept",
        "--user=dev-bob-trust",
        "-n",
        "default",
    ];
    bindings.bind(&intercept_binding);

    // Intercept rights: granted, then removed: refused at the next request (as soon as the API
    // server's authorizer has seen the deletion; nothing is cached for requests that change
    // anything).
    let first = hostile(
        &bob,
        "bob",
        &["create", "default", "Deployment/hello", "8080"],
    );
    assert_eq!(first[0]["ok"], true, "{first:?}");
    bindings.unbind(&intercept_binding);
    let answer = eventually(Duration::from_secs(5), "the intercept is refused", || {
        let answer = hostile(
            &bob,
            "bob",
            &["create", "default", "Deployment/hello", "8080"],
        );
        (answer[0]["ok"] == false).then_some(answer)
    });
    assert_refused(&answer[0], bob.name, "create intercepts.tether.dev");

    // The right to a session: her open session ends within ~90 s of the binding's removal.
    let (held, _) = Holding::start(&bob, "bob", &["hold"]);
    let session = Connected::new(WS2, &["--kubeconfig", bob.kc()]);
    bindings.unbind(&[
        "clusterrolebinding",
        "tether-e2e-dev-bob-trust",
        "--clusterrole=tether-client",
        "--user=dev-bob-trust",
    ]);
    // The manager re-checks every 60 s; SubjectAccessReview answers are cached for 5 s.
    let closed = held
        .line(Duration::from_secs(90))
        .expect("the session is closed within 90 s");
    assert_eq!(closed["step"], "closed", "{closed}");
    // The manager sends its reason and ends the session. The client's session closes itself
    // when the manager ends its control stream, so the reason it reports is either the
    // manager's or its own "closed" (the two race); the message itself is asserted below, on
    // the next connect.
    let message = closed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("may not create sessions.tether.dev") || message == "closed",
        "{closed}"
    );
    eventually(Duration::from_secs(90), "the daemon's session ends", || {
        (session.status()["connected"] == false).then_some(())
    });
    drop(session);
    // And she cannot connect again.
    let refused = tether(WS2, &["connect", "--kubeconfig", bob.kc()]);
    assert!(!refused.ok, "{refused:?}");
    assert!(
        refused.stderr.contains("RBAC") && refused.stderr.contains("tether-client"),
        "{}",
        refused.stderr
    );
}

/// A user who may ask for certificates but not open sessions gets her request denied by the
/// manager, with the reason.
#[test]
fn a_session_certificate_needs_the_right_to_a_session() {
    let carol = User::new("dev-carol-trust");
    let role = "tether-e2e-csr-only";
    kubectl(&[
        "create",
        "clusterrole",
        role,
        "--verb=create,get,delete",
        "--resource=certificatesigningrequests.certificates.k8s.io",
    ])
    .expect_ok("create a ClusterRole");
    struct Role(&'static str);
    impl Drop for Role {
        fn drop(&mut self) {
            let _ = kubectl(&["delete", "clusterrole", self.0]);
        }
    }
    let _role = Role(role);
    let mut bindings = Bindings::default();
    bindings.bind(&[
        "clusterrolebinding",
        "tether-e2e-carol-csr",
        &format!("--clusterrole={role}"),
        "--user=dev-carol-trust",
    ]);
    // Finding the manager (the Role) and reading the CA: the ClusterRole tether-client bound
    // in namespace tether only, as the documentation said before sessions were checked. A
    // RoleBinding cannot grant the cluster-scoped `create sessions.tether.dev`.
    bindings.bind(&[
        "rolebinding",
        "tether-e2e-carol",
        "--role=tether-client",
        "--user=dev-carol-trust",
        "-n",
        "tether",
    ]);
    bindings.bind(&[
        "rolebinding",
        "tether-e2e-carol-ca",
        "--clusterrole=tether-client",
        "--user=dev-carol-trust",
        "-n",
        "tether",
    ]);
    let out = run(&mut hostile_cmd(
        &carol.kubeconfig,
        "carol",
        &["list", "default"],
    ));
    assert!(!out.ok, "{out:?}");
    assert!(
        out.stderr.contains("refused a session certificate: forbidden by RBAC: user \"dev-carol-trust\" may not create sessions.tether.dev"),
        "{}",
        out.stderr
    );
}

/// Nothing a connect-only user can read holds a private key.
#[test]
fn a_client_reads_no_private_key() {
    let dana = User::new("dev-dana-trust");
    let mut bindings = Bindings::default();
    bindings.client(dana.name);
    let secret = dana.kubectl(&[
        "get",
        "secret",
        "tether-manager-tls",
        "-n",
        "tether",
        "-o",
        "json",
    ]);
    let secret: Value =
        serde_json::from_str(&secret.expect_ok("read tether-manager-tls")).expect("Secret JSON");
    let keys: Vec<&String> = secret["data"].as_object().expect("data").keys().collect();
    assert_eq!(keys, ["ca.crt"]);
    let ca = dana.kubectl(&["get", "secret", "tether-manager-ca", "-n", "tether"]);
    assert!(!ca.ok && ca.stderr.contains("forbidden"), "{ca:?}");
    let all = dana.kubectl(&["get", "secrets", "-n", "tether"]);
    assert!(!all.ok && all.stderr.contains("forbidden"), "{all:?}");
}

/// The manager dials for a session what a pod could reach, not itself, the control plane or the
/// cloud's metadata service; each refusal says why, and the manager stays up.
#[test]
fn the_manager_refuses_dials_outside_the_workloads() {
    let carol = User::new("dev-carol-trust");
    let mut bindings = Bindings::default();
    bindings.client(carol.name);
    let pods = manager_pods("json").expect_ok("the manager's pods");
    let pods: Value = serde_json::from_str(&pods).expect("pods JSON");
    let manager_ip = pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["metadata"]["deletionTimestamp"].is_null())
        .and_then(|p| p["status"]["podIP"].as_str())
        .expect("a running manager pod")
        .to_owned();
    let kubernetes = format!("{}:443", cluster_ip("kubernetes"));
    let hello_pod = &running_pods("app=hello")[0].1;
    let (manager_relay, hello_kubelet, hello_app) = (
        format!("{manager_ip}:7444"),
        format!("{hello_pod}:10250"),
        format!("{hello_pod}:8080"),
    );
    let answers = hostile(
        &carol,
        "carol",
        &[
            "dial",
            "127.0.0.1:7444",
            "dial",
            "169.254.169.254:80",
            "dial",
            &manager_relay,
            "dial",
            &kubernetes,
            "dial",
            &hello_kubelet,
            "dial",
            &hello_app,
        ],
    );
    assert_eq!(answers.len(), 6, "{answers:?}");
    for (answer, why) in answers[..5].iter().zip([
        "loopback",
        "cloud metadata",
        "own pod",
        "the API server",
        "kubelet",
    ]) {
        assert_eq!(answer["ok"], false, "{answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("does not dial") && message.contains(why),
            "{answer}"
        );
    }
    // A workload's own port is dialed as before.
    assert_eq!(answers[5]["ok"], true, "{:?}", answers[5]);
}

/// The manager pod's name and its container's restart count.
fn manager_pod() -> (String, String) {
    let out = manager_pods(
        "jsonpath={.items[0].metadata.name} {.items[0].status.containerStatuses[0].restartCount}",
    )
    .expect_ok("the manager pod");
    let (name, restarts) = out.trim().split_once(' ').expect("name and restarts");
    (name.to_owned(), restarts.to_owned())
}

/// A session that floods the manager costs only itself: thousands of flow streams that never
/// send their `Open` (each announcing a 1 MiB frame) are reset, a burst of DNS queries is
/// answered or dropped within the session's share, another user's session keeps working
/// meanwhile, the flooder's own session still dials afterwards, and the manager neither
/// restarts nor is replaced.
#[test]
fn floods_cost_the_offender_only() {
    let erin = User::new("dev-erin-trust");
    let mut bindings = Bindings::default();
    bindings.client(erin.name);
    let before = manager_pod();
    let _admin = Connected::new(WS, &[]);
    let hello_url = format!("http://{}/", cluster_ip("hello"));
    curl(Some(WS), &[&hello_url]).expect_ok("the admin reaches hello");

    let hello_app = format!("{}:8080", running_pods("app=hello")[0].1);
    let flood = hostile_cmd(
        &erin.kubeconfig,
        "erin",
        &["streams", "5000", "dns", "2000", "dial", &hello_app],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start the hostile client");
    // While the streams wait for their reset (at least the manager's Open timeout), the
    // admin's requests are answered.
    for _ in 0..5 {
        curl(Some(WS), &[&hello_url]).expect_ok("the admin reaches hello during the flood");
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = flood.wait_with_output().expect("the hostile client ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(
        (&answers[0]["sent"], &answers[0]["reset"]),
        (&Value::from(5000), &Value::from(5000)),
        "every stream without Open is reset: {}",
        answers[0]
    );
    assert_eq!(answers[1]["sent"], 2000, "{}", answers[1]);
    assert_eq!(
        answers[2]["ok"], true,
        "her own session still dials: {}",
        answers[2]
    );

    curl(Some(WS), &[&hello_url]).expect_ok("the admin reaches hello after the flood");
    assert_eq!(
        manager_pod(),
        before,
        "the manager restarted or was replaced"
    );
}
