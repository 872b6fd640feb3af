//! Flows and their bytes: the families the manager and the daemon both keep, each for its own
//! side of the tunnel.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A flow's protocol.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Protocol {
    tcp,
    udp,
}

/// Which way bytes went.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Direction {
    /// From a workstation into the cluster.
    to_cluster,
    /// From the cluster to a workstation.
    to_workstation,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: Direction,
}

/// Flows open and started, by protocol, and their bytes, by direction.
#[derive(Debug, Clone, Default)]
pub struct Flows {
    pub open: Family<ProtocolLabels, Gauge>,
    pub started: Family<ProtocolLabels, Counter>,
    pub bytes: Family<DirectionLabels, Counter>,
}

impl Flows {
    /// Registers `flows_open`, `flows` and `flow_bytes` in `r`; `whose` says whose flows they
    /// are in the help texts.
    pub fn register(r: &mut Registry, whose: &str) -> Self {
        let f = Flows::default();
        r.register(
            "flows_open",
            format!("{whose} open now, by protocol"),
            f.open.clone(),
        );
        r.register(
            "flows",
            format!("{whose} started, by protocol"),
            f.started.clone(),
        );
        r.register(
            "flow_bytes",
            format!("Bytes of {}, by direction", whose.to_lowercase()),
            f.bytes.clone(),
        );
        f
    }

    /// Counts a flow open until the guard drops.
    pub fn flow(&self, protocol: Protocol) -> GaugeGuard {
        let labels = ProtocolLabels { protocol };
        self.started.get_or_create(&labels).inc();
        GaugeGuard::new(self.open.get_or_create(&labels).clone())
    }

    /// Flows open now and started so far, of both protocols.
    pub fn counts(&self) -> (u64, u64) {
        let (mut open, mut started) = (0, 0);
        for protocol in [Protocol::tcp, Protocol::udp] {
            let labels = ProtocolLabels { protocol };
            open += u64::try_from(self.open.get_or_create(&labels).get()).unwrap_or(0);
            started += self.started.get_or_create(&labels).get();
        }
        (open, started)
    }

    /// The counter of bytes going `direction`, to add to as they pass.
    pub fn bytes(&self, direction: Direction) -> Counter {
        self.bytes
            .get_or_create(&DirectionLabels { direction })
            .clone()
    }
}

/// Holds a gauge one higher while it lives.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    /// Increments `gauge` now; the drop decrements it.
    pub fn new(gauge: Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
