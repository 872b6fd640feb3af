//! The cluster contract: every name and number tether's pieces must agree on in Kubernetes,
//! written once. The manifests in `deploy/manager` spell the same names; the install tests check
//! they agree.

/// The namespace the traffic manager runs in.
pub const NAMESPACE: &str = "tether";
/// The manager's Deployment and Service.
pub const MANAGER: &str = "tether-manager";
/// Selects the manager's pods.
pub const MANAGER_SELECTOR: &str = "app.kubernetes.io/name=tether-manager";
/// The Secret in [`NAMESPACE`] holding the manager's certificate and CA, which the workstation
/// reads to trust the manager.
pub const MANAGER_SECRET: &str = "tether-manager-tls";
/// The Secret in [`NAMESPACE`] holding the manager's CA key, readable by the manager only.
pub const MANAGER_CA_SECRET: &str = "tether-manager-ca";
/// The manager's QUIC port (UDP).
pub const QUIC_PORT: u16 = 7443;
/// The manager's port-forward relay (TCP, bound to the pod's loopback).
pub const RELAY_PORT: u16 = 7444;
/// The manager's readiness probe (TCP).
pub const HEALTH_PORT: u16 = 7445;
/// The manager's Prometheus metrics (TCP, `/metrics`).
pub const METRICS_PORT: u16 = 7446;
/// The traffic agent's Prometheus metrics (TCP, `/metrics`), below the agent's proxy ports.
pub const AGENT_METRICS_PORT: u16 = 9899;
/// The name of the metrics port on the manager's and the agents' containers: what Prometheus's
/// pod discovery (or a PodMonitor) selects.
pub const METRICS_PORT_NAME: &str = "tether-metrics";

/// The field manager of tether's server-side applies and the value of [`MANAGED_BY`].
pub const FIELD_MANAGER: &str = "tether";
/// Label on the objects tether creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tether");

/// The signer name people's session CertificateSigningRequests carry.
pub const SIGNER_NAME: &str = "tether.dev/session";
/// Prefix of the session requests' generated names.
pub const SESSION_REQUEST_PREFIX: &str = "tether-session-";

/// The traffic agent container's name.
pub const AGENT_CONTAINER: &str = "tether-agent";
/// The workload annotation that records what injecting the agent changed.
pub const AGENT_ANNOTATION: &str = "tether.dev/agent";
/// The workload annotation listing its active intercepts in words (`ann (x-dev=ann) → 8080`),
/// which the manager keeps current and removes with the last intercept (and uninstall removes
/// with the agent).
pub const INTERCEPTS_ANNOTATION: &str = "tether.dev/intercepts";
/// The workload annotation holding the app container `tether intercept --replace` removed (and
/// where it stood), until the intercept ends and it is put back.
pub const REPLACED_ANNOTATION: &str = "tether.dev/replaced";
/// The agents' credential Secret, one per namespace.
pub const AGENT_SECRET: &str = "tether-agent-tls";

/// The API group of tether's RBAC resources (never served; only named in Roles).
pub const RBAC_GROUP: &str = "tether.dev";
/// `create sessions.tether.dev`: may connect (cluster-wide).
pub const RBAC_SESSIONS: &str = "sessions";
/// `create`/`list intercepts.tether.dev` in a namespace: may intercept there / see its
/// intercepts.
pub const RBAC_INTERCEPTS: &str = "intercepts";
