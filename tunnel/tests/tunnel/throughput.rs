//! Bulk throughput of one stream, per carrier and congestion controller. Ignored by default:
//! `cargo test --release -p tether-tunnel --test tunnel throughput -- --ignored --nocapture`.

use std::time::Instant;

use tether_tunnel::{transport_config, Congestion};

use crate::support::{sink, Manager, Via};

/// Bytes pushed per measurement.
const TOTAL: usize = 256 << 20;

/// Measurements per combination; the median is reported, as a shared machine is noisy.
const ROUNDS: usize = 3;

async fn measure(via: Via, congestion: Congestion) -> f64 {
    let mut manager = Manager::with_transport(transport_config(congestion));
    let connection = manager.connect(via).await.unwrap();
    // Warm up: let the congestion window and path MTU settle before timing.
    sink(&connection, 8 << 20).await.unwrap();
    let warm = connection.stats().path;
    let started = Instant::now();
    let received = sink(&connection, TOTAL).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(received, TOTAL as u64);
    let rate = TOTAL as f64 / elapsed.as_secs_f64() / 1e6;
    let stats = connection.stats();
    println!(
        "{via:?} {congestion:?}: {rate:.0} MB/s ({elapsed:.2?}; mtu {}, lost {} of {} packets)",
        stats.path.current_mtu,
        stats.path.lost_packets - warm.lost_packets,
        stats.path.sent_packets - warm.sent_packets,
    );
    rate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release mode"]
async fn throughput() {
    for via in [Via::Udp, Via::Carrier] {
        for congestion in [Congestion::Tolerant, Congestion::Cubic, Congestion::Bbr] {
            let mut rates = Vec::new();
            for _ in 0..ROUNDS {
                rates.push(measure(via, congestion).await);
            }
            rates.sort_by(f64::total_cmp);
            let median = rates[ROUNDS / 2];
            println!("=> {via:?} {congestion:?}: median {median:.0} MB/s");
            assert!(median > 1.0, "{via:?} {congestion:?} at {median} MB/s");
        }
    }
}
