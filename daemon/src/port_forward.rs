//! A port-forward to one port of a pod, as a byte stream: the API server's WebSocket
//! port-forward protocol (`portforward.k8s.io`), spoken here rather than through kube's
//! `Portforwarder`.
//!
//! Why not kube's: it reads the local side through a `ReaderStream` of 4 KiB and sends each read
//! as its own WebSocket message, flushed on its own. The port-forward carrier's uploads (QUIC
//! packets from this machine, in bursts of tens of kilobytes) became one message per 4 KiB, each
//! costing the API server and the kubelet a round of their own; uploads ran at 0.29× `kubectl
//! port-forward`'s. Here a message carries whatever the local side has written, up to
//! [`MESSAGE`] bytes.
//!
//! The protocol: every binary message starts with a channel byte; for the one port forwarded,
//! channel 0 carries data both ways and channel 1 errors from the server. The first message the
//! server sends on each channel is the port number (2 bytes, little-endian), not data.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, warn};

/// The most bytes one WebSocket message to the server carries.
pub const MESSAGE: usize = 64 * 1024;
/// The local stream's buffer, each way.
const DUPLEX: usize = 1024 * 1024;
/// The data channel of the one port forwarded.
const DATA: u8 = 0;
/// Its error channel.
const ERROR: u8 = 1;

/// Why a port-forward ended other than by either side closing.
#[derive(Debug, thiserror::Error)]
pub enum PortForwardError {
    #[error("the WebSocket to the API server failed")]
    WebSocket(#[from] tungstenite::Error),
    #[error("the local side of the port-forward failed")]
    Local(#[from] std::io::Error),
    /// The server's first message on a channel was not the port forwarded.
    #[error("the API server named port {got:?} where {expected} was forwarded")]
    WrongPort { expected: u16, got: Vec<u8> },
    /// What the kubelet said went wrong (the pod has nothing on the port, say).
    #[error("the port-forward failed: {0}")]
    Remote(String),
}

/// Opens a port-forward to `port` of pod `pod` in `namespace` and returns its byte stream; a
/// task relays it until either side ends.
pub async fn open(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
) -> Result<DuplexStream, kube::Error> {
    let request = kube::core::Request::new(Pod::url_path(&(), Some(namespace)))
        .portforward(pod, &[port])
        .map_err(kube::Error::BuildRequest)?;
    let ws = client.connect(request).await?.into_stream();
    let (ours, theirs) = tokio::io::duplex(DUPLEX);
    let pod = pod.to_owned();
    tokio::spawn(async move {
        match relay(ws, theirs, port).await {
            Ok(()) => debug!(pod, port, "Port-forward ended"),
            Err(error) => {
                warn!(pod, port, error = %tether_proto::ErrorChain(&error), "Port-forward failed")
            }
        }
    });
    Ok(ours)
}

/// Relays between the WebSocket `ws` and the local stream `local` until either ends.
pub async fn relay<S, L>(
    ws: WebSocketStream<S>,
    local: L,
    port: u16,
) -> Result<(), PortForwardError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    L: AsyncRead + AsyncWrite,
{
    let (mut sink, mut stream) = ws.split();
    let (mut read, mut write) = tokio::io::split(local);
    let upload = async {
        loop {
            let mut buf = vec![0; 1 + MESSAGE];
            buf[0] = DATA;
            let n = read.read(&mut buf[1..]).await?;
            if n == 0 {
                break;
            }
            buf.truncate(1 + n);
            sink.send(Message::binary(Bytes::from(buf))).await?;
        }
        sink.close().await?;
        Ok::<_, PortForwardError>(())
    };
    let download = async {
        let (mut data_named, mut error_named) = (false, false);
        while let Some(message) = stream.next().await {
            let Message::Binary(bytes) = message? else {
                // Pings are answered by the WebSocket itself; a Close ends the stream.
                continue;
            };
            let Some((&channel, payload)) = bytes.split_first() else {
                continue;
            };
            match channel {
                DATA if !data_named => {
                    data_named = true;
                    check_port(payload, port)?;
                }
                DATA => write.write_all(payload).await?,
                ERROR if !error_named => {
                    error_named = true;
                    check_port(payload, port)?;
                }
                ERROR if !payload.is_empty() => {
                    return Err(PortForwardError::Remote(
                        String::from_utf8_lossy(payload).into_owned(),
                    ))
                }
                _ => {}
            }
        }
        write.shutdown().await?;
        Ok(())
    };
    // Either direction ending ends the relay: the carrier above has no use for half of it.
    tokio::select! {
        result = upload => result,
        result = download => result,
    }
}

fn check_port(payload: &[u8], port: u16) -> Result<(), PortForwardError> {
    if payload == port.to_le_bytes() {
        Ok(())
    } else {
        Err(PortForwardError::WrongPort {
            expected: port,
            got: payload.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// The API server's end of a port-forward, in this process.
    async fn server(io: DuplexStream) -> WebSocketStream<DuplexStream> {
        WebSocketStream::from_raw_socket(io, Role::Server, None).await
    }

    async fn client(io: DuplexStream) -> WebSocketStream<DuplexStream> {
        WebSocketStream::from_raw_socket(io, Role::Client, None).await
    }

    /// A relay of port 7000 with the server's end, after the server named `named` on both
    /// channels (on the data channel only when that is not 7000); the relay's local end.
    async fn started(
        named: u16,
    ) -> (
        tokio::task::JoinHandle<Result<(), PortForwardError>>,
        WebSocketStream<DuplexStream>,
        DuplexStream,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (local, theirs) = tokio::io::duplex(1 << 20);
        let relay = tokio::spawn(async move { relay(client(a).await, theirs, 7000).await });
        let mut server = server(b).await;
        server.send(on(DATA, &named.to_le_bytes())).await.unwrap();
        if named == 7000 {
            server.send(on(ERROR, &named.to_le_bytes())).await.unwrap();
        }
        (relay, server, local)
    }

    fn on(channel: u8, data: &[u8]) -> Message {
        let mut bytes = vec![channel];
        bytes.extend_from_slice(data);
        Message::binary(bytes)
    }

    #[tokio::test]
    async fn data_flows_both_ways_in_large_messages_after_the_port_headers() {
        let (relay, mut server, mut local) = started(7000).await;
        server.send(on(DATA, b"from the pod")).await.unwrap();
        let mut got = [0; 12];
        local.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"from the pod");

        // 200 KiB written at once leaves in messages of up to MESSAGE bytes, not 4 KiB ones.
        let upload: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
        local.write_all(&upload).await.unwrap();
        let mut received = Vec::new();
        let mut messages = 0;
        while received.len() < upload.len() {
            let Some(Ok(Message::Binary(bytes))) = server.next().await else {
                panic!("a binary message");
            };
            assert_eq!(bytes[0], DATA);
            assert!(bytes.len() <= 1 + MESSAGE);
            received.extend_from_slice(&bytes[1..]);
            messages += 1;
        }
        assert_eq!(received, upload);
        assert!(messages <= 8, "{messages} messages for 200 KiB");

        // The local side closing ends the relay, and the WebSocket with it.
        drop(local);
        relay.await.unwrap().unwrap();
        assert!(matches!(
            server.next().await,
            Some(Ok(Message::Close(_))) | None
        ));
    }

    #[tokio::test]
    async fn an_error_from_the_kubelet_ends_the_relay_with_its_words() {
        let (relay, mut server, _local) = started(7000).await;
        server
            .send(on(ERROR, b"connection refused on port 7000"))
            .await
            .unwrap();
        let error = relay.await.unwrap().unwrap_err();
        assert_eq!(
            error.to_string(),
            "the port-forward failed: connection refused on port 7000"
        );
    }

    #[tokio::test]
    async fn another_port_in_the_header_is_refused() {
        let (relay, _server, _local) = started(7001).await;
        assert!(matches!(
            relay.await.unwrap(),
            Err(PortForwardError::WrongPort { expected: 7000, .. })
        ));
    }
}
