//! `tether doctor` and `tether gather-logs`: on a healthy cluster every check passes; each fault
//! is really caused, then doctor must name it with its next step, and every test puts back what
//! it changed (guards that restore on drop, also when an assertion fails). The tests share the
//! cluster and one workstation, so they run one at a time (`--test-threads=1`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use tether_e2e::*;

/// `tether doctor -o json ARGS` on the workstation: its result and report.
fn doctor(args: &[&str]) -> (Run, Value) {
    let mut full = vec!["doctor", "-o", "json"];
    full.extend_from_slice(args);
    let run = tether(WS, &full);
    let report = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor's JSON: {e}\nstdout: {}\nstderr: {}",
            run.stdout, run.stderr
        )
    });
    (run, report)
}

/// The check with `id`, or a panic that shows the report.
#[track_caller]
fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn node_name() -> String {
    kubectl(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]).expect_ok("node name")
}

/// Waits until the manager has one Ready pod.
fn await_manager() {
    manager_rollout().expect_ok("the manager back");
}

#[test]
fn healthy_cluster_every_check_passes() {
    // Not connected first: no leftovers.
    let (run, report) = doctor(&[]);
    assert_eq!(run.code, Some(0), "{report:#}");
    assert_eq!(check(&report, "workstation.leftovers")["status"], "ok");

    let _conn = Connected::new(WS, &[]);
    let (run, report) = doctor(&[]);
    assert_eq!(run.code, Some(0), "{report:#}\n{}", run.stderr);
    let node = node_name();
    for id in [
        "cluster.context",
        "cluster.api",
        "cluster.version",
        "cluster.clock",
        "cluster.metrics",
        &format!("node.{node}.ready"),
        &format!("node.{node}.conditions"),
        &format!("node.{node}.allocated"),
        "manager.installed",
        "manager.pod",
        "manager.service",
        "manager.events",
        "rbac.session",
        "rbac.carrier",
        "rbac.nodes",
        "rbac.intercept",
        "workstation.daemon",
        "workstation.helper",
        "workstation.tun",
        "workstation.routes",
        "workstation.resolver",
        "workstation.dns",
        "workstation.service",
        "workstation.carrier",
    ] {
        let c = check(&report, id);
        assert_eq!(c["status"], "ok", "{id}: {c:#}");
        assert!(c.get("next").is_none(), "{id}: {c:#}");
    }
    for c in report["checks"].as_array().expect("checks") {
        assert_eq!(c["status"], "ok", "every check passes: {c:#}");
    }
    // The carrier's figures, measured by the daemon's QUIC connection.
    let carrier = text(&check(&report, "workstation.carrier")["found"]);
    assert!(carrier.contains(" carrier: RTT "), "{carrier}");
    assert!(carrier.contains(" packets"), "{carrier}");
    assert_eq!(report["summary"]["fail"], 0);

    // The text report: one ✔ line per check, nothing else.
    let text_run = tether(WS, &["doctor"]);
    assert_eq!(text_run.code, Some(0), "{}", text_run.stdout);
    let lines: Vec<&str> = text_run
        .stdout
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("      "))
        .collect();
    assert_eq!(lines.len(), report["checks"].as_array().map_or(0, Vec::len));
    assert!(
        lines.iter().all(|l| l.trim_start().starts_with('✔')),
        "{}",
        text_run.stdout
    );
}

/// Waits for the manager's rollout without panicking (for guards: a panic while unwinding
/// aborts).
fn manager_back_quietly() {
    let back = manager_rollout();
    if !back.ok {
        eprintln!("the manager is not back: {}", back.stderr);
    }
}

/// Scales the manager back to one replica on drop.
struct ManagerScaledDown;

impl ManagerScaledDown {
    fn new() -> ManagerScaledDown {
        kubectl(&[
            "-n",
            "tether",
            "scale",
            "deployment/tether-manager",
            "--replicas=0",
        ])
        .expect_ok("scale the manager to 0");
        ManagerScaledDown
    }
}

impl Drop for ManagerScaledDown {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "-n",
            "tether",
            "scale",
            "deployment/tether-manager",
            "--replicas=1",
        ]);
        // No panic here (a panic while unwinding aborts).
        manager_back_quietly();
    }
}

#[test]
fn manager_scaled_to_zero_is_named_and_its_command_repairs_it() {
    let guard = ManagerScaledDown::new();
    let report = eventually(Duration::from_secs(60), "the manager pod gone", || {
        let (run, report) = doctor(&[]);
        (run.code == Some(1) && check(&report, "manager.pod")["status"] == "fail").then_some(report)
    });
    let pod = check(&report, "manager.pod");
    assert!(
        text(&pod["found"]).contains("scaled to 0 replicas"),
        "{pod:#}"
    );
    let next = text(&pod["next"]);
    assert_eq!(
        next,
        "`kubectl -n tether scale deployment/tether-manager --replicas=1`"
    );
    // The rest still ran.
    assert_eq!(check(&report, "cluster.api")["status"], "ok");
    assert_eq!(check(&report, "rbac.session")["status"], "ok");

    // The suggested command repairs it.
    let command: Vec<&str> = next.trim_matches('`').split_whitespace().skip(1).collect();
    kubectl(&command).expect_ok("the suggested command");
    await_manager();
    let (run, report) = doctor(&[]);
    assert_eq!(check(&report, "manager.pod")["status"], "ok", "{report:#}");
    assert_eq!(run.code, Some(0), "{report:#}");
    drop(guard);
}

/// The manager's container changed by a JSON patch; the original put back on drop (then waits
/// for the manager).
struct ManagerPatched {
    restore: String,
}

impl ManagerPatched {
    /// Replaces `/spec/template/spec/containers/0/FIELD` with each value.
    fn new(changes: &[(&str, Value)]) -> ManagerPatched {
        let container = kubectl(&[
            "-n",
            "tether",
            "get",
            "deployment/tether-manager",
            "-o",
            "jsonpath={.spec.template.spec.containers[0]}",
        ])
        .expect_ok("the manager's container");
        let container: Value = serde_json::from_str(&container).expect("the container as JSON");
        let op = |field: &str, value: &Value, op: &str| {
            let mut o = serde_json::json!({
                "op": op,
                "path": format!("/spec/template/spec/containers/0/{field}"),
            });
            if op != "remove" {
                o["value"] = value.clone();
            }
            o
        };
        let patch: Vec<Value> = changes.iter().map(|(f, v)| op(f, v, "add")).collect();
        let restore: Vec<Value> = changes
            .iter()
            .map(|(f, _)| match container.get(*f) {
                Some(old) => op(f, old, "add"),
                None => op(f, &Value::Null, "remove"),
            })
            .collect();
        let guard = ManagerPatched {
            restore: Value::from(restore).to_string(),
        };
        patch_manager(&Value::from(patch).to_string()).expect_ok("patch the manager");
        guard
    }
}

impl Drop for ManagerPatched {
    fn drop(&mut self) {
        let undo = patch_manager(&self.restore);
        if !undo.ok {
            eprintln!("the manager was not restored: {}", undo.stderr);
        }
        manager_back_quietly();
    }
}

#[test]
fn a_manager_image_missing_from_the_node_is_named() {
    let image = "tether.local/tether-agent:not-on-this-node";
    let guard = ManagerPatched::new(&[
        ("image", Value::from(image)),
        ("imagePullPolicy", Value::from("Never")),
    ]);
    let report = eventually(Duration::from_secs(90), "ErrImageNeverPull", || {
        let (_, report) = doctor(&[]);
        text(&check(&report, "manager.pod")["found"])
            .contains("ErrImageNeverPull")
            .then_some(report)
    });
    let pod = check(&report, "manager.pod");
    assert_eq!(pod["status"], "fail", "{pod:#}");
    assert!(
        text(&pod["next"]).contains(image)
            && text(&pod["next"]).contains("imagePullPolicy is Never"),
        "{pod:#}"
    );
    drop(guard);
    await_manager();
    let (_, report) = doctor(&[]);
    assert_eq!(check(&report, "manager.pod")["status"], "ok", "{report:#}");
}

/// A memory limit alone never OOM-kills the manager on this kernel (it idles at ~3 MB); real
/// traffic through it does: bulk downloads from a pod, through tether, make it buffer.
#[test]
fn an_oom_killed_manager_is_named_with_its_reason() {
    let guard = ManagerPatched::new(&[(
        "resources",
        serde_json::json!({"limits": {"memory": "10Mi"}, "requests": {"memory": "10Mi"}}),
    )]);
    await_manager();
    let conn = Connected::new(WS, &[]);
    let (_, pod_ip) = hello_pods().first().cloned().expect("a hello pod");
    let url = format!("http://{pod_ip}:8080/bytes?n=200000000");
    let reason = || {
        manager_pods("jsonpath={.items[*].status.containerStatuses[0].lastState.terminated.reason}")
            .stdout
    };
    eventually(Duration::from_secs(120), "the manager OOM-killed", || {
        // Four downloads at once, through the tunnel; they fail once the manager dies.
        let downloads: Vec<_> = (0..4)
            .map(|_| {
                in_ns(WS, "curl")
                    .args(["-s", "-o", "/dev/null", "--max-time", "20", &url])
                    .spawn()
                    .expect("curl")
            })
            .collect();
        for mut d in downloads {
            let _ = d.wait();
        }
        reason().contains("OOMKilled").then_some(())
    });
    let (run, report) = doctor(&[]);
    assert_eq!(run.code, Some(1), "{report:#}");
    let pod = check(&report, "manager.pod");
    assert_eq!(pod["status"], "fail", "{pod:#}");
    assert!(
        text(&pod["found"]).contains("OOMKilled (exit code 137)"),
        "{pod:#}"
    );
    assert!(
        text(&pod["next"]).contains("raise its memory limit"),
        "{pod:#}"
    );
    drop(conn);
    drop(guard);
    let (_, report) = doctor(&[]);
    assert_eq!(check(&report, "manager.pod")["status"], "ok", "{report:#}");
}

/// Node conditions a test set through the status subresource; removed (and DiskPressure put
/// back to False) on drop, then waits for the node's disk-pressure taint to go.
struct NodeConditions {
    node: String,
}

const NPD_TYPE: &str = "TetherE2EKernelDeadlock";

fn patch_node_status(node: &str, conditions: Value) -> Run {
    let patch = serde_json::json!({"status": {"conditions": conditions}}).to_string();
    kubectl(&[
        "patch",
        "node",
        node,
        "--subresource=status",
        "--type=strategic",
        "-p",
        &patch,
    ])
}

impl NodeConditions {
    fn set(node: &str) -> NodeConditions {
        let guard = NodeConditions {
            node: node.to_owned(),
        };
        patch_node_status(
            node,
            serde_json::json!([
                {"type": NPD_TYPE, "status": "True", "reason": "E2EHung",
                 "message": "set by tether's e2e test the way Node Problem Detector would"},
                {"type": "DiskPressure", "status": "True", "reason": "E2EDiskPressure",
                 "message": "set by tether's e2e test"}
            ]),
        )
        .expect_ok("patch the node's conditions");
        guard
    }
}

impl Drop for NodeConditions {
    fn drop(&mut self) {
        let _ = patch_node_status(
            &self.node,
            serde_json::json!([
                {"type": NPD_TYPE, "$patch": "delete"},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
                 "message": "kubelet has no disk pressure"}
            ]),
        );
        // No panic here (a panic while unwinding aborts): wait, and say so if it stays.
        let node = &self.node;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let taints = kubectl(&["get", "node", node, "-o", "jsonpath={.spec.taints}"]).stdout;
            let conditions = kubectl(&[
                "get",
                "node",
                node,
                "-o",
                "jsonpath={.status.conditions[*].type}",
            ])
            .stdout;
            if !taints.contains("disk-pressure") && !conditions.contains(NPD_TYPE) {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("node {node} not restored: taints {taints}, conditions {conditions}");
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn node_conditions_are_named_with_the_node() {
    let node = node_name();
    let id = format!("node.{node}.conditions");
    // The kubelet puts its own DiskPressure back at its next status update: set and look
    // until doctor has seen both at once.
    let mut seen = None;
    for _ in 0..5 {
        let guard = NodeConditions::set(&node);
        let (run, report) = doctor(&[]);
        let c = check(&report, &id).clone();
        if text(&c["found"]).contains("DiskPressure=True") {
            seen = Some((guard, run, report, c));
            break;
        }
    }
    let (guard, run, report, c) = seen.expect("doctor saw DiskPressure=True within 5 tries");
    assert_eq!(run.code, Some(1));
    assert_eq!(c["status"], "fail", "{c:#}");
    let found = text(&c["found"]);
    assert!(found.starts_with(&format!("{node}: ")), "{found}");
    assert!(
        found.contains("DiskPressure=True (E2EDiskPressure"),
        "{found}"
    );
    assert!(
        found.contains(&format!("{NPD_TYPE}=True (E2EHung")),
        "{found}"
    );
    let next = text(&c["next"]);
    assert!(
        next.contains(&format!("kubectl describe node {node}")),
        "{next}"
    );
    assert!(
        next.contains("reported by a node problem detector"),
        "{next}"
    );
    // The other checks still ran.
    assert_eq!(check(&report, "manager.pod")["status"], "ok");
    drop(guard);
    let (_, report) = doctor(&[]);
    assert_eq!(check(&report, &id)["status"], "ok", "restored: {report:#}");
}

/// A throwaway Deployment shaped like an agent-injected workload; deleted on drop.
struct CrashingWorkload(&'static str);

impl Drop for CrashingWorkload {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "deployment",
            self.0,
            "--wait=true",
            "--timeout=60s",
        ]);
    }
}

#[test]
fn a_crash_looping_agent_is_named_with_its_workload_and_reason() {
    let name = "doctor-e2e-crash";
    let manifest = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default",
            "labels": {"app.kubernetes.io/managed-by": "tether-e2e"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "tether-agent",
                    "image": manager_image(),
                    "imagePullPolicy": "IfNotPresent",
                    // Not a subcommand of the agent: it exits with an error at once.
                    "args": ["no-such-subcommand"]
                }]}
            }
        }
    });
    let file = std::env::temp_dir().join(format!("{name}-{}.json", std::process::id()));
    std::fs::write(&file, manifest.to_string()).expect("manifest");
    let _guard = CrashingWorkload(name);
    let applied = kubectl(&["apply", "-f", file.to_str().expect("UTF-8 path")]);
    let _ = std::fs::remove_file(&file);
    applied.expect_ok("create the crashing workload");

    let id = format!("agent.deployment.{name}");
    let c = eventually(
        Duration::from_secs(120),
        "doctor sees the crash loop",
        || {
            let (_, report) = doctor(&["-n", "default"]);
            let c = check(&report, &id).clone();
            text(&c["found"]).contains("CrashLoopBackOff").then_some(c)
        },
    );
    assert_eq!(c["status"], "fail", "{c:#}");
    let found = text(&c["found"]);
    assert!(
        found.starts_with(&format!("deployment/{name}: pod {name}-")),
        "{found}"
    );
    assert!(found.contains("last Error (exit code"), "{found}");
    let next = text(&c["next"]);
    assert!(
        next.contains("-c tether-agent --previous"),
        "the next step shows the crashed container's logs: {next}"
    );
}

/// Puts the workstation's resolv.conf back as it was before the test, after disconnecting.
struct ResolverBackup {
    before: Vec<u8>,
}

fn resolv_conf_path() -> PathBuf {
    PathBuf::from(format!("/etc/netns/{WS}/resolv.conf"))
}

impl Drop for ResolverBackup {
    fn drop(&mut self) {
        let _ = tether(WS, &["quit"]);
        if std::fs::read(resolv_conf_path()).ok().as_deref() != Some(&self.before[..]) {
            let _ = std::fs::write(resolv_conf_path(), &self.before);
        }
    }
}

#[test]
fn a_tampered_resolver_is_named_and_the_suggested_commands_repair_it() {
    let _restore = ResolverBackup {
        before: machine_state(WS).0,
    };
    let conn = Connected::new(WS, &[]);
    // What a VPN client or network manager would do behind tether's back (a local address:
    // nothing answers there, and no query leaves the machine).
    std::fs::write(resolv_conf_path(), "nameserver 127.0.0.1\n").expect("tamper");
    let (run, report) = doctor(&[]);
    assert_eq!(run.code, Some(1), "{report:#}");
    let resolver = check(&report, "workstation.resolver");
    assert_eq!(resolver["status"], "fail");
    assert!(
        text(&resolver["found"]).contains("no longer points to tether's DNS"),
        "{resolver:#}"
    );
    assert!(text(&resolver["found"]).contains("nameservers: 127.0.0.1"));
    let next = text(&resolver["next"]);
    assert!(
        next.starts_with("`sudo tether quit && sudo tether connect`"),
        "{next}"
    );
    let dns = check(&report, "workstation.dns");
    assert_eq!(dns["status"], "fail", "{dns:#}");
    // The tunnel itself is fine.
    assert_eq!(check(&report, "workstation.service")["status"], "ok");

    // The suggested repair (as root already: no sudo).
    drop(conn);
    let conn = Connected::new(WS, &[]);
    let (run, report) = doctor(&[]);
    assert_eq!(
        check(&report, "workstation.resolver")["status"],
        "ok",
        "{report:#}"
    );
    assert_eq!(
        check(&report, "workstation.dns")["status"],
        "ok",
        "{report:#}"
    );
    assert_eq!(run.code, Some(0), "{report:#}");
    drop(conn);
}

/// A file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_kubeconfig_pointing_to_a_closed_port_is_named_quickly() {
    let text_kc = std::fs::read_to_string(kubeconfig()).expect("kubeconfig");
    let closed: String = text_kc
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server:") {
                // Port 1 on the workstation's loopback: nothing listens.
                "    server: https://127.0.0.1:1".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let file =
        TempFile(std::env::temp_dir().join(format!("doctor-closed-{}.kc", std::process::id())));
    std::fs::write(&file.0, closed).expect("kubeconfig");
    let (run, report) = doctor(&["--kubeconfig", file.0.to_str().expect("UTF-8")]);
    assert_eq!(run.code, Some(1));
    let api = check(&report, "cluster.api");
    assert_eq!(api["status"], "fail");
    assert!(
        text(&api["found"]).starts_with("TCP: nothing accepts connections at 127.0.0.1:1"),
        "{api:#}"
    );
    assert!(api["next"].is_string());
    for id in ["nodes", "manager.installed", "rbac", "agents"] {
        assert_eq!(check(&report, id)["status"], "skipped", "{id}");
    }
}

/// A user's kubeconfig directory, removed on drop.
struct UserDir(PathBuf);

impl Drop for UserDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn a_user_who_may_not_list_nodes_is_told_and_the_rest_runs() {
    let user = "doctor-e2e-nonodes";
    let kc = UserDir(user_kubeconfig(user));
    let mut bindings = Bindings::default();
    let as_user = format!("--user={user}");
    let name = format!("tether-e2e-{user}");
    bindings.bind(&[
        "clusterrolebinding",
        &name,
        "--clusterrole=tether-client",
        &as_user,
    ]);
    bindings.bind(&[
        "rolebinding",
        &name,
        "--role=tether-client",
        &as_user,
        "-n",
        "tether",
    ]);

    let (run, report) = doctor(&["--kubeconfig", kc.0.to_str().expect("UTF-8")]);
    let nodes = check(&report, "nodes");
    assert_eq!(nodes["status"], "skipped", "{report:#}");
    assert_eq!(text(&nodes["found"]), "your user may not list nodes (RBAC)");
    assert!(text(&nodes["next"]).contains("tether-client-nodes"));
    let rbac_nodes = check(&report, "rbac.nodes");
    assert_eq!(rbac_nodes["status"], "warn");
    assert!(text(&rbac_nodes["next"]).contains("--clusterrole=tether-client-nodes"));
    // The rest ran.
    for id in ["cluster.api", "rbac.session", "rbac.carrier", "manager.pod"] {
        assert_eq!(check(&report, id)["status"], "ok", "{id}: {report:#}");
    }
    assert_eq!(run.code, Some(0), "nothing failed: {report:#}");
}

/// Objects a test created with `kubectl create`; deleted on drop.
struct Created(Vec<[String; 3]>);

impl Drop for Created {
    fn drop(&mut self) {
        for [kind, name, ns] in &self.0 {
            let _ = kubectl(&["-n", ns, "delete", kind, name, "--ignore-not-found"]);
        }
    }
}

const SECRET_VALUE: &str = "tether-e2e-very-secret-value-4711";
const BEARER: &str = "e2eBearerTokenValue0123456789";

/// Every file of a `.tar.gz` (unpacked by `tar`) or `.zip` (tested, then unpacked, by `unzip`),
/// as (path, bytes).
fn unpack(archive: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = std::env::temp_dir().join(format!("doctor-unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tmp");
    if archive.extension().is_some_and(|e| e == "zip") {
        let tested = run(Command::new("unzip").arg("-t").arg(archive)).expect_ok("unzip -t");
        assert!(tested.contains("No errors detected"), "{tested}");
        run(Command::new("unzip")
            .arg("-q")
            .arg(archive)
            .arg("-d")
            .arg(&dir))
        .expect_ok("unzip");
    } else {
        run(Command::new("tar")
            .arg("xzf")
            .arg(archive)
            .arg("-C")
            .arg(&dir))
        .expect_ok("tar xzf");
    }
    let mut files = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(&dir)
                    .expect("inside")
                    .display()
                    .to_string();
                files.push((rel, std::fs::read(&path).expect("file")));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    files.sort();
    files
}

#[test]
fn gather_logs_holds_the_expected_files_and_no_secret() {
    let mut created = Created(Vec::new());
    kubectl(&[
        "-n",
        "default",
        "create",
        "secret",
        "generic",
        "doctor-e2e-secret",
        &format!("--from-literal=password={SECRET_VALUE}"),
    ])
    .expect_ok("create a Secret");
    created.0.push([
        "secret".into(),
        "doctor-e2e-secret".into(),
        "default".into(),
    ]);
    // A Warning event whose message leaks everything (as a careless log line would).
    let key =
        "-----BEGIN RSA PRIVATE KEY-----\\nMIIEowIBAAKCAQEAe2e\\n-----END RSA PRIVATE KEY-----";
    let event = format!(
        r#"{{"apiVersion":"v1","kind":"Event","metadata":{{"name":"doctor-e2e-leak","namespace":"default"}},
        "involvedObject":{{"kind":"Pod","name":"doctor-e2e","namespace":"default"}},
        "type":"Warning","reason":"DoctorE2ELeak",
        "message":"value {SECRET_VALUE} header Authorization: Bearer {BEARER} key {key}"}}"#
    );
    let file =
        TempFile(std::env::temp_dir().join(format!("doctor-event-{}.json", std::process::id())));
    std::fs::write(&file.0, event).expect("event");
    kubectl(&["create", "-f", file.0.to_str().expect("UTF-8")]).expect_ok("create an event");
    created
        .0
        .push(["event".into(), "doctor-e2e-leak".into(), "default".into()]);

    let _conn = Connected::new(WS, &[]);
    for format in ["tar.gz", "zip"] {
        gathered_archive_is_complete_and_clean(format);
    }

    // On a terminal (a pseudo-terminal by `script`), a line per step with its counts.
    let archive =
        TempFile(std::env::temp_dir().join(format!("doctor-tty-{}.zip", std::process::id())));
    let command = format!(
        "TETHER_RUNTIME_DIR={} KUBECONFIG={} {} gather-logs -n default --since 5m -o {}",
        runtime_dir(WS).display(),
        kubeconfig().display(),
        tether_bin().display(),
        archive.0.display()
    );
    let shown = run(in_ns(WS, "script").args(["-qec", &command, "/dev/null"]))
        .expect_ok("gather-logs on a terminal");
    for step in [
        "running tether doctor…",
        "reading Warning events of 2 namespaces…",
        "reading the traffic manager's logs (1 pod)…",
        "reading the agents' logs in namespace default (",
        "redacting and writing the archive (",
    ] {
        assert!(shown.contains(step), "{step:?} in {shown}");
    }
    assert!(archive.0.exists());
}

/// `gather-logs -o doctor-logs-PID.FORMAT`, unpacked with the format's own tool and scanned.
fn gathered_archive_is_complete_and_clean(format: &str) {
    let archive =
        TempFile(std::env::temp_dir().join(format!("doctor-logs-{}.{format}", std::process::id())));
    let out = tether(
        WS,
        &[
            "gather-logs",
            "-n",
            "default",
            "--since",
            "30m",
            "-o",
            archive.0.to_str().expect("UTF-8"),
        ],
    );
    let out_stderr = out.stderr.clone();
    let stdout = out.expect_ok("gather-logs");
    assert!(stdout.contains("Wrote "), "{format}: {stdout}");
    // Not a terminal: no progress lines.
    assert!(
        !out_stderr.contains("reading"),
        "{format}: progress on a pipe: {out_stderr}"
    );

    let files = unpack(&archive.0);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "tether-logs/README.txt",
        "tether-logs/doctor.json",
        "tether-logs/doctor.txt",
        "tether-logs/versions.txt",
        "tether-logs/nodes.yaml",
        "tether-logs/events/default.txt",
        "tether-logs/events/tether.txt",
        "tether-logs/workstation/daemon.log",
        "tether-logs/workstation/helper.log",
        "tether-logs/workstation/status.json",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("tether-logs/manager/tether-manager-") && n.ends_with(".log")),
        "{names:?}"
    );
    let doctor_json = &files
        .iter()
        .find(|(n, _)| n == "tether-logs/doctor.json")
        .expect("doctor.json")
        .1;
    let report: Value = serde_json::from_slice(doctor_json).expect("doctor.json parses");
    assert!(report["checks"].as_array().is_some_and(|c| !c.is_empty()));
    let events = String::from_utf8_lossy(
        &files
            .iter()
            .find(|(n, _)| n == "tether-logs/events/default.txt")
            .expect("events")
            .1,
    )
    .into_owned();
    assert!(
        events.contains("DoctorE2ELeak"),
        "the leaking event is there, redacted: {events}"
    );

    for (name, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("PRIVATE KEY"), "a private key in {name}");
        assert!(!text.contains(SECRET_VALUE), "the Secret's value in {name}");
        assert!(!text.contains(BEARER), "a bearer token in {name}");
        assert!(
            !text
                .lines()
                .any(|l| l.contains("Bearer ") && !l.contains("Bearer <redacted>")),
            "a bearer token in {name}"
        );
    }
}

/// A network device a test added to the workstation, as a VPN client adds its tunnel; deleted on
/// drop (its routes go with it).
struct VpnLink(&'static str);

impl VpnLink {
    fn add(name: &'static str) -> VpnLink {
        let guard = VpnLink(name);
        // A TUN device, as VPN clients use (this kernel has no dummy devices).
        run(Command::new("ip").args(["-n", WS, "tuntap", "add", "dev", name, "mode", "tun"]))
            .expect_ok("add the VPN's device");
        run(Command::new("ip").args(["-n", WS, "link", "set", name, "up"]))
            .expect_ok("set the VPN's device up");
        guard
    }
}

impl Drop for VpnLink {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args(["-n", WS, "link", "del", self.0]));
    }
}

/// The command between the first pair of backticks of `next`, without `sudo` (the tests run as
/// root already).
fn suggested_command(next: &str) -> Vec<String> {
    let command = next
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in {next:?}"));
    command
        .split_whitespace()
        .skip_while(|w| *w == "sudo")
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_vpn_route_shadowing_the_cluster_is_named_and_its_removal_repairs_it() {
    let _conn = Connected::new(WS, &[]);
    let (run_before, report) = doctor(&[]);
    assert_eq!(run_before.code, Some(0), "healthy first: {report:#}");

    // What a VPN would do: a more specific route for part of a cluster range, through its own
    // device. The range holds the Service doctor connects to ("TCP to Service NS/NAME (IP:PORT)
    // through the tunnel"), so the route really takes its traffic.
    let service = text(&check(&report, "workstation.service")["found"]).to_owned();
    let ip = service
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(':'))
        .map(|(ip, _)| ip.to_owned())
        .unwrap_or_else(|| panic!("the Service's address in {service:?}"));
    let octets: Vec<&str> = ip.split('.').collect();
    assert_eq!(octets.len(), 4, "{ip}");
    let shadow = format!("{}.{}.{}.0/24", octets[0], octets[1], octets[2]);
    let vpn = VpnLink::add("vpn-e2e0");
    run(Command::new("ip").args(["-n", WS, "route", "add", &shadow, "dev", vpn.0]))
        .expect_ok("add the VPN's route");

    let (run, report) = doctor(&[]);
    assert_eq!(run.code, Some(1), "{report:#}");
    let routes = check(&report, "workstation.routes");
    assert_eq!(routes["status"], "fail", "{routes:#}");
    let found = text(&routes["found"]);
    assert!(
        found.starts_with(&format!("{shadow} dev vpn-e2e0 shadows ")),
        "the route and its device are named: {found}"
    );
    assert!(found.contains("bypasses tether"), "{found}");
    let next = text(&routes["next"]);
    assert!(next.contains("--never-proxy"), "the VPN's way out: {next}");
    // The Service behind the route is really out of reach.
    assert_eq!(
        check(&report, "workstation.service")["status"],
        "fail",
        "{report:#}"
    );

    // The suggested repair, run as given (in the workstation).
    let command = suggested_command(next);
    assert_eq!(command, ["ip", "route", "del", shadow.as_str()], "{next}");
    let mut repair = in_ns(WS, &command[0]);
    repair.args(&command[1..]);
    tether_e2e::run(&mut repair).expect_ok("the suggested command");
    let (run, report) = doctor(&[]);
    assert_eq!(
        check(&report, "workstation.routes")["status"],
        "ok",
        "{report:#}"
    );
    assert_eq!(check(&report, "workstation.service")["status"], "ok");
    assert_eq!(run.code, Some(0), "{report:#}");
    drop(vpn);
}

/// Whether process `pid` has finished (gone, or a zombie).
fn finished(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn a_killed_daemon_leaves_state_that_doctor_names_and_quit_repairs() {
    let before = machine_state(WS);
    let _restore = ResolverBackup {
        before: before.0.clone(),
    };
    let (run, report) = doctor(&[]);
    assert_eq!(
        check(&report, "workstation.leftovers")["status"],
        "ok",
        "clean first: {report:#}"
    );
    assert_eq!(run.code, Some(0));

    let conn = Connected::new(WS, &[]);
    let status = conn.status();
    std::mem::forget(conn);
    // Both of this test's processes killed at once (the machine's OOM killer, a crash): the
    // helper first, so that it cannot restore anything when the daemon dies.
    let helper = status["privileged_pid"].as_u64().expect("helper pid");
    let daemon = status["daemon_pid"].as_u64().expect("daemon pid");
    for pid in [helper, daemon] {
        // The daemon may already have gone with its helper (its parent-death signal).
        let _ = tether_e2e::run(Command::new("kill").args(["-9", &pid.to_string()]));
    }
    for pid in [helper, daemon] {
        eventually(Duration::from_secs(10), "the process gone", || {
            finished(pid).then_some(())
        });
    }
    // What a crash really leaves: the resolver, its saved original and maybe the socket; the TUN
    // device (and its routes) went with the daemon's descriptor.
    let socket = runtime_dir(WS).join("user/daemon.sock");
    let socket_left = socket.exists();
    eprintln!("left behind: resolv.conf changed, socket {socket_left}");
    assert_ne!(
        machine_state(WS).0,
        before.0,
        "the resolver is left changed"
    );
    let links = tether_e2e::run(Command::new("ip").args(["-n", WS, "link"])).stdout;
    assert!(!links.contains("tether0"), "{links}");

    let (run, report) = doctor(&[]);
    assert_eq!(run.code, Some(1), "{report:#}");
    assert_eq!(check(&report, "workstation.daemon")["status"], "ok");
    let left = check(&report, "workstation.leftovers");
    assert_eq!(left["status"], "fail", "{left:#}");
    let found = text(&left["found"]);
    assert!(
        found.contains("/etc/resolv.conf is still tether's"),
        "{found}"
    );
    assert!(found.contains("original resolver configuration"), "{found}");
    assert_eq!(
        found.contains(&format!(
            "a dead daemon's control socket remains ({})",
            socket.display()
        )),
        socket_left,
        "the socket named if and only if it remains: {found}"
    );
    assert!(!found.contains("TUN"), "no TUN device is left: {found}");
    let next = text(&left["next"]);
    assert!(next.starts_with("`sudo tether quit`"), "{next}");

    // The suggested repair.
    let quit = tether(WS, &["quit"]).expect_ok("tether quit");
    assert!(
        quit.starts_with("Not connected; restored the resolver configuration"),
        "{quit}"
    );
    let (run, report) = doctor(&[]);
    let left = check(&report, "workstation.leftovers");
    assert_eq!(left["status"], "ok", "{left:#}");
    assert_eq!(text(&left["found"]), "nothing left by a crashed session");
    assert_eq!(run.code, Some(0), "{report:#}");
    assert_eq!(machine_state(WS), before, "resolv.conf and routes restored");
    assert!(!socket.exists(), "no socket remains");
}

#[test]
fn gather_logs_refuses_an_archive_name_of_no_known_format() {
    let out = tether(WS, &["gather-logs", "-o", "/tmp/doctor-logs.rar"]);
    assert_eq!(out.code, Some(2), "a usage error: {out:?}");
    assert!(
        out.stderr.contains(
            "cannot tell the archive format of \"/tmp/doctor-logs.rar\": name it *.tar.gz, \
             *.tgz or *.zip"
        ),
        "{}",
        out.stderr
    );
    assert!(!Path::new("/tmp/doctor-logs.rar").exists());
}

/// Ends the intercept of a workload and removes its agent on drop.
struct Intercepted(&'static str);

impl Drop for Intercepted {
    fn drop(&mut self) {
        let _ = tether(WS, &["leave", self.0]);
        let _ = tether(
            WS,
            &[
                "uninstall",
                &format!("deployment/{}", self.0),
                "-n",
                "default",
            ],
        );
    }
}

#[test]
fn a_service_port_drifted_past_the_agent_is_named_and_reinjecting_repairs_it() {
    let _conn = Connected::new(WS, &[]);
    let intercepted = Intercepted("orders");
    tether(WS, &["intercept", "orders", "--port", "18095:http"]).expect_ok("tether intercept");
    let id = "agent.deployment.orders";
    let (_, report) = doctor(&["-n", "default"]);
    assert_eq!(check(&report, id)["status"], "ok", "{report:#}");

    // The Service's manifest applied again (kubectl apply, a Helm upgrade): its port points at
    // the app again, as it did before the injection.
    let record = kubectl(&[
        "get",
        "deployment",
        "orders",
        "-o",
        "jsonpath={.metadata.annotations.tether\\.dev/agent}",
    ])
    .expect_ok("the injection record");
    let record: Value = serde_json::from_str(&record).expect("the record as JSON");
    let taken = &record["services"][0];
    let (service, port, agent_port) = (
        text(&taken["service"]).to_owned(),
        taken["port"].as_i64().expect("port"),
        taken["agentPort"].as_i64().expect("agent port"),
    );
    let ports: Value = serde_json::from_str(
        &kubectl(&["get", "service", &service, "-o", "jsonpath={.spec.ports}"])
            .expect_ok("the Service's ports"),
    )
    .expect("ports as JSON");
    let index = ports
        .as_array()
        .and_then(|ps| ps.iter().position(|p| p["port"] == port))
        .expect("the port the agent took");
    assert_eq!(ports[index]["targetPort"], agent_port, "injected: {ports}");
    let original = &taken["originalTargetPort"];
    let path = format!("/spec/ports/{index}/targetPort");
    let patch = if original.is_null() {
        serde_json::json!([{"op": "remove", "path": path}])
    } else {
        serde_json::json!([{"op": "replace", "path": path, "value": original}])
    };
    kubectl(&[
        "patch",
        "service",
        &service,
        "--type=json",
        "-p",
        &patch.to_string(),
    ])
    .expect_ok("re-apply the Service's port");

    let (_, report) = doctor(&["-n", "default"]);
    let c = check(&report, id);
    assert_eq!(c["status"], "warn", "{c:#}");
    let shown = match original {
        Value::String(s) => s.clone(),
        Value::Null => "its port number (no targetPort)".into(),
        other => other.to_string(),
    };
    let found = text(&c["found"]);
    assert!(
        found.contains(&format!(
            "Service {service} port {port} targets {shown} again, not the agent's {agent_port}"
        )),
        "{found}"
    );
    assert!(found.contains("bypasses the agent"), "{found}");
    let next = text(&c["next"]);
    assert!(
        next.contains(
            "`tether uninstall deployment/orders -n default`, then `tether intercept` again"
        ),
        "{next}"
    );

    // The suggested repair: the agent out (after the intercept ends), and in again.
    tether(WS, &["leave", "orders"]).expect_ok("tether leave");
    let command = suggested_command(next);
    assert_eq!(command[..2], ["tether", "uninstall"], "{next}");
    tether(
        WS,
        &command[1..].iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .expect_ok("the suggested uninstall");
    tether(WS, &["intercept", "orders", "--port", "18095:http"]).expect_ok("intercept again");
    let (_, report) = doctor(&["-n", "default"]);
    let c = check(&report, id);
    assert_eq!(c["status"], "ok", "{c:#}");
    drop(intercepted);
}
