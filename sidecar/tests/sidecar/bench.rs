//! What the proxy costs, against the `tether-agent sidecar` binary in a child process:
//! latency and request rate of small keep-alive GETs straight to the app and through the proxy
//! (no intercept), and the proxy's resident memory.
//!
//! `cargo build --release -p tether-agent && cargo test --release -p tether-sidecar --test sidecar -- --ignored --nocapture bench`
//! (the binary is found at `TETHER_AGENT_BIN`, else in the workspace's `target/release`).
//!
//! Targets from the intercept issue: added p50 ≤ 100 µs, idle RSS ≤ 15 MiB.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::support::HttpServer;

const WARMUP: usize = 1_000;
const REQUESTS: usize = 20_000;
const CONNECTIONS: usize = 8;

/// The `tether-agent` binary: `TETHER_AGENT_BIN`, else the workspace's release build.
fn agent_bin() -> std::path::PathBuf {
    std::env::var_os("TETHER_AGENT_BIN").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tether-agent"),
        Into::into,
    )
}

/// Kills the child proxy when the test ends, however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release with --nocapture"]
async fn bench_proxy_overhead() {
    let app = HttpServer::start("app").await;
    let listen = free_port().await;
    let proxy = ChildGuard(
        Command::new(agent_bin())
            .args(["sidecar", "--listen", &listen.to_string()])
            .args(["--app", &app.addr.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("tether-agent binary starts"),
    );
    wait_listening(listen).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_start = rss_kib(proxy.0.id());

    let direct = sequential(app.addr).await;
    let through = sequential(listen).await;
    let direct_rate = concurrent(app.addr).await;
    let through_rate = concurrent(listen).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kib(proxy.0.id());

    println!("{REQUESTS} sequential GETs on one keep-alive HTTP/1.1 connection:");
    println!("  direct  {direct}");
    println!("  proxied {through}");
    let added_p50 = through.p50.saturating_sub(direct.p50);
    let added_p99 = through.p99.saturating_sub(direct.p99);
    println!("  added   p50 {added_p50:?}  p99 {added_p99:?}");
    println!("{CONNECTIONS} connections in parallel, {REQUESTS} GETs in all:");
    println!("  direct  {direct_rate:.0} req/s");
    println!("  proxied {through_rate:.0} req/s");
    println!("proxy RSS: idle at start {rss_start} KiB, idle after load {rss_after} KiB");

    assert!(
        added_p50 <= Duration::from_micros(100),
        "added p50 {added_p50:?}"
    );
    assert!(rss_start <= 15 * 1024, "idle RSS {rss_start} KiB");
}

/// What counting requests costs the proxy: the same binary with metrics off (no
/// `--metrics-port`: nothing is counted) and on, measured in turns so that the machine's noise
/// falls on both. `cargo xtask bench --only metrics` runs it and keeps its report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release with --nocapture"]
async fn bench_metrics_cost() {
    let app = HttpServer::start("app").await;
    let (off_addr, on_addr, metrics_addr) =
        (free_port().await, free_port().await, free_port().await);
    let start = |listen: SocketAddr, metrics: Option<SocketAddr>| {
        let mut command = Command::new(agent_bin());
        command
            .args(["sidecar", "--listen", &listen.to_string()])
            .args(["--app", &app.addr.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        if let Some(m) = metrics {
            command.args(["--metrics-port", &m.port().to_string()]);
        }
        ChildGuard(command.spawn().expect("tether-agent binary starts"))
    };
    let _off = start(off_addr, None);
    let _on = start(on_addr, Some(metrics_addr));
    wait_listening(off_addr).await;
    wait_listening(on_addr).await;
    wait_listening(metrics_addr).await;

    const ROUNDS: usize = 5;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        off.push(sequential(off_addr).await.p50);
        on.push(sequential(on_addr).await.p50);
    }
    off.sort();
    on.sort();
    let (off, on) = (off[ROUNDS / 2], on[ROUNDS / 2]);
    let added = on.as_nanos() as i128 - off.as_nanos() as i128;
    println!("metrics cost on the agent's pass-through path ({REQUESTS} sequential keep-alive GETs, median of {ROUNDS} rounds):");
    println!("| agent | p50 |");
    println!("|---|---|");
    println!("| metrics off | {off:?} |");
    println!("| metrics on | {on:?} |");
    println!("| added by metrics | {:.2} µs |", added as f64 / 1000.0);

    // The tunnel's instrumentation is a counter add per read and per write of a flow's bytes
    // (and a gauge up and down per flow): what one costs, on this machine.
    let counter: tether_metrics::Counter = tether_metrics::Counter::default();
    let n = 10_000_000u64;
    let t = Instant::now();
    for i in 0..n {
        counter.inc_by(std::hint::black_box(i & 7));
    }
    let per_add = t.elapsed().as_nanos() as f64 / n as f64;
    println!("| one counter add (the tunnel's per-read/write cost) | {per_add:.1} ns |");

    // Every request is also counted per intercept for `tether top` (on whatever the metrics
    // setting; included in both rows above): one lock and a histogram bucket.
    let tally = tether_sidecar::tally::Tally::default();
    let n = 2_000_000u64;
    let t = Instant::now();
    for i in 0..n {
        let took = Duration::from_micros(std::hint::black_box(i & 1023));
        tally.request(8080, Some(i & 3), took);
    }
    let per_request = t.elapsed().as_nanos() as f64 / n as f64;
    println!("| one request counted for `tether top` (in both rows) | {per_request:.1} ns |");

    // The served endpoint answers with what the requests made.
    let text = reqwest_like_get(metrics_addr).await;
    assert!(
        text.contains("tether_agent_requests_total{port=\""),
        "{text}"
    );
}

/// `GET /metrics` on `addr`, the body as text.
async fn reqwest_like_get(addr: SocketAddr) -> String {
    let mut sender = connect(addr).await;
    sender.ready().await.unwrap();
    let request = Request::get("/metrics")
        .header(header::HOST, "metrics")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Latency percentiles and rate of sequential requests.
struct Stats {
    p50: Duration,
    p99: Duration,
    rate: f64,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:?}  p99 {:?}  {:.0} req/s",
            self.p50, self.p99, self.rate
        )
    }
}

async fn sequential(addr: SocketAddr) -> Stats {
    let mut sender = connect(addr).await;
    for _ in 0..WARMUP {
        get(&mut sender).await;
    }
    let mut latencies = Vec::with_capacity(REQUESTS);
    let start = Instant::now();
    for _ in 0..REQUESTS {
        let t = Instant::now();
        get(&mut sender).await;
        latencies.push(t.elapsed());
    }
    let total = start.elapsed();
    latencies.sort();
    Stats {
        p50: latencies[REQUESTS / 2],
        p99: latencies[REQUESTS * 99 / 100],
        rate: REQUESTS as f64 / total.as_secs_f64(),
    }
}

/// Requests per second with several connections at once.
async fn concurrent(addr: SocketAddr) -> f64 {
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut sender = connect(addr).await;
        get(&mut sender).await;
        senders.push(sender);
    }
    let start = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            tokio::spawn(async move {
                for _ in 0..REQUESTS / CONNECTIONS {
                    get(&mut sender).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    REQUESTS as f64 / start.elapsed().as_secs_f64()
}

async fn connect(addr: SocketAddr) -> http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut http1::SendRequest<Empty<Bytes>>) {
    sender.ready().await.unwrap();
    let request = Request::get("/")
        .header(header::HOST, "app")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert!(response.status().is_success());
    response.into_body().collect().await.unwrap();
}

async fn free_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "proxy never listened on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The resident set of process `pid`, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}
