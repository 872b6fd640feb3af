//! `tether-linkemu`: emulates a wide-area link on one interface until SIGINT or SIGTERM.
//!
//! ```text
//! tether-linkemu --iface tws0 --netns tether-ws --profile wan20
//! tether-linkemu --iface tws0 --netns tether-ws --profile lan --rtt-ms 40 --rate-mbit 100 --loss 0.005
//! ```
//!
//! Prints `ready` on stdout once its rules are in place, and on exit one JSON line with the
//! counts of the run (packets, bytes, losses, overflow drops, the kernel's own drops). Exits 0
//! after a clean run, 1 on an error, 2 on bad arguments; its rules are gone either way.
#![forbid(unsafe_code)]

use std::time::Duration;

use clap::Parser;
use tether_linkemu::{queue, Named};

#[derive(Debug, Parser)]
#[command(
    name = "tether-linkemu",
    about = "Emulate a wide-area link on one interface (NFQUEUE)"
)]
struct Args {
    /// The host side of the link: the workstation's veth (both directions are emulated).
    #[arg(long)]
    iface: String,
    /// The network namespace at the link's other end (an `ip netns` name).
    #[arg(long)]
    netns: String,
    /// The link's interface inside that namespace.
    #[arg(long, default_value = "eth0")]
    peer_iface: String,
    /// The named profile the other options start from: lan, wan20, lossy50.
    #[arg(long, default_value = "wan20")]
    profile: Named,
    /// Round-trip time added, in milliseconds (half each way).
    #[arg(long)]
    rtt_ms: Option<f64>,
    /// One-way delay varies uniformly within ± this, in milliseconds (never reordering).
    #[arg(long)]
    jitter_ms: Option<f64>,
    /// Rate each way, in Mbit/s (0: no limit).
    #[arg(long)]
    rate_mbit: Option<f64>,
    /// The bottleneck's buffer, in milliseconds at the rate.
    #[arg(long)]
    buffer_ms: Option<f64>,
    /// Probability of losing a packet, each way.
    #[arg(long)]
    loss: Option<f64>,
    /// Probability of holding a packet back so that later ones overtake it.
    #[arg(long)]
    reorder: Option<f64>,
    /// How long a reordered packet is held back, in milliseconds.
    #[arg(long)]
    reorder_gap_ms: Option<f64>,
    /// First of the two NFQUEUE queue numbers used (incoming, then outgoing).
    #[arg(long, default_value_t = 7100)]
    queue_num: u16,
    /// Kernel queue length per queue; overflow is dropped by the kernel and reported.
    #[arg(long, default_value_t = 65_536)]
    queue_maxlen: u32,
    /// The most packets held at once; overflow is dropped and reported.
    #[arg(long, default_value_t = 100_000)]
    max_held: usize,
    /// Seed of the random draws (loss, jitter, reordering).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1e3);
    let mut profile = args.profile.profile();
    if let Some(v) = args.rtt_ms {
        profile.rtt = ms(v);
    }
    if let Some(v) = args.jitter_ms {
        profile.jitter = ms(v);
    }
    if let Some(v) = args.rate_mbit {
        profile.rate_bps = (v > 0.0).then_some((v * 1e6) as u64);
    }
    if let Some(v) = args.buffer_ms {
        profile.buffer = ms(v);
    }
    if let Some(v) = args.loss {
        profile.loss = v;
    }
    if let Some(v) = args.reorder {
        profile.reorder = v;
    }
    if let Some(v) = args.reorder_gap_ms {
        profile.reorder_gap = ms(v);
    }
    let cfg = queue::Config {
        iface: args.iface,
        netns: args.netns,
        peer_iface: args.peer_iface,
        queue_num: args.queue_num,
        profile,
        max_held: args.max_held,
        kernel_maxlen: args.queue_maxlen,
        seed: args.seed,
    };
    let result =
        queue::block_signals().and_then(|signals| queue::run(&cfg, &signals, || println!("ready")));
    match result {
        Ok(report) => {
            println!("{}", report.to_json());
            if report.overflow() > 0 {
                tracing::warn!(
                    dropped = report.overflow(),
                    "Some packets were dropped because a queue was full (see the counts)"
                );
            }
        }
        Err(e) => {
            let mut msg = format!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            std::process::exit(1);
        }
    }
}
