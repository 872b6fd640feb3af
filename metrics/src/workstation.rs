//! The workstation daemon's families (`tether status --metrics`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::buckets;
pub use crate::flows::{Direction, Flows, GaugeGuard, Protocol};

/// How the daemon's DNS server answered a query.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DnsKind {
    /// Asked the manager (a cluster name).
    cluster,
    /// Asked this machine's own resolvers (any other name).
    upstream,
    /// Answered from the daemon's cache.
    cache_hit,
    /// Answered with NXDOMAIN (from any of the above).
    nxdomain,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    pub kind: DnsKind,
}

fn latency_histogram() -> Histogram {
    Histogram::new(buckets::latency())
}

/// What the daemon counts.
#[derive(Debug, Clone)]
pub struct WorkstationMetrics {
    /// 1 while the session is up.
    pub connected: Gauge,
    /// Sessions re-established after a loss.
    pub reconnects: Counter,
    /// Flows into the cluster, and their bytes.
    pub flows: Flows,
    pub dns_queries: Family<DnsLabels, Counter>,
    pub dns_duration: Family<DnsLabels, Histogram, fn() -> Histogram>,
    /// The QUIC path's smoothed round-trip time.
    pub rtt: Gauge<f64, AtomicU64>,
    /// Its congestion window.
    pub cwnd: Gauge,
    /// Packets the QUIC path lost, since the session began.
    pub lost_packets: Gauge,
    /// Packets it sent, since the session began.
    pub sent_packets: Gauge,
}

impl Default for WorkstationMetrics {
    /// Families in no registry: counted, never shown (for tests and tools).
    fn default() -> Self {
        WorkstationMetrics::register(&mut Registry::default())
    }
}

impl WorkstationMetrics {
    /// The families, registered in `registry` under `tether_workstation_…`.
    pub fn register(registry: &mut Registry) -> Self {
        let mut m = WorkstationMetrics {
            connected: Gauge::default(),
            reconnects: Counter::default(),
            flows: Flows::default(),
            dns_queries: Family::default(),
            dns_duration: Family::new_with_constructor(latency_histogram),
            rtt: Gauge::default(),
            cwnd: Gauge::default(),
            lost_packets: Gauge::default(),
            sent_packets: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix(format!("{}_workstation", crate::PREFIX));
        r.register(
            "connected",
            "1 while the session with the traffic manager is up",
            m.connected.clone(),
        );
        r.register(
            "reconnects",
            "Sessions re-established after a loss",
            m.reconnects.clone(),
        );
        m.flows = Flows::register(r, "Flows into the cluster");
        r.register(
            "dns_queries",
            "DNS queries the daemon answered, by how",
            m.dns_queries.clone(),
        );
        r.register(
            "dns_query_duration_seconds",
            "Time to answer a DNS query, by how it was answered",
            m.dns_duration.clone(),
        );
        r.register(
            "quic_rtt_seconds",
            "Smoothed round-trip time of the QUIC path to the manager",
            m.rtt.clone(),
        );
        r.register(
            "quic_congestion_window_bytes",
            "Congestion window of the QUIC path to the manager",
            m.cwnd.clone(),
        );
        r.register(
            "quic_lost_packets",
            "Packets the QUIC path lost since the session began",
            m.lost_packets.clone(),
        );
        r.register(
            "quic_sent_packets",
            "Packets sent on the QUIC path since the session began",
            m.sent_packets.clone(),
        );
        m
    }

    /// Queries answered `kind` so far.
    pub fn dns_count(&self, kind: DnsKind) -> u64 {
        self.dns_queries.get_or_create(&DnsLabels { kind }).get()
    }

    /// Counts a DNS query answered in `seconds`.
    pub fn dns(&self, kind: DnsKind, seconds: f64) {
        let labels = DnsLabels { kind };
        self.dns_queries.get_or_create(&labels).inc();
        self.dns_duration.get_or_create(&labels).observe(seconds);
    }
}
