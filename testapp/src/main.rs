//! `tether-testapp`: the workloads the tests and the demo deploy, and the client the tests run
//! inside pods.
//!
//! * An HTTP echo (HTTP/1.1 and cleartext HTTP/2 on each of its ports) that says which pod
//!   answered and echoes the request line and headers, so a test can tell the app from an
//!   intercept and see which headers arrived; `/env` answers with the server's environment,
//!   `/slow?ms=N` answers after N ms.
//! * A UDP echo.
//! * `get`: a client that sends N requests over one connection and prints who answered each.
//!
//! A hidden `bench` subcommand holds the measuring clients of `cargo xtask bench`.
//!
//! # Layout
//! - `echo`: the HTTP echo server.
//! - `get`: the `get` client.
//! - `bench`: the HTTP, throughput and DNS measuring clients.
#![forbid(unsafe_code)]

mod bench;
mod echo;
mod get;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::net::{TcpListener, UdpSocket};

#[derive(Debug, Parser)]
#[command(about = "Test workloads: HTTP echo and UDP echo")]
struct Args {
    /// TCP port of the HTTP echo; repeat it to serve several ports (0 disables it).
    #[arg(long = "http-port", default_value = "8080")]
    http_ports: Vec<u16>,
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
    /// Send requests over one connection and print the status and first body line of each.
    ///
    /// Exits 0 when every request got an answer (whatever its status), 1 when connecting,
    /// a request or its 10 s timeout failed, 2 on bad arguments.
    Get(get::GetArgs),
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
        Some(Command::Get(get)) => {
            if let Err(e) = get::run(get) {
                eprintln!("tether-testapp get: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
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
    for &port in args.http_ports.iter().filter(|&&p| p != 0) {
        let listener = TcpListener::bind((args.bind, port))
            .await
            .with_context(|| format!("binding HTTP port {port}"))?;
        println!(
            "http echo listening on {} as {name}",
            listener.local_addr()?
        );
        tasks.spawn(echo::http_server(listener, name.clone()));
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

async fn udp_echo(socket: UdpSocket) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        socket.send_to(&buf[..n], peer).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_port_repeats_and_defaults_to_8080() {
        let args = Args::try_parse_from(["testapp"]).unwrap();
        assert_eq!(args.http_ports, [8080]);
        let args = Args::try_parse_from(["testapp", "--http-port", "8080", "--http-port", "9090"])
            .unwrap();
        assert_eq!(args.http_ports, [8080, 9090]);
    }
}
