//! Where an intercept's traffic goes: the [`InterceptTarget`] trait, implemented by
//! [`Upstream`]: an address the agent can reach ([`LocalTarget`], for tests and for trying the
//! sidecar without a laptop), or the developer's machine through the manager.

use std::fmt;

use futures::future::BoxFuture;
use http::{Request, Response};

pub use super::upstream::Duplex;
use super::upstream::{BoxError, ProxyBody, RequestBody, Upstream};

/// Where an intercept sends what it takes. The real one carries requests over QUIC to the
/// developer's machine.
///
/// The proxy clones the target's `Arc` when it routes a request or connection, so a target that
/// is removed from the routing table still finishes what it was given.
pub trait InterceptTarget: fmt::Debug + Send + Sync + 'static {
    /// Sends one request and returns its response. The request's head is as the client sent it
    /// (HTTP/2 requests carry their authority in the URI, HTTP/1 ones in `Host`); an HTTP/1.1
    /// upgrade can be taken with [`hyper::upgrade::on`]. An error becomes a `502 Bad Gateway`.
    fn send(
        &self,
        request: Request<RequestBody>,
    ) -> BoxFuture<'_, Result<Response<ProxyBody>, BoxError>>;

    /// Opens a byte stream for a connection that is not HTTP (only asked of a global
    /// intercept). An error closes the client's connection.
    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Duplex>, BoxError>>;
}

/// An intercept target that forwards to an address the agent can reach, the same way the app is
/// forwarded to (`LocalTarget::new(addr)`). The laptop's target is an [`Upstream`] too, whose
/// connections are streams through the manager.
pub type LocalTarget = Upstream;

impl InterceptTarget for Upstream {
    fn send(
        &self,
        request: Request<RequestBody>,
    ) -> BoxFuture<'_, Result<Response<ProxyBody>, BoxError>> {
        Box::pin(async move { Ok(self.forward(request).await?) })
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Duplex>, BoxError>> {
        Box::pin(async move { Ok(Upstream::connect(self).await?) })
    }
}
