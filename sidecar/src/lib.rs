//! The sidecar traffic agent: sits in front of one port of a workload's app and sends each
//! request to the app or to the developer who intercepts it.
//!
//! What to route where is decided by `tether-route` (filters, the per-port router, sniffing),
//! sans-IO; this crate is the IO around it.
//!
//! # Layout
//! - [`proxy`]: the async proxy (tokio + hyper): per-request routing on HTTP/1.1 keep-alive and
//!   HTTP/2 connections, byte relay for other protocols.
//! - [`link`]: the QUIC link to the traffic manager, which sends the workload's intercepts and
//!   carries intercepted connections to the developers' machines.
//! - [`tally`]: requests counted per port and intercept, which the link reports to the manager.
//! - [`files`]: the file server behind `tether intercept --mount`, on streams the manager opens
//!   on the link.
//!
//! [`run`] is `tether-agent sidecar`: one proxy per taken-over port, and the link.

#![forbid(unsafe_code)]

pub mod files;
pub mod link;
pub mod proxy;
pub mod takeover;
pub mod tally;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;

use tether_metrics::{agent::AgentMetrics, Registry};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{info, warn};

use link::{LinkConfig, PortRoutes};
use proxy::{Proxy, ProxyConfig};

/// One port the agent took over: it listens on `listen` and forwards to the app's `app_port` on
/// the pod's loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// The app's own port.
    pub app: SocketAddr,
}

/// What `tether-agent sidecar` runs with.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// The ports taken over.
    pub forwards: Vec<Forward>,
    /// The link to the manager; `None` runs the proxies alone (no intercepts ever).
    pub link: Option<LinkConfig>,
    /// See [`proxy::DEFAULT_SNIFF_TIMEOUT`].
    pub sniff_timeout: Duration,
    /// The pod's name, which the proxies answer probes with.
    pub identity: String,
    /// Where to serve Prometheus metrics (`/metrics` on all addresses); none without it.
    pub metrics_port: Option<u16>,
    /// The volumes served to `tether intercept --mount` (see [`files::MOUNTS_ENV`]).
    pub mounts: files::Tables,
}

impl Forward {
    /// Parses `AGENT_PORT=APP_PORT` (the agent listens on all addresses, the app is on the
    /// pod's loopback).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (listen, app) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not AGENT_PORT=APP_PORT"))?;
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{p}` in `{text}` is not a port number"))
        };
        Ok(Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, port(listen)?)),
            app: SocketAddr::from((Ipv4Addr::LOCALHOST, port(app)?)),
        })
    }
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

/// How long connections may take to finish after `shutdown`.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Runs the proxies and the link until `shutdown` completes (the pod is going away). Then the
/// ports stop accepting, so the Service's new connections go to other pods, and connections
/// already accepted get up to [`DRAIN`] to finish.
pub async fn run(
    config: SidecarConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SidecarError> {
    let mut tasks = JoinSet::new();
    let mut ports = Vec::new();
    let mut proxies = Vec::new();
    let mut registry = Registry::default();
    let metrics = Arc::new(AgentMetrics::register(&mut registry));
    let tally = tally::Tally::default();
    // Counted only when served. An app already holding the port must not stop the agent.
    let counted = match config.metrics_port {
        Some(port) => match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await {
            Ok(listener) => {
                tasks.spawn(tether_metrics::serve(listener, Arc::new(registry)));
                info!(port, "Serving metrics");
                Some(metrics.clone())
            }
            Err(error) => {
                warn!(port, %error, "No metrics: cannot bind their port");
                None
            }
        },
        None => None,
    };
    for forward in &config.forwards {
        let listener =
            TcpListener::bind(forward.listen)
                .await
                .map_err(|source| SidecarError::Bind {
                    addr: forward.listen,
                    source,
                })?;
        let proxy = Proxy::new(ProxyConfig {
            app: forward.app,
            sniff_timeout: config.sniff_timeout,
            identity: config.identity.clone(),
            metrics: counted.clone(),
            tally: tally.clone(),
        });
        ports.push(PortRoutes {
            app_port: forward.app.port(),
            routes: proxy.routes().clone(),
        });
        info!(listen = %forward.listen, app = %forward.app, "Sidecar proxy ready");
        proxies.push(proxy.clone());
        tasks.spawn(async move { proxy.serve(listener).await });
    }
    let takeover = takeover::Takeover::new(
        ports
            .iter()
            .zip(&proxies)
            .map(|(p, proxy)| (p.app_port, proxy.clone()))
            .collect(),
    );
    let link = config.link.map(|link| {
        let files = Arc::new(files::Volumes::new(config.mounts));
        for (container, paths) in files.served() {
            info!(container, mounts = ?paths, "Serving volumes");
        }
        tokio::spawn(link::run(
            link,
            ports,
            takeover,
            metrics.clone(),
            tally.clone(),
            files,
        ))
    });
    tokio::select! {
        () = shutdown => {}
        _ = async { while tasks.join_next().await.is_some() {} } => return Ok(()),
    }
    // Closing the listeners refuses new connections; the link stays up while the others finish.
    tasks.abort_all();
    info!("Shutting down: no new connections");
    let deadline = tokio::time::Instant::now() + DRAIN;
    while proxies.iter().any(|p| p.active_connections() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(link) = link {
        link.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Forward;

    #[test]
    fn forward_parses_and_refuses_nonsense() {
        let f = Forward::parse("9900=8080").unwrap();
        assert_eq!(f.listen.to_string(), "0.0.0.0:9900");
        assert_eq!(f.app.to_string(), "127.0.0.1:8080");
        assert!(Forward::parse("9900")
            .unwrap_err()
            .contains("AGENT_PORT=APP_PORT"));
        assert!(Forward::parse("9900=http").unwrap_err().contains("`http`"));
        assert!(Forward::parse("0=80").is_err());
    }
}
