//! The traffic manager: the one pod in the cluster that workstations and traffic agents connect
//! to (`tether-agent manager`).
//!
//! # Layout
//! - [`manager`]: start-up: discovery and watches, then hands a
//!   [`ManagerState`](manager::ManagerState) to the code serving the tunnel; the health port.
//! - [`view`]: [`ClusterView`](view::ClusterView), the manager's plain-data picture of the
//!   cluster, shared as a [`SharedView`](view::SharedView).
//! - [`discovery`]: service/pod subnets and the cluster domain, and the watches that keep the
//!   view current and publish subnet changes.
//! - [`dns`]: the sans-IO cluster DNS resolver and its forwarding driver.
//! - [`session`]: the tunnel server: one session per workstation (control stream, flows) and
//!   per traffic agent.
//! - [`authz`]: what a session's user may do, decided by RBAC (SubjectAccessReviews behind a
//!   trait, refusal wording, a short answer cache).
//! - [`registry`]: every session's intercepts, refusing conflicts with `tether-route`'s model.
//! - [`dial_policy`]: which addresses the manager dials for sessions.
//! - [`signer`]: signs people's session certificates from CertificateSigningRequests.
//! - [`audit`]: the audit trail, one `audit.k8s.io/v1`-shaped JSON line per security-relevant
//!   action, and its writer.
//! - [`announce`]: intercepts told on their workloads: Kubernetes Events and the
//!   `tether.dev/intercepts` annotation.
#![forbid(unsafe_code)]

pub mod announce;
pub mod audit;
pub mod authz;
pub mod dial_policy;
pub mod discovery;
pub mod dns;
pub mod manager;
pub mod registry;
pub mod session;
pub mod signer;
pub mod view;
