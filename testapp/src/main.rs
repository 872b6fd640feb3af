//! `tether-testapp`: the workloads the tests and the demo deploy.
//!
//! * An HTTP server (HTTP/1.1 and cleartext HTTP/2 on one port) that says which pod answered and
//!   echoes the request line and headers, so a test can tell the app from an intercept and see
//!   which headers arrived. `GET /bytes?n=N` streams N bytes for throughput measurements.
//! * A UDP echo.
//!
//! A hidden `bench` subcommand holds the measuring clients of `cargo xtask bench`.
//!
//! # Layout
//! - `bench`: the HTTP, throughput and DNS measuring clients.
#![forbid(unsafe_code)]

mod bench;

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Frame, Request, Response};
use hyper_util::{rt::TokioExecutor, rt::TokioIo, server::conn::auto};
use tokio::net::{TcpListener, UdpSocket};

#[derive(Debug, Parser)]
#[command(about = "Test workloads: HTTP echo and UDP echo")]
struct Args {
    /// TCP port of the HTTP echo (0 disables it).
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// UDP port of the UDP echo (0 disables it).
    #[arg(long, default_value_t = 9000)]
    udp_port: u16,
    /// The name the server answers with; defaults to $POD_NAME, then the host name.
    #[arg(long, env = "TESTAPP_NAME")]
    name: Option<String>,
    /// Address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Measuring clients for `cargo xtask bench`.
    #[command(hide = true)]
    Bench {
        #[command(subcommand)]
        bench: bench::Bench,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Command::Bench { bench }) => bench::run(bench),
        None => tokio::runtime::Runtime::new()
            .context("building the runtime")?
            .block_on(serve(args)),
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let name = args
        .name
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let name: Arc<str> = name.into();
    let mut tasks = tokio::task::JoinSet::new();
    if args.http_port != 0 {
        let listener = TcpListener::bind((args.bind, args.http_port))
            .await
            .with_context(|| format!("binding HTTP port {}", args.http_port))?;
        println!(
            "http echo listening on {} as {name}",
            listener.local_addr()?
        );
        tasks.spawn(http_server(listener, name.clone()));
    }
    if args.udp_port != 0 {
        let socket = UdpSocket::bind((args.bind, args.udp_port))
            .await
            .with_context(|| format!("binding UDP port {}", args.udp_port))?;
        println!("udp echo listening on {}", socket.local_addr()?);
        tasks.spawn(udp_echo(socket));
    }
    // Pods are stopped with SIGTERM: exit at once rather than wait out the grace period.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            res = tasks.join_next() => match res {
                Some(res) => res??,
                None => return Ok(()),
            },
            _ = term.recv() => return Ok(()),
        }
    }
}

async fn http_server(listener: TcpListener, name: Arc<str>) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| respond(req, name.clone(), peer));
            // Ends when the client goes away; errors of one connection are not the server's.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn respond(
    req: Request<hyper::body::Incoming>,
    name: Arc<str>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    if req.uri().path() == "/bytes" {
        let n = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("n="))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(1 << 20);
        return Ok(Response::new(bytes_body(n)));
    }
    let mut text = format!(
        "hello from {name}\n{} {} {:?}\npeer {peer}\n",
        req.method(),
        req.uri(),
        req.version()
    );
    for (k, v) in req.headers() {
        text.push_str(&format!(
            "header {k}: {}\n",
            String::from_utf8_lossy(v.as_bytes())
        ));
    }
    // Drain the request body so keep-alive connections stay usable.
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !body.is_empty() {
        text.push_str(&format!("body {} bytes\n", body.len()));
    }
    let mut resp = Response::new(Full::new(Bytes::from(text)).boxed());
    resp.headers_mut().insert(
        "x-served-by",
        hyper::header::HeaderValue::from_str(&name)
            .unwrap_or(hyper::header::HeaderValue::from_static("unknown")),
    );
    Ok(resp)
}

/// A body of `n` bytes sent in 64 KiB chunks.
fn bytes_body(n: u64) -> Body {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = chunk_stream(n, chunk);
    BodyExt::boxed(StreamBody::new(stream))
}

fn chunk_stream(
    mut left: u64,
    chunk: Bytes,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures::stream::poll_fn(move |_| {
        if left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = left.min(chunk.len() as u64) as usize;
        left -= n as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(chunk.slice(..n)))))
    })
}

async fn udp_echo(socket: UdpSocket) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        socket.send_to(&buf[..n], peer).await?;
    }
}
