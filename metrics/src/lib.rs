//! tether's Prometheus metrics.
//!
//! Each process has one set of families, registered once and shared by `Arc`:
//! - [`manager::ManagerMetrics`]: sessions, flows, bytes, dial failures, DNS, intercepts and
//!   agents, as the traffic manager sees them;
//! - [`agent::AgentMetrics`]: requests each sidecar routes (to the laptop or to the app) and
//!   their latency, and the agent's link to the manager;
//! - [`workstation::WorkstationMetrics`]: the daemon's flows, bytes, DNS and the QUIC path.
//!
//! Label sets are bounded: enums (protocol, direction, route, reason, kind), port numbers, and
//! the verified user of a session. Never an address, a path or a header value.
//!
//! [`serve`] answers `GET /metrics` in the OpenMetrics text format (which Prometheus asks for)
//! or, for clients that ask for the classic format (`promtool`, curl without an Accept header),
//! in Prometheus text format 0.0.4.

#![forbid(unsafe_code)]

pub mod agent;
mod buckets;
pub mod flows;
pub mod manager;
mod metered;
mod serve;
pub mod workstation;

pub use metered::Metered;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::registry::Registry;
pub use serve::{serve, Format};

/// Every family's name starts with this (`tether_…`).
pub const PREFIX: &str = "tether";

/// The registry's families as text in `format`.
pub fn encode(registry: &Registry, format: Format) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a family's labels.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::warn!(%error, "Encoding the metrics failed");
    }
    match format {
        Format::OpenMetrics => text,
        Format::Prometheus => serve::to_prometheus_text(&text),
    }
}
