//! Histogram buckets shared by the latency families.

/// Seconds, from 100 µs to about 13 s (doubling): request and DNS latencies, local or remote.
pub fn latency() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18)
}
