//! Servers, clients and a proxy on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tether_route::filter::{Filter, FilterSpec};
use tether_route::router::{AddError, Intercept, InterceptId, InterceptMode};
use tether_sidecar::proxy::{Proxy, ProxyConfig, SharedTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The request a test can hold: the server signals `arrived`, then waits for `release`.
#[derive(Debug, Default)]
pub struct Slow {
    pub arrived: Notify,
    pub release: Notify,
}

/// An HTTP/1.1 + h2c server answering `<name> <version> <path> x-session=<value or ->`, with
/// header `x-served-by: <name>`. `/slow` waits on [`Slow`]; `/upgrade` switches to an echo;
/// `/trailers` ends its body with trailer `grpc-status: 0`, as gRPC does.
pub struct HttpServer {
    pub addr: SocketAddr,
    pub slow: Arc<Slow>,
    connections: Arc<AtomicUsize>,
}

impl HttpServer {
    pub async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slow = Arc::new(Slow::default());
        let connections = Arc::new(AtomicUsize::new(0));
        let (slow2, connections2) = (slow.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                connections2.fetch_add(1, Ordering::Relaxed);
                let slow = slow2.clone();
                let service =
                    hyper::service::service_fn(move |req| answer(name, slow.clone(), req));
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            slow,
            connections,
        }
    }

    /// How many connections the server accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

async fn answer(
    name: &'static str,
    slow: Arc<Slow>,
    mut req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    match req.uri().path() {
        "/slow" => {
            slow.arrived.notify_one();
            slow.release.notified().await;
        }
        "/upgrade" => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = TokioIo::new(on_upgrade.await.unwrap());
                let mut buf = vec![0; 4096];
                loop {
                    let n = io.read(&mut buf).await.unwrap_or(0);
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            let mut response = Response::new(Full::default().boxed());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(header::CONNECTION, "upgrade".parse().unwrap());
            headers.insert(header::UPGRADE, "echo".parse().unwrap());
            return Ok(response);
        }
        "/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let frames = [Frame::data(Bytes::from(name)), Frame::trailers(trailers)];
            let body = StreamBody::new(futures::stream::iter(frames.map(Ok)));
            let mut response = Response::new(BodyExt::boxed(body));
            response
                .headers_mut()
                .insert("x-served-by", name.parse().unwrap());
            return Ok(response);
        }
        _ => {}
    }
    let session = req.headers().get("x-session").map_or("-".into(), |v| {
        String::from_utf8_lossy(v.as_bytes()).into_owned()
    });
    let text = format!(
        "{name} {:?} {} x-session={session}",
        req.version(),
        req.uri().path()
    );
    let mut response = Response::new(Full::new(Bytes::from(text)).boxed());
    response
        .headers_mut()
        .insert("x-served-by", name.parse().unwrap());
    Ok(response)
}

/// What a raw TCP server does with a connection.
#[derive(Debug, Clone, Copy)]
pub enum TcpKind {
    /// Echoes.
    Echo,
    /// Writes the tag, then echoes.
    Tagged(&'static str),
    /// Writes `hello\n` before reading anything (like SMTP or MySQL), then echoes.
    Greeter,
}

pub async fn tcp_server(kind: TcpKind) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let first: &[u8] = match kind {
                    TcpKind::Echo => b"",
                    TcpKind::Tagged(tag) => tag.as_bytes(),
                    TcpKind::Greeter => b"hello\n",
                };
                stream.write_all(first).await.unwrap();
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// The proxy under test, serving on loopback.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub proxy: Proxy,
}

pub async fn start_proxy(app: SocketAddr, sniff_timeout: Duration) -> TestProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = Proxy::new(ProxyConfig {
        app,
        sniff_timeout,
        identity: "test-pod".to_owned(),
        metrics: None,
        tally: Default::default(),
    });
    let serving = proxy.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    TestProxy { addr, proxy }
}

/// Adds an intercept with these header filters (none: global).
pub fn add(
    proxy: &TestProxy,
    id: u64,
    owner: &str,
    headers: &[&str],
    target: SharedTarget,
) -> Result<(), AddError> {
    add_with_mode(proxy, id, InterceptMode::Take, owner, headers, target)
}

/// Adds an intercept or mirror with these header filters (none: global).
pub fn add_with_mode(
    proxy: &TestProxy,
    id: u64,
    mode: InterceptMode,
    owner: &str,
    headers: &[&str],
    target: SharedTarget,
) -> Result<(), AddError> {
    let spec = FilterSpec {
        headers: headers.iter().map(|h| h.to_string()).collect(),
        path_prefix: None,
    };
    proxy.proxy.routes().add(Intercept {
        id: InterceptId(id),
        owner: owner.to_owned(),
        filter: Filter::try_from(spec).unwrap(),
        mode,
        target,
    })
}

/// One client connection.
#[derive(Clone)]
pub enum Client {
    Http1(Arc<tokio::sync::Mutex<http1::SendRequest<Empty<Bytes>>>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

/// One HTTP/1.1 keep-alive connection.
pub async fn h1_client(addr: SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    Client::Http1(Arc::new(tokio::sync::Mutex::new(sender)))
}

/// One HTTP/2 connection with prior knowledge.
pub async fn h2_client(addr: SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    Client::Http2(sender)
}

/// GETs `path`, with `x-session` if given; returns who answered (`x-served-by`, else the status
/// code) and the body.
pub async fn get(client: &mut Client, path: &str, session: Option<&str>) -> (String, String) {
    let mut builder = Request::get(match client {
        Client::Http1(_) => path.to_owned(),
        Client::Http2(_) => format!("http://sidecar.test{path}"),
    });
    if matches!(client, Client::Http1(_)) {
        builder = builder.header(header::HOST, "sidecar.test");
    }
    if let Some(session) = session {
        builder = builder.header("x-session", session);
    }
    let request = builder.body(Empty::new()).unwrap();
    let response = match client {
        Client::Http1(sender) => {
            let mut sender = sender.lock().await;
            sender.ready().await.unwrap();
            sender.send_request(request).await.unwrap()
        }
        Client::Http2(sender) => {
            sender.ready().await.unwrap();
            sender.send_request(request).await.unwrap()
        }
    };
    let who = response
        .headers()
        .get("x-served-by")
        .map_or(response.status().as_str().to_owned(), |v| {
            v.to_str().unwrap().to_owned()
        });
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (who, String::from_utf8(body.to_vec()).unwrap())
}

/// Upgrades an HTTP/1.1 connection through `addr` to the echo protocol and returns what
/// `payload` echoes as.
pub async fn upgrade_echo(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    let request = Request::get("/upgrade")
        .header(header::HOST, "sidecar.test")
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "echo")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut io = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    io.write_all(payload).await.unwrap();
    let mut back = vec![0; payload.len()];
    io.read_exact(&mut back).await.unwrap();
    back
}

/// GETs `/trailers` with `x-session` if given; returns who answered, the body and its
/// `grpc-status` trailer.
pub async fn get_trailers(
    client: &mut Client,
    session: Option<&str>,
) -> (String, String, Option<String>) {
    let Client::Http2(sender) = client else {
        panic!("trailers need HTTP/2");
    };
    let mut builder = Request::get("http://sidecar.test/trailers").header("te", "trailers");
    if let Some(session) = session {
        builder = builder.header("x-session", session);
    }
    sender.ready().await.unwrap();
    let response = sender
        .send_request(builder.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let who = response.headers()["x-served-by"]
        .to_str()
        .unwrap()
        .to_owned();
    let collected = response.into_body().collect().await.unwrap();
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned());
    let body = String::from_utf8(collected.to_bytes().to_vec()).unwrap();
    (who, body, status)
}
