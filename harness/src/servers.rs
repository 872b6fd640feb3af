//! The cluster's workloads and the developer's local process, as loopback servers: a TCP echo, a
//! UDP echo, an HTTP server that says who answered (and one that also records what it got), and
//! a server that accepts and never answers; and a one-request HTTP client.
//!
//! Each server binds a free port on the loopback address it is given (any of `127.0.0.0/8` on
//! Linux), so that each can be a Service with a ClusterIP of its own, and runs until dropped.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::{patiently, HarnessError};

/// The header naming the server that answered.
pub const SERVED_BY: &str = "x-served-by";

/// A server task and its address; the task ends when this is dropped.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP server that sends back whatever it receives, until the client closes.
pub async fn tcp_echo(ip: IpAddr) -> Result<Server, HarnessError> {
    let listener = TcpListener::bind((ip, 0))
        .await
        .map_err(HarnessError::io(format!("binding a TCP port on {ip}")))?;
    let addr = listener
        .local_addr()
        .map_err(HarnessError::io("reading the echo server's address"))?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    Ok(Server { addr, task })
}

/// A UDP server that sends every datagram back to its sender.
pub async fn udp_echo(ip: IpAddr) -> Result<Server, HarnessError> {
    let socket = UdpSocket::bind((ip, 0))
        .await
        .map_err(HarnessError::io(format!("binding a UDP port on {ip}")))?;
    let addr = socket
        .local_addr()
        .map_err(HarnessError::io("reading the echo server's address"))?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0; 65535];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..len], peer).await;
        }
    });
    Ok(Server { addr, task })
}

/// An HTTP/1.1 and h2c server answering every request with `200`, the body `<name> <path>` and
/// the header `x-served-by: <name>` ([`SERVED_BY`]).
pub async fn http(ip: IpAddr, name: &'static str) -> Result<Server, HarnessError> {
    http_recording(ip, name, Recorded::default()).await
}

/// What a recording server got: `<method> <path> <body>` per request, in the order they arrived.
#[derive(Debug, Clone, Default)]
pub struct Recorded(Arc<Mutex<Vec<String>>>);

impl Recorded {
    /// The requests so far.
    pub fn requests(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn push(&self, request: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
    }
}

/// [`http`], also writing each request it answers into `recorded`.
pub async fn http_recording(
    ip: IpAddr,
    name: &'static str,
    recorded: Recorded,
) -> Result<Server, HarnessError> {
    let listener = TcpListener::bind((ip, 0))
        .await
        .map_err(HarnessError::io(format!("binding a TCP port on {ip}")))?;
    let addr = listener
        .local_addr()
        .map_err(HarnessError::io("reading the HTTP server's address"))?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let recorded = recorded.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let recorded = recorded.clone();
                async move {
                    let path = request.uri().path().to_owned();
                    let method = request.method().clone();
                    let got = request.into_body().collect().await.map(|b| b.to_bytes());
                    let got = got.as_deref().map(String::from_utf8_lossy);
                    recorded.push(format!("{method} {path} {}", got.unwrap_or_default()));
                    let body = format!("{name} {path}");
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response
                        .headers_mut()
                        .insert(SERVED_BY, http::HeaderValue::from_static(name));
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Server { addr, task })
}

/// A TCP server that accepts every connection, reads what comes, and never answers (a laptop
/// server stopped in a debugger).
pub async fn silent(ip: IpAddr) -> Result<Server, HarnessError> {
    let listener = TcpListener::bind((ip, 0))
        .await
        .map_err(HarnessError::io(format!("binding a TCP port on {ip}")))?;
    let addr = listener
        .local_addr()
        .map_err(HarnessError::io("reading the silent server's address"))?;
    let task = tokio::spawn(async move {
        let mut held = tokio::task::JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            held.spawn(async move {
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink).await;
            });
        }
    });
    Ok(Server { addr, task })
}

/// A `GET path` with `headers` to `addr` over a new HTTP/1.1 connection: the status and the
/// body.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), HarnessError> {
    patiently(&format!("GET {path} from {addr}"), async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(HarnessError::io(format!("connecting to {addr}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        let connection = tokio::spawn(connection);
        let mut request = Request::get(path).header(http::header::HOST, addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| HarnessError::Http(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(http_error)?;
        connection.abort();
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    })
    .await?
}

fn http_error(error: hyper::Error) -> HarnessError {
    HarnessError::Http(tether_proto::error_chain(&error))
}

/// Writes `data` to a stream and reads until its end: what an echo sends back once the write
/// half is finished.
pub async fn round_trip<S>(stream: &mut S, data: &[u8]) -> Result<Vec<u8>, HarnessError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    patiently("an echo", async {
        stream
            .write_all(data)
            .await
            .map_err(HarnessError::io("writing to the echo"))?;
        stream
            .shutdown()
            .await
            .map_err(HarnessError::io("finishing the write half"))?;
        let mut back = Vec::new();
        stream
            .read_to_end(&mut back)
            .await
            .map_err(HarnessError::io("reading the echo"))?;
        Ok(back)
    })
    .await?
}
