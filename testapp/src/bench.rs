//! `tether-testapp bench …`: the measuring clients behind `cargo xtask bench`.
//!
//! They run inside the namespaces being compared (`ip netns exec NS tether-testapp bench …`), so
//! they are compiled and optimised like the code they measure, not a script's loop. Each one does
//! a fixed number of operations, each under a timeout, and prints one JSON object on stdout.
//!
//! `wait-for` is the exception: it runs in the `client` pod while the benchmark starts an
//! intercept on the host, and prints `key=value` lines as it goes (see [`Bench::WaitFor`]), so
//! that the benchmark knows when it is polling and when the first match came, on the clock the
//! pod and the host share.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use bytes::Bytes;
use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RecordType},
};
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, client::conn::http1, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::get::{parse_header, Header, Target};

mod flows;
use tokio::{
    net::{TcpStream, UdpSocket},
    time::timeout,
};

#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Small GETs one after another: latency percentiles.
    Http {
        #[arg(long)]
        url: Uri,
        /// A new TCP connection for every request (default: one keep-alive connection).
        #[arg(long)]
        new_connection: bool,
        /// A header every request carries, as `NAME:VALUE` (repeatable).
        #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
        headers: Vec<Header>,
        #[command(flatten)]
        counts: Counts,
    },
    /// One GET whose whole body is read and discarded: throughput.
    Get {
        #[arg(long)]
        url: Uri,
        #[arg(long, default_value_t = 300_000)]
        timeout_ms: u64,
    },
    /// One POST of `bytes` bytes, written raw on a new connection, timed until the answer's
    /// head: upload throughput (the echo reads the whole body before it answers).
    Post {
        #[arg(long)]
        url: Uri,
        #[arg(long)]
        bytes: u64,
        #[arg(long, default_value_t = 300_000)]
        timeout_ms: u64,
    },
    /// TCP connects one after another, each closed at once: the path's round trip (a connect
    /// returns after the SYN's answer).
    TcpConnect {
        /// `host:port` of a listening server.
        #[arg(long)]
        addr: SocketAddr,
        #[command(flatten)]
        counts: Counts,
    },
    /// GETs on new connections until one succeeds: when a fresh route starts to work.
    Wait {
        #[arg(long)]
        url: Uri,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// GETs on a new connection each until an answer's body contains a text: when an intercept
    /// starts to take the traffic.
    ///
    /// stdout, one `key=value` per line: `polling_since_unix_ns` once the first try has finished
    /// (whatever its outcome), then `attempts`, `misses` (answers without the text) and `errors`,
    /// and last `first_match_unix_ns`, the wall-clock time the matching answer arrived. Fails
    /// when nothing matched within the timeout.
    WaitFor {
        #[arg(long)]
        url: Uri,
        /// A header every request carries, as `NAME:VALUE` (repeatable).
        #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
        headers: Vec<Header>,
        /// What a successful answer's body must contain.
        #[arg(long)]
        body_contains: String,
        /// Pause between tries, in milliseconds.
        #[arg(long, default_value_t = 5)]
        interval_ms: u64,
        /// Per try (connecting included), in milliseconds: a try stuck on a pod that went away
        /// must not hide the first match for long.
        #[arg(long, default_value_t = 250)]
        try_timeout_ms: u64,
        #[arg(long, default_value_t = 120_000)]
        timeout_ms: u64,
    },
    /// Many flows at once (see [`flows`]): `tcp` keep-alive connections and `udp-flows` UDP
    /// sockets, each sending `requests` requests one after another once all are open.
    Flows {
        /// Where the TCP flows send their GETs.
        #[arg(long)]
        url: Uri,
        /// A header every GET carries, as `NAME:VALUE` (repeatable).
        #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
        headers: Vec<Header>,
        #[arg(long, default_value_t = 1)]
        tcp: u32,
        /// A UDP echo server (`host:port`) for the UDP flows.
        #[arg(long)]
        udp: Option<SocketAddr>,
        #[arg(long, default_value_t = 0)]
        udp_flows: u32,
        /// Requests (GETs or datagrams) per flow.
        #[arg(long, default_value_t = 20)]
        requests: u32,
        /// Per request, and for opening a connection, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// DNS A queries over UDP, one after another.
    Dns {
        /// The DNS server (port 53).
        #[arg(long)]
        server: IpAddr,
        /// The name to look up; `{i}` in it becomes the query's index, so that every query asks
        /// a different name (and misses caches).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        counts: Counts,
    },
    /// Lookups through the system's resolver, one after another: `getaddrinfo` (glibc's, on the
    /// host build), as every program that connects by name does it, with the search list,
    /// `ndots` and both A and AAAA queries.
    Resolve {
        /// The name to look up; `{i}` in it becomes the lookup's index.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        counts: Counts,
    },
}

/// How many operations a latency run does, and how long each may take.
#[derive(Debug, Clone, clap::Args)]
pub struct Counts {
    /// Measured operations.
    #[arg(long, default_value_t = 1000)]
    requests: u32,
    /// Operations done first and not measured.
    #[arg(long, default_value_t = 20)]
    warmup: u32,
    /// Per operation (connecting included), in milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// Stop after this many failed operations.
    #[arg(long, default_value_t = 20)]
    max_errors: u32,
}

impl Counts {
    fn total(&self) -> u32 {
        self.warmup.saturating_add(self.requests)
    }

    fn per_op(&self) -> Duration {
        ms(self.timeout_ms)
    }
}

/// Runs one measurement on a single-threaded runtime: one sequential client needs no more, and
/// no cross-thread wake-ups end up in the numbers.
pub fn run(bench: Bench) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    let report = rt.block_on(async {
        match bench {
            Bench::Http {
                url,
                new_connection,
                headers,
                counts,
            } => http_latency(&Target::parse(&url)?, new_connection, &headers, &counts).await,
            Bench::Get { url, timeout_ms } => {
                get_throughput(&Target::parse(&url)?, ms(timeout_ms)).await
            }
            Bench::Wait { url, timeout_ms } => wait(&Target::parse(&url)?, ms(timeout_ms)).await,
            Bench::Post {
                url,
                bytes,
                timeout_ms,
            } => post_throughput(&Target::parse(&url)?, bytes, ms(timeout_ms)).await,
            Bench::TcpConnect { addr, counts } => connect_latency(addr, &counts).await,
            Bench::WaitFor {
                url,
                headers,
                body_contains,
                interval_ms,
                try_timeout_ms,
                timeout_ms,
            } => {
                let pace = Pace {
                    interval: ms(interval_ms),
                    per_try: ms(try_timeout_ms),
                    limit: ms(timeout_ms),
                };
                // It prints as it goes.
                wait_for(&Target::parse(&url)?, &headers, &body_contains, pace).await?;
                Ok(serde_json::Value::Null)
            }
            Bench::Dns {
                server,
                name,
                counts,
            } => dns_latency(server, &name, &counts).await,
            Bench::Resolve { name, counts } => resolve_latency(&name, &counts),
            Bench::Flows {
                url,
                headers,
                tcp,
                udp,
                udp_flows,
                requests,
                timeout_ms,
            } => {
                flows::run(flows::Flows {
                    target: Target::parse(&url)?,
                    headers,
                    tcp,
                    udp,
                    udp_flows,
                    requests,
                    per_op: ms(timeout_ms),
                })
                .await
            }
        }
    })?;
    if !report.is_null() {
        println!("{report}");
    }
    Ok(())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type Sender = http1::SendRequest<Empty<Bytes>>;

/// A new HTTP/1.1 connection; its driver runs as a task that ends when the sender is dropped.
async fn open(target: &Target) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends one GET carrying `headers`; the answer's body is left to the caller.
async fn send(
    sender: &mut Sender,
    target: &Target,
    headers: &[Header],
) -> anyhow::Result<Response<Incoming>> {
    sender.ready().await?;
    let mut req =
        Request::get(target.path.as_str()).header(hyper::header::HOST, target.authority.as_str());
    for h in headers {
        req = req.header(&h.name, &h.value);
    }
    Ok(sender.send_request(req.body(Empty::new())?).await?)
}

/// One GET; the body is read to the end and counted.
async fn get(sender: &mut Sender, target: &Target, headers: &[Header]) -> anyhow::Result<u64> {
    let resp = send(sender, target, headers).await?;
    if !resp.status().is_success() {
        bail!("HTTP {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

/// Also reports `elapsed_s`, the wall time of the measured requests (the warm-up excluded), for a
/// rate.
async fn http_latency(
    target: &Target,
    new_connection: bool,
    headers: &[Header],
    counts: &Counts,
) -> anyhow::Result<serde_json::Value> {
    let mut recorder = Recorder::new(counts);
    let mut conn: Option<Sender> = None;
    let mut measured_since = None;
    for i in 0..counts.total() {
        let start = Instant::now();
        if i == counts.warmup {
            measured_since = Some(start);
        }
        let outcome = timeout(counts.per_op(), async {
            let sender = match conn.as_mut() {
                Some(s) if !new_connection => s,
                _ => conn.insert(open(target).await?),
            };
            get(sender, target, headers).await
        })
        .await;
        let elapsed = start.elapsed();
        let outcome = match outcome {
            Ok(Ok(_)) => Ok(elapsed),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("timed out after {:?}", counts.per_op())),
        };
        if new_connection || outcome.is_err() {
            conn = None;
        }
        if recorder.record(i, outcome) {
            break;
        }
    }
    let mut report = recorder.report();
    report["elapsed_s"] = measured_since.map(|t| t.elapsed().as_secs_f64()).into();
    Ok(report)
}

async fn get_throughput(target: &Target, limit: Duration) -> anyhow::Result<serde_json::Value> {
    let mut sender = timeout(limit, open(target))
        .await
        .context("connecting timed out")??;
    let start = Instant::now();
    let bytes = timeout(limit, get(&mut sender, target, &[]))
        .await
        .context("the transfer timed out")??;
    let seconds = start.elapsed().as_secs_f64();
    Ok(json!({
        "bytes": bytes,
        "seconds": seconds,
        "mb_per_s": bytes as f64 / seconds / 1e6,
    }))
}

async fn post_throughput(
    target: &Target,
    bytes: u64,
    limit: Duration,
) -> anyhow::Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = timeout(
        limit,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .context("connecting timed out")??;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    let start = Instant::now();
    timeout(limit, async {
        stream.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 << 10];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            stream.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
        // The answer's first bytes: the server has read the whole body.
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).await?;
        anyhow::ensure!(
            answer.starts_with(b"HTTP/1.1 200"),
            "answer {:?}",
            String::from_utf8_lossy(&answer)
        );
        anyhow::Ok(())
    })
    .await
    .context("the upload timed out")??;
    let seconds = start.elapsed().as_secs_f64();
    Ok(json!({
        "bytes": bytes,
        "seconds": seconds,
        "mb_per_s": bytes as f64 / seconds / 1e6,
    }))
}

async fn connect_latency(addr: SocketAddr, counts: &Counts) -> anyhow::Result<serde_json::Value> {
    let mut recorder = Recorder::new(counts);
    for i in 0..counts.total() {
        let start = Instant::now();
        let outcome = match timeout(counts.per_op(), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let elapsed = start.elapsed();
                drop(stream);
                Ok(elapsed)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("timed out after {:?}", counts.per_op())),
        };
        if recorder.record(i, outcome) {
            break;
        }
    }
    Ok(recorder.report())
}

async fn wait(target: &Target, limit: Duration) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = limit.saturating_sub(start.elapsed());
        let attempt = timeout(left.min(Duration::from_secs(1)), async {
            get(&mut open(target).await?, target, &[]).await
        })
        .await;
        let error = match attempt {
            Ok(Ok(_)) => {
                return Ok(json!({
                    "attempts": attempts,
                    "elapsed_ms": start.elapsed().as_secs_f64() * 1e3,
                }))
            }
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "timed out".to_owned(),
        };
        if start.elapsed() >= limit {
            bail!("no successful GET within {limit:?} ({attempts} attempts; last: {error})");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How `wait-for` tries.
#[derive(Debug, Clone, Copy)]
struct Pace {
    interval: Duration,
    per_try: Duration,
    limit: Duration,
}

/// What one `wait-for` try found.
#[derive(Debug, PartialEq, Eq)]
enum Try {
    Match,
    Miss,
    Error(String),
}

async fn wait_for(
    target: &Target,
    headers: &[Header],
    text: &str,
    pace: Pace,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let (mut attempts, mut misses, mut errors) = (0u32, 0u32, 0u32);
    let mut last_error = None;
    loop {
        attempts += 1;
        let attempt = timeout(pace.per_try, async {
            let resp = send(&mut open(target).await?, target, headers).await?;
            let ok = resp.status().is_success();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(ok && contains(&body, text.as_bytes()))
        })
        .await;
        let outcome = match attempt {
            Ok(Ok(true)) => Try::Match,
            Ok(Ok(false)) => Try::Miss,
            Ok(Err(e)) => Try::Error(format!("{e:#}")),
            Err(_) => Try::Error(format!("timed out after {:?}", pace.per_try)),
        };
        // Taken at once: the benchmark subtracts it from the host's clock.
        let now = unix_ns(SystemTime::now());
        if attempts == 1 {
            println!("polling_since_unix_ns={now}");
        }
        match outcome {
            Try::Match => {
                println!("attempts={attempts}\nmisses={misses}\nerrors={errors}");
                println!("first_match_unix_ns={now}");
                return Ok(());
            }
            Try::Miss => misses += 1,
            Try::Error(e) => {
                errors += 1;
                last_error = Some(e);
            }
        }
        if start.elapsed() >= pace.limit {
            bail!(
                "no answer containing {text:?} within {:?} ({attempts} attempts, {misses} \
                 without it, {errors} failed; last error: {})",
                pace.limit,
                last_error.as_deref().unwrap_or("none")
            );
        }
        tokio::time::sleep(pace.interval).await;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Nanoseconds since the Unix epoch; 0 for a clock set before it.
fn unix_ns(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// `getaddrinfo` on the calling thread: a sequential client, as a program resolving names is.
/// Each lookup is bounded by the resolver's own timeouts and attempts, not by `counts`.
fn resolve_latency(name: &str, counts: &Counts) -> anyhow::Result<serde_json::Value> {
    use std::net::ToSocketAddrs;
    let mut recorder = Recorder::new(counts);
    for i in 0..counts.total() {
        let name = name.replace("{i}", &i.to_string());
        let start = Instant::now();
        let outcome = match (name.as_str(), 0).to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(_)) => Ok(start.elapsed()),
            Ok(None) => Err(format!("{name}: no address")),
            Err(e) => Err(format!("{name}: {e}")),
        };
        if recorder.record(i, outcome) {
            break;
        }
    }
    Ok(recorder.report())
}

async fn dns_latency(
    server: IpAddr,
    name: &str,
    counts: &Counts,
) -> anyhow::Result<serde_json::Value> {
    let bind: SocketAddr = match server {
        IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        IpAddr::V6(_) => ([0u16; 8], 0).into(),
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect((server, 53)).await?;
    let mut recorder = Recorder::new(counts);
    let mut nxdomain = 0u32;
    let mut buf = vec![0u8; 4096];
    for i in 0..counts.total() {
        // The id is the index (mod 2^16): a late answer to an earlier query, which has another
        // id, is never taken for the current one.
        let id = i as u16;
        let query = dns_query(id, &name.replace("{i}", &i.to_string()))?;
        let start = Instant::now();
        let outcome = timeout(counts.per_op(), async {
            socket.send(&query).await?;
            loop {
                let n = socket.recv(&mut buf).await?;
                match Message::from_vec(&buf[..n]) {
                    Ok(m) if m.metadata.id == id => {
                        return anyhow::Ok(m.metadata.response_code);
                    }
                    _ => continue,
                }
            }
        })
        .await;
        let elapsed = start.elapsed();
        let outcome = match outcome {
            Ok(Ok(ResponseCode::NoError)) => Ok(elapsed),
            Ok(Ok(ResponseCode::NXDomain)) => {
                nxdomain += u32::from(i >= counts.warmup);
                Ok(elapsed)
            }
            Ok(Ok(code)) => Err(format!("response code {code}")),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("timed out after {:?}", counts.per_op())),
        };
        if recorder.record(i, outcome) {
            break;
        }
    }
    let mut report = recorder.report();
    report["nxdomain"] = nxdomain.into();
    Ok(report)
}

fn dns_query(id: u16, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    let name = Name::from_ascii(name).with_context(|| format!("bad DNS name {name:?}"))?;
    m.add_query(Query::query(name, RecordType::A));
    Ok(m.to_vec()?)
}

/// The outcomes of a latency run.
#[derive(Debug)]
struct Recorder {
    warmup: u32,
    max_errors: u32,
    samples: Vec<Duration>,
    errors: u32,
    last_error: Option<String>,
}

impl Recorder {
    /// Records everything, however many fail.
    fn unbounded() -> Recorder {
        Recorder {
            warmup: 0,
            max_errors: u32::MAX,
            samples: Vec::new(),
            errors: 0,
            last_error: None,
        }
    }

    fn new(counts: &Counts) -> Recorder {
        Recorder {
            warmup: counts.warmup,
            max_errors: counts.max_errors,
            samples: Vec::with_capacity(counts.requests as usize),
            errors: 0,
            last_error: None,
        }
    }

    /// Records operation `i` (warm-up ones are not); true when the run should stop.
    fn record(&mut self, i: u32, outcome: Result<Duration, String>) -> bool {
        if i < self.warmup {
            return false;
        }
        match outcome {
            Ok(elapsed) => self.samples.push(elapsed),
            Err(e) => {
                self.errors += 1;
                self.last_error = Some(e);
            }
        }
        self.errors >= self.max_errors
    }

    /// Percentiles (nearest rank) of the successful operations, in microseconds.
    fn report(mut self) -> serde_json::Value {
        let samples = &mut self.samples;
        samples.sort_unstable();
        let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
        let pct = |p: usize| {
            let rank = (samples.len() * p).div_ceil(100).max(1);
            samples.get(rank - 1).map(|d| us(*d))
        };
        let mean = (!samples.is_empty())
            .then(|| us(samples.iter().sum::<Duration>() / samples.len() as u32));
        json!({
            "ok": samples.len(),
            "errors": self.errors,
            "last_error": self.last_error,
            "p50_us": pct(50),
            "p99_us": pct(99),
            "mean_us": mean,
            "min_us": samples.first().map(|d| us(*d)),
            "max_us": samples.last().map(|d| us(*d)),
        })
    }
}

#[cfg(test)]
mod tests;
