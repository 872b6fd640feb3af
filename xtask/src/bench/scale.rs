//! `cargo xtask bench --only scale`: many developers on one manager, and many flows on one
//! daemon.
//!
//! 1. **Developers.** `--developers` workstations (network namespaces `tether-scale-N`, made for
//!    the run, each with its own veth to the host like the test workstations), each with its own
//!    Kubernetes user (a client certificate the cluster CA signs, bound to tether's client roles
//!    and `tether-intercept`), its own daemon, a laptop server and a personal intercept of
//!    `orders` with its own header. Then at once: every developer opens `--connections`
//!    keep-alive connections to a `hello` pod and sends GETs on each (`tether-testapp bench
//!    flows`), and two callers in the `client` pod send requests to `orders` with each
//!    developer's header and without one. Every answer is checked against who should have
//!    given it. The manager's RSS is read idle, after the sessions connected, and at its peak
//!    under the load; its CPU time over the load.
//! 2. **Flows.** One daemon (the first developer's) opens `--tcp-flows` TCP and `--udp-flows`
//!    UDP flows at once to a `hello` pod, each sending requests one after another, against a
//!    single flow of each: p50/p99 side by side, and the daemon's RSS.
//!
//! Everything the run makes (namespaces, certificates, bindings, sessions, intercepts, laptop
//! servers) is undone by guards, also when it fails. `target/bench/scale.md` holds the tables.

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use super::{
    cpu,
    intercept::memory::{rss_kib, Sampler},
    machine_meta,
    process::{in_ns, run_within, Tether},
    step, testapp_bin, write_report, HINT, POD_PORT,
};
use crate::{cluster, sample};

/// How big the run is.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Developers connected at once, each with a personal intercept.
    #[arg(long, default_value_t = 20)]
    developers: u32,
    /// Connections each developer keeps open during the load.
    #[arg(long, default_value_t = 50)]
    connections: u32,
    /// GETs per connection.
    #[arg(long, default_value_t = 20)]
    scale_requests: u32,
    /// TCP flows one daemon opens at once.
    #[arg(long, default_value_t = 2000)]
    tcp_flows: u32,
    /// UDP flows one daemon opens at once.
    #[arg(long, default_value_t = 200)]
    udp_flows: u32,
}

/// The laptop servers' port in each workstation.
const LAPTOP_PORT: u16 = 18091;
/// The sample app's UDP echo port on its pods.
const POD_UDP_PORT: u16 = 9000;
/// Intercept requests per developer per caller in the cluster.
const CALLER_ROUNDS: usize = 20;

pub fn run(args: &ScaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.developers >= 1, "--developers must be at least 1");
    let pod = sample::running_pods()
        .context(HINT)?
        .into_iter()
        .next()
        .with_context(|| format!("no running pod of `hello`; {HINT}"))?;
    let manager = cpu::manager();
    let [manager_pid] = manager.as_slice() else {
        bail!("expected one traffic manager process on this host, found {manager:?}; {HINT}");
    };
    let manager_pid = *manager_pid;
    let mut md = String::from("# Many developers, many flows\n\n");
    for (what, value) in machine_meta() {
        let _ = writeln!(md, "- {what}: {value}");
    }

    step(&format!(
        "{} workstations with their own users",
        args.developers
    ));
    let node = node_ip()?;
    let users: Vec<String> = (1..=args.developers)
        .map(|i| format!("scale-dev{i}"))
        .collect();
    let _workstations = Workstations::create(args.developers, &node)?;
    let access = Access::grant(&users)?;
    let manager_idle = rss_kib(manager_pid).context("the manager's RSS")?;

    step("connecting every developer and intercepting orders with their header");
    let mut developers = Vec::new();
    let mut connect_times = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let ns = Workstations::name(i as u32 + 1);
        let started = Instant::now();
        let session = Tether::connect_with(&ns, &["--kubeconfig", &access.kubeconfig(user)])?;
        connect_times.push(started.elapsed());
        let laptop = Laptop::start(&ns, user)?;
        run_within(
            &mut Tether::command(
                &ns,
                &[
                    "intercept",
                    "orders",
                    "--port",
                    &format!("{LAPTOP_PORT}:http"),
                    "--http-header",
                    &format!("x-dev={user}"),
                ],
            ),
            Duration::from_secs(120),
        )
        .with_context(|| format!("{user}'s intercept"))?;
        developers.push((ns, session, laptop));
    }
    let manager_connected = rss_kib(manager_pid).context("the manager's RSS")?;

    step(&format!(
        "load: {} developers × {} connections, and callers in the cluster with every header",
        args.developers, args.connections
    ));
    let load = Load::run(args, &developers, &users, &pod.ip.to_string(), manager_pid)?;

    md.push_str(&developers_markdown(
        args,
        &connect_times,
        manager_idle,
        manager_connected,
        &load,
    ));

    step(&format!(
        "one daemon: {} TCP and {} UDP flows at once, against one of each",
        args.tcp_flows, args.udp_flows
    ));
    let first = &developers[0];
    let daemon = first.1.daemon_pid()?;
    let single = flows(&first.0, &pod.ip.to_string(), 1, 1, 200)?;
    let daemon_before = rss_kib(daemon);
    let sampler = Sampler::start(daemon, Duration::from_millis(100));
    let many = flows(
        &first.0,
        &pod.ip.to_string(),
        args.tcp_flows,
        args.udp_flows,
        10,
    )?;
    let daemon_peak = sampler.finish();
    md.push_str(&flows_markdown(
        args,
        &single,
        &many,
        daemon_before,
        daemon_peak,
    ));

    for (ns, _, _) in &developers {
        let _ = run_within(
            &mut Tether::command(ns, &["leave", "orders"]),
            Duration::from_secs(60),
        );
    }
    drop(developers);
    drop(access);
    write_report("scale.md", &md)
}

/// The node's address, as the test workstation routes to it (`NODE via GATEWAY`).
fn node_ip() -> anyhow::Result<String> {
    let routes = cluster::run(Command::new("ip").args(["-n", "tether-ws", "-4", "route"]))
        .with_context(|| format!("the workstation namespace tether-ws; {HINT}"))?;
    routes
        .lines()
        .find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.get(1) == Some(&"via")).then(|| w[0].to_owned())
        })
        .with_context(|| format!("no route to the node in tether-ws: {routes}"))
}

/// Network namespaces `tether-scale-1..=N`, each like a test workstation: a veth to the host
/// (`tscN`, 10.252.N.0/30) and a route to the node only. Deleted on drop.
struct Workstations(u32);

impl Workstations {
    fn name(i: u32) -> String {
        format!("tether-scale-{i}")
    }

    fn create(n: u32, node: &str) -> anyhow::Result<Workstations> {
        anyhow::ensure!(n <= 250, "at most 250 developers");
        let made = Workstations(n);
        made.delete(); // what a killed run left
        for i in 1..=n {
            let (ns, veth) = (Self::name(i), format!("tsc{i}"));
            let (host, local) = (format!("10.252.{i}.1"), format!("10.252.{i}.2"));
            let ip = |args: &[&str]| cluster::run(Command::new("ip").args(args));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["addr", "add", &format!("{host}/30"), "dev", &veth])?;
            ip(&["link", "set", &veth, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{local}/30"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                &format!("{node}/32"),
                "via",
                &host,
            ])?;
            let etc = PathBuf::from("/etc/netns").join(&ns);
            std::fs::create_dir_all(&etc)?;
            std::fs::write(etc.join("resolv.conf"), format!("nameserver {host}\n"))?;
        }
        Ok(made)
    }

    fn delete(&self) {
        for i in 1..=self.0 {
            let ns = Self::name(i);
            let _ = Command::new("ip").args(["netns", "delete", &ns]).output();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&ns));
            let _ = std::fs::remove_dir_all(Tether::runtime_dir(&ns));
        }
    }
}

impl Drop for Workstations {
    fn drop(&mut self) {
        self.delete();
    }
}

/// The developers' users: a kubeconfig each (a client certificate the cluster CA signed) and
/// the bindings tether needs, all in one manifest applied once and deleted on drop.
struct Access {
    dir: PathBuf,
    bindings: String,
}

impl Access {
    fn grant(users: &[String]) -> anyhow::Result<Access> {
        let dir = std::env::temp_dir().join(format!("tether-scale-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let pki = cluster::state_dir().join("pki");
        let kubeconfig = cluster::kubeconfig();
        for user in users {
            let script = format!(
                "set -e; cd {dir}; \
                 openssl req -newkey rsa:2048 -nodes -keyout {user}.key -out {user}.csr \
                   -subj /CN={user} 2>/dev/null; \
                 echo extendedKeyUsage=clientAuth > {user}.ext; \
                 openssl x509 -req -in {user}.csr -CA {pki}/ca.crt -CAkey {pki}/ca.key \
                   -CAcreateserial -out {user}.crt -days 1 -extfile {user}.ext 2>/dev/null; \
                 cp {kubeconfig} {user}.kc; \
                 KUBECONFIG={user}.kc kubectl config set-credentials {user} \
                   --client-certificate={user}.crt --client-key={user}.key --embed-certs >/dev/null; \
                 KUBECONFIG={user}.kc kubectl config set-context --current --user={user} >/dev/null",
                dir = dir.display(),
                pki = pki.display(),
                kubeconfig = kubeconfig.display(),
            );
            cluster::run(Command::new("sh").args(["-c", &script]))
                .with_context(|| format!("a kubeconfig for {user}"))?;
        }
        let mut bindings = String::new();
        for user in users {
            for (kind, name, role_kind, role, namespace) in [
                (
                    "ClusterRoleBinding",
                    user.clone(),
                    "ClusterRole",
                    "tether-client",
                    None,
                ),
                (
                    "ClusterRoleBinding",
                    format!("{user}-nodes"),
                    "ClusterRole",
                    "tether-client-nodes",
                    None,
                ),
                (
                    "RoleBinding",
                    user.clone(),
                    "Role",
                    "tether-client",
                    Some("tether"),
                ),
                (
                    "RoleBinding",
                    format!("{user}-intercept"),
                    "ClusterRole",
                    "tether-intercept",
                    Some("default"),
                ),
            ] {
                let ns = namespace.map_or(String::new(), |n| format!("\n  namespace: {n}"));
                let _ = write!(
                    bindings,
                    "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}\nmetadata:\n  \
                     name: tether-bench-{name}{ns}\nroleRef:\n  apiGroup: \
                     rbac.authorization.k8s.io\n  kind: {role_kind}\n  name: {role}\nsubjects:\n- \
                     apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: {user}\n"
                );
            }
        }
        let access = Access { dir, bindings };
        access.kubectl_stdin("apply")?;
        Ok(access)
    }

    fn kubeconfig(&self, user: &str) -> String {
        self.dir.join(format!("{user}.kc")).display().to_string()
    }

    fn kubectl_stdin(&self, verb: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut child = cluster::kubectl()
            .args([verb, "-f", "-"])
            .args(if verb == "delete" {
                &["--ignore-not-found"][..]
            } else {
                &[][..]
            })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(self.bindings.as_bytes())?;
        let status = child.wait()?;
        anyhow::ensure!(status.success(), "kubectl {verb} of the bindings: {status}");
        Ok(())
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        if let Err(e) = self.kubectl_stdin("delete") {
            eprintln!("warning: deleting the scale run's bindings: {e:#}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A developer's laptop server answering `hello from laptop-USER`; killed on drop.
struct Laptop(Child);

impl Laptop {
    fn start(ns: &str, user: &str) -> anyhow::Result<Laptop> {
        let child = in_ns(Some(ns), testapp_bin())
            .args(["--http-port", &LAPTOP_PORT.to_string(), "--udp-port", "0"])
            .args(["--name", &format!("laptop-{user}"), "--bind", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a laptop server")?;
        let laptop = Laptop(child);
        let url = format!("http://127.0.0.1:{LAPTOP_PORT}/");
        run_within(
            in_ns(Some(ns), testapp_bin()).args(["bench", "wait", "--url", &url]),
            Duration::from_secs(20),
        )
        .with_context(|| format!("{user}'s laptop server does not answer"))?;
        Ok(laptop)
    }
}

impl Drop for Laptop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the load phase found.
struct Load {
    /// The developers' own GETs: ok, errors, p50 and p99 (µs).
    own: (u64, u64, Option<f64>, Option<f64>),
    /// Requests from the cluster, and those answered by someone else than they should.
    intercepted: usize,
    misrouted: Vec<String>,
    manager_peak_kib: Option<u64>,
    manager_cpu_s: f64,
    elapsed: Duration,
}

impl Load {
    fn run(
        args: &ScaleArgs,
        developers: &[(String, Tether, Laptop)],
        users: &[String],
        pod_ip: &str,
        manager_pid: u32,
    ) -> anyhow::Result<Load> {
        let url = format!("http://{pod_ip}:{POD_PORT}/");
        let cpu = cpu::Processes {
            workstation: Vec::new(),
            cluster: vec![manager_pid],
        };
        let before = cpu.now();
        let sampler = Sampler::start(manager_pid, Duration::from_millis(100));
        let started = Instant::now();
        let own: Vec<Child> = developers
            .iter()
            .map(|(ns, _, _)| {
                in_ns(Some(ns), testapp_bin())
                    .args(["bench", "flows", "--url", &url])
                    .args(["--tcp", &args.connections.to_string()])
                    .args(["--requests", &args.scale_requests.to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
            })
            .collect::<Result<_, _>>()
            .context("starting the developers' flows")?;
        let orders = format!("http://{}:80/", orders_ip()?);
        let callers: Vec<Child> = (0..2)
            .map(|_| caller(&orders, users).spawn())
            .collect::<Result<_, _>>()
            .context("starting the callers in the cluster")?;
        let mut total = (0, 0, Vec::new(), Vec::new());
        for child in own {
            let out = child.wait_with_output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or(""))
                .with_context(|| format!("bench flows said: {text}"))?;
            total.0 += v["tcp"]["ok"].as_u64().unwrap_or(0);
            total.1 += v["tcp"]["errors"].as_u64().unwrap_or(0);
            total.2.extend(v["tcp"]["p50_us"].as_f64());
            total.3.extend(v["tcp"]["p99_us"].as_f64());
        }
        let mut intercepted = 0;
        let mut misrouted = Vec::new();
        for child in callers {
            let out = child.wait_with_output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                misrouted.push(format!(
                    "a caller failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            for (i, line) in text.lines().enumerate() {
                intercepted += 1;
                let who = line.split_once("hello from ").map(|(_, w)| w.trim());
                let ok = match (users.get(i % (users.len() + 1)), who) {
                    (Some(user), Some(who)) => who == format!("laptop-{user}"),
                    (None, Some(who)) => who.starts_with("orders-"),
                    (_, None) => false,
                };
                if !ok {
                    misrouted.push(format!("request {i}: {line}"));
                }
            }
        }
        let elapsed = started.elapsed();
        let manager_peak_kib = sampler.finish();
        let after = cpu.now();
        // The median developer's p50 and the worst p99.
        total.2.sort_by(f64::total_cmp);
        let p50 = total.2.get(total.2.len() / 2).copied();
        let p99 = total.3.iter().copied().reduce(f64::max);
        Ok(Load {
            own: (total.0, total.1, p50, p99),
            intercepted,
            misrouted,
            manager_peak_kib,
            manager_cpu_s: after.cluster_s - before.cluster_s,
            elapsed,
        })
    }
}

fn orders_ip() -> anyhow::Result<String> {
    cluster::run(cluster::kubectl().args([
        "-n",
        "default",
        "get",
        "service",
        "orders",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]))
    .map(|s| s.trim().to_owned())
}

/// `CALLER_ROUNDS` rounds of (each developer's header, then none) from the `client` pod.
fn caller(url: &str, users: &[String]) -> Command {
    let mut cmd = cluster::kubectl();
    cmd.args(["-n", "default", "exec", "deploy/client", "-c", "app", "--"])
        .args(["tether-testapp", "get", url, "--repeat"])
        .arg((CALLER_ROUNDS * (users.len() + 1)).to_string());
    for user in users {
        cmd.args(["--each-header", &format!("x-dev:{user}")]);
    }
    cmd.args(["--each-header", ""])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `bench flows` from `ns`: `tcp` and `udp` flows at once, `requests` each.
fn flows(
    ns: &str,
    pod_ip: &str,
    tcp: u32,
    udp: u32,
    requests: u32,
) -> anyhow::Result<serde_json::Value> {
    // A file descriptor per flow: more than the default 1024.
    let script = format!("ulimit -n {}; exec \"$@\"", (tcp + udp) * 2 + 256);
    let mut cmd = in_ns(Some(ns), "sh");
    cmd.args(["-c", &script, "sh"])
        .arg(testapp_bin())
        .args(["bench", "flows"])
        .args(["--url", &format!("http://{pod_ip}:{POD_PORT}/")])
        .args(["--tcp", &tcp.to_string()])
        .args(["--udp", &format!("{pod_ip}:{POD_UDP_PORT}")])
        .args(["--udp-flows", &udp.to_string()])
        .args(["--requests", &requests.to_string()]);
    let out = run_within(&mut cmd, Duration::from_secs(600))?;
    serde_json::from_str(out.lines().last().unwrap_or_default())
        .with_context(|| format!("bench flows said: {out}"))
}

fn kib(v: Option<u64>) -> String {
    v.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn us(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |u| format!("{:.0} µs", u))
}

fn developers_markdown(
    args: &ScaleArgs,
    connects: &[Duration],
    idle: u64,
    connected: u64,
    load: &Load,
) -> String {
    let mut sorted = connects.to_vec();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let max = sorted.last().copied().unwrap_or_default();
    let sessions = f64::from(args.developers);
    let open = f64::from(args.developers * args.connections);
    let per_flow = load
        .manager_peak_kib
        .map(|p| (p.saturating_sub(connected)) as f64 / open);
    let own_total = load.own.0 + load.own.1;
    let mut md = format!(
        "\n## {} developers on one manager\n\n\
         Each with its own user, daemon and personal intercept of `orders`; during the load \
         each keeps {} connections to a `hello` pod busy ({} GETs each) while two callers in \
         the cluster send {} requests for each developer's header and as many without.\n\n\
         | measure | value |\n|---|---:|\n",
        args.developers, args.connections, args.scale_requests, CALLER_ROUNDS
    );
    let rows = [
        (
            "`tether connect`, median / slowest (the others connected)".to_owned(),
            format!("{:.2} s / {:.2} s", median.as_secs_f64(), max.as_secs_f64()),
        ),
        (
            "developers' own GETs: ok / errors".into(),
            format!("{} / {} (of {own_total})", load.own.0, load.own.1),
        ),
        (
            "developers' own GETs: median developer's p50 / worst p99".into(),
            format!("{} / {}", us(load.own.2), us(load.own.3)),
        ),
        (
            "intercepted requests from the cluster: sent / misrouted or failed".into(),
            format!("{} / {}", load.intercepted, load.misrouted.len()),
        ),
        ("manager RSS idle".into(), kib(Some(idle))),
        (
            "manager RSS per session (connected, intercept held, idle)".into(),
            format!(
                "{:.0} KiB",
                connected.saturating_sub(idle) as f64 / sessions
            ),
        ),
        (
            "manager RSS per open flow (peak under load − connected)".into(),
            per_flow.map_or("n/a".into(), |k| format!("{k:.1} KiB")),
        ),
        (
            "manager CPU during the load".into(),
            format!(
                "{:.2} s over {:.1} s ({:.0} % of a core); {:.1} ms per 1000 requests",
                load.manager_cpu_s,
                load.elapsed.as_secs_f64(),
                load.manager_cpu_s / load.elapsed.as_secs_f64() * 100.0,
                load.manager_cpu_s * 1e6 / (own_total as f64 + load.intercepted as f64).max(1.0)
            ),
        ),
    ];
    for (what, value) in rows {
        let _ = writeln!(md, "| {what} | {value} |");
    }
    for m in load.misrouted.iter().take(5) {
        let _ = writeln!(md, "\nmisrouted: {m}");
    }
    md
}

fn flows_markdown(
    args: &ScaleArgs,
    single: &serde_json::Value,
    many: &serde_json::Value,
    before: Option<u64>,
    peak: Option<u64>,
) -> String {
    let mut md = format!(
        "\n## One daemon, {} TCP and {} UDP flows at once\n\n\
         | run | protocol | ok / errors | p50 | p99 | p99 / one flow's |\n\
         |---|---|---:|---:|---:|---:|\n",
        args.tcp_flows, args.udp_flows
    );
    for proto in ["tcp", "udp"] {
        let one = single[proto]["p99_us"].as_f64();
        for (run, v) in [("one flow", single), ("all at once", many)] {
            let r = &v[proto];
            let ratio = r["p99_us"]
                .as_f64()
                .zip(one)
                .map_or("n/a".into(), |(p, o)| format!("{:.1}×", p / o));
            let _ = writeln!(
                md,
                "| {run} | {proto} | {} / {} | {} | {} | {ratio} |",
                r["ok"].as_u64().unwrap_or(0),
                r["errors"].as_u64().unwrap_or(0),
                us(r["p50_us"].as_f64()),
                us(r["p99_us"].as_f64()),
            );
        }
        if let Some(e) = many[proto]["last_error"].as_str() {
            let _ = writeln!(md, "\nlast {proto} error: {e}");
        }
    }
    let flows = f64::from(args.tcp_flows + args.udp_flows);
    let _ = writeln!(
        md,
        "\nThe daemon's RSS: {} before, {} at the peak ({}).",
        kib(before),
        kib(peak),
        before.zip(peak).map_or("n/a".into(), |(b, p)| format!(
            "{:.1} KiB per flow",
            p.saturating_sub(b) as f64 / flows
        ))
    );
    md
}
