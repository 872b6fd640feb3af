//! `tether-agent manager`: discovers the cluster, starts the watches, then hands a
//! [`ManagerState`] to whatever serves clients.
//!
//! The QUIC tunnel is not part of this module: [`run_manager`] takes the serving code as an
//! argument, which starts [`serve_health`] once it serves.

use std::error::Error;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use kube::Client;
use tether_proto::Subnets;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use crate::audit::{AuditLog, AuditTarget, SinkError};
use crate::discovery::{self, publish_subnets, DiscoveryError, Watches};
use crate::dns::{Forwarder, Resolver};
use crate::view::{ClusterView, SharedView};
use tether_dns::ResolvConf;
use tether_metrics::{manager::ManagerMetrics, Registry};

/// How long start-up waits for the watches' first lists before serving anyway.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The manager's settings (from flags and the pod's environment).
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The manager's own namespace (where the dry-run probe Service is "created").
    pub namespace: String,
    /// UDP port of the QUIC endpoint.
    pub quic_port: u16,
    /// TCP port of the port-forward relay, bound to loopback.
    pub relay_port: u16,
    /// TCP port of the readiness probe.
    pub health_port: u16,
    /// The cluster DNS domain if the operator set it; else discovered.
    pub cluster_domain: Option<String>,
    /// The service ranges if the operator set them; empty: discovered.
    pub service_cidrs: Vec<IpNet>,
    /// The pod's resolver configuration (upstream resolvers, cluster domain hint).
    pub resolv_conf: PathBuf,
    /// How long to wait for the watches' first lists.
    pub sync_timeout: Duration,
    /// How long a person's session certificate is valid.
    pub session_cert_lifetime: Duration,
    /// TCP port of the Prometheus metrics endpoint (`/metrics`).
    pub metrics_port: u16,
    /// The manager pod's own addresses (never dialed for a session).
    pub pod_ips: Vec<std::net::IpAddr>,
    /// Ranges dialed even where the default policy refuses (see [`crate::dial_policy`]).
    pub dial_allow: Vec<IpNet>,
    /// Ranges never dialed.
    pub dial_deny: Vec<IpNet>,
    /// Where the audit log goes (see [`crate::audit`]).
    pub audit_log: AuditTarget,
    /// The manager pod's name (the `reportingInstance` of the Events it writes).
    pub pod_name: String,
}

/// What the code serving clients gets: everything a session needs from the cluster side.
#[derive(Clone)]
pub struct ManagerState {
    /// The Kubernetes client (e.g. to publish the TLS Secret).
    pub client: Client,
    /// The manager's settings.
    pub config: ManagerConfig,
    /// The discovered (or configured) cluster domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// The live view of the cluster.
    pub view: SharedView,
    /// The cluster's subnets; changes whenever the pod ranges do. Send the current value in
    /// `Welcome` and each change as a `Subnets` frame.
    pub subnets_rx: watch::Receiver<Subnets>,
    /// The cluster's namespaces, sorted. Send the current value after `Welcome` and each change
    /// as a `Namespaces` frame: the workstation routes `svc.ns` names by it.
    pub namespaces_rx: watch::Receiver<Vec<String>>,
    /// Answers a session's DNS queries: `resolver.resolve(packet, session_namespace).await`.
    pub resolver: Resolver,
    /// What the manager dials for sessions.
    pub dial_policy: std::sync::Arc<crate::dial_policy::DialPolicy>,
    /// What the manager counts (served on the metrics port).
    pub metrics: Arc<ManagerMetrics>,
    /// The audit trail.
    pub audit: AuditLog,
    /// Set once the manager got SIGTERM: the sessions it closes then are not ending, they move
    /// to the next manager, whose daemons re-create their intercepts there.
    pub terminating: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for ManagerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `kube::Client` has no Debug.
        f.debug_struct("ManagerState")
            .field("config", &self.config)
            .field("cluster_domain", &self.cluster_domain)
            .field("subnets", &*self.subnets_rx.borrow())
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

/// Failure of the manager.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// Subnet discovery failed in a way a restart may fix, or that needs RBAC fixed.
    #[error("could not discover the cluster's service range (`--service-cidr` skips discovery)")]
    Discovery(#[source] DiscoveryError),
    /// The metrics port could not be bound.
    #[error("binding the metrics port {port}")]
    Metrics {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// The audit log could not be opened.
    #[error("could not start the audit log (`--audit-log`)")]
    Audit(#[source] SinkError),
    /// The serving code (the tunnel) failed.
    #[error("the manager stopped serving")]
    Serve(#[source] Box<dyn Error + Send + Sync>),
}

/// Discovers the cluster, starts the watches and runs `serve` with the resulting state. Returns
/// when `serve` does; the watches stop then.
pub async fn run_manager<F, Fut, E>(
    client: Client,
    config: ManagerConfig,
    serve: F,
) -> Result<(), ManagerError>
where
    F: FnOnce(ManagerState) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<Box<dyn Error + Send + Sync>>,
{
    let audit = AuditLog::start(&config.audit_log)
        .await
        .map_err(ManagerError::Audit)?;
    let resolv_conf = match tokio::fs::read_to_string(&config.resolv_conf).await {
        Ok(text) => ResolvConf::parse(&text),
        Err(error) => {
            warn!(path = %config.resolv_conf.display(), %error, "Cannot read resolv.conf; non-cluster names will fail");
            ResolvConf::default()
        }
    };
    let cluster_domain =
        discovery::cluster_domain(config.cluster_domain.as_deref(), Some(&resolv_conf));
    let discovered = if config.service_cidrs.is_empty() {
        discovery::service_cidrs(&client, &config.namespace).await
    } else {
        Ok(config.service_cidrs.clone())
    };
    let service = match discovered {
        Ok(cidrs) => cidrs,
        Err(DiscoveryError::NotFound) => {
            warn!("The service range is unknown; clients will not route ClusterIPs");
            Vec::new()
        }
        Err(error) => return Err(ManagerError::Discovery(error)),
    };

    let view = SharedView::new(ClusterView {
        cluster_domain: cluster_domain.clone(),
        service_cidrs: service.clone(),
        ..ClusterView::default()
    });
    let topology_changed = Arc::new(Notify::new());
    let mut watches = Watches::spawn(&client, &view, &topology_changed);
    if let Err(pending) = watches.synced(config.sync_timeout).await {
        warn!(
            ?pending,
            "Some kinds are not listed yet (RBAC?); serving with what is known"
        );
    }
    let subnets = Subnets {
        service: service.clone(),
        pod: discovery::pod_subnets(&view.read()),
    };
    info!(%cluster_domain, service = ?subnets.service, pod = ?subnets.pod, "Discovered the cluster");
    let (subnets_tx, subnets_rx) = watch::channel(subnets);
    watches.spawn_task(publish_subnets(
        view.clone(),
        service,
        topology_changed,
        subnets_tx,
    ));

    let forwarder = Forwarder::from_resolv_conf(&resolv_conf);
    if forwarder.upstreams().is_empty() {
        warn!("No upstream resolver in resolv.conf; non-cluster names will get SERVFAIL");
    }
    let resolver = Resolver::new(view.clone(), forwarder);
    let api_server = api_server_addrs(&client).await;
    let dial_policy = std::sync::Arc::new(crate::dial_policy::DialPolicy::new(
        &config.pod_ips,
        &api_server,
        config.dial_allow.clone(),
        config.dial_deny.clone(),
    ));
    info!(api_server = ?api_server, own = ?config.pod_ips, allow = ?config.dial_allow, deny = ?config.dial_deny, "Dial policy");
    let mut registry = Registry::default();
    let metrics = Arc::new(ManagerMetrics::register(&mut registry));
    let metrics_listener = TcpListener::bind(("0.0.0.0", config.metrics_port))
        .await
        .map_err(|source| ManagerError::Metrics {
            port: config.metrics_port,
            source,
        })?;
    watches.spawn_task(tether_metrics::serve(metrics_listener, Arc::new(registry)));
    info!(port = config.metrics_port, "Serving metrics");
    let state = ManagerState {
        client,
        config,
        cluster_domain,
        view,
        subnets_rx,
        namespaces_rx: watches.namespaces(),
        resolver,
        dial_policy,
        metrics,
        audit,
        terminating: Default::default(),
    };
    let served = serve(state).await;
    drop(watches);
    served.map_err(|e| ManagerError::Serve(e.into()))
}

/// Where the API server is: the `kubernetes` Service's ClusterIP and ports, and its endpoints.
/// Empty if they cannot be read (the control-plane ports are refused on every address anyway).
async fn api_server_addrs(client: &Client) -> Vec<std::net::SocketAddr> {
    use k8s_openapi::api::core::v1::{Endpoints, Service};
    let mut addrs = Vec::new();
    let services: kube::Api<Service> = kube::Api::namespaced(client.clone(), "default");
    if let Ok(service) = services.get("kubernetes").await {
        let spec = service.spec.unwrap_or_default();
        if let Some(ip) = spec.cluster_ip.and_then(|ip| ip.parse().ok()) {
            for port in spec.ports.into_iter().flatten() {
                addrs.push(std::net::SocketAddr::new(ip, port.port as u16));
            }
        }
    }
    let endpoints: kube::Api<Endpoints> = kube::Api::namespaced(client.clone(), "default");
    if let Ok(endpoints) = endpoints.get("kubernetes").await {
        for subset in endpoints.subsets.into_iter().flatten() {
            for address in subset.addresses.iter().flatten() {
                let Ok(ip) = address.ip.parse() else { continue };
                for port in subset.ports.iter().flatten() {
                    addrs.push(std::net::SocketAddr::new(ip, port.port as u16));
                }
            }
        }
    }
    addrs
}

/// The readiness probe's port: accepts and closes every connection. Listening at all is the
/// answer, so it is started once the tunnel serves.
pub async fn serve_health(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((_stream, peer)) => debug!(%peer, "Readiness connection"),
            Err(error) => {
                // EMFILE and the like pass; back off a little instead of spinning.
                warn!(%error, "Accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
