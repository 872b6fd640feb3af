//! A sidecar traffic agent's families.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::buckets;

/// Where a request went.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Route {
    /// To an intercept: a developer's laptop.
    laptop,
    /// To the workload's own container.
    app,
    /// A mirror's copy, answered by a laptop (the answer is discarded; the caller's request is
    /// counted where it went).
    mirrored,
}

/// How a connection was served.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ConnectionKind {
    http1,
    http2,
    /// Not HTTP: relayed as bytes.
    other,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The app port the agent stands in front of.
    pub port: u16,
    pub route: Route,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    /// The app port the agent stands in front of.
    pub port: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub port: u16,
    pub kind: ConnectionKind,
}

fn latency_histogram() -> Histogram {
    Histogram::new(buckets::latency())
}

/// What an agent counts.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    /// Requests routed (HTTP) or connections relayed (other protocols), by port and route.
    pub requests: Family<RouteLabels, Counter>,
    /// Time from a request's head to its response's head, by port and route.
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Connections accepted, by port and kind.
    pub connections: Family<ConnectionLabels, Counter>,
    /// Mirror copies dropped (queue full, body too large, not copyable, laptop not answering),
    /// by port.
    pub mirror_dropped: Family<PortLabels, Counter>,
    /// Intercepts on this agent now.
    pub intercepts: Gauge,
    /// 1 while the link to the manager is up.
    pub link_up: Gauge,
    /// Times the link to the manager was (re)established.
    pub links: Counter,
}

impl Default for AgentMetrics {
    /// Families in no registry: counted, never served (for proxies run without metrics).
    fn default() -> Self {
        AgentMetrics::register(&mut Registry::default())
    }
}

impl AgentMetrics {
    /// The families, registered in `registry` under `tether_agent_…`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = AgentMetrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            connections: Family::default(),
            mirror_dropped: Family::default(),
            intercepts: Gauge::default(),
            link_up: Gauge::default(),
            links: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix(format!("{}_agent", crate::PREFIX));
        r.register(
            "requests",
            "Requests (or non-HTTP connections) routed, by app port and route (laptop, app, or \
             mirrored: a mirror's copy the laptop answered)",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from a request's head to its response's head, by app port and route",
            m.request_duration.clone(),
        );
        r.register(
            "connections",
            "Connections accepted, by app port and kind",
            m.connections.clone(),
        );
        r.register(
            "mirror_dropped",
            "Mirror copies dropped (queue full, body too large, not copyable, no answer), by app \
             port",
            m.mirror_dropped.clone(),
        );
        r.register(
            "intercepts",
            "Intercepts this agent routes by now",
            m.intercepts.clone(),
        );
        r.register(
            "link_up",
            "1 while the link to the traffic manager is up",
            m.link_up.clone(),
        );
        r.register(
            "links",
            "Times the link to the traffic manager was established",
            m.links.clone(),
        );
        m
    }

    /// Counts one request routed on `port` to `route`, answered in `seconds`.
    pub fn routed(&self, port: u16, route: Route, seconds: f64) {
        let labels = RouteLabels { port, route };
        self.requests.get_or_create(&labels).inc();
        self.request_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// Counts a non-HTTP connection relayed on `port` to `route` (no latency: it is a stream).
    pub fn relayed(&self, port: u16, route: Route) {
        self.requests
            .get_or_create(&RouteLabels { port, route })
            .inc();
    }

    /// Counts one mirror copy dropped on `port`.
    pub fn mirror_dropped(&self, port: u16) {
        self.mirror_dropped
            .get_or_create(&PortLabels { port })
            .inc();
    }

    /// Counts a connection.
    pub fn connection(&self, port: u16, kind: ConnectionKind) {
        self.connections
            .get_or_create(&ConnectionLabels { port, kind })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, Format};

    #[test]
    fn routed_requests_count_by_port_and_route() {
        let mut registry = Registry::default();
        let m = AgentMetrics::register(&mut registry);
        m.routed(8080, Route::laptop, 0.002);
        m.routed(8080, Route::laptop, 0.004);
        m.routed(8080, Route::app, 0.001);
        m.routed(8080, Route::mirrored, 0.003);
        m.mirror_dropped(8080);
        m.mirror_dropped(8080);
        let text = encode(&registry, Format::Prometheus);
        assert!(
            text.contains("tether_agent_requests_total{port=\"8080\",route=\"mirrored\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tether_agent_mirror_dropped_total{port=\"8080\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("tether_agent_requests_total{port=\"8080\",route=\"laptop\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("tether_agent_requests_total{port=\"8080\",route=\"app\"} 1\n"));
        assert!(text.contains(
            "tether_agent_request_duration_seconds_count{port=\"8080\",route=\"laptop\"} 2\n"
        ));
    }
}
