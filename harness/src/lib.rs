//! An in-process tether: a traffic manager, a workstation session and sidecar agents wired over
//! QUIC on loopback, in one test process, with no cluster and no root.
//!
//! The harness runs the real code wherever it can and fakes only what needs a cluster or
//! privileges:
//!
//! | piece | real | fake |
//! |---|---|---|
//! | tunnel | QUIC endpoints, mutual TLS, a CA, session and agent certificates ([`tether_tunnel`]) | the certificates are signed in-process, as the manager's CSR signer would sign them, without a CertificateSigningRequest |
//! | manager | its accept loop, client and agent sessions, flows, DNS resolver, intercept registry, RBAC checks, dial policy ([`tether_manager::session::serve_endpoint`]) | the [`ClusterView`](tether_manager::view::ClusterView) is built by hand ([`FakeCluster`]) instead of by watches; no CA Secret, signer, relay or health port |
//! | Kubernetes API | `kube::Client`, its requests and the manager's reading of the answers | the API server ([`FakeApi`]): SubjectAccessReviews by a rule table, TokenReviews for agent tokens, pods, ReplicaSets and Secrets from maps, 404 for anything else |
//! | workstation | the daemon's [`Session`](tether_daemon::session::Session) and its [`Dns`](tether_daemon::dns::Dns) server logic | no TUN device, netstack, routes or resolver configuration: flows are opened on the session directly, and the DNS server listens on a loopback UDP port ([`Workstation`]) |
//! | sidecar | the proxy and the link to the manager ([`tether_sidecar`]) | the pod: the proxy listens on loopback in front of a loopback app ([`Agent`]) |
//! | cluster workloads | | loopback servers ([`servers`]) whose addresses the view names as ClusterIPs |
//!
//! The manager dials `127.0.0.0/8` for sessions (its dial policy refuses loopback by default;
//! [`ManagerOptions::default`] allows it), and the view's service range is `127.0.0.0/8`, so
//! reverse names of the test servers are the cluster's.
//!
//! What the harness does not cover, the end-to-end suite (`tests/`) does: the TUN device and the
//! userspace stack, routes and resolver configuration, the carriers over a port-forward, the
//! watches, the CSR signer, agent injection and rollouts, and the daemon's reconnect loop (which
//! dials through a kubeconfig; [`Workstation::reconnect`] does what it does with a session).
//!
//! # Layout
//! - [`api`]: [`FakeApi`], a Kubernetes API server in-process behind a `kube::Client`.
//! - [`cluster`]: [`FakeCluster`], a [`ClusterView`](tether_manager::view::ClusterView) builder.
//! - [`manager`]: [`Manager`], the real manager's tunnel server on a loopback port, with its CA
//!   to mint credentials; stopped and restarted on the same port with the same CA.
//! - [`workstation`]: [`Workstation`], a daemon session and the daemon's DNS server on loopback.
//! - [`agent`]: [`Agent`], a sidecar proxy and its link to the manager.
//! - [`servers`]: loopback echo (TCP, UDP) and HTTP servers, and a tiny HTTP client.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod cluster;
pub mod manager;
pub mod servers;
pub mod workstation;

use std::future::Future;
use std::time::Duration;

pub use agent::Agent;
pub use api::FakeApi;
pub use cluster::FakeCluster;
pub use manager::{Manager, ManagerOptions};
pub use workstation::Workstation;

/// How long the harness waits for anything (a connection, an agent to link, a reply) before it
/// fails instead of hanging. Not a timing assertion: things take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Why the harness could not do something.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A certificate could not be made.
    #[error("making a certificate")]
    Identity(#[from] tether_tunnel::IdentityError),
    /// A QUIC endpoint could not be configured or bound.
    #[error("a QUIC endpoint")]
    Endpoint(#[from] tether_tunnel::EndpointError),
    /// A socket or file operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The workstation's session failed (refusals by the manager included).
    #[error("the workstation session")]
    Session(#[from] tether_daemon::session::SessionError),
    /// A DNS query could not be built.
    #[error("building a DNS query")]
    DnsQuery(#[from] hickory_proto::ProtoError),
    /// A DNS reply could not be read.
    #[error("reading a DNS reply")]
    DnsReply(#[from] hickory_proto::serialize::binary::DecodeError),
    /// An HTTP exchange went wrong.
    #[error("HTTP: {0}")]
    Http(String),
    /// A task of the harness panicked.
    #[error("a harness task failed")]
    Task(#[from] tokio::task::JoinError),
    /// Something did not happen within [`PATIENCE`].
    #[error("gave up waiting for {0}")]
    Timeout(String),
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Io { what, source }
    }
}

/// `future`'s output, or [`HarnessError::Timeout`] naming `what` after [`PATIENCE`].
pub async fn patiently<F: Future>(what: &str, future: F) -> Result<F::Output, HarnessError> {
    tokio::time::timeout(PATIENCE, future)
        .await
        .map_err(|_| HarnessError::Timeout(what.to_owned()))
}

/// Asks `check` every few milliseconds until it holds, for at most [`PATIENCE`]. For state that
/// has no notification (a sidecar's routing table, the manager's agent list).
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<(), HarnessError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    patiently(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}
