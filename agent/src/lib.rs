//! The in-cluster side of tether: the traffic manager's Kubernetes-facing parts (what the
//! cluster looks like, its DNS, installing the manager) and, later, the sidecar agent.
//!
//! # Layout
//! - [`view`]: [`ClusterView`](view::ClusterView), the manager's plain-data picture of the
//!   cluster, shared as a [`SharedView`](view::SharedView).
//! - [`discovery`]: service/pod subnets and the cluster domain, and the watches that keep the
//!   view current and publish subnet changes.
//! - [`dns`]: the sans-IO cluster DNS resolver and its forwarding driver.
//! - [`resolv_conf`]: the pod's `/etc/resolv.conf` (upstream resolvers, cluster domain hint).
//! - [`install`]: `tether install` / `uninstall`: the manifests of `deploy/manager`, applied
//!   server-side.
//! - [`sidecar`]: the traffic agent's request router and proxy (intercepts; not yet injected).
//! - [`authz`]: what a session's user may do, decided by RBAC (SubjectAccessReviews behind a
//!   trait, refusal wording, a short answer cache).
//! - [`signer`]: signs people's session certificates from CertificateSigningRequests.
//! - [`manager`]: `tether-agent manager`: discovery + watches, then hands a
//!   [`ManagerState`](manager::ManagerState) to the code serving the tunnel.
#![forbid(unsafe_code)]

pub mod authz;
pub mod dial_policy;
pub mod discovery;
pub mod dns;
pub mod install;
pub mod manager;
pub mod registry;
pub mod resolv_conf;
pub mod session;
pub mod sidecar;
pub mod signer;
pub mod view;
