//! The one exchange with upstream resolvers, for the manager and the workstation alike: the
//! query over UDP; a reply counts only if it is a response with the query's id (a late answer
//! to an earlier query on a reused port is skipped); a truncated reply is asked again over TCP.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tracing::debug;

use crate::HEADER_LEN;

/// Resolvers to forward to, tried in order, each given the same time to answer.
#[derive(Debug, Clone)]
pub struct Upstreams {
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// There is no resolver to ask.
    #[error("no upstream resolver configured")]
    NoServers,
    /// The query is not a DNS message (shorter than a header).
    #[error("not a DNS query")]
    NotAQuery,
    /// Every resolver failed or timed out; the last one's failure.
    #[error("no upstream resolver answered (last: {server})")]
    NoAnswer {
        /// The last resolver asked.
        server: SocketAddr,
        /// What went wrong with it.
        #[source]
        source: io::Error,
    },
}

impl Upstreams {
    /// Forwards to `servers`, each given `timeout` (for the UDP exchange and a TCP retry alike).
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Upstreams {
        Upstreams { servers, timeout }
    }

    /// The resolvers.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The first answer to `query` (a whole DNS message), from the first resolver that gives
    /// one in time. The reply is the full answer where TCP could fetch it; if only the TC reply
    /// came, that one (the caller sees its TC flag).
    pub async fn exchange(&self, query: &[u8]) -> Result<Vec<u8>, UpstreamError> {
        if query.len() < HEADER_LEN {
            return Err(UpstreamError::NotAQuery);
        }
        let mut last = Err(UpstreamError::NoServers);
        for &server in &self.servers {
            let source = match tokio::time::timeout(self.timeout, udp(server, query)).await {
                Ok(Ok(reply)) if is_truncated(&reply) => {
                    return Ok(self.tcp_or(server, query, reply).await)
                }
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(error)) => error,
                Err(_) => io::Error::new(io::ErrorKind::TimedOut, "no answer in time"),
            };
            debug!(%server, error = %source, "Upstream resolver failed");
            last = Err(UpstreamError::NoAnswer { server, source });
        }
        last
    }

    /// The answer over TCP, else the truncated `reply` already in hand.
    async fn tcp_or(&self, server: SocketAddr, query: &[u8], reply: Vec<u8>) -> Vec<u8> {
        match tokio::time::timeout(self.timeout, tcp(server, query)).await {
            Ok(Ok(full)) => full,
            Ok(Err(error)) => {
                debug!(%server, %error, "TCP retry of a truncated answer failed");
                reply
            }
            Err(_) => {
                debug!(%server, "TCP retry of a truncated answer timed out");
                reply
            }
        }
    }
}

/// One query over UDP, waiting for the reply that answers it.
async fn udp(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buf).await?;
        if answers(&buf[..len], query) {
            buf.truncate(len);
            return Ok(buf);
        }
        // A late answer to an earlier query on a reused port, or garbage: keep waiting.
    }
}

/// One query over TCP (RFC 1035 §4.2.2: each message prefixed with its u16 length).
async fn tcp(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    let mut stream = TcpStream::connect(server).await?;
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

/// Whether a response has TC set.
fn is_truncated(reply: &[u8]) -> bool {
    reply[2] & 0x02 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver on loopback that answers UDP queries with `udp_reply(query)` and TCP ones
    /// with `tcp_reply(query)` (a length-prefixed exchange).
    async fn resolver(
        udp_reply: fn(&[u8]) -> Vec<Vec<u8>>,
        tcp_reply: fn(&[u8]) -> Vec<u8>,
    ) -> SocketAddr {
        // The same port for both; a TCP port taken by someone else means another try.
        let (udp, tcp, addr) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
                break (udp, tcp, addr);
            }
        };
        tokio::spawn(async move {
            let mut buf = [0; 512];
            while let Ok((len, from)) = udp.recv_from(&mut buf).await {
                for reply in udp_reply(&buf[..len]) {
                    udp.send_to(&reply, from).await.unwrap();
                }
            }
        });
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let mut len = [0; 2];
                stream.read_exact(&mut len).await.unwrap();
                let mut query = vec![0; usize::from(u16::from_be_bytes(len))];
                stream.read_exact(&mut query).await.unwrap();
                let reply = tcp_reply(&query);
                let len = u16::try_from(reply.len()).unwrap().to_be_bytes();
                stream.write_all(&len).await.unwrap();
                stream.write_all(&reply).await.unwrap();
            }
        });
        addr
    }

    /// `query` turned into a response (QR set), with `flags` or'ed into the third byte and a
    /// marker byte appended so the test can tell replies apart.
    fn response(query: &[u8], flags: u8, marker: u8) -> Vec<u8> {
        let mut reply = query.to_vec();
        reply[2] |= 0x80 | flags;
        reply.push(marker);
        reply
    }

    const QUERY: [u8; 12] = [0xbe, 0xef, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    #[tokio::test]
    async fn skips_replies_with_another_id_and_retries_truncated_ones_over_tcp() {
        let server = resolver(
            |q| {
                let mut stale = response(q, 0, 1);
                stale[1] ^= 0xff;
                vec![stale, response(q, 0x02, 2)]
            },
            |q| response(q, 0, 3),
        )
        .await;
        let upstreams = Upstreams::new(vec![server], Duration::from_secs(2));
        let reply = upstreams.exchange(&QUERY).await.unwrap();
        assert_eq!(&reply[..2], &QUERY[..2]);
        assert_eq!(reply.last(), Some(&3), "the full answer came over TCP");
    }

    #[tokio::test]
    async fn tries_the_next_resolver_and_says_why_none_answered() {
        let silent = resolver(|_| Vec::new(), |q| q.to_vec()).await;
        let good = resolver(|q| vec![response(q, 0, 7)], |q| q.to_vec()).await;
        let upstreams = Upstreams::new(vec![silent, good], Duration::from_millis(200));
        assert_eq!(upstreams.exchange(&QUERY).await.unwrap().last(), Some(&7));
        let only_silent = Upstreams::new(vec![silent], Duration::from_millis(100));
        assert!(matches!(
            only_silent.exchange(&QUERY).await,
            Err(UpstreamError::NoAnswer { server, .. }) if server == silent
        ));
        assert!(matches!(
            Upstreams::new(vec![], Duration::from_millis(100))
                .exchange(&QUERY)
                .await,
            Err(UpstreamError::NoServers)
        ));
        assert!(matches!(
            upstreams.exchange(&QUERY[..5]).await,
            Err(UpstreamError::NotAQuery)
        ));
    }
}
