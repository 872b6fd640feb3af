//! Forwarding requests to one fixed upstream (the app's address, or an intercept's laptop reached
//! through a [`DialFn`]) over pooled connections.
//!
//! Requests go upstream in the version they came in: HTTP/1.x over a pool of keep-alive
//! connections, HTTP/2 multiplexed over one connection (an app that accepted h2 prior knowledge
//! on its port speaks h2c, and gRPC needs HTTP/2 end to end).
//!
//! The request is forwarded as the client sent it, minus hop-by-hop headers (RFC 9110 §7.6.1):
//! the `Host` header, or the HTTP/2 `:authority`, is kept; only the connection goes to the fixed
//! address. HTTP/1 connections form one pool; HTTP/2 ones are pooled per `:authority` (in
//! practice the one Service name clients use). HTTP/1.1 upgrades (WebSocket) are spliced through
//! once both sides switch protocols.
//!
//! A pooled keep-alive connection can be closed by the upstream just as a request is written on
//! it (the server's idle timeout fires before it sees the request). The pool cannot tell; the
//! request fails with the connection closed before any answer. A request that is safe to send
//! twice (an idempotent method, or an `Idempotency-Key`) and has no body is then sent once more,
//! on a new connection of its own (RFC 9110 §9.2.2), as browsers and nginx do.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

/// A byte stream both ways (what a non-HTTP connection is relayed over).
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// Opens a connection to an upstream that is not a plain address (an intercept's laptop, through
/// the manager).
pub type DialFn =
    Arc<dyn Fn() -> BoxFuture<'static, std::io::Result<Box<dyn Duplex>>> + Send + Sync>;

/// Any error, boxed (what bodies and intercept targets fail with).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the proxy sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The body of every request the proxy forwards: the caller's, passed through (and, for a
/// request a mirror copies, read along the way), or a mirror's copy.
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long connecting to an upstream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting, or sending the request, failed.
    #[error("forwarding to {to}")]
    Request {
        /// The upstream.
        to: Arc<str>,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// A request sent again after its keep-alive connection closed under it failed again.
    #[error("forwarding to {to} (sent again on a new connection)")]
    Replayed {
        /// The upstream.
        to: Arc<str>,
        #[source]
        source: BoxError,
    },
    /// The request's URI could not be rewritten for the upstream.
    #[error("rewriting the request URI for {to}")]
    Uri {
        /// The upstream.
        to: Arc<str>,
        #[source]
        source: http::uri::InvalidUriParts,
    },
}

/// Forwards requests to one upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    name: Arc<str>,
    addr: Option<SocketAddr>,
    authority: Authority,
    connector: FixedConnector,
    http1: Client<FixedConnector, RequestBody>,
    http2: Client<FixedConnector, RequestBody>,
}

impl Upstream {
    /// Forwards to `addr` (nothing is connected until the first request).
    pub fn new(addr: SocketAddr) -> Self {
        // A socket address is always a valid authority.
        let authority = Authority::try_from(addr.to_string()).expect("socket address authority");
        Self::build(
            addr.to_string().into(),
            Some(addr),
            authority,
            FixedConnector::Tcp(addr),
        )
    }

    /// Forwards over connections `dial` opens; `name` names the upstream in errors, and is the
    /// pool key for HTTP/1 requests.
    pub fn with_dial(name: &str, dial: DialFn) -> Self {
        let authority = Authority::try_from(name).unwrap_or(Authority::from_static("upstream"));
        Self::build(name.into(), None, authority, FixedConnector::Dial(dial))
    }

    fn build(
        name: Arc<str>,
        addr: Option<SocketAddr>,
        authority: Authority,
        connector: FixedConnector,
    ) -> Self {
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let http1 = builder.build(connector.clone());
        let http2 = builder.http2_only(true).build(connector.clone());
        Self {
            name,
            addr,
            authority,
            connector,
            http1,
            http2,
        }
    }

    /// The address requests go to, if the upstream is a plain address.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// A fresh byte stream to the upstream, outside the pools (for a connection that is not
    /// HTTP), connected the same way as pooled connections.
    pub async fn connect(&self) -> std::io::Result<Box<dyn Duplex>> {
        use tower_service::Service;
        let io = self.connector.clone().call(Uri::from_static("/")).await?;
        Ok(Box::new(io.into_inner()))
    }

    /// Forwards one request and returns the upstream's response.
    pub async fn forward(
        &self,
        mut request: Request<RequestBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let http2 = request.version() == Version::HTTP_2;
        let upgrade = (!http2 && is_upgrade(request.headers())).then(|| {
            let on_upgrade = hyper::upgrade::on(&mut request);
            let protocol = request.headers().get(header::UPGRADE).cloned();
            (on_upgrade, protocol)
        });
        strip_hop_by_hop(request.headers_mut());
        if let Some((_, Some(protocol))) = &upgrade {
            let headers = request.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        // HTTP/1 requests share one pool keyed by the upstream's own address, and keep their
        // `Host` header. HTTP/2 sends `:authority` from the URI, so it keeps the client's.
        let authority = match request.uri().authority() {
            Some(authority) if http2 => authority.clone(),
            _ => self.authority.clone(),
        };
        let mut uri = std::mem::take(request.uri_mut()).into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority);
        uri.path_and_query = uri.path_and_query.or(Some(PathAndQuery::from_static("/")));
        *request.uri_mut() = Uri::from_parts(uri).map_err(|source| UpstreamError::Uri {
            to: self.name.clone(),
            source,
        })?;
        let replay = match &upgrade {
            None if !http2 => Replay::of(&request),
            _ => None,
        };
        let client = if http2 { &self.http2 } else { &self.http1 };
        let mut response = match client.request(request).await {
            Ok(response) => response,
            Err(error) => match replay {
                Some(replay) if closed_before_answer(&error) => {
                    debug!(to = %self.name, %error, "Connection closed under the request; sending it again");
                    self.send_on_new_connection(replay.request())
                        .await
                        .map_err(|source| UpstreamError::Replayed {
                            to: self.name.clone(),
                            source,
                        })?
                }
                _ => {
                    return Err(UpstreamError::Request {
                        to: self.name.clone(),
                        source: error,
                    })
                }
            },
        };
        match upgrade {
            Some((downstream, _)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let upstream = hyper::upgrade::on(&mut response);
                tokio::spawn(splice(downstream, upstream));
            }
            _ => strip_hop_by_hop(response.headers_mut()),
        }
        Ok(response.map(|body| body.map_err(BoxError::from).boxed_unsync()))
    }
}

impl Upstream {
    /// Sends one HTTP/1 request on a connection of its own, outside the pool.
    async fn send_on_new_connection(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<hyper::body::Incoming>, BoxError> {
        use tower_service::Service;
        let io = self.connector.clone().call(request.uri().clone()).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "Connection for a request sent again ended");
            }
        });
        Ok(sender.send_request(request).await?)
    }
}

/// The head of a request that may be sent a second time: an idempotent method (RFC 9110 §9.2.2)
/// or an `Idempotency-Key`, and no body.
struct Replay {
    method: http::Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    fn of(request: &Request<RequestBody>) -> Option<Self> {
        use http::Method;
        use hyper::body::Body as _;
        let method = request.method();
        let idempotent = [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ]
        .contains(method)
            || request.headers().contains_key("idempotency-key");
        (idempotent && request.body().is_end_stream()).then(|| Self {
            method: method.clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        })
    }

    fn request(self) -> Request<RequestBody> {
        let mut request = Request::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

/// True when a request failed on a connection that closed (or was reset) before any answer
/// came: not when connecting failed, nor when the upstream answered something.
fn closed_before_answer(error: &hyper_util::client::legacy::Error) -> bool {
    if error.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed() {
                return true;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
            if matches!(io.kind(), BrokenPipe | ConnectionReset | ConnectionAborted) {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// Copies bytes both ways between the two sides of an upgraded connection.
async fn splice(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(both) => both,
        Err(error) => {
            debug!(%error, "Upgrade failed");
            return;
        }
    };
    let result =
        tokio::io::copy_bidirectional(&mut TokioIo::new(downstream), &mut TokioIo::new(upstream))
            .await;
    if let Err(error) = result {
        debug!(%error, "Upgraded connection ended");
    }
}

/// True for an HTTP/1.1 upgrade request (`Connection: upgrade` plus `Upgrade`).
pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_lists(headers, "upgrade")
}

fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes the headers that describe one connection rather than the message: those named in
/// `Connection`, and the standard ones. `TE: trailers` is kept (gRPC relies on it).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    static ALWAYS: [HeaderName; 5] = [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ];
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::try_from(t.trim()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &ALWAYS {
        headers.remove(name);
    }
    if headers
        .get(header::TE)
        .is_some_and(|te| te.as_bytes() != b"trailers")
    {
        headers.remove(header::TE);
    }
}

/// Connects to one upstream whatever the URI says (the URI still names the pool).
#[derive(Clone)]
enum FixedConnector {
    Tcp(SocketAddr),
    Dial(DialFn),
}

impl fmt::Debug for FixedConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => f.debug_tuple("Tcp").field(addr).finish(),
            Self::Dial(_) => f.write_str("Dial"),
        }
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<UpstreamIo>>> + Send>>;

impl tower_service::Service<Uri> for FixedConnector {
    type Response = TokioIo<UpstreamIo>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        match self {
            Self::Tcp(addr) => {
                let addr = *addr;
                Box::pin(async move {
                    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                        .await
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                    stream.set_nodelay(true)?;
                    Ok(TokioIo::new(UpstreamIo::Tcp(stream)))
                })
            }
            Self::Dial(dial) => {
                let dial = dial.clone();
                Box::pin(async move {
                    let io = tokio::time::timeout(CONNECT_TIMEOUT, dial())
                        .await
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                    Ok(TokioIo::new(UpstreamIo::Dialed(io)))
                })
            }
        }
    }
}

/// A connection to an upstream: a TCP stream (no indirection on the app's path) or a dialed
/// stream.
enum UpstreamIo {
    Tcp(TcpStream),
    Dialed(Box<dyn Duplex>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Dialed(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Dialed(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Dialed(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Dialed(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Dialed(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Dialed(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderMap, HeaderValue};

    use super::{is_upgrade, strip_hop_by_hop};

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("x-session", "dev-1"),
            ("content-length", "3"),
        ]);
        strip_hop_by_hop(&mut map);
        let left: Vec<_> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-session", "content-length"]);
    }

    #[test]
    fn te_trailers_is_kept() {
        let mut map = headers(&[("te", "trailers")]);
        strip_hop_by_hop(&mut map);
        assert_eq!(map.get("te").unwrap(), "trailers");
    }

    #[test]
    fn upgrade_needs_both_headers() {
        assert!(is_upgrade(&headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
        assert!(!is_upgrade(&headers(&[("connection", "upgrade")])));
    }
}
