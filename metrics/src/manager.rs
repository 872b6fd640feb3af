//! The traffic manager's families.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::buckets;
pub use crate::flows::{Direction, Flows, GaugeGuard, Protocol};

/// How a session reaches the manager.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Carrier {
    /// QUIC over plain UDP.
    udp,
    /// QUIC carried by a `kubectl port-forward`-style stream to the manager's relay.
    port_forward,
}

/// Why a dial did not connect.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DialFailure {
    /// The dial policy refused the destination.
    policy,
    /// Nothing listens there (connection refused).
    refused,
    /// No answer in time.
    timeout,
    /// No route to the destination.
    unreachable,
    /// Anything else.
    other,
}

/// How a DNS query was answered.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DnsKind {
    /// A cluster name, answered from the manager's view.
    cluster,
    /// Forwarded to the pod's upstream resolvers.
    upstream,
    /// A cluster-domain name that does not exist.
    nxdomain,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// The verified Kubernetes user.
    pub user: String,
    pub carrier: Carrier,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CarrierLabels {
    pub carrier: Carrier,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: DialFailure,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    pub kind: DnsKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(buckets::latency())
}

/// What the manager counts.
#[derive(Debug, Clone)]
pub struct ManagerMetrics {
    /// Sessions open now, by verified user and carrier.
    pub sessions: Family<SessionLabels, Gauge>,
    /// Sessions started, by carrier.
    pub sessions_started: Family<CarrierLabels, Counter>,
    /// Flows the manager dials for sessions, and their bytes.
    pub flows: Flows,
    /// Dials that did not connect, by reason.
    pub dial_failures: Family<ReasonLabels, Counter>,
    /// DNS queries, by how they were answered.
    pub dns_queries: Family<DnsLabels, Counter>,
    /// DNS answer latency.
    pub dns_duration: Family<DnsLabels, Histogram, fn() -> Histogram>,
    /// Intercepts registered now, by namespace.
    pub intercepts: Family<NamespaceLabels, Gauge>,
    /// Agents linked now, by namespace.
    pub agents: Family<NamespaceLabels, Gauge>,
    /// Intercepted connections relayed from agents to workstations.
    pub relayed_connections: Counter,
}

impl ManagerMetrics {
    /// The families, registered in `registry` under `tether_…`.
    pub fn register(registry: &mut Registry) -> Self {
        let mut m = ManagerMetrics {
            sessions: Family::default(),
            sessions_started: Family::default(),
            flows: Flows::default(),
            dial_failures: Family::default(),
            dns_queries: Family::default(),
            dns_duration: Family::new_with_constructor(latency_histogram),
            intercepts: Family::default(),
            agents: Family::default(),
            relayed_connections: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix(crate::PREFIX);
        r.register(
            "sessions",
            "Workstation sessions open now, by verified user and carrier",
            m.sessions.clone(),
        );
        r.register(
            "sessions_started",
            "Workstation sessions started, by carrier",
            m.sessions_started.clone(),
        );
        m.flows = Flows::register(r, "Flows dialed for workstations");
        r.register(
            "dial_failures",
            "Dials for workstations that did not connect, by reason",
            m.dial_failures.clone(),
        );
        r.register(
            "dns_queries",
            "DNS queries from workstations, by how they were answered",
            m.dns_queries.clone(),
        );
        r.register(
            "dns_query_duration_seconds",
            "Time to answer a DNS query, by how it was answered",
            m.dns_duration.clone(),
        );
        r.register(
            "intercepts",
            "Intercepts registered now, by namespace",
            m.intercepts.clone(),
        );
        r.register(
            "agents_linked",
            "Traffic agents linked to the manager now, by namespace",
            m.agents.clone(),
        );
        r.register(
            "intercepted_connections",
            "Intercepted connections relayed from agents to workstations",
            m.relayed_connections.clone(),
        );
        m
    }

    /// Counts a session open until the guard drops.
    pub fn session(&self, user: &str, carrier: Carrier) -> GaugeGuard {
        self.sessions_started
            .get_or_create(&CarrierLabels { carrier })
            .inc();
        let gauge = self
            .sessions
            .get_or_create(&SessionLabels {
                user: user.to_owned(),
                carrier,
            })
            .clone();
        GaugeGuard::new(gauge)
    }

    /// Counts a failed dial.
    pub fn dial_failed(&self, reason: DialFailure) {
        self.dial_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a DNS query answered in `seconds`.
    pub fn dns(&self, kind: DnsKind, seconds: f64) {
        let labels = DnsLabels { kind };
        self.dns_queries.get_or_create(&labels).inc();
        self.dns_duration.get_or_create(&labels).observe(seconds);
    }

    /// Sets the intercepts and agents per namespace (namespaces not named drop to 0).
    pub fn set_registry(&self, intercepts: &[(String, i64)], agents: &[(String, i64)]) {
        for (family, counts) in [(&self.intercepts, intercepts), (&self.agents, agents)] {
            family.clear();
            for (namespace, n) in counts {
                family
                    .get_or_create(&NamespaceLabels {
                        namespace: namespace.clone(),
                    })
                    .set(*n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, Format};

    #[test]
    fn a_session_counts_while_its_guard_lives() {
        let mut registry = Registry::default();
        let m = ManagerMetrics::register(&mut registry);
        let guard = m.session("ann", Carrier::udp);
        let text = encode(&registry, Format::Prometheus);
        assert!(
            text.contains("tether_sessions{user=\"ann\",carrier=\"udp\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("tether_sessions_started_total{carrier=\"udp\"} 1\n"));
        drop(guard);
        let text = encode(&registry, Format::Prometheus);
        assert!(text.contains("tether_sessions{user=\"ann\",carrier=\"udp\"} 0\n"));
    }

    #[test]
    fn registry_counts_replace_the_previous_ones() {
        let mut registry = Registry::default();
        let m = ManagerMetrics::register(&mut registry);
        m.set_registry(&[("shop".into(), 2)], &[("shop".into(), 1)]);
        m.set_registry(&[], &[("shop".into(), 1)]);
        let text = encode(&registry, Format::Prometheus);
        assert!(!text.contains("tether_intercepts{"), "{text}");
        assert!(text.contains("tether_agents_linked{namespace=\"shop\"} 1\n"));
    }
}
