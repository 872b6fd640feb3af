//! Relaying a byte stream (a TCP connection, on either side) over one QUIC stream without a copy
//! of the relay's own.
//!
//! `tokio::io::copy_bidirectional` reads each side into a buffer of its own and writes that
//! buffer to the other side. Over QUIC both of those copies can go: quinn hands out the bytes it
//! received as `Bytes` chunks ([`RecvStream::read_chunk`]), and it keeps the `Bytes` it is given
//! to send ([`SendStream::write_chunk`]) instead of copying them into its send buffer. A bulk
//! download then crosses the manager with one copy in user space fewer (socket → QUIC) and the
//! daemon with one fewer (QUIC → the userspace TCP stack).
//!
//! The semantics are `copy_bidirectional`'s: a side that ends (EOF, or the QUIC stream finished)
//! is passed on as the other side's end (`finish`, or `shutdown`), the relay returns when both
//! directions are done, and the first error in either ends both and is returned.

use std::io;

use bytes::BytesMut;
use quinn::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Relays `stream` and the QUIC stream (`send`, `recv`) both ways; returns the bytes sent on
/// QUIC and received from it.
pub async fn relay<S>(
    stream: S,
    send: &mut SendStream,
    recv: &mut RecvStream,
    buffer: usize,
) -> io::Result<(u64, u64)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut from, mut to) = tokio::io::split(stream);
    tokio::try_join!(
        to_quic(&mut from, send, buffer),
        from_quic(recv, &mut to, buffer)
    )
}

/// Sends what `from` reads on `send` until `from` ends, then finishes `send`; returns the bytes.
///
/// Reads go into one allocation of `buffer` bytes until it is used up; each read's bytes are
/// handed to quinn as a slice of it, freed once quinn has them acknowledged.
pub async fn to_quic<R>(from: &mut R, send: &mut SendStream, buffer: usize) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
{
    let mut total = 0;
    let mut buf = BytesMut::new();
    loop {
        if buf.capacity() < buffer / 4 {
            buf.reserve(buffer);
        }
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            send.finish()
                .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e))?;
            return Ok(total);
        }
        total += n as u64;
        send.write_chunk(buf.split().freeze()).await?;
    }
}

/// Writes what `recv` receives to `to` until the QUIC stream is finished, then shuts `to`
/// down; returns the bytes. Chunks are at most `buffer` bytes.
pub async fn from_quic<W>(recv: &mut RecvStream, to: &mut W, buffer: usize) -> io::Result<u64>
where
    W: AsyncWrite + Unpin,
{
    let mut total = 0;
    while let Some(chunk) = recv.read_chunk(buffer, true).await? {
        total += chunk.bytes.len() as u64;
        to.write_all(&chunk.bytes).await?;
    }
    to.shutdown().await?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Identity, Role, SERVER_NAME};
    use std::net::Ipv4Addr;

    /// A tunnel connection over loopback, as the daemon and the manager make one:
    /// (client side, server side).
    async fn pair() -> (quinn::Connection, quinn::Connection) {
        let identity = Identity::generate().unwrap();
        let credential = identity.issue_client(Role::Agent, "default").unwrap();
        let server = crate::server((Ipv4Addr::LOCALHOST, 0).into(), &identity).unwrap();
        let addr = server.local_addr().unwrap();
        let client = crate::client_endpoint((Ipv4Addr::LOCALHOST, 0).into(), &credential).unwrap();
        let (a, b) = tokio::join!(
            async { client.connect(addr, SERVER_NAME).unwrap().await.unwrap() },
            async { server.accept().await.unwrap().await.unwrap() }
        );
        (a, b)
    }

    /// Bytes that show where each one was: byte i is i mod 251.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn both_ways_arrive_whole_in_order_and_each_end_is_passed_on() {
        let (client, server) = pair().await;
        let up = pattern(3 << 20);
        let down: Vec<u8> = pattern(5 << 20).into_iter().rev().collect();
        // The relay sits on the server side, between the QUIC stream and a duplex pipe that
        // stands for the TCP connection; the far end of the pipe sends `down` and reads.
        let (near, mut far) = tokio::io::duplex(64 << 10);
        let relayed = tokio::spawn({
            let server = server.clone();
            async move {
                let (mut send, mut recv) = server.accept_bi().await.unwrap();
                relay(near, &mut send, &mut recv, 64 << 10).await
            }
        });
        let (mut send, mut recv) = client.open_bi().await.unwrap();
        let expected_down = down.clone();
        let far_side = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(&mut far);
            let (read, ()) = tokio::join!(
                async {
                    let mut got = Vec::new();
                    r.read_to_end(&mut got).await.unwrap();
                    got
                },
                async {
                    w.write_all(&expected_down).await.unwrap();
                    w.shutdown().await.unwrap();
                }
            );
            read
        });
        let (sent, received) = tokio::join!(
            async {
                send.write_all(&up).await.unwrap();
                send.finish().unwrap();
            },
            async { recv.read_to_end(16 << 20).await.unwrap() }
        );
        let () = sent;
        assert!(received == down, "the download arrived changed");
        let at_far = far_side.await.unwrap();
        assert!(at_far == up, "the upload arrived changed");
        let (to_quic, from_quic) = relayed.await.unwrap().unwrap();
        assert_eq!((to_quic, from_quic), (down.len() as u64, up.len() as u64));
    }

    #[tokio::test]
    async fn a_reset_quic_stream_is_an_error() {
        let (client, server) = pair().await;
        let (near, _far) = tokio::io::duplex(64 << 10);
        let relayed = tokio::spawn(async move {
            let (mut send, mut recv) = server.accept_bi().await.unwrap();
            relay(near, &mut send, &mut recv, 64 << 10).await
        });
        let (mut send, _recv) = client.open_bi().await.unwrap();
        send.write_all(b"first bytes").await.unwrap();
        send.reset(7u32.into()).unwrap();
        let error = relayed.await.unwrap().expect_err("a reset is not an end");
        assert!(error.to_string().contains("reset"), "{error}");
    }
}
