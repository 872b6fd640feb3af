//! The sidecar traffic agent: sits in front of one port of a workload's app and sends each
//! request to the app or to the developer who intercepts it.
//!
//! # Layout
//! - [`filter`]: an intercept's HTTP filter (headers, path prefix), compiled from its wire form;
//!   whether two filters overlap. Sans-IO.
//! - [`router`]: the routing table of one port (app, personal intercepts, a global intercept),
//!   refusing conflicting intercepts. Sans-IO.
//! - [`sniff`]: HTTP/1, HTTP/2 or something else, from a connection's first bytes. Sans-IO.
//! - [`proxy`]: the async proxy around them (tokio + hyper): per-request routing on HTTP/1.1
//!   keep-alive and HTTP/2 connections, byte relay for other protocols.
//!
//! [`run`] is `tether-agent sidecar`: the proxy with no intercepts yet. Taking the port over
//! (rewriting the workload) and receiving intercepts from the manager come later.

pub mod filter;
pub mod proxy;
pub mod router;
pub mod sniff;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::info;

use proxy::{Proxy, ProxyConfig};

/// What `tether-agent sidecar` runs with.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// Where the proxy listens (the port the Service now targets).
    pub listen: SocketAddr,
    /// The app's own port.
    pub app: SocketAddr,
    /// See [`proxy::DEFAULT_SNIFF_TIMEOUT`].
    pub sniff_timeout: Duration,
}

/// Why the sidecar stopped.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The proxy's port could not be bound.
    #[error("binding the proxy port {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the proxy until the process ends.
pub async fn run(config: SidecarConfig) -> Result<(), SidecarError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| SidecarError::Bind {
            addr: config.listen,
            source,
        })?;
    let proxy = Proxy::new(ProxyConfig {
        app: config.app,
        sniff_timeout: config.sniff_timeout,
    });
    info!(listen = %config.listen, app = %config.app, "Sidecar proxy ready");
    proxy.serve(listener).await;
    Ok(())
}
