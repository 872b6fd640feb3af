//! Helpers for tether's end-to-end tests.
//!
//! The tests run against the local cluster that `cargo xtask cluster up` brings up (or any cluster
//! given `KUBECONFIG` and a workstation namespace). Clients run in the workstation network
//! namespace `tether-ws`, which reaches only the API server and node address, so anything that
//! reaches a pod or a Service from there went through tether.
//!
//! # Layout
//! This file: running commands in the workstation namespaces, the `tether` binary, the cluster's
//! kubeconfig and images, waiting helpers. [`resolvers`]: the real resolvers (glibc, musl,
//! Go, `dig`) and the original resolver's query log for the DNS tests. [`network`]: a
//! workstation changing address and losing its link.
#![forbid(unsafe_code)]

pub mod network;
pub mod resolvers;

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The workstation namespace the tests run clients in.
pub const WS: &str = "tether-ws";
/// A second workstation, for tests with two developers.
pub const WS2: &str = "tether-ws2";
/// Every workstation namespace the cluster script makes (`WS_NAMESPACES` in
/// `xtask/scripts/lib.sh`), for tests with many developers.
pub const WORKSTATIONS: [&str; 5] = [WS, WS2, "tether-ws3", "tether-ws4", "tether-ws5"];

/// Where the local cluster keeps its state.
pub fn state_dir() -> PathBuf {
    std::env::var_os("TETHER_CLUSTER_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/tether-cluster"))
}

/// The repository root.
pub fn repo() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

pub fn kubeconfig() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir().join("admin.kubeconfig"))
}

/// The finished result of a command, with its output as text.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            ok: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The stdout, or a panic that shows what went wrong.
    #[track_caller]
    pub fn expect_ok(self, what: &str) -> String {
        assert!(
            self.ok,
            "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self.stdout
    }
}

/// Runs a command to completion.
pub fn run(cmd: &mut Command) -> Run {
    match cmd.output() {
        Ok(o) => o.into(),
        Err(e) => Run {
            ok: false,
            code: None,
            stdout: String::new(),
            stderr: format!("cannot run {cmd:?}: {e}"),
        },
    }
}

/// `kubectl` with the test kubeconfig.
pub fn kubectl(args: &[&str]) -> Run {
    run(Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args))
}

/// A command run inside a network namespace.
pub fn in_ns(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]);
    cmd
}

/// `curl -sS --max-time 5 ARGS...` from the host (`ns` = None) or a namespace.
pub fn curl(ns: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = match ns {
        Some(ns) => in_ns(ns, "curl"),
        None => Command::new("curl"),
    };
    run(cmd.args(["-sS", "--max-time", "5"]).args(args))
}

/// Retries `f` until it returns `Some` or `timeout` passes; for conditions that become true
/// eventually (rollouts, reconnects), instead of fixed sleeps.
#[track_caller]
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends requests from the client pod: `tether-testapp get URL ARGS`. Returns one
/// `STATUS first-body-line` per request.
pub fn from_cluster(url: &str, args: &[&str]) -> Run {
    let mut full = vec![
        "exec",
        "deploy/client",
        "-c",
        "app",
        "--",
        "tether-testapp",
        "get",
        url,
    ];
    full.extend_from_slice(args);
    kubectl(&full)
}

/// Asserts that `r` succeeded with an answer from the sample app `hello`.
pub fn assert_hello(r: Run, what: &str) {
    let body = r.expect_ok(what);
    assert!(body.contains("hello from hello-"), "{what}: {body}");
}

/// Who answered each request, e.g. `["laptop-ann", "orders-7c…"]`.
pub fn answered_by(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| {
            l.split_once("hello from ")
                .map(|(_, who)| who.trim().to_owned())
                .unwrap_or_else(|| format!("<{l}>"))
        })
        .collect()
}

/// Pods of the sample app that are running and not being deleted: (name, pod IP).
pub fn hello_pods() -> Vec<(String, String)> {
    running_pods("app=hello")
}

/// Pods matching `selector` that are running and not being deleted: (name, pod IP).
pub fn running_pods(selector: &str) -> Vec<(String, String)> {
    kubectl(&[
        "get",
        "pods",
        "-l",
        selector,
        "--field-selector=status.phase=Running",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ])
    .expect_ok("listing pods")
    .lines()
    .filter_map(|l| {
        let mut f = l.split_whitespace();
        let (name, ip) = (f.next()?, f.next()?);
        // A third field is a deletion timestamp: that pod is on its way out.
        f.next().is_none().then(|| (name.to_owned(), ip.to_owned()))
    })
    .collect()
}

/// The label that selects the traffic manager's pods.
pub const MANAGER_PODS: &str = "app.kubernetes.io/name=tether-manager";

/// The manager's audit lines: the JSON `audit.k8s.io/v1` Events in the logs of its pods that are
/// running and not being deleted. A pod deleted a moment ago may no longer have logs to give
/// (`container ... is terminated`), so each pod is asked on its own and one that cannot answer is
/// left out; callers look for a line with `eventually`.
pub fn manager_audit() -> Vec<serde_json::Value> {
    let pods = kubectl(&[
        "-n",
        "tether",
        "get",
        "pods",
        "-l",
        MANAGER_PODS,
        "--field-selector=status.phase=Running",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ])
    .expect_ok("listing the manager's pods");
    pods.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            f.next().is_none().then_some(name)
        })
        .map(|pod| kubectl(&["-n", "tether", "logs", pod, "--tail=-1"]))
        .filter(|run| run.ok)
        .flat_map(|run| {
            run.stdout
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .filter(|e| e["kind"] == "Event" && e["apiVersion"] == "audit.k8s.io/v1")
        .collect()
}

/// `kubectl -n tether get pods -l MANAGER_PODS -o OUTPUT`: the traffic manager's pods.
pub fn manager_pods(output: &str) -> Run {
    kubectl(&[
        "-n",
        "tether",
        "get",
        "pods",
        "-l",
        MANAGER_PODS,
        "-o",
        output,
    ])
}

/// Deletes the traffic manager's pod (its Deployment starts another).
pub fn delete_manager_pod() {
    kubectl(&[
        "-n",
        "tether",
        "delete",
        "pod",
        "-l",
        MANAGER_PODS,
        "--wait=false",
    ])
    .expect_ok("delete the manager pod");
}

/// The image the installed traffic manager runs (the one the local cluster has).
/// `kubectl rollout status` of the traffic manager, waiting up to two minutes.
pub fn manager_rollout() -> Run {
    kubectl(&[
        "-n",
        "tether",
        "rollout",
        "status",
        "deployment/tether-manager",
        "--timeout=120s",
    ])
}

/// `kubectl patch --type=json` of the traffic manager's Deployment.
pub fn patch_manager(json_patch: &str) -> Run {
    kubectl(&[
        "-n",
        "tether",
        "patch",
        "deployment/tether-manager",
        "--type=json",
        "-p",
        json_patch,
    ])
}

pub fn manager_image() -> String {
    kubectl(&[
        "-n",
        "tether",
        "get",
        "deployment",
        "tether-manager",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])
    .expect_ok("the manager's image")
}

/// The ClusterIP of a Service.
pub fn cluster_ip(svc: &str) -> String {
    kubectl(&["get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"]).expect_ok("reading ClusterIP")
}

/// The release `tether` binary (built by `cargo xtask test` before the end-to-end tests).
pub fn tether_bin() -> PathBuf {
    std::env::var_os("TETHER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/release/tether"))
}

/// The runtime directory a workstation namespace's daemon uses (one per namespace, as each
/// namespace is a separate machine).
pub fn runtime_dir(ns: &str) -> PathBuf {
    PathBuf::from("/run/tether-e2e").join(ns)
}

/// `tether ARGS...` run on the workstation `ns`.
pub fn tether(ns: &str, args: &[&str]) -> Run {
    run(Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(tether_bin())
        .args(args)
        .env("TETHER_RUNTIME_DIR", runtime_dir(ns))
        .env("KUBECONFIG", kubeconfig()))
}

/// The path of workstation `ns`'s persistent mount namespace (made by
/// `xtask/scripts/workstation.sh` on first use). Commands run with [`on_workstation`] share it,
/// as the programs of one laptop share its mounts; each `ip netns exec` has a mount namespace of
/// its own, where a FUSE mount made by another command is not seen.
pub fn workstation_mount_ns(ns: &str) -> String {
    let out = run(Command::new(repo().join("xtask/scripts/workstation.sh")).arg(ns))
        .expect_ok("making the workstation's mount namespace");
    out.trim().to_owned()
}

/// `program` run on workstation `ns`, in its network and persistent mount namespace.
pub fn on_workstation(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mnt = workstation_mount_ns(ns);
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}"))
        .arg(format!("--mount={mnt}"))
        .arg(program);
    cmd
}

/// `tether ARGS...` on workstation `ns`, in its persistent mount namespace (see
/// [`on_workstation`]).
pub fn tether_on_workstation(ns: &str, args: &[&str]) -> Run {
    run(on_workstation(ns, tether_bin())
        .args(args)
        .env("TETHER_RUNTIME_DIR", runtime_dir(ns))
        .env("KUBECONFIG", kubeconfig()))
}

/// `sh -c SCRIPT` on workstation `ns`, in its persistent mount namespace.
pub fn sh_on_workstation(ns: &str, script: &str) -> Run {
    run(on_workstation(ns, "sh").args(["-c", script]))
}

/// A connected workstation; quits on drop so a failing test leaves nothing behind.
#[derive(Debug)]
pub struct Connected {
    pub ns: String,
}

impl Connected {
    /// `tether connect ARGS` on `ns`, asserting success.
    #[track_caller]
    pub fn new(ns: &str, args: &[&str]) -> Connected {
        let mut full = vec!["connect"];
        full.extend_from_slice(args);
        tether(ns, &full).expect_ok("tether connect");
        Connected { ns: ns.to_owned() }
    }

    /// `tether status -o json`.
    pub fn status(&self) -> serde_json::Value {
        let out = tether(&self.ns, &["status", "-o", "json"]).expect_ok("tether status");
        serde_json::from_str(&out).expect("status JSON")
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        let _ = tether(&self.ns, &["quit"]);
    }
}

/// What `quit` must restore: the namespace's resolv.conf and routes.
pub fn machine_state(ns: &str) -> (Vec<u8>, String) {
    let resolv = std::fs::read(format!("/etc/netns/{ns}/resolv.conf")).unwrap_or_default();
    let routes = run(Command::new("ip").args(["-n", ns, "route", "show", "table", "all"])).stdout;
    (resolv, routes)
}

/// Sends one UDP datagram from `ns` and returns the reply (python3, 3 s timeout).
pub fn udp_roundtrip(ns: &str, host: &str, port: u16, payload: &str) -> Run {
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\n\
         s.sendto({payload:?}.encode(),(socket.gethostbyname({host:?}),{port}))\n\
         print(s.recvfrom(65535)[0].decode())"
    );
    run(in_ns(ns, "python3").args(["-c", &script]))
}

/// `getent ahostsv4 NAME` from `ns`: the addresses the system resolver gives.
pub fn resolve(ns: &str, name: &str) -> Vec<String> {
    let out = run(in_ns(ns, "getent").args(["ahostsv4", name])).stdout;
    let mut ips: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// A kubeconfig for `user`, whose certificate the cluster CA signed; RBAC gives the user nothing
/// until a test binds a role to that name. Remove the file's directory when done.
pub fn user_kubeconfig(user: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-user-{user}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let pki = state_dir().join("pki");
    let sh = format!(
        "set -e; cd {d}; openssl req -newkey rsa:2048 -nodes -keyout u.key -out u.csr -subj /CN={user} 2>/dev/null; \
         echo extendedKeyUsage=clientAuth > u.ext; \
         openssl x509 -req -in u.csr -CA {p}/ca.crt -CAkey {p}/ca.key -CAcreateserial -out u.crt -days 1 -extfile u.ext 2>/dev/null; \
         cp {k} kc; KUBECONFIG=kc kubectl config set-credentials {user} --client-certificate=u.crt --client-key=u.key --embed-certs >/dev/null; \
         KUBECONFIG=kc kubectl config set-context --current --user={user} >/dev/null",
        d = dir.display(),
        p = pki.display(),
        k = kubeconfig().display()
    );
    run(Command::new("sh").args(["-c", &sh])).expect_ok("make a user's kubeconfig");
    dir.join("kc")
}

/// RBAC bindings a test made; deleted on drop.
#[derive(Debug, Default)]
pub struct Bindings(Vec<Vec<String>>);

impl Bindings {
    /// `kubectl create ARGS` (a `rolebinding` or `clusterrolebinding`), deleted on drop.
    #[track_caller]
    pub fn bind(&mut self, args: &[&str]) {
        let mut create = vec!["create"];
        create.extend_from_slice(args);
        kubectl(&create).expect_ok("kubectl create binding");
        self.0.push(Self::delete_args(args));
    }

    /// Deletes a binding made with `bind` now (the same `args`).
    #[track_caller]
    pub fn unbind(&mut self, args: &[&str]) {
        let delete = Self::delete_args(args);
        let strs: Vec<&str> = delete.iter().map(String::as_str).collect();
        kubectl(&strs).expect_ok("kubectl delete binding");
        self.0.retain(|d| *d != delete);
    }

    /// `create rolebinding NAME ... -n NS` is deleted as `delete rolebinding NAME -n NS`.
    fn delete_args(args: &[&str]) -> Vec<String> {
        let mut delete: Vec<String> = vec!["delete".into(), args[0].into(), args[1].into()];
        if let Some(i) = args.iter().position(|a| *a == "-n") {
            delete.extend(["-n".to_owned(), args[i + 1].to_owned()]);
        }
        delete
    }

    /// What `user` needs to connect, as deploy/manager/30-client-role.yaml says: the ClusterRole
    /// `tether-client` (binding `tether-e2e-USER`), the Role `tether-client` in namespace tether
    /// (`tether-e2e-USER`) and `tether-client-nodes` (`tether-e2e-USER-nodes`).
    pub fn client(&mut self, user: &str) {
        let name = format!("tether-e2e-{user}");
        let as_user = format!("--user={user}");
        self.bind(&[
            "clusterrolebinding",
            &name,
            "--clusterrole=tether-client",
            &as_user,
        ]);
        self.bind(&[
            "rolebinding",
            &name,
            "--role=tether-client",
            &as_user,
            "-n",
            "tether",
        ]);
        self.bind(&[
            "clusterrolebinding",
            &format!("{name}-nodes"),
            "--clusterrole=tether-client-nodes",
            &as_user,
        ]);
    }
}

impl Drop for Bindings {
    fn drop(&mut self) {
        for delete in &self.0 {
            let args: Vec<&str> = delete.iter().map(String::as_str).collect();
            let _ = kubectl(&args);
        }
    }
}

/// The test app on a workstation: the developer's process.
#[derive(Debug)]
pub struct Laptop {
    child: Child,
}

impl Laptop {
    /// Owns `child`, a laptop server started some other way, and kills it on drop.
    pub fn adopt(child: Child) -> Laptop {
        Laptop { child }
    }

    /// Starts the test app on `ns`, answering as `name` on 127.0.0.1:`port`.
    pub fn start(ns: &str, port: u16, name: &str) -> Laptop {
        let bin = repo().join("target/release/tether-testapp");
        let child = in_ns(ns, bin.to_str().unwrap())
            .args(["--http-port", &port.to_string(), "--udp-port", "0"])
            .args(["--name", name, "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the laptop's test app");
        let laptop = Laptop { child };
        let url = format!("http://127.0.0.1:{port}/healthz");
        eventually(Duration::from_secs(10), "the laptop app listens", || {
            curl(Some(ns), &[&url]).ok.then_some(())
        });
        laptop
    }
}

impl Drop for Laptop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A program running in a tmux session (a real terminal); the session is killed on drop.
#[derive(Debug)]
pub struct Tmux(String);

impl Tmux {
    /// Runs `argv` in a new detached session `name` of `(columns, rows)`.
    pub fn run(name: &str, (columns, rows): (u16, u16), argv: &[&str]) -> Tmux {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", name])
            .status();
        run(Command::new("tmux")
            .args(["new-session", "-d", "-s", name])
            .args(["-x", &columns.to_string(), "-y", &rows.to_string()])
            .args(argv))
        .expect_ok("tmux new-session");
        Tmux(name.to_owned())
    }

    /// Types `keys` (tmux key names: `Enter`, `q`, `C-c`).
    pub fn keys(&self, keys: &[&str]) {
        run(Command::new("tmux")
            .args(["send-keys", "-t", &self.0, "--"])
            .args(keys))
        .expect_ok("tmux send-keys");
    }

    /// Waits until the screen shows `text`; fails showing the screen.
    #[track_caller]
    pub fn expect(&self, text: &str) {
        self.expect_screen(&format!("{text:?}"), |screen| screen.contains(text));
    }

    /// Waits until `check` accepts the screen; fails showing the last one.
    #[track_caller]
    pub fn expect_screen(&self, what: &str, mut check: impl FnMut(&str) -> bool) -> String {
        let mut screen = String::new();
        for _ in 0..120 {
            screen = self.screen();
            if check(&screen) {
                return screen;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("the terminal never showed {what}:\n{screen}");
    }

    /// What the terminal shows now.
    pub fn screen(&self) -> String {
        run(Command::new("tmux").args(["capture-pane", "-p", "-t", &self.0]))
            .expect_ok("tmux capture-pane")
    }

    /// Whether the session (its program) still runs.
    pub fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Resizes the terminal.
    pub fn resize(&self, (columns, rows): (u16, u16)) {
        run(Command::new("tmux")
            .args(["resize-window", "-t", &self.0])
            .args(["-x", &columns.to_string(), "-y", &rows.to_string()]))
        .expect_ok("tmux resize-window");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}
