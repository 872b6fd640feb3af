//! `tether connect`: the workstation joins the cluster network.
//!
//! Every client runs in the workstation namespace, which has no route to pods or Services, so
//! every success here went through tether. The tests share one workstation and run one at a
//! time (`--test-threads=1`).

use std::{process::Command, time::Duration};

use tether_e2e::*;

#[test]
fn connect_reaches_names_ips_udp_and_quit_restores() {
    let before = machine_state(WS);
    let pods = hello_pods();
    let (pod_name, pod_ip) = pods.first().cloned().expect("hello pod");
    let svc_ip = cluster_ip("hello");

    // Before: neither names nor addresses work.
    assert!(!curl(Some(WS), &["--max-time", "3", "http://hello.default/"]).ok);
    assert!(
        !curl(
            Some(WS),
            &["--max-time", "3", &format!("http://{pod_ip}:8080/")]
        )
        .ok
    );

    let conn = Connected::new(WS, &[]);
    let status = conn.status();
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(
        status["transport"], "udp",
        "auto picks UDP where the NodePort answers: {status}"
    );

    for url in [
        "http://hello.default/",
        "http://hello/",
        "http://hello.default.svc.cluster.local/",
        &format!("http://{svc_ip}/"),
    ] {
        assert_hello(curl(Some(WS), &[url]), url);
    }
    let body = curl(Some(WS), &[&format!("http://{pod_ip}:8080/")]).expect_ok("pod IP");
    assert!(body.contains(&format!("hello from {pod_name}")), "{body}");

    // Headless Service: one address per ready pod, and each answers.
    let mut expected: Vec<String> = pods.iter().map(|(_, ip)| ip.clone()).collect();
    expected.sort();
    assert_eq!(
        resolve(WS, "hello-headless.default.svc.cluster.local"),
        expected
    );
    assert_hello(curl(Some(WS), &["http://hello-headless:8080/"]), "headless");

    // UDP through the Service and straight to a pod.
    let echo = udp_roundtrip(WS, "hello.default.svc.cluster.local", 9000, "ping-udp")
        .expect_ok("udp echo");
    assert_eq!(echo.trim(), "ping-udp");
    let echo = udp_roundtrip(WS, &pod_ip, 9000, "ping-pod").expect_ok("udp echo to pod");
    assert_eq!(echo.trim(), "ping-pod");

    // Names outside the cluster still come from the original resolver.
    assert_eq!(resolve(WS, "outside.tether.test"), ["198.51.100.7"]);
    // An unknown cluster name is NXDOMAIN, not a hang.
    assert!(resolve(WS, "nope.default.svc.cluster.local").is_empty());

    drop(conn);
    let after = machine_state(WS);
    assert_eq!(
        String::from_utf8_lossy(&after.0),
        String::from_utf8_lossy(&before.0),
        "resolv.conf restored"
    );
    assert_eq!(after.0, before.0, "resolv.conf restored byte for byte");
    assert_eq!(after.1, before.1, "routes restored");
    assert!(
        !curl(Some(WS), &["--max-time", "3", "http://hello.default/"]).ok,
        "disconnected"
    );
}

#[test]
fn port_forward_transport_works() {
    let conn = Connected::new(WS, &["--transport", "port-forward"]);
    assert_eq!(conn.status()["transport"], "port-forward");
    assert_hello(
        curl(Some(WS), &["http://hello.default/"]),
        "over port-forward",
    );
    let echo = udp_roundtrip(WS, "hello.default.svc.cluster.local", 9000, "pf-udp")
        .expect_ok("udp over port-forward");
    assert_eq!(echo.trim(), "pf-udp");
    // Bulk both ways: the carrier's WebSocket messages join and split a stream of packets.
    let sh = |script: &str| run(in_ns(WS, "sh").args(["-c", script]));
    let up = sh("head -c 8388608 /dev/urandom \
         | curl -sS --max-time 60 --data-binary @- http://hello.default/")
    .expect_ok("an 8 MiB upload over port-forward");
    assert!(up.contains("body 8388608 bytes"), "{up}");
    let down = sh("curl -sS --max-time 60 'http://hello.default/bytes?n=8388608' | wc -c")
        .expect_ok("an 8 MiB download over port-forward");
    assert_eq!(down.trim(), "8388608");
}

#[test]
fn udp_transport_forced() {
    let conn = Connected::new(WS, &["--transport", "udp"]);
    assert_eq!(conn.status()["transport"], "udp");
    assert_hello(curl(Some(WS), &["http://hello.default/"]), "over udp");
}

#[test]
fn next_connect_repairs_what_a_killed_daemon_left() {
    let before = machine_state(WS);
    let conn = Connected::new(WS, &[]);
    let status = conn.status();
    std::mem::forget(conn);
    // The helper dies (the OOM killer): nothing could clean up, and the daemon dies with it
    // (its parent-death signal) rather than keep the machine changed with no one to restore it.
    let helper = status["privileged_pid"].as_u64().expect("pid");
    run(Command::new("kill").args(["-9", &helper.to_string()])).expect_ok("kill -9");
    for key in ["privileged_pid", "daemon_pid"] {
        let pid = status[key].as_u64().expect("pid");
        eventually(Duration::from_secs(10), "process gone", || {
            (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        });
    }
    assert_ne!(
        machine_state(WS).0,
        before.0,
        "the dead daemon left its resolv.conf"
    );

    let conn = Connected::new(WS, &[]);
    assert_hello(curl(Some(WS), &["http://hello.default/"]), "after repair");
    drop(conn);
    assert_eq!(machine_state(WS), before, "resolv.conf and routes restored");
}

/// The fields of `/proc/PID/status` named `key` (e.g. `Uid`).
fn proc_status(pid: u64, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

#[test]
fn only_the_helper_is_privileged_and_it_cleans_up_after_a_daemon_crash() {
    let before = machine_state(WS);
    let conn = Connected::new(WS, &[]);
    let status = conn.status();
    let daemon = status["daemon_pid"].as_u64().expect("daemon pid");
    let helper = status["privileged_pid"].as_u64().expect("helper pid");
    assert_ne!(daemon, helper);
    // The daemon (tunnel, stack, DNS, kube client, intercepts) has no privilege at all.
    let uid = proc_status(daemon, "Uid");
    assert!(
        !uid.split_whitespace().any(|u| u == "0"),
        "daemon uids: {uid}"
    );
    assert_eq!(proc_status(daemon, "CapEff"), "0000000000000000");
    assert!(proc_status(helper, "Uid").starts_with('0'));
    assert_hello(curl(Some(WS), &["http://hello.default/"]), "connected");

    // The daemon crashes: the helper puts DNS and routes back at once, with no new connect.
    std::mem::forget(conn);
    run(Command::new("kill").args(["-9", &daemon.to_string()])).expect_ok("kill -9");
    eventually(Duration::from_secs(10), "machine restored", || {
        let gone = !std::path::Path::new(&format!("/proc/{helper}")).exists();
        (gone && machine_state(WS) == before).then_some(())
    });
    let links = run(Command::new("ip").args(["-n", WS, "link"])).stdout;
    assert!(!links.contains("tether0"), "{links}");
}

#[test]
fn reconnects_after_the_manager_pod_is_deleted() {
    let conn = Connected::new(WS, &[]);
    assert_hello(curl(Some(WS), &["http://hello.default/"]), "before");
    let session = conn.status()["session_id"].clone();
    delete_manager_pod();
    let started = std::time::Instant::now();
    eventually(Duration::from_secs(60), "a new session", || {
        let s = conn.status();
        (s["connected"] == true && s["session_id"] != session).then_some(())
    });
    eprintln!(
        "reconnected {:?} after the manager pod was deleted",
        started.elapsed()
    );
    assert_hello(
        curl(Some(WS), &["http://hello.default/"]),
        "after reconnect",
    );
    assert!(conn.status()["reconnects"].as_u64().unwrap_or(0) >= 1);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let before = machine_state(WS);

    let r = tether(WS, &["connect", "-n", "no-such-namespace"]);
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("namespace \"no-such-namespace\" does not exist"),
        "{}",
        r.stderr
    );
    assert_eq!(
        machine_state(WS),
        before,
        "a refused connect changes nothing"
    );

    let r = tether(WS, &["connect", "--transport", "carrier-pigeon"]);
    assert_eq!(r.code, Some(2), "bad flag is a usage error: {}", r.stderr);

    let r = tether(WS, &["connect", "--never-proxy", "10.0.0.0/33"]);
    assert_eq!(r.code, Some(2), "bad CIDR is a usage error: {}", r.stderr);

    // A second connect while connected.
    let conn = Connected::new(WS, &[]);
    let r = tether(WS, &["connect"]);
    assert!(
        !r.ok && r.stderr.contains("already connected"),
        "{}",
        r.stderr
    );

    // Malformed DNS packets do not hurt the DNS server.
    let dns = conn.status()["dns_server"]
        .as_str()
        .expect("dns ip")
        .to_owned();
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for p in [b'', b'\\x00', b'\\xff'*11, b'\\x12\\x34\\x01\\x00\\x00\\x01'+b'\\x00'*6+b'\\x3fabc', bytes(range(256))*4]:\n  s.sendto(p,({dns:?},53))"
    );
    run(in_ns(WS, "python3").args(["-c", &script])).expect_ok("send garbage");
    assert_hello(
        curl(Some(WS), &["http://hello.default/"]),
        "DNS after garbage",
    );
    drop(conn);
    assert_eq!(machine_state(WS), before);
}

#[test]
fn a_route_conflict_is_refused_with_the_route_named() {
    let before_routes = machine_state(WS);
    run(Command::new("ip").args([
        "-n",
        WS,
        "route",
        "add",
        "10.96.7.0/24",
        "via",
        &ws_gateway(),
    ]))
    .expect_ok("add conflicting route");
    let r = tether(WS, &["connect"]);
    let ok_with_flag = {
        let c = tether(WS, &["connect", "--never-proxy", "10.96.7.0/24"]);
        let _ = tether(WS, &["quit"]);
        c
    };
    run(Command::new("ip").args(["-n", WS, "route", "del", "10.96.7.0/24"])).expect_ok("del route");
    assert!(!r.ok, "conflict must refuse");
    assert!(
        r.stderr.contains("10.96.7.0/24 via"),
        "names the route: {}",
        r.stderr
    );
    assert!(
        ok_with_flag.ok,
        "--never-proxy resolves the conflict: {}",
        ok_with_flag.stderr
    );
    assert_eq!(machine_state(WS), before_routes);
}

#[test]
fn a_user_without_rbac_rights_is_told_so() {
    let kc = user_kubeconfig("nobody");
    let r = run(Command::new("ip")
        .args(["netns", "exec", WS])
        .arg(tether_bin())
        .args(["connect", "--kubeconfig"])
        .arg(&kc)
        .env("TETHER_RUNTIME_DIR", runtime_dir(WS)));
    let _ = std::fs::remove_dir_all(kc.parent().expect("dir"));
    assert!(!r.ok);
    assert!(r.stderr.contains("forbidden by RBAC"), "{}", r.stderr);
}

fn ws_gateway() -> String {
    // The host side of the workstation's veth: the route to the node goes via it.
    let out = run(Command::new("ip").args(["-n", WS, "route"])).stdout;
    out.split_whitespace()
        .skip_while(|w| *w != "via")
        .nth(1)
        .expect("gateway")
        .to_owned()
}

#[test]
fn pods_cannot_read_the_tunnel_credential() {
    // The tunnel's client certificate is in a Secret; without it the manager's mutual TLS
    // refuses the handshake, so a workload cannot pose as a developer's client.
    for sa in [
        "system:serviceaccount:default:default",
        "system:serviceaccount:tether:default",
    ] {
        let r = kubectl(&[
            "auth",
            "can-i",
            "get",
            "secret/tether-manager-tls",
            "-n",
            "tether",
            "--as",
            sa,
        ]);
        assert_eq!(
            r.stdout.trim(),
            "no",
            "{sa} must not read the credential: {}",
            r.stderr
        );
    }
    let r = kubectl(&[
        "auth",
        "can-i",
        "get",
        "secret/tether-manager-tls",
        "-n",
        "tether",
    ]);
    assert_eq!(r.stdout.trim(), "yes", "the admin (a tether user) may");
}

/// kubectl's conventions: `KUBECONFIG` lists several files, merged; the current context is in
/// the second one, and without `-n` its namespace is the connected one.
#[test]
fn a_kubeconfig_list_is_merged_and_the_contexts_namespace_is_the_default() {
    let dir = tempdir("kubeconfig-list");
    let full: serde_json::Value = serde_json::from_str(
        &kubectl(&["config", "view", "--raw", "--minify", "-o", "json"])
            .expect_ok("kubectl config view"),
    )
    .expect("kubeconfig JSON");
    let context = &full["contexts"][0]["context"];
    // a: the cluster and the user, no context; b: only a context naming them, with namespace
    // `tether` (where the Service `tether-manager` is), and the current context.
    let a = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": full["clusters"], "users": full["users"],
    });
    let b = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "contexts": [{"name": "second-file", "context": {
            "cluster": context["cluster"], "user": context["user"], "namespace": "tether",
        }}],
        "current-context": "second-file",
    });
    let (pa, pb) = (dir.join("a.yaml"), dir.join("b.yaml"));
    std::fs::write(&pa, serde_yaml::to_string(&a).unwrap()).unwrap();
    std::fs::write(&pb, serde_yaml::to_string(&b).unwrap()).unwrap();
    let list = format!("{}:{}", pa.display(), pb.display());
    let tether_with_list = |args: &[&str]| {
        run(Command::new("ip")
            .args(["netns", "exec", WS])
            .arg(tether_bin())
            .args(args)
            .env("TETHER_RUNTIME_DIR", runtime_dir(WS))
            .env("KUBECONFIG", &list))
    };

    tether_with_list(&["connect"]).expect_ok("connect with KUBECONFIG=a:b");
    let conn = Connected { ns: WS.to_owned() };
    let status = conn.status();
    assert_eq!(status["context"], "second-file", "{status}");
    assert_eq!(
        status["namespace"], "tether",
        "the context's namespace, not `default`: {status}"
    );
    // A short name resolves in that namespace, as from a pod there.
    let manager = cluster_ip_in("tether", "tether-manager");
    assert_eq!(resolve(WS, "tether-manager"), [manager]);
    drop(conn);

    // `-n` still wins over the context's namespace.
    tether_with_list(&["connect", "-n", "default"]).expect_ok("connect -n default");
    let conn = Connected { ns: WS.to_owned() };
    assert_eq!(conn.status()["namespace"], "default");
    assert_hello(
        curl(Some(WS), &["--max-time", "5", "http://hello/"]),
        "curl hello",
    );
    drop(conn);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cluster_ip_in(namespace: &str, svc: &str) -> String {
    kubectl(&[
        "-n",
        namespace,
        "get",
        "svc",
        svc,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
    .expect_ok("kubectl get svc")
}
