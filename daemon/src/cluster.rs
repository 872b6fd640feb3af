//! What the daemon asks the Kubernetes API before it can dial the manager: whose cluster it is,
//! whether the namespace exists, the manager's CA certificate, and where the manager is. (The
//! session certificate is in [`crate::credential`].)

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service};
use kube::{
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config,
};
use tether_tunnel::ClientCredential;

pub use tether_kube::names::{
    MANAGER as MANAGER_SERVICE, MANAGER_SECRET, MANAGER_SELECTOR, NAMESPACE as MANAGER_NAMESPACE,
    QUIC_PORT, RELAY_PORT,
};

/// Errors a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable kubeconfig.
    #[error("no kubeconfig: {0}. Set KUBECONFIG or pass --kubeconfig")]
    NoKubeconfig(String),
    /// The API server could not be reached.
    #[error("cannot reach the Kubernetes API server {server}: {message}")]
    Unreachable { server: String, message: String },
    /// The namespace does not exist.
    #[error("namespace {0:?} does not exist in this cluster")]
    NoNamespace(String),
    /// The manager is not installed.
    #[error("no traffic manager in namespace {ns}: run `tether install`{hint}", ns = .0, hint = manager_namespace_hint(.0))]
    NoManager(String),
    /// The manager has no running pod.
    #[error(
        "the traffic manager in namespace {0} has no ready pod: check `kubectl -n {0} get pods`"
    )]
    ManagerNotReady(String),
    /// RBAC says no.
    #[error("forbidden by RBAC: your kubeconfig user may not {what}. Ask a cluster admin to bind the ClusterRole tether-client to you (a ClusterRoleBinding) and the Role tether-client in namespace {namespace} (a RoleBinding)")]
    Forbidden {
        /// What was refused.
        what: String,
        /// The manager's namespace.
        namespace: String,
    },
    /// The credential in the Secret is unusable.
    #[error("the traffic manager's credential is invalid: {0}")]
    BadCredential(String),
    /// The manager denied the session certificate.
    #[error("the traffic manager refused a session certificate: {0}")]
    SessionRefused(String),
    /// Nobody answered the certificate request.
    #[error("no answer to the session certificate request within {}s: is the traffic manager running? (`kubectl -n {namespace} get pods`)", waited.as_secs())]
    NoSigner {
        /// How long the request waited.
        waited: std::time::Duration,
        /// The manager's namespace.
        namespace: String,
    },
    /// Any other API failure.
    #[error("Kubernetes API: {0}")]
    Api(String),
}

/// For a manager not found in the default namespace: how to name another.
fn manager_namespace_hint(namespace: &str) -> &'static str {
    if namespace == MANAGER_NAMESPACE {
        " (or, if it was installed in another namespace, name it with --manager-namespace)"
    } else {
        ""
    }
}

/// A connection to the user's cluster.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    /// What `client` was made from, for [`Cluster::with_new_connections`].
    config: Config,
    pub context: String,
    pub server: String,
    /// The context's namespace, else `default`: what kubectl uses when not told (`-n`).
    pub default_namespace: String,
    /// Where the traffic manager runs: [`MANAGER_NAMESPACE`] unless the user named another.
    pub manager_namespace: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("context", &self.context)
            .field("server", &self.server)
            .field("manager_namespace", &self.manager_namespace)
            .finish()
    }
}

impl Cluster {
    /// Loads the kubeconfig (`--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`).
    pub async fn load(
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
    ) -> Result<Cluster, ClusterError> {
        let kc = match &kubeconfig {
            Some(path) => Kubeconfig::read_from(path)
                .map_err(|e| ClusterError::NoKubeconfig(format!("{}: {e}", path.display())))?,
            None => Kubeconfig::read().map_err(|e| ClusterError::NoKubeconfig(e.to_string()))?,
        };
        Self::from_kubeconfig(kc, context).await
    }

    /// Uses a kubeconfig the privileged helper read (as JSON text).
    pub async fn from_kubeconfig_json(
        text: &str,
        context: Option<String>,
    ) -> Result<Cluster, ClusterError> {
        let kc: Kubeconfig = serde_json::from_str(text)
            .map_err(|e| ClusterError::NoKubeconfig(format!("from the privileged helper: {e}")))?;
        Self::from_kubeconfig(kc, context).await
    }

    async fn from_kubeconfig(
        kc: Kubeconfig,
        context: Option<String>,
    ) -> Result<Cluster, ClusterError> {
        let context_name = context
            .clone()
            .or_else(|| kc.current_context.clone())
            .unwrap_or_default();
        let options = KubeConfigOptions {
            context,
            ..Default::default()
        };
        let config = Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| ClusterError::NoKubeconfig(e.to_string()))?;
        let server = config.cluster_url.to_string();
        let default_namespace = config.default_namespace.clone();
        let client =
            nodelay_client(config.clone()).map_err(|e| ClusterError::Api(e.to_string()))?;
        Ok(Cluster {
            client,
            config,
            context: context_name,
            server,
            default_namespace,
            manager_namespace: MANAGER_NAMESPACE.to_owned(),
        })
    }

    /// The same cluster through a new client, which shares no connection with this one. After
    /// the network dropped out, a pooled connection to the API server may wait minutes for TCP
    /// to retransmit into a link that is back; a new one is dialed now.
    pub fn with_new_connections(&self) -> Result<Cluster, ClusterError> {
        let client =
            nodelay_client(self.config.clone()).map_err(|e| ClusterError::Api(e.to_string()))?;
        Ok(Cluster {
            client,
            config: self.config.clone(),
            context: self.context.clone(),
            server: self.server.clone(),
            default_namespace: self.default_namespace.clone(),
            manager_namespace: self.manager_namespace.clone(),
        })
    }

    /// The same cluster, with the traffic manager in `namespace` (empty: the default).
    pub fn with_manager_namespace(mut self, namespace: &str) -> Self {
        if !namespace.is_empty() {
            self.manager_namespace = namespace.to_owned();
        }
        self
    }

    pub(crate) fn map(&self, what: &str, e: kube::Error) -> ClusterError {
        match &e {
            kube::Error::Api(s) if s.code == 403 => ClusterError::Forbidden {
                what: what.to_owned(),
                namespace: self.manager_namespace.clone(),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => ClusterError::Unreachable {
                server: self.server.clone(),
                message: tether_proto::error_chain(&e),
            },
            _ => ClusterError::Api(format!("{what}: {}", tether_proto::error_chain(&e))),
        }
    }

    /// Fails unless `namespace` exists (and the API server answers).
    pub async fn check_namespace(&self, namespace: &str) -> Result<(), ClusterError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.get_opt(namespace).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(ClusterError::NoNamespace(namespace.to_owned())),
            // Users who may not read namespaces can still use one; the tunnel will tell.
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
            Err(e) => Err(self.map("get namespaces", e)),
        }
    }

    /// The manager's CA certificate (PEM), from its Secret.
    pub async fn manager_ca(&self) -> Result<String, ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.manager_namespace);
        let secret = match api.get_opt(MANAGER_SECRET).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(ClusterError::NoManager(self.manager_namespace.clone())),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(ClusterError::NoManager(self.manager_namespace.clone()))
            }
            Err(e) => {
                return Err(self.map(
                    &format!(
                        "get secret {MANAGER_SECRET} in namespace {}",
                        self.manager_namespace
                    ),
                    e,
                ))
            }
        };
        let data: BTreeMap<String, String> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
            .collect();
        data.get(ClientCredential::CA_KEY).cloned().ok_or_else(|| {
            ClusterError::BadCredential(format!(
                "Secret {MANAGER_SECRET} has no {}",
                ClientCredential::CA_KEY
            ))
        })
    }

    /// What an agent needs to know about the manager: the image (the manager's own: one image
    /// has both roles, so agents and manager always speak the same protocol) and the QUIC
    /// address inside the cluster (the Service's ClusterIP: pods need no cluster DNS for it).
    pub async fn agent_manager(&self) -> Result<(String, SocketAddr), ClusterError> {
        use k8s_openapi::api::apps::v1::Deployment;
        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), &self.manager_namespace);
        let deployment = deployments
            .get_opt(MANAGER_SERVICE)
            .await
            .map_err(|e| {
                self.map(
                    &format!(
                        "get deployment {MANAGER_SERVICE} in namespace {}",
                        self.manager_namespace
                    ),
                    e,
                )
            })?
            .ok_or(ClusterError::NoManager(self.manager_namespace.clone()))?;
        let image = deployment
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.image)
            .ok_or(ClusterError::NoManager(self.manager_namespace.clone()))?;
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.manager_namespace);
        let service = services
            .get_opt(MANAGER_SERVICE)
            .await
            .map_err(|e| {
                self.map(
                    &format!(
                        "get service {MANAGER_SERVICE} in namespace {}",
                        self.manager_namespace
                    ),
                    e,
                )
            })?
            .ok_or(ClusterError::NoManager(self.manager_namespace.clone()))?;
        let ip = service
            .spec
            .and_then(|s| s.cluster_ip)
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
            .ok_or(ClusterError::NoManager(self.manager_namespace.clone()))?;
        Ok((image, SocketAddr::new(ip, QUIC_PORT)))
    }

    /// The ready manager pod: (name, pod IP).
    pub async fn manager_pod(&self) -> Result<(String, Option<std::net::IpAddr>), ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.manager_namespace);
        let pods = api
            .list(&ListParams::default().labels(MANAGER_SELECTOR))
            .await
            .map_err(|e| {
                self.map(
                    &format!("list pods in namespace {}", self.manager_namespace),
                    e,
                )
            })?;
        let ready = pods.items.into_iter().find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        let Some(pod) = ready else {
            return Err(self.no_ready_manager().await);
        };
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .and_then(|ip| ip.parse().ok());
        Ok((pod.metadata.name.unwrap_or_default(), ip))
    }

    /// Why there is no ready manager pod: none installed here (no Deployment, e.g. it was
    /// installed in another namespace), or one that is not ready.
    async fn no_ready_manager(&self) -> ClusterError {
        use k8s_openapi::api::apps::v1::Deployment;
        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), &self.manager_namespace);
        match deployments.get_opt(MANAGER_SERVICE).await {
            Ok(None) => ClusterError::NoManager(self.manager_namespace.clone()),
            _ => ClusterError::ManagerNotReady(self.manager_namespace.clone()),
        }
    }

    /// Where the manager's QUIC port may be reachable over plain UDP: its NodePort on every node
    /// address, and LoadBalancer ingress addresses. Unreadable objects just give no candidates.
    pub async fn udp_candidates(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.manager_namespace);
        let Ok(svc) = services.get(MANAGER_SERVICE).await else {
            return out;
        };
        let spec = svc.spec.unwrap_or_default();
        let port = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.protocol.as_deref() == Some("UDP"));
        if let Some(lb) = svc
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
        {
            for ing in lb {
                if let (Some(ip), Some(p)) = (ing.ip.and_then(|i| i.parse().ok()), port.as_ref()) {
                    out.push(SocketAddr::new(ip, p.port as u16));
                }
            }
        }
        let Some(node_port) = port.and_then(|p| p.node_port) else {
            return out;
        };
        let nodes: Api<Node> = Api::all(self.client.clone());
        if let Ok(list) = nodes.list(&ListParams::default()).await {
            for node in list.items {
                for addr in node.status.and_then(|s| s.addresses).unwrap_or_default() {
                    if addr.type_ == "InternalIP" || addr.type_ == "ExternalIP" {
                        if let Ok(ip) = addr.address.parse() {
                            out.push(SocketAddr::new(ip, node_port as u16));
                        }
                    }
                }
            }
        }
        out
    }

    /// A port-forward byte stream to the manager pod's relay port (see [`crate::port_forward`]).
    pub async fn port_forward(&self, pod: &str) -> Result<tokio::io::DuplexStream, ClusterError> {
        crate::port_forward::open(&self.client, &self.manager_namespace, pod, RELAY_PORT)
            .await
            .map_err(|e| {
                self.map(
                    &format!(
                        "port-forward to pod {pod} in namespace {}",
                        self.manager_namespace
                    ),
                    e,
                )
            })
    }
}

/// A kube client whose connections to the API server set TCP_NODELAY. kube's own builder
/// leaves Nagle on, which costs ~40 ms (Nagle + delayed ACK) on every small exchange of the
/// port-forward carrier's WebSocket. The stack is kube's: base URI, auth, extra headers.
fn nodelay_client(config: Config) -> Result<Client, kube::Error> {
    use kube::client::ConfigExt;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let hyper_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(hyper_client);
    Ok(Client::new(service, config.default_namespace))
}
