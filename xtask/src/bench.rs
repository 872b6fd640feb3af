//! `cargo xtask bench`: what `tether connect` costs, next to what a developer has without it.
//!
//! From a workstation to a pod of the sample app `hello` (pod IP, port 8080), four paths side by
//! side in one run:
//! 1. direct: the host network namespace straight to the pod IP, the physical reference;
//! 2. `kubectl port-forward` on the host (127.0.0.1:LOCAL → the pod's 8080);
//! 3. tether over UDP and 4. tether over a port-forward, from the workstation namespace.
//!
//! Over each: one bulk GET of `/bytes?n=…` (best of two), then small GETs on one keep-alive
//! connection and on a new connection each. Then `connect` time per transport (until a first
//! request succeeds), and DNS latency with and without tether. The clients are
//! `tether-testapp bench …` (release build) run inside the namespaces; the table goes to stdout
//! and `target/bench/connect.md`.
//!
//! Then `tether intercept` (see [`intercept`]): time to the first intercepted request, the agent's
//! cost per request, and its memory; in `target/bench/intercept.md`. `--only` runs one part.
//!
//! Then `tether intercept --mount` (see [`mount`]): reading the intercepted pod's files on the
//! workstation through the mount, against `kubectl cp` and `kubectl exec`; in
//! `target/bench/mount.md`.
//!
//! `--profile wan20|lossy50|all` runs the connect part again over an emulated link (see
//! [`linkemu`]): `tether-linkemu` sits on the workstation namespace's veth for the whole of the
//! profile's measurements, and every path starts in that namespace so that all cross the same
//! link: direct (through a route to the pod IP added for the measurement), `kubectl
//! port-forward` run there (its API server traffic crosses the link), and tether. Each such run
//! first measures the emulator itself (round trip, one TCP stream each way) and writes
//! `connect-PROFILE.md` and `linkemu-PROFILE.md`; `--only linkemu` measures just that. `lan` is no
//! emulation: today's tables, `connect.md`. The intercept part runs over the profile's link too
//! (`intercept-PROFILE.md`): each intercepted request crosses it to the laptop and back. Bulk
//! throughput is measured both ways: a GET (the cluster sending) and a POST of the same size
//! (the laptop sending).
//!
//! `--only scale` (see [`scale`]): many developers on one manager and many flows on one daemon,
//! in `target/bench/scale.md`; not part of `all` (it makes its own workstations and users).
//!
//! The cluster, the sample app and the manager must be up. Every tether session and
//! port-forward the run starts is ended by a guard, also when the run fails.

mod cpu;
mod intercept;
mod linkemu;
mod mount;
mod process;
mod report;
mod scale;

use std::{
    net::IpAddr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::{
    cluster, manager,
    sample::{self, Pod},
};
use linkemu::{Emulator, Profile};
use process::{in_ns, run_within, PortForward, Tether};
use report::{ConnectResult, DnsResult, Latency, Lookup, Path, PathResult, Report};

const HINT: &str = "the benchmark needs the local cluster with the sample app and tether's \
                    manager: run `cargo xtask test --keep-cluster` or `cargo xtask demo` first";
/// The sample app's HTTP port on its pods.
const POD_PORT: u16 = 8080;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The workstation network namespace the tether paths are measured from.
    #[arg(long, default_value = "tether-ws")]
    ns: String,
    /// Size of each bulk GET, in MiB.
    #[arg(long, default_value_t = 512)]
    bulk_mib: u64,
    /// Small GETs on one keep-alive connection, per path.
    #[arg(long, default_value_t = 2000)]
    requests: u32,
    /// Small GETs on a new connection each, per path.
    #[arg(long, default_value_t = 500)]
    new_connection_requests: u32,
    /// DNS queries per run.
    #[arg(long, default_value_t = 1000)]
    dns_requests: u32,
    /// `tether connect` trials per transport.
    #[arg(long, default_value_t = 3)]
    connect_trials: u32,
    /// Use the release binaries as they are instead of building them first.
    #[arg(long)]
    no_build: bool,
    /// Which measurements to run.
    #[arg(long, value_enum, default_value_t = Only::All)]
    only: Only,
    /// The link between the workstation namespace and the cluster: lan (none), wan20, lossy50,
    /// or all three one after another.
    #[arg(long, value_enum, default_value_t = ProfileSel::Lan)]
    profile: ProfileSel,
    #[command(flatten)]
    intercept: intercept::InterceptArgs,
    #[command(flatten)]
    scale: scale::ScaleArgs,
    #[command(flatten)]
    mount: mount::MountArgs,
}

/// The parts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    /// `tether connect` against direct and `kubectl port-forward` (`connect.md`).
    Connect,
    /// `tether intercept` (`intercept.md`).
    Intercept,
    /// What metrics cost the agent's pass-through path, on and off (`metrics.md`; no cluster).
    Metrics,
    /// The link emulator's fidelity under `--profile` (`linkemu-PROFILE.md`).
    Linkemu,
    /// Many developers on one manager, many flows on one daemon (`scale.md`).
    Scale,
    /// `tether intercept --mount` against `kubectl cp` and `kubectl exec` (`mount.md`).
    Mount,
    /// Connect, intercept, mount and metrics, in that order.
    All,
}

impl Args {
    /// The run's counts over an emulated link: each operation there costs round trips of tens
    /// of milliseconds and a lossy link moves a few MB/s, so the LAN's counts would take hours.
    /// Smaller counts keep a profile's connect run to minutes; the flags still lower them.
    fn scaled_for(&self, profile: Profile) -> Args {
        if !linkemu::emulated(profile) {
            return self.clone();
        }
        let bulk_mib = if profile.profile().loss > 0.0 {
            32
        } else {
            128
        };
        Args {
            bulk_mib: self.bulk_mib.min(bulk_mib),
            requests: self.requests.min(200),
            new_connection_requests: self.new_connection_requests.min(100),
            dns_requests: self.dns_requests.min(100),
            ..self.clone()
        }
    }
}

/// `--profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProfileSel {
    /// No emulation.
    Lan,
    /// 20 ms RTT, 200 Mbit/s.
    Wan20,
    /// 50 ms RTT, 50 Mbit/s, 1 % loss, light jitter and reordering.
    Lossy50,
    /// lan, wan20 and lossy50, one after another.
    All,
}

impl ProfileSel {
    fn profiles(self) -> Vec<Profile> {
        match self {
            ProfileSel::Lan => vec![Profile::Lan],
            ProfileSel::Wan20 => vec![Profile::Wan20],
            ProfileSel::Lossy50 => vec![Profile::Lossy50],
            ProfileSel::All => vec![Profile::Lan, Profile::Wan20, Profile::Lossy50],
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.connect_trials > 0,
        "--connect-trials must be at least 1"
    );
    if args.only == Only::Metrics {
        return metrics_cost();
    }
    let profiles = args.profile.profiles();
    if !args.no_build {
        manager::build_cli()?;
        if profiles.iter().any(|p| linkemu::emulated(*p)) || args.only == Only::Linkemu {
            linkemu::build()?;
        }
    }
    for bin in [manager::tether_bin(), testapp_bin()] {
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: build it with `cargo build --release -p tether-agent -p \
             tether-testapp -p tether-cli`",
            bin.display()
        );
    }
    let bench = Command::new(testapp_bin())
        .args(["bench", "--help"])
        .output()?;
    anyhow::ensure!(
        bench.status.success(),
        "{} has no `bench` subcommand: rebuild it (run without --no-build)",
        testapp_bin().display()
    );
    if args.only == Only::Scale {
        return scale::run(&args.scale);
    }
    if args.only == Only::Linkemu {
        for profile in profiles {
            link_fidelity(&args, profile)?;
        }
        return Ok(());
    }
    if matches!(args.only, Only::Connect | Only::All) {
        for &profile in &profiles {
            connect(&args, profile)?;
        }
    }
    if matches!(args.only, Only::Intercept | Only::All) {
        for &profile in &profiles {
            intercept::run(&args, profile)?;
        }
    }
    if matches!(args.only, Only::Mount | Only::All) {
        mount::run(&args)?;
    }
    if args.only == Only::All {
        metrics_cost()?;
    }
    Ok(())
}

/// The agent's pass-through p50 with metrics off and on (the sidecar crate's
/// `bench_metrics_cost`, against the release `tether-agent`), kept in `target/bench/metrics.md`.
fn metrics_cost() -> anyhow::Result<()> {
    let repo = cluster::repo();
    // The images' package set, so that their build is reused.
    manager::build_cli()?;
    let out = Command::new("cargo")
        .args([
            "test",
            "--release",
            "-p",
            "tether-sidecar",
            "--test",
            "sidecar",
        ])
        .args([
            "--",
            "--ignored",
            "--nocapture",
            "--exact",
            "bench::bench_metrics_cost",
        ])
        .current_dir(&repo)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "bench_metrics_cost failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: String = stdout
        .lines()
        .filter(|l| l.starts_with('|') || l.starts_with("metrics cost"))
        .map(|l| format!("{l}\n"))
        .collect();
    print!("{report}");
    let dir = repo.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("metrics.md"),
        format!("# Metrics cost\n\n{report}"),
    )?;
    Ok(())
}

/// The emulator alone: its fidelity under `profile` (`linkemu-PROFILE.md`).
fn link_fidelity(args: &Args, profile: Profile) -> anyhow::Result<()> {
    let ns = args.ns.as_str();
    step(&format!(
        "the link emulator on {ns}: {}",
        linkemu::describe(profile)
    ));
    let emulator = linkemu::emulated(profile)
        .then(|| Emulator::start(ns, profile))
        .transpose()?;
    let mut fidelity = linkemu::measure(ns, profile)?;
    if let Some(e) = emulator {
        fidelity.counts = Some(e.stop()?);
    }
    let mut md = String::from(
        "# The link emulator's fidelity

",
    );
    for (what, value) in machine_meta() {
        md.push_str(&format!(
            "- {what}: {value}
"
        ));
    }
    md.push('\n');
    md.push_str(&linkemu::markdown(profile, &fidelity));
    write_report(&format!("linkemu-{}.md", profile.name()), &md)
}

/// `tether connect` against direct and `kubectl port-forward`, over the link of `profile`.
fn connect(args: &Args, profile: Profile) -> anyhow::Result<()> {
    let args = &args.scaled_for(profile);
    let pod = hello_pod()?;
    preflight(&args.ns)?;
    let mut report = Report {
        meta: meta(args, &pod, profile),
        profile_rtt: linkemu::emulated(profile).then(|| profile.profile().rtt),
        profile_rate_mb_s: linkemu::emulated(profile)
            .then(|| profile.profile().rate_bps)
            .flatten()
            .map(|bps| bps as f64 / 8e6),
        profile_name: profile.name().to_owned(),
        ..Report::default()
    };
    let ns = args.ns.as_str();
    let pod_addr = format!("{}:{POD_PORT}", pod.ip);

    // Up for the whole of the profile's measurements; stopped (its rules removed) on every way
    // out.
    let emulator = if linkemu::emulated(profile) {
        step(&format!(
            "the link emulator on {ns}: {}",
            linkemu::describe(profile)
        ));
        Some(Emulator::start(ns, profile)?)
    } else {
        step(
            "QUIC alone: one stream on loopback, both ends in this process (tether-tunnel's test)",
        );
        report.quic_ceiling_mb_s = match quic_ceiling() {
            Ok(mb_s) => {
                eprintln!("    {mb_s:.0} MB/s");
                Some(mb_s)
            }
            Err(e) => {
                eprintln!("    not measured: {e:#}");
                None
            }
        };
        None
    };
    let mut fidelity = None;
    if linkemu::emulated(profile) {
        step(&format!(
            "the emulated link itself: {ns} → the host side of its link"
        ));
        fidelity = Some(linkemu::measure(ns, profile)?);
    }
    // Under emulation every path starts in the workstation namespace, so all cross the link.
    let from = linkemu::emulated(profile).then_some(ns);

    step(&format!("DNS on {ns} without tether"));
    let original = process::nameserver(ns)?;
    for lookup in [
        Lookup::NonCluster,
        Lookup::NonClusterUncached,
        Lookup::GlibcNonCluster,
    ] {
        report.dns.push(dns(args, None, lookup, original));
    }

    match from {
        None => step("direct: host → pod IP"),
        Some(ns) => step(&format!("direct: {ns} → pod IP, routed through the host")),
    }
    {
        let _route = from
            .map(|ns| linkemu::DirectRoute::add(ns, pod.ip))
            .transpose()?;
        report.paths.push(measure(
            args,
            Path::Direct,
            from,
            &pod_addr,
            &cpu::Processes::default(),
        ));
    }

    step(&format!(
        "kubectl port-forward on {}",
        from.unwrap_or("the host")
    ));
    {
        let forward = PortForward::start(from, &pod.name, POD_PORT)?;
        let local = format!("127.0.0.1:{}", forward.local_port);
        let processes = cpu::Processes {
            workstation: vec![forward.pid()],
            cluster: cpu::by_name(PORT_FORWARD_CARRIERS),
        };
        report.paths.push(measure(
            args,
            Path::KubectlPortForward,
            from,
            &local,
            &processes,
        ));
    }

    for path in [Path::TetherUdp, Path::TetherPortForward] {
        let transport = path.transport().context("a tether path")?;
        step(&format!("tether connect --transport {transport} on {ns}"));
        let (connect, session) = connect_trials(args, path, &pod_addr)?;
        report.connects.push(connect);
        step(&format!("tether over {transport}: {ns} → pod IP"));
        let mut cluster = cpu::manager();
        if path == Path::TetherPortForward {
            cluster.extend(cpu::by_name(PORT_FORWARD_CARRIERS));
        }
        let processes = cpu::Processes {
            workstation: session.daemon_pid().map(|p| vec![p]).unwrap_or_default(),
            cluster,
        };
        report
            .paths
            .push(measure(args, path, Some(ns), &pod_addr, &processes));
        let server = process::nameserver(ns)?;
        for lookup in [
            Lookup::NonCluster,
            Lookup::NonClusterUncached,
            Lookup::Cluster,
            Lookup::ClusterUncached,
            Lookup::GlibcNonCluster,
            Lookup::GlibcShort,
            Lookup::GlibcNamespaced,
            Lookup::GlibcFqdn,
        ] {
            report.dns.push(dns(args, Some(path), lookup, server));
        }
        drop(session);
    }

    if let (Some(emulator), Some(f)) = (emulator, fidelity.as_mut()) {
        f.counts = Some(emulator.stop()?);
    }
    let mut md = report.markdown();
    let name = match fidelity {
        Some(f) => {
            let link = linkemu::markdown(profile, &f);
            md.push('\n');
            md.push_str(&link);
            write_report(
                &format!("linkemu-{}.md", profile.name()),
                &format!("# The link emulator's fidelity (during `connect`)\n\n{link}"),
            )?;
            format!("connect-{}.md", profile.name())
        }
        None => "connect.md".into(),
    };
    write_report(&name, &md)
}

/// Prints a report and writes it to `target/bench/NAME`.
fn write_report(name: &str, md: &str) -> anyhow::Result<()> {
    let dir = cluster::repo().join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(name);
    std::fs::write(&file, md).with_context(|| format!("writing {}", file.display()))?;
    println!("{md}");
    eprintln!("written to {}", file.display());
    Ok(())
}

fn testapp_bin() -> PathBuf {
    cluster::repo().join("target/release/tether-testapp")
}

/// The pod of the sample app `hello` the connect paths go to.
fn hello_pod() -> anyhow::Result<Pod> {
    let pods = sample::running_pods().context(HINT)?;
    pods.into_iter()
        .next()
        .with_context(|| format!("no running pod of the sample app `hello`; {HINT}"))
}

/// Checks that the manager and the workstation namespace are there, and that nothing else holds
/// the namespace's tether session.
fn preflight(ns: &str) -> anyhow::Result<()> {
    let ready = cluster::run(cluster::kubectl().args([
        "--request-timeout=10s",
        "-n",
        "tether",
        "get",
        "deployment",
        "tether-manager",
        "-o",
        "jsonpath={.status.readyReplicas}",
    ]))
    .with_context(|| format!("no traffic manager; {HINT}"))?;
    if ready.trim().parse::<u32>().unwrap_or(0) == 0 {
        bail!("the traffic manager is not ready; {HINT}");
    }
    let namespaces = cluster::run(Command::new("ip").args(["netns", "list"]))?;
    if !namespaces
        .lines()
        .any(|l| l.split_whitespace().next() == Some(ns))
    {
        bail!("no network namespace {ns}; {HINT}");
    }
    // A session an interrupted run left behind.
    Tether::quit(ns)?;
    let tun = Command::new("ip")
        .args(["-n", ns, "link", "show", "tether0"])
        .output()
        .context("running ip")?;
    if tun.status.success() {
        bail!(
            "{ns} is already connected by another tether session (it has a tether0 device); \
             quit that one first (the end-to-end tests keep theirs under /run/tether-e2e/{ns})"
        );
    }
    Ok(())
}

fn meta(args: &Args, pod: &Pod, profile: Profile) -> Vec<(String, String)> {
    let mut meta = machine_meta();
    meta.push(("link profile".into(), linkemu::describe(profile)));
    let from = if linkemu::emulated(profile) {
        format!(
            "workstation namespace `{}` for every path, across the emulated link: direct through \
             a route to the pod IP via the host, `kubectl port-forward` run in the namespace",
            args.ns
        )
    } else {
        format!(
            "the host network namespace (direct, kubectl) and workstation namespace `{}` \
             (tether)",
            args.ns
        )
    };
    meta.extend([
        (
            "target".into(),
            format!("pod {} ({}), port {POD_PORT}", pod.name, pod.ip),
        ),
        ("from".into(), from),
        (
            "runs".into(),
            format!(
                "bulk GET {} MiB ×2; {} keep-alive and {} new-connection GETs of `/` after a \
                 warm-up; {} DNS queries per name; {} connects per transport",
                args.bulk_mib,
                args.requests,
                args.new_connection_requests,
                args.dns_requests,
                args.connect_trials
            ),
        ),
    ]);
    meta
}

/// When, what and where a run ran: the first lines of every report.
fn machine_meta() -> Vec<(String, String)> {
    let text = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let repo = cluster::repo();
    let mut commit =
        text(
            Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["rev-parse", "--short", "HEAD"]),
        );
    if !text(
        Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["status", "--porcelain"])
            // Read only: no index refresh that could collide with someone's commit.
            .env("GIT_OPTIONAL_LOCKS", "0"),
    )
    .is_empty()
    {
        commit.push_str(" + uncommitted changes");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    vec![
        (
            "date".into(),
            text(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
        ),
        ("commit".into(), commit),
        (
            "machine".into(),
            format!(
                "{} CPUs, load average {} at the start",
                std::thread::available_parallelism().map_or(0, |n| n.get()),
                load.join(" ")
            ),
        ),
    ]
}

/// The median of tether-tunnel's loopback throughput test (UDP carrier, CUBIC), in MB/s.
fn quic_ceiling() -> anyhow::Result<f64> {
    let out = cluster::cargo()
        .current_dir(cluster::repo())
        .args([
            "test",
            "--release",
            "-q",
            "-p",
            "tether-tunnel",
            "--test",
            "tunnel",
            "throughput",
            "--",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .context("running cargo test")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "the throughput test failed: {text}");
    parse_quic_ceiling(&text).with_context(|| format!("no `Udp Cubic` median in: {text}"))
}

/// Reads `=> Udp Cubic: median 559 MB/s` from the test's output.
fn parse_quic_ceiling(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("=> Udp Cubic: median "))
        .and_then(|rest| rest.strip_suffix(" MB/s"))
        .and_then(|n| n.trim().parse().ok())
}

/// Runs `tether-testapp bench ARGS` (on the host for `ns` = None) and reads its JSON.
fn testapp(ns: Option<&str>, args: &[&str], limit: Duration) -> anyhow::Result<serde_json::Value> {
    let mut cmd = in_ns(ns, testapp_bin());
    // Errors are one line each; a backtrace per failed run would drown the report.
    cmd.env("RUST_LIB_BACKTRACE", "0").arg("bench").args(args);
    let out = run_within(&mut cmd, limit)?;
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .with_context(|| format!("reading the output of bench {args:?}: {out}"))
}

/// The cluster's processes that carry a `kubectl port-forward`'s bytes.
const PORT_FORWARD_CARRIERS: &[&str] = &["kube-apiserver", "kubelet", "containerd"];

/// Bulk throughput and HTTP latency over one path, and what the bulk transfers cost `processes`
/// in CPU time; failures become part of the result.
fn measure(
    args: &Args,
    path: Path,
    ns: Option<&str>,
    addr: &str,
    processes: &cpu::Processes,
) -> PathResult {
    let mut result = PathResult {
        path,
        bulk_mb_s: Vec::new(),
        bulk_errors: Vec::new(),
        upload_mb_s: Vec::new(),
        keep_alive: Latency::default(),
        new_connection: Latency::default(),
        cpu_per_gb: None,
    };
    let bulk_bytes = args.bulk_mib << 20;
    let bulk_url = format!("http://{addr}/bytes?n={bulk_bytes}");
    let cpu_before = processes.now();
    for _ in 0..2 {
        match testapp(ns, &["get", "--url", &bulk_url], Duration::from_secs(330)) {
            Ok(v) => match v["mb_per_s"].as_f64() {
                Some(mb_s) => result.bulk_mb_s.push(mb_s),
                None => result.bulk_errors.push(format!("no throughput in {v}")),
            },
            Err(e) => result.bulk_errors.push(format!("{e:#}")),
        }
    }
    let moved = bulk_bytes * result.bulk_mb_s.len() as u64;
    if moved > 0 && !processes.workstation.is_empty() {
        result.cpu_per_gb = Some(cpu_before.per_gb(processes.now(), moved));
    }
    // The other way: the same bytes POSTed (the echo reads the whole body, then answers).
    let post_url = format!("http://{addr}/");
    let n = bulk_bytes.to_string();
    for _ in 0..2 {
        let posted = testapp(
            ns,
            &["post", "--url", &post_url, "--bytes", &n],
            Duration::from_secs(330),
        );
        match posted {
            Ok(v) => match v["mb_per_s"].as_f64() {
                Some(mb_s) => result.upload_mb_s.push(mb_s),
                None => result
                    .bulk_errors
                    .push(format!("upload: no throughput in {v}")),
            },
            Err(e) => result.bulk_errors.push(format!("upload: {e:#}")),
        }
    }
    let url = format!("http://{addr}/");
    let latency = |requests: u32, extra: &[&str]| {
        let n = requests.to_string();
        let mut a = vec!["http", "--url", &url, "--requests", &n];
        a.extend_from_slice(extra);
        match testapp(ns, &a, Duration::from_secs(300)) {
            Ok(v) => Latency::from_json(&v),
            Err(e) => Latency::failed(format!("{e:#}")),
        }
    };
    result.keep_alive = latency(args.requests, &[]);
    result.new_connection = latency(args.new_connection_requests, &["--new-connection"]);
    eprintln!(
        "    bulk {:?} MB/s, upload {:?} MB/s; p50 keep-alive {:?} µs, new connection {:?} µs",
        result.bulk_mb_s,
        result.upload_mb_s,
        result.keep_alive.p50_us,
        result.new_connection.p50_us
    );
    result
}

/// Connects `trials` times, timing each until a GET to the pod succeeds; the last session stays
/// up for the measurements.
fn connect_trials(args: &Args, path: Path, addr: &str) -> anyhow::Result<(ConnectResult, Tether)> {
    let transport = path.transport().context("a tether path")?;
    let url = format!("http://{addr}/");
    let mut result = ConnectResult {
        path,
        returned: Vec::new(),
        first_ok: Vec::new(),
    };
    let mut trial = 0;
    loop {
        trial += 1;
        let start = Instant::now();
        let session = Tether::connect(&args.ns, transport)?;
        let returned = start.elapsed();
        testapp(
            Some(&args.ns),
            &["wait", "--url", &url, "--timeout-ms", "15000"],
            Duration::from_secs(30),
        )
        .with_context(|| format!("after tether connect --transport {transport}"))?;
        let first_ok = start.elapsed();
        eprintln!(
            "    trial {trial}: connect returned after {:.2} s, first GET ok after {:.2} s",
            returned.as_secs_f64(),
            first_ok.as_secs_f64()
        );
        result.returned.push(returned);
        result.first_ok.push(first_ok);
        if trial == args.connect_trials {
            return Ok((result, session));
        }
        drop(session);
    }
}

/// One DNS run from the workstation namespace.
fn dns(args: &Args, with: Option<Path>, lookup: Lookup, server: IpAddr) -> DnsResult {
    let (server_s, n) = (server.to_string(), args.dns_requests.to_string());
    let a: Vec<&str> = if lookup.getaddrinfo() {
        vec!["resolve", "--name", lookup.name(), "--requests", &n]
    } else {
        vec![
            "dns",
            "--server",
            &server_s,
            "--name",
            lookup.name(),
            "--requests",
            &n,
        ]
    };
    let latency = match testapp(Some(&args.ns), &a, Duration::from_secs(300)) {
        Ok(v) => Latency::from_json(&v),
        Err(e) => Latency::failed(format!("{e:#}")),
    };
    eprintln!(
        "    DNS {}: p50 {:?} µs ({} errors)",
        lookup.name(),
        latency.p50_us,
        latency.errors
    );
    DnsResult {
        with,
        lookup,
        server,
        latency,
    }
}

fn step(msg: &str) {
    eprintln!("\x1b[1m==> {msg}\x1b[0m");
}

#[cfg(test)]
mod tests {
    use super::parse_quic_ceiling;

    #[test]
    fn reads_the_udp_cubic_median() {
        let out = "Udp Cubic: 560 MB/s (1s; mtu 1452, lost 0 of 1 packets)\n\
                   => Udp Cubic: median 559 MB/s\n=> Udp Bbr: median 408 MB/s\n";
        assert_eq!(parse_quic_ceiling(out), Some(559.0));
        assert_eq!(parse_quic_ceiling("=> Udp Bbr: median 408 MB/s"), None);
    }
}
