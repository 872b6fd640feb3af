//! The async driver around [`answer`](super::answer): cluster names from the view, everything
//! else from the pod's upstream resolver.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tracing::{debug, Instrument};

use super::{answer, servfail, Outcome, HEADER_LEN};
use crate::resolv_conf::ResolvConf;
use crate::view::SharedView;

/// How long one upstream resolver gets to answer a forwarded query.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends queries that are not cluster names to the upstream resolvers and returns their answers
/// verbatim.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    /// Forwards to `upstreams`, tried in order, each given `timeout`.
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder { upstreams, timeout }
    }

    /// Forwards to the `nameserver`s of `conf` on port 53, with [`FORWARD_TIMEOUT`].
    pub fn from_resolv_conf(conf: &ResolvConf) -> Forwarder {
        let upstreams = conf
            .nameservers
            .iter()
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect();
        Forwarder::new(upstreams, FORWARD_TIMEOUT)
    }

    /// The upstream resolvers.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The first upstream's answer to `query`, or SERVFAIL if none answers in time. `None` only
    /// when `query` is not a DNS query at all.
    pub async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        if query.len() < HEADER_LEN {
            return None;
        }
        for upstream in &self.upstreams {
            match tokio::time::timeout(self.timeout, exchange_udp(*upstream, query)).await {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(error)) => debug!(%upstream, %error, "Upstream resolver failed"),
                Err(_) => debug!(%upstream, "Upstream resolver timed out"),
            }
        }
        servfail(query)
    }
}

/// One query over UDP, retried over TCP when the answer is truncated.
async fn exchange_udp(upstream: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buf).await?;
        let reply = &buf[..len];
        if !answers(reply, query) {
            // A late answer to an earlier query on a reused port, or garbage: keep waiting.
            continue;
        }
        if reply[2] & 0x02 != 0 {
            // TC: the full answer only fits a TCP exchange. Keep the truncated one if TCP fails.
            return Ok(exchange_tcp(upstream, query).await.unwrap_or_else(|error| {
                debug!(%upstream, %error, "TCP retry of a truncated answer failed");
                reply.to_vec()
            }));
        }
        return Ok(reply.to_vec());
    }
}

/// One query over TCP (RFC 1035 §4.2.2: each message prefixed with its u16 length).
async fn exchange_tcp(upstream: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    let mut stream = TcpStream::connect(upstream).await?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let mut len = [0; 2];
    stream.read_exact(&mut len).await?;
    let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await?;
    if !answers(&reply, query) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "TCP answer does not match the query",
        ));
    }
    Ok(reply)
}

/// Whether `reply` is a response with `query`'s id.
fn answers(reply: &[u8], query: &[u8]) -> bool {
    reply.len() >= HEADER_LEN && reply[..2] == query[..2] && reply[2] & 0x80 != 0
}

/// Resolves queries for connected clients: the seam between the tunnel's control stream and
/// [`answer`].
#[derive(Debug, Clone)]
pub struct Resolver {
    view: SharedView,
    forwarder: Forwarder,
}

impl Resolver {
    /// Answers from `view`, forwarding the rest with `forwarder`.
    pub fn new(view: SharedView, forwarder: Forwarder) -> Resolver {
        Resolver { view, forwarder }
    }

    /// The response to `query` for a client whose session works in `connected_namespace`, or
    /// `None` if there is nothing to send back (not a query).
    pub async fn resolve(&self, query: &[u8], connected_namespace: &str) -> Option<Vec<u8>> {
        let id = query
            .get(..2)
            .map_or(0, |id| u16::from_be_bytes([id[0], id[1]]));
        let span = tracing::debug_span!("dns", id, ns = connected_namespace);
        async {
            let outcome = answer(query, &self.view.read(), connected_namespace);
            match outcome {
                Outcome::Answer(response) => {
                    debug!("Answered from the cluster view");
                    Some(response)
                }
                Outcome::Forward => {
                    debug!("Forwarded upstream");
                    self.forwarder.forward(query).await
                }
                Outcome::Ignore => {
                    debug!("Ignored a packet that is not a query");
                    None
                }
            }
        }
        .instrument(span)
        .await
    }
}
