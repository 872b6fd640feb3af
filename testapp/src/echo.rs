//! The HTTP echo: HTTP/1.1 and cleartext HTTP/2 (prior knowledge) on one port.
//!
//! Every answer carries `x-served-by: <name>`. The paths:
//! - `/bytes?n=N`: N bytes of `x` (1 MiB by default), for throughput measurements.
//! - `/env`: the server's own environment, one `NAME=value` line per variable, sorted by name, so
//!   that a test can compare it with the environment an intercept hands to the developer.
//! - anything else: `hello from <name>` on the first line (tests match on it), then the request
//!   line, the peer and local addresses, and one `header NAME: VALUE` line per request header.

use std::{convert::Infallible, ffi::OsString, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Frame, header::HeaderValue, Request, Response};
use hyper_util::{rt::TokioExecutor, rt::TokioIo, server::conn::auto};
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections until accepting fails, each served on its own task.
pub async fn http_server(listener: TcpListener, name: Arc<str>) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(serve_connection(stream, peer, name.clone()));
    }
}

/// Serves one accepted connection (HTTP/1.1 or h2c, told apart by its first bytes) until the
/// client goes away.
pub async fn serve_connection(stream: TcpStream, peer: SocketAddr, name: Arc<str>) {
    let _ = stream.set_nodelay(true);
    let local = match stream.local_addr() {
        Ok(local) => local,
        // The socket is already gone: there is nobody to answer.
        Err(_) => return,
    };
    let svc = hyper::service::service_fn(move |req| respond(req, name.clone(), peer, local));
    // Errors of one connection (a reset, a malformed request) are the client's, not the server's.
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

type Body = BoxBody<Bytes, Infallible>;

async fn respond(
    req: Request<hyper::body::Incoming>,
    name: Arc<str>,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let body = match req.uri().path() {
        "/bytes" => {
            let n = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(1 << 20);
            bytes_body(n)
        }
        "/env" => text_body(env_text(std::env::vars_os())),
        // `/slow?ms=N`: the echo, after N ms (at most a minute): a request that is in flight
        // for as long as a test needs.
        "/slow" => {
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(1000)
                .min(60_000);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            text_body(echo_text(req, &name, peer, local).await)
        }
        _ => text_body(echo_text(req, &name, peer, local).await),
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        "x-served-by",
        HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("unknown")),
    );
    Ok(resp)
}

async fn echo_text(
    req: Request<hyper::body::Incoming>,
    name: &str,
    peer: SocketAddr,
    local: SocketAddr,
) -> String {
    let mut text = format!(
        "hello from {name}\n{} {} {:?}\npeer {peer}\nlocal {local}\n",
        req.method(),
        req.uri(),
        req.version()
    );
    for (k, v) in req.headers() {
        text.push_str(&format!(
            "header {k}: {}\n",
            String::from_utf8_lossy(v.as_bytes())
        ));
    }
    // Drain the request body so keep-alive connections stay usable.
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !body.is_empty() {
        text.push_str(&format!("body {} bytes\n", body.len()));
    }
    text
}

/// `NAME=value` lines sorted by name (then value); names and values that are not UTF-8 are
/// converted lossily.
pub fn env_text(vars: impl IntoIterator<Item = (OsString, OsString)>) -> String {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    vars.sort();
    vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

fn text_body(text: String) -> Body {
    Full::new(Bytes::from(text)).boxed()
}

/// A body of `n` bytes sent in 64 KiB chunks.
fn bytes_body(n: u64) -> Body {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = chunk_stream(n, chunk);
    BodyExt::boxed(StreamBody::new(stream))
}

fn chunk_stream(
    mut left: u64,
    chunk: Bytes,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures::stream::poll_fn(move |_| {
        if left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = left.min(chunk.len() as u64) as usize;
        left -= n as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(chunk.slice(..n)))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_are_sorted_by_name() {
        let vars = [("PATH", "/bin"), ("A_B", "x=y"), ("EMPTY", ""), ("A", "2")]
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        assert_eq!(env_text(vars), "A=2\nA_B=x=y\nEMPTY=\nPATH=/bin\n");
    }
}
