//! [`Manager`]: the real tunnel server ([`serve_endpoint`]) on a loopback UDP port, with a CA of
//! its own, a hand-made view and a fake API server.
//!
//! What `tether-agent manager` does before it serves (discovery, the watches, publishing the CA
//! Secret, the CSR signer, the relay and health ports) is left out: the state it would build is
//! built here from a [`ClusterView`] and a [`FakeApi`], and credentials are minted directly with
//! the CA, as the signer and the agent credential request would.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tether_manager::dial_policy::DialPolicy;
use tether_manager::discovery::pod_subnets;
use tether_manager::dns::{Forwarder, Resolver};
use tether_manager::manager::{ManagerConfig, ManagerState};
use tether_manager::session::serve_endpoint;
use tether_manager::view::{ClusterView, SharedView};
use tether_proto::Subnets;
use tether_tunnel::{quinn, ClientCredential, Identity, Role, SessionRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{patiently, FakeApi, HarnessError};

/// The manager's namespace in the fake cluster.
pub const MANAGER_NAMESPACE: &str = "tether";

/// What the reason of a stopping manager's connection close says (as on SIGTERM).
pub const RESTARTING: &str = "the manager is restarting";

/// How a harness manager differs from the defaults of a real one.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Ranges dialed even where the dial policy refuses: by default `127.0.0.0/8`, where the
    /// test servers are.
    pub dial_allow: Vec<IpNet>,
    /// Ranges never dialed.
    pub dial_deny: Vec<IpNet>,
    /// How long minted session certificates are valid.
    pub session_cert_lifetime: Duration,
    /// Where the manager's audit events go (by default nowhere; see
    /// [`AuditLog::channel`](tether_manager::audit::AuditLog::channel)).
    pub audit: tether_manager::audit::AuditLog,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            dial_allow: vec![crate::cluster::SERVICE_CIDR],
            dial_deny: Vec::new(),
            session_cert_lifetime: Duration::from_secs(3600),
            audit: tether_manager::audit::AuditLog::off(),
        }
    }
}

/// A running manager. Dropping it closes every connection.
#[derive(Debug)]
pub struct Manager {
    addr: SocketAddr,
    ca_pem: String,
    ca_key_pem: String,
    identity: Arc<Identity>,
    state: ManagerState,
    subnets_tx: watch::Sender<Subnets>,
    namespaces_tx: watch::Sender<Vec<String>>,
    running: Option<Running>,
    /// The families [`ManagerState::metrics`] are registered in.
    registry: Arc<tether_metrics::Registry>,
}

/// A bound endpoint and the task serving it.
#[derive(Debug)]
struct Running {
    endpoint: quinn::Endpoint,
    task: JoinHandle<()>,
}

impl Manager {
    /// Starts a manager with a new CA on a free loopback port, serving `view` and asking `api`.
    /// Must be called within a tokio runtime.
    pub fn start(view: ClusterView, api: &FakeApi) -> Result<Manager, HarnessError> {
        Manager::start_with(view, api, ManagerOptions::default())
    }

    /// [`Manager::start`] with `options`.
    pub fn start_with(
        view: ClusterView,
        api: &FakeApi,
        options: ManagerOptions,
    ) -> Result<Manager, HarnessError> {
        let identity = Arc::new(Identity::generate()?);
        let subnets = Subnets {
            service: view.service_cidrs.clone(),
            pod: pod_subnets(&view),
        };
        let namespaces: Vec<String> = view.namespaces.iter().cloned().collect();
        let (subnets_tx, subnets_rx) = watch::channel(subnets);
        let (namespaces_tx, namespaces_rx) = watch::channel(namespaces);
        let cluster_domain = view.cluster_domain.clone();
        let view = SharedView::new(view);
        let config = ManagerConfig {
            namespace: MANAGER_NAMESPACE.to_owned(),
            quic_port: 0,
            relay_port: 0,
            health_port: 0,
            metrics_port: 0,
            cluster_domain: Some(cluster_domain.clone()),
            service_cidrs: view.read().service_cidrs.clone(),
            resolv_conf: PathBuf::from("/dev/null"),
            sync_timeout: Duration::ZERO,
            session_cert_lifetime: options.session_cert_lifetime,
            pod_ips: Vec::new(),
            dial_allow: options.dial_allow.clone(),
            dial_deny: options.dial_deny.clone(),
            audit_log: tether_manager::audit::AuditTarget::Off,
            pod_name: "tether-manager-harness".to_owned(),
        };
        let dial_policy = DialPolicy::new(&[], &[], options.dial_allow, options.dial_deny);
        let mut registry = tether_metrics::Registry::default();
        let metrics = Arc::new(tether_metrics::manager::ManagerMetrics::register(
            &mut registry,
        ));
        let state = ManagerState {
            client: api.client(),
            config,
            cluster_domain,
            view: view.clone(),
            subnets_rx,
            namespaces_rx,
            // No upstream resolver: names outside the cluster get SERVFAIL.
            resolver: Resolver::new(view, Forwarder::new(Vec::new(), Duration::from_secs(1))),
            dial_policy: Arc::new(dial_policy),
            metrics,
            audit: options.audit.clone(),
            terminating: Default::default(),
        };
        let running = serve(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            identity.clone(),
            &state,
        )?;
        Ok(Manager {
            addr: running
                .endpoint
                .local_addr()
                .map_err(HarnessError::io("reading the manager's address"))?,
            ca_pem: identity.ca_pem().to_owned(),
            ca_key_pem: identity.ca_key_pem().to_owned(),
            identity,
            state,
            subnets_tx,
            namespaces_tx,
            running: Some(running),
            registry: Arc::new(registry),
        })
    }

    /// The manager's metrics as Prometheus would scrape them (classic text format).
    pub fn metrics_text(&self) -> String {
        tether_metrics::encode(&self.registry, tether_metrics::Format::Prometheus)
    }

    /// The manager's QUIC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate every credential chains to.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A person's session credential for Kubernetes user `user` in `groups`: a key made here and
    /// a certificate signed for it as the manager's signer signs one once the API server has
    /// named the requester.
    pub fn session_credential(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<ClientCredential, HarnessError> {
        let request = SessionRequest::generate()?;
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        let cert = self.identity.sign_session(
            &request.csr_pem,
            user,
            &groups,
            self.state.config.session_cert_lifetime,
        )?;
        Ok(request.into_credential(self.ca_pem.clone(), cert))
    }

    /// An agent credential for `namespace`, as the manager issues one on request.
    pub fn agent_credential(&self, namespace: &str) -> Result<ClientCredential, HarnessError> {
        Ok(self.identity.issue_client(Role::Agent, namespace)?)
    }

    /// The manager's view of the cluster; changes are seen by the next DNS query.
    pub fn view(&self) -> &SharedView {
        &self.state.view
    }

    /// Announces `subnets` to every session, as the watches do when the pod ranges change.
    pub fn set_subnets(&self, subnets: Subnets) {
        self.subnets_tx.send_replace(subnets);
    }

    /// Announces the view's namespaces again, as the watches do when namespaces come and go.
    pub fn publish_namespaces(&self) {
        let names = self.state.view.read().namespaces.iter().cloned().collect();
        self.namespaces_tx.send_replace(names);
    }

    /// Stops serving as a manager pod going away does: every connection is closed with
    /// [`RESTARTING`] as its reason, and this returns once the endpoint is done (its port is free
    /// when the last connection has drained).
    pub async fn stop(&mut self) -> Result<(), HarnessError> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        running.endpoint.close(0u32.into(), RESTARTING.as_bytes());
        patiently("the stopped manager's accept loop", running.task).await??;
        patiently(
            "the stopped manager's connections",
            running.endpoint.wait_idle(),
        )
        .await
    }

    /// Stops (if running) and starts again on the same port with the same CA and view, as a
    /// restarted manager pod that kept its predecessor's CA: credentials already issued stay
    /// valid. Sessions and intercepts are gone, as after a restart.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop().await?;
        let identity = Arc::new(Identity::from_ca(&self.ca_pem, &self.ca_key_pem)?);
        // The old socket closes once its last connection is dropped, a moment after draining.
        let running = patiently("the manager's port to be free again", async {
            loop {
                match serve(self.addr, identity.clone(), &self.state) {
                    Err(HarnessError::Endpoint(tether_tunnel::EndpointError::Bind {
                        source,
                        ..
                    })) if source.kind() == std::io::ErrorKind::AddrInUse => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    result => return result,
                }
            }
        })
        .await??;
        self.identity = identity;
        self.running = Some(running);
        Ok(())
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.endpoint.close(0u32.into(), b"the harness is done");
            running.task.abort();
        }
    }
}

/// Binds `addr` and serves it with `identity` and a clone of `state`.
fn serve(
    addr: SocketAddr,
    identity: Arc<Identity>,
    state: &ManagerState,
) -> Result<Running, HarnessError> {
    let endpoint = tether_tunnel::server(addr, &identity)?;
    let task = tokio::spawn(serve_endpoint(endpoint.clone(), state.clone(), identity));
    Ok(Running { endpoint, task })
}
