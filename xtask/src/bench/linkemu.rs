//! The emulated link of `--profile`: `tether-linkemu` on the workstation namespace's veth for the
//! whole of a profile's measurements, and its fidelity (the round trip and a raw TCP stream
//! through it, against the profile) in `target/bench/linkemu-PROFILE.md`.

use std::{
    fmt::Write,
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use super::{process::in_ns, report::Latency, testapp, testapp_bin};
use crate::cluster;

/// The benchmark's link profiles, as the emulator defines them.
pub use tether_linkemu::Named as Profile;

/// Whether `profile` runs the emulator at all.
pub fn emulated(profile: Profile) -> bool {
    !profile.profile().is_passthrough()
}

/// What the profile is, for a report.
pub fn describe(profile: Profile) -> String {
    if emulated(profile) {
        format!("{profile}: {}", profile.profile())
    } else {
        format!("{profile}: no emulation")
    }
}

/// The NFQUEUE queue numbers the benchmark's emulator uses (this one and the next).
const QUEUE_NUM: u16 = 7100;

fn linkemu_bin() -> PathBuf {
    cluster::repo().join("target/release/tether-linkemu")
}

/// Builds the release emulator.
pub fn build() -> anyhow::Result<()> {
    let status = cluster::cargo()
        .args(["build", "--release", "-p", "tether-linkemu"])
        .current_dir(cluster::repo())
        .status()
        .context("running cargo")?;
    anyhow::ensure!(status.success(), "building tether-linkemu failed");
    Ok(())
}

/// The emulator running on a workstation namespace's link; stopped (its rules removed) when
/// dropped.
#[derive(Debug)]
pub struct Emulator {
    child: Option<Child>,
    lines_rx: mpsc::Receiver<String>,
}

impl Emulator {
    pub fn start(ns: &str, profile: Profile) -> anyhow::Result<Emulator> {
        let iface = host_veth(ns)?;
        let mut child = Command::new(linkemu_bin())
            .args([
                "--iface",
                &iface,
                "--netns",
                ns,
                "--profile",
                profile.name(),
            ])
            .args(["--queue-num", &QUEUE_NUM.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", linkemu_bin().display()))?;
        let stdout = child.stdout.take();
        let (lines_tx, lines_rx) = mpsc::channel();
        thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        // Guarded from here on.
        let emulator = Emulator {
            child: Some(child),
            lines_rx,
        };
        match emulator.lines_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line == "ready" => Ok(emulator),
            other => bail!("tether-linkemu did not start on {iface} ({other:?})"),
        }
    }

    /// Stops it and returns its counts (its last line, JSON).
    pub fn stop(mut self) -> anyhow::Result<serde_json::Value> {
        let status = self.terminate()?;
        anyhow::ensure!(status.success(), "tether-linkemu exited with {status}");
        let last = self.lines_rx.iter().last().unwrap_or_default();
        serde_json::from_str(&last)
            .with_context(|| format!("reading the emulator's counts: {last}"))
    }

    fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        // SIGTERM, not kill(): the emulator removes its rules on the way out.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        Ok(child.wait()?)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.terminate() {
                eprintln!("warning: stopping tether-linkemu: {e:#}");
            }
        }
    }
}

/// The host side of a namespace's `eth0` veth: the interface whose peer index it names.
fn host_veth(ns: &str) -> anyhow::Result<String> {
    let inside = cluster::run(Command::new("ip").args(["-n", ns, "-o", "link", "show", "eth0"]))?;
    // `2: eth0@if45: <…>`
    let peer = inside
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.split("@if").nth(1))
        .and_then(|i| i.trim_end_matches(':').parse::<u32>().ok())
        .with_context(|| format!("no veth peer in {inside:?}"))?;
    let host = cluster::run(Command::new("ip").args(["-o", "link", "show"]))?;
    host.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let index = f.next()?.trim_end_matches(':').parse::<u32>().ok()?;
            let name = f.next()?.trim_end_matches(':');
            (index == peer).then(|| name.split('@').next().unwrap_or(name).to_owned())
        })
        .with_context(|| format!("no interface with index {peer} on the host"))
}

/// The host side's address of a namespace's link: the gateway of its routes.
fn host_side(ns: &str) -> anyhow::Result<IpAddr> {
    let routes = cluster::run(Command::new("ip").args(["-n", ns, "-4", "route", "show"]))?;
    routes
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            f.find(|w| *w == "via")?;
            f.next()?.parse().ok()
        })
        .with_context(|| format!("no route through a gateway in {ns}: {routes}"))
}

/// What the link did, measured from the workstation namespace to the host side of its link.
#[derive(Debug, Clone, Default)]
pub struct Fidelity {
    pub rtt: Latency,
    pub download_mb_s: Option<f64>,
    pub upload_mb_s: Option<f64>,
    pub errors: Vec<String>,
    /// The emulator's counts, once it stopped.
    pub counts: Option<serde_json::Value>,
}

/// The host side's port of the fidelity server.
const FIDELITY_PORT: u16 = 18080;

/// Measures the round trip (TCP connects) and one raw TCP stream each way between namespace `ns`
/// and the host side of its link, through whatever runs on the link now.
pub fn measure(ns: &str, profile: Profile) -> anyhow::Result<Fidelity> {
    let host = host_side(ns)?;
    let server = Server::start(host)?;
    let addr = SocketAddr::new(host, FIDELITY_PORT).to_string();
    let mut f = Fidelity {
        rtt: match testapp(
            Some(ns),
            &[
                "tcp-connect",
                "--addr",
                &addr,
                "--requests",
                "50",
                "--warmup",
                "3",
            ],
            Duration::from_secs(60),
        ) {
            Ok(v) => Latency::from_json(&v),
            Err(e) => Latency::failed(format!("{e:#}")),
        },
        ..Fidelity::default()
    };
    // About 5 s at the rate; less where loss keeps one TCP stream far below it.
    let bytes: u64 = match profile {
        Profile::Lan => 512 << 20,
        Profile::Wan20 => 128 << 20,
        Profile::Lossy50 => 16 << 20,
    };
    let url = format!("http://{addr}/bytes?n={bytes}");
    match testapp(Some(ns), &["get", "--url", &url], Duration::from_secs(300)) {
        Ok(v) => f.download_mb_s = v["mb_per_s"].as_f64(),
        Err(e) => f.errors.push(format!("download: {e:#}")),
    }
    let url = format!("http://{addr}/");
    let n = bytes.to_string();
    match testapp(
        Some(ns),
        &["post", "--url", &url, "--bytes", &n],
        Duration::from_secs(300),
    ) {
        Ok(v) => f.upload_mb_s = v["mb_per_s"].as_f64(),
        Err(e) => f.errors.push(format!("upload: {e:#}")),
    }
    drop(server);
    eprintln!(
        "    connect RTT p50 {:?} µs; download {:?} MB/s, upload {:?} MB/s",
        f.rtt.p50_us, f.download_mb_s, f.upload_mb_s
    );
    Ok(f)
}

/// `tether-testapp` serving HTTP on the host side of the link; killed when dropped.
struct Server(Child);

impl Server {
    fn start(host: IpAddr) -> anyhow::Result<Server> {
        let child = Command::new(testapp_bin())
            .args(["--bind", &host.to_string(), "--udp-port", "0"])
            .args([
                "--http-port",
                &FIDELITY_PORT.to_string(),
                "--name",
                "linkemu-fidelity",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting the fidelity server")?;
        let server = Server(child);
        let addr = SocketAddr::new(host, FIDELITY_PORT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the fidelity server did not listen on {addr}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The fidelity table: each measure against what the profile sets.
pub fn markdown(profile: Profile, f: &Fidelity) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## The emulated link ({}), measured from the workstation namespace to the host side of \
         its link\n\n| measure | profile | measured | measured / profile |\n|---|---:|---:|---:|",
        describe(profile)
    );
    let params = profile.profile();
    let rtt_ms = params.rtt.as_secs_f64() * 1e3;
    let p50_ms = f.rtt.p50_us.map(|u| u / 1e3);
    let ratio = |m: Option<f64>, t: f64| {
        m.filter(|_| t > 0.0)
            .map_or("—".into(), |m| format!("{:.2}", m / t))
    };
    let _ = writeln!(
        md,
        "| round trip: TCP connect p50 (p99) | {rtt_ms:.1} ms | {} ({}) | {} |",
        p50_ms.map_or("failed".into(), |v| format!("{v:.2} ms")),
        f.rtt
            .p99_us
            .map_or("n/a".into(), |v| format!("{:.2} ms", v / 1e3)),
        ratio(p50_ms, rtt_ms),
    );
    let rate = params.rate_bps.map(|b| b as f64 / 8e6);
    for (what, v) in [
        ("one TCP stream, host → workstation", f.download_mb_s),
        ("one TCP stream, workstation → host", f.upload_mb_s),
    ] {
        let _ = writeln!(
            md,
            "| {what}, MB/s | {} | {} | {} |",
            rate.map_or("no limit".into(), |r| format!("{r:.2} (rate)")),
            v.map_or("failed".into(), |v| format!("{v:.2}")),
            rate.map_or("—".into(), |r| ratio(v, r)),
        );
    }
    if params.loss > 0.0 {
        // What one loss-based (Reno-like) stream could reach at this loss and RTT (Mathis et
        // al.): the raw TCP streams above run with this machine's congestion control, which
        // decides whether the rate or the loss is their limit.
        let mathis = 1448.0 / params.rtt.as_secs_f64() * (1.5f64).sqrt() / params.loss.sqrt() / 1e6;
        let cc = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
            .map_or("?".into(), |s| s.trim().to_owned());
        let _ = writeln!(
            md,
            "| (the streams above use this machine's TCP congestion control, `{cc}`; a loss-based \
             one such as Reno is capped near MSS/RTT × √(3/2)/√p at this loss) | {mathis:.2} MB/s | | |"
        );
    }
    if let Some(c) = &f.counts {
        let share = |dir: &str, key: &str| {
            let n = c[dir]["packets"].as_f64().unwrap_or(0.0);
            (n > 0.0).then(|| c[dir][key].as_f64().unwrap_or(0.0) / n * 100.0)
        };
        for (what, key, target) in [
            ("random loss", "lost", params.loss),
            ("reordered", "reordered", params.reorder),
        ] {
            let _ = writeln!(
                md,
                "| {what}, up / down (of the packets the emulator saw) | {:.2} % | {} / {} % | |",
                target * 100.0,
                share("up", key).map_or("n/a".into(), |v| format!("{v:.2}")),
                share("down", key).map_or("n/a".into(), |v| format!("{v:.2}")),
            );
        }
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        let dir = |d: &str, k: &str| c[d][k].as_u64().unwrap_or(0);
        let _ = writeln!(
            md,
            "| dropped by the bottleneck's full buffer (drop-tail, part of the link), up / down \
             | | {} / {} | |",
            dir("up", "buffer_full"),
            dir("down", "buffer_full"),
        );
        let overflow = dir("up", "overflow")
            + dir("down", "overflow")
            + n("kernel_dropped")
            + n("kernel_user_dropped");
        let _ = writeln!(
            md,
            "| dropped because the emulator could not keep up (its limit, the kernel's queue, \
             the socket's buffer) | 0 | {overflow} | |"
        );
        let _ = writeln!(
            md,
            "| packets through the emulator, up / down | | {} / {} | |",
            dir("up", "packets"),
            dir("down", "packets"),
        );
    }
    for e in &f.errors {
        let _ = writeln!(md, "\n- error: {e}");
    }
    md
}

/// A route from the workstation namespace straight to one pod IP through the host, for the
/// direct path under emulation (the namespace otherwise reaches only the node); removed when
/// dropped.
#[derive(Debug)]
pub struct DirectRoute {
    ns: String,
    dest: String,
}

impl DirectRoute {
    pub fn add(ns: &str, pod: IpAddr) -> anyhow::Result<DirectRoute> {
        let via = host_side(ns)?.to_string();
        let dest = format!("{pod}/32");
        cluster::run(in_ns(Some(ns), "ip").args(["route", "replace", &dest, "via", &via]))?;
        Ok(DirectRoute {
            ns: ns.to_owned(),
            dest,
        })
    }
}

impl Drop for DirectRoute {
    fn drop(&mut self) {
        let _ = in_ns(Some(&self.ns), "ip")
            .args(["route", "delete", &self.dest])
            .status();
    }
}
