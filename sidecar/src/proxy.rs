//! The sidecar's proxy: listens on the port the service sends to and routes every request on it.
//!
//! Each accepted connection is [sniffed](super::sniff) first:
//! - **HTTP/1.x** is served with keep-alive, **HTTP/2** (cleartext, prior knowledge) with
//!   streams, and every request, not every connection, asks the [`Routes`] where to go: the app
//!   (forwarded over pooled connections, see [`Upstream`]) or an intercept's [`InterceptTarget`].
//!   A request's route is fixed when its head arrives, so changing the table never disturbs a
//!   request in flight, and a removed target finishes what it was given. A request that mirrors
//!   match is routed the same way, and each of them gets a copy (see [`mirror`]).
//! - **Anything else** is relayed as bytes to the global intercept if there is one, else to the
//!   app. So is a connection whose client sends nothing within the sniff timeout (protocols
//!   where the server speaks first, like MySQL or SMTP, pay that delay once per connection).
//!
//! An upstream that cannot be reached answers `502 Bad Gateway`.

pub mod mirror;
mod prefixed;
mod target;
mod upstream;

use std::collections::HashMap;
use std::convert::Infallible;

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tether_proto::ErrorChain;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, debug_span, warn, Instrument};

use prefixed::Prefixed;
use tether_metrics::agent::{AgentMetrics, ConnectionKind, Route as MetricsRoute};
use tether_route::router::{AddError, Intercept, InterceptId, InterceptMode, Route, Router};
use tether_route::sniff::{sniff, Protocol, Sniff};

pub use crate::tally::Tally;
pub use mirror::Mirror;
pub use target::{Duplex, InterceptTarget, LocalTarget};
pub use upstream::{BoxError, DialFn, ProxyBody, RequestBody, Upstream, UpstreamError};

/// How long a new connection may stay silent before it is taken for a non-HTTP protocol.
pub const DEFAULT_SNIFF_TIMEOUT: Duration = Duration::from_secs(1);

/// An intercept target as the routing table holds it.
pub type SharedTarget = Arc<dyn InterceptTarget>;

/// What the proxy needs to know.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The app's own port, where traffic goes when no intercept takes it.
    pub app: SocketAddr,
    /// See [`DEFAULT_SNIFF_TIMEOUT`].
    pub sniff_timeout: Duration,
    /// Who answers probes: the pod's name.
    pub identity: String,
    /// Where requests are counted; `None` counts nothing (metrics off).
    pub metrics: Option<Arc<AgentMetrics>>,
    /// Where requests are counted per intercept, for the link's reports.
    pub tally: Tally,
}

impl ProxyConfig {
    /// Forwards to the app at `app`, with the default sniff timeout.
    pub fn new(app: SocketAddr) -> Self {
        Self {
            app,
            sniff_timeout: DEFAULT_SNIFF_TIMEOUT,
            identity: String::new(),
            metrics: None,
            tally: Tally::default(),
        }
    }
}

/// The routing table of the proxied port, shared between the proxy and whoever manages
/// intercepts. Cloning gives another handle to the same table.
#[derive(Debug, Clone, Default)]
pub struct Routes(Arc<RwLock<Table>>);

#[derive(Debug, Default)]
struct Table {
    router: Router<SharedTarget>,
    /// The queue and task of each mirror in `router`.
    mirrors: HashMap<InterceptId, Arc<Mirror>>,
    /// Where the mirrors count their copies.
    counter: mirror::Counter,
}

/// Where a request goes: the intercept that takes it (`None`: the app), and the mirrors that get
/// a copy.
type Picked = (Option<(InterceptId, SharedTarget)>, Vec<Arc<Mirror>>);

impl Routes {
    /// An empty table whose mirrors count their copies with `counter`.
    pub fn new(counter: mirror::Counter) -> Self {
        Routes(Arc::new(RwLock::new(Table {
            counter,
            ..Table::default()
        })))
    }

    /// Adds an intercept; see [`Router::add`] for what is refused. A mirror's task starts
    /// here, so this must be called within a Tokio runtime.
    pub fn add(&self, intercept: Intercept<SharedTarget>) -> Result<(), AddError> {
        let mut table = self.write();
        let mirror = (intercept.mode == InterceptMode::Mirror)
            .then(|| (intercept.id, intercept.target.clone()));
        table.router.add(intercept)?;
        if let Some((id, target)) = mirror {
            let mirror = Mirror::spawn(id, target, table.counter.clone());
            table.mirrors.insert(id, Arc::new(mirror));
        }
        Ok(())
    }

    /// Removes an intercept. Requests and connections it already has are not affected (a
    /// mirror's copies already queued are dropped with it).
    pub fn remove(&self, id: InterceptId) -> Option<Intercept<SharedTarget>> {
        let mut table = self.write();
        table.mirrors.remove(&id);
        table.router.remove(id)
    }

    /// Whether a replace intercept is routed here.
    pub fn has_replace(&self) -> bool {
        self.read()
            .router
            .iter()
            .any(|i| i.mode == InterceptMode::Replace)
    }

    /// Whether every connection goes to an intercept (none to the app).
    pub fn takes_every_connection(&self) -> bool {
        self.pick_connection().is_some()
    }

    /// A copy of the table as it is now.
    pub fn snapshot(&self) -> Router<SharedTarget> {
        self.read().router.clone()
    }

    fn pick(&self, request: &Parts) -> Picked {
        let table = self.read();
        let take = picked(table.router.route(request));
        if !table.router.has_mirrors() {
            return (take, Vec::new());
        }
        let mirrors = table
            .router
            .mirrors(request)
            .filter_map(|m| table.mirrors.get(&m.id).cloned())
            .collect();
        (take, mirrors)
    }

    fn pick_connection(&self) -> Option<(InterceptId, SharedTarget)> {
        picked(self.read().router.route_connection())
    }

    // The table is only changed by `Router` methods, which do not panic; even so a poisoned
    // lock still holds a consistent table, so it is used rather than propagated.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn picked(route: Route<'_, SharedTarget>) -> Option<(InterceptId, SharedTarget)> {
    match route {
        Route::App => None,
        Route::Intercept(intercept) => Some((intercept.id, intercept.target.clone())),
    }
}

/// The proxy of one port. Cloning gives another handle to the same proxy.
#[derive(Debug, Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Connections being served (for draining on shutdown).
    active: std::sync::atomic::AtomicUsize,
    app: Upstream,
    routes: Routes,
    sniff_timeout: Duration,
    identity: String,
    metrics: Option<Arc<AgentMetrics>>,
    tally: Tally,
    /// The app port, as the metrics label it.
    app_port: u16,
}

impl Proxy {
    /// A proxy that sends everything to the app until intercepts are added to its [`Routes`].
    pub fn new(config: ProxyConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                active: std::sync::atomic::AtomicUsize::new(0),
                app: Upstream::new(config.app),
                routes: Routes::new(mirror::Counter {
                    port: config.app.port(),
                    tally: config.tally.clone(),
                    metrics: config.metrics.clone(),
                }),
                sniff_timeout: config.sniff_timeout,
                identity: config.identity,
                metrics: config.metrics,
                tally: config.tally,
                app_port: config.app.port(),
            }),
        }
    }

    /// The routing table, to add and remove intercepts while the proxy runs.
    pub fn routes(&self) -> &Routes {
        &self.shared.routes
    }

    /// Serves every connection `listener` accepts, until the future is dropped.
    pub async fn serve(&self, listener: TcpListener) {
        self.accept(listener, false).await
    }

    /// Serves the connections `listener` accepts on the app's own port, which the agent holds
    /// while the app is replaced (see [`crate::takeover`]): each only while an intercept takes
    /// every connection. Any other is closed at once: the app's address is this listener.
    pub async fn serve_taken(&self, listener: TcpListener) {
        self.accept(listener, true).await
    }

    /// Accepts until dropped; with `only_taken`, closes a connection no intercept takes whole.
    async fn accept(&self, listener: TcpListener, only_taken: bool) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    if only_taken && !self.shared.routes.takes_every_connection() {
                        debug!(%peer, "Closed a connection to the app's port: no intercept takes it");
                        continue;
                    }
                    let shared = self.shared.clone();
                    tokio::spawn(async move {
                        shared
                            .connection(stream)
                            .instrument(debug_span!("connection", %peer))
                            .await
                    });
                }
                // Out of file descriptors, or the like: wait for connections to close.
                Err(error) => {
                    warn!(%error, "Accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Serves one connection until it closes.
    pub async fn serve_connection(&self, stream: TcpStream) {
        self.shared.clone().connection(stream).await
    }

    /// How many connections are being served now.
    pub fn active_connections(&self) -> usize {
        self.shared
            .active
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Counts a connection while it lives.
struct Active<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Active<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Shared {
    async fn connection(self: Arc<Self>, mut stream: TcpStream) {
        let _active = Active::new(&self.active);
        let _ = stream.set_nodelay(true);
        let mut first = BytesMut::with_capacity(1024);
        let protocol =
            match tokio::time::timeout(self.sniff_timeout, read_protocol(&mut stream, &mut first))
                .await
            {
                Ok(Ok(protocol)) => protocol,
                Ok(Err(error)) => {
                    debug!(%error, "Reading the first bytes failed");
                    return;
                }
                Err(_) => Protocol::Other,
            };
        let io = Prefixed::new(first.freeze(), stream);
        debug!(?protocol, "Connection sniffed");
        let kind = match protocol {
            Protocol::Http1 => Some(ConnectionKind::http1),
            Protocol::Http2 => Some(ConnectionKind::http2),
            Protocol::Other => Some(ConnectionKind::other),
            Protocol::Probe => None,
        };
        if let (Some(kind), Some(metrics)) = (kind, &self.metrics) {
            metrics.connection(self.app_port, kind);
        }
        let shared = self.clone();
        let service = hyper::service::service_fn(move |request| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(shared.request(request).await) }
        });
        let result = match protocol {
            Protocol::Http1 => http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades()
                .await
                .map_err(BoxError::from),
            Protocol::Http2 => http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(io), service)
                .await
                .map_err(BoxError::from),
            Protocol::Other => self.relay(io).await,
            Protocol::Probe => self.answer_probe(io).await,
        };
        if let Err(error) = result {
            debug!(error = %ErrorChain(&*error), "Connection ended with an error");
        }
    }

    /// Routes and forwards one request.
    ///
    /// The response goes back in the caller's HTTP version, whatever the upstream spoke: versions
    /// and connection persistence are per hop, so an HTTP/1.0 server on the laptop (which closes
    /// its own connection after each answer) never closes the caller's keep-alive connection.
    async fn request(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let version = request.version();
        let mut response = self.route(request).await;
        *response.version_mut() = version;
        response
    }

    async fn route(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let started = std::time::Instant::now();
        let (parts, body) = request.into_parts();
        let (picked, mirrors) = self.routes.pick(&parts);
        let body = mirror::tee(&parts, body, mirrors);
        let request = Request::from_parts(parts, body);
        let intercept = picked.as_ref().map(|(id, _)| id.0);
        let route = if picked.is_some() {
            MetricsRoute::laptop
        } else {
            MetricsRoute::app
        };
        let response = match picked {
            None => self.app.forward(request).await.unwrap_or_else(|error| {
                debug!(error = %ErrorChain(&error), "App did not answer");
                bad_gateway()
            }),
            Some((id, target)) => {
                let span = debug_span!("intercepted", intercept = %id);
                async move {
                    debug!(method = %request.method(), path = request.uri().path(), "Request");
                    target.send(request).await.unwrap_or_else(|error| {
                        debug!(error = %ErrorChain(&*error), "Intercept did not answer");
                        bad_gateway()
                    })
                }
                .instrument(span)
                .await
            }
        };
        let took = started.elapsed();
        self.tally.request(self.app_port, intercept, took);
        if let Some(metrics) = &self.metrics {
            metrics.routed(self.app_port, route, took.as_secs_f64());
        }
        response
    }

    /// Answers the daemon's probe: this pod, and the intercepts the port routes by now.
    async fn answer_probe(&self, mut io: Prefixed<TcpStream>) -> Result<(), BoxError> {
        use tokio::io::AsyncWriteExt;
        let reply = tether_proto::probe::ProbeReply {
            pod: self.identity.clone(),
            intercepts: self.routes.read().router.iter().map(|i| i.id.0).collect(),
        };
        debug!(intercepts = ?reply.intercepts, "Probed");
        io.write_all(reply.encode().as_bytes()).await?;
        io.shutdown().await?;
        Ok(())
    }

    /// Relays a non-HTTP connection as bytes.
    async fn relay(&self, mut io: Prefixed<TcpStream>) -> Result<(), BoxError> {
        let picked = self.routes.pick_connection();
        let route = if picked.is_some() {
            MetricsRoute::laptop
        } else {
            MetricsRoute::app
        };
        self.tally
            .connection(self.app_port, picked.as_ref().map(|(id, _)| id.0));
        if let Some(metrics) = &self.metrics {
            metrics.relayed(self.app_port, route);
        }
        match picked {
            None => {
                let mut app = self.app.connect().await?;
                tokio::io::copy_bidirectional(&mut io, &mut app).await?;
            }
            Some((id, target)) => {
                debug!(intercept = %id, "Relaying a connection");
                let mut remote = target.connect().await?;
                tokio::io::copy_bidirectional(&mut io, &mut remote).await?;
            }
        }
        Ok(())
    }
}

/// Reads until the protocol is known; a stream that ends first is not HTTP.
async fn read_protocol(stream: &mut TcpStream, first: &mut BytesMut) -> std::io::Result<Protocol> {
    loop {
        if let Sniff::Known(protocol) = sniff(first) {
            return Ok(protocol);
        }
        if stream.read_buf(first).await? == 0 {
            return Ok(Protocol::Other);
        }
    }
}

fn bad_gateway() -> Response<ProxyBody> {
    let body = Full::new(Bytes::from_static(b"tether: upstream unavailable\n"))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
