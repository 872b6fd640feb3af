//! A test manager (echo and sink server) and clients that reach it directly or through the
//! stream carrier.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use tether_tunnel::quinn;
use tether_tunnel::{
    client_config, client_endpoint, serve_relay, server, server_config, transport_config,
    ClientCredential, Congestion, Identity, Peer, Role, StreamCarrier, SERVER_NAME,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};

/// Upper bound for anything a test waits for, so a broken tunnel fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// First byte of a stream to the test manager: echo the rest back.
pub const ECHO: u8 = b'e';
/// First byte of a stream to the test manager: count the rest, answer the count (u64 BE).
pub const SINK: u8 = b's';

/// Fails the test if `future` takes longer than [`PATIENCE`].
pub async fn patiently<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("gave up waiting")
}

/// How the client reaches the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Straight to the manager's UDP port.
    Udp,
    /// Through `StreamCarrier` ⇄ TCP ⇄ `serve_relay`.
    Carrier,
}

/// A QUIC server like the manager, but serving echo/sink streams and echoing datagrams.
pub struct Manager {
    pub identity: Identity,
    pub addr: SocketAddr,
    /// Transport of both ends.
    transport: Arc<quinn::TransportConfig>,
    /// The peer of every accepted connection, as the server saw it.
    pub peers: mpsc::UnboundedReceiver<Option<Peer>>,
    _endpoint: quinn::Endpoint,
    accept: JoinHandle<()>,
    /// Relays and carriers started for `Via::Carrier` clients.
    carriers: Vec<AbortHandle>,
}

impl Manager {
    pub fn start() -> Manager {
        Manager::with_transport(transport_config(Congestion::default()))
    }

    /// A manager whose clients and itself use `transport`.
    pub fn with_transport(transport: quinn::TransportConfig) -> Manager {
        Manager::with(transport, Identity::generate().unwrap())
    }

    /// A manager with this identity (e.g. one that took up another manager's CA).
    pub fn with_identity(identity: Identity) -> Manager {
        Manager::with(transport_config(Congestion::default()), identity)
    }

    fn with(transport: quinn::TransportConfig, identity: Identity) -> Manager {
        let transport = Arc::new(transport);
        let mut config = server_config(&identity).unwrap();
        config.transport_config(transport.clone());
        let endpoint = server((Ipv4Addr::LOCALHOST, 0).into(), &identity).unwrap();
        endpoint.set_server_config(Some(config));
        let addr = endpoint.local_addr().unwrap();
        let (peers_tx, peers) = mpsc::unbounded_channel();
        let accept = tokio::spawn(accept_loop(endpoint.clone(), peers_tx));
        Manager {
            identity,
            addr,
            transport,
            peers,
            _endpoint: endpoint,
            accept,
            carriers: Vec::new(),
        }
    }

    pub fn credential(&self, role: Role) -> ClientCredential {
        self.identity.issue_client(role, "test-client").unwrap()
    }

    /// Connects a client holding a fresh `Client` credential.
    pub async fn connect(&mut self, via: Via) -> anyhow::Result<quinn::Connection> {
        let config = client_config(&self.credential(Role::Client)).unwrap();
        self.connect_with(via, config).await
    }

    /// Connects with the given client configuration (its transport is replaced by the
    /// manager's tuning).
    pub async fn connect_with(
        &mut self,
        via: Via,
        mut config: quinn::ClientConfig,
    ) -> anyhow::Result<quinn::Connection> {
        config.transport_config(self.transport.clone());
        let target = match via {
            Via::Udp => self.addr,
            Via::Carrier => self.carrier().await,
        };
        // The endpoint's own client configuration is not used: `config` replaces it.
        let credential = self.credential(Role::Client);
        let endpoint = client_endpoint((Ipv4Addr::LOCALHOST, 0).into(), &credential)?;
        let connecting = endpoint.connect_with(config, target, SERVER_NAME)?;
        Ok(patiently(connecting).await?)
    }

    /// Starts a relay in front of the manager and a carrier over a TCP connection to it;
    /// returns the carrier's UDP address.
    async fn carrier(&mut self) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let relay_addr = listener.local_addr().unwrap();
        let relay = tokio::spawn(serve_relay(listener, self.addr));
        self.carriers.push(relay.abort_handle());
        let stream = TcpStream::connect(relay_addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (addr, carrier) = StreamCarrier::spawn(stream).unwrap();
        self.carriers.push(carrier.abort_handle());
        addr
    }

    /// Stops every relay and carrier: the manager lives on but its clients' paths are gone,
    /// with no chance to send a close.
    pub fn cut_carriers(&mut self) {
        for carrier in self.carriers.drain(..) {
            carrier.abort();
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.cut_carriers();
        self.accept.abort();
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, peers_tx: mpsc::UnboundedSender<Option<Peer>>) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(connection) = incoming.await else {
            continue;
        };
        let _ = peers_tx.send(tether_tunnel::peer_identity(&connection));
        tokio::spawn(echo_datagrams(connection.clone()));
        tokio::spawn(serve_streams(connection));
    }
}

async fn echo_datagrams(connection: quinn::Connection) {
    while let Ok(datagram) = connection.read_datagram().await {
        if connection.send_datagram(datagram).is_err() {
            return;
        }
    }
}

async fn serve_streams(connection: quinn::Connection) {
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        tokio::spawn(async move {
            let mut command = [0];
            recv.read_exact(&mut command).await?;
            match command[0] {
                ECHO => {
                    tokio::io::copy(&mut recv, &mut send).await?;
                }
                SINK => {
                    let mut count = 0u64;
                    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
                        count += chunk.bytes.len() as u64;
                    }
                    send.write_all(&count.to_be_bytes()).await?;
                }
                _ => anyhow::bail!("unknown command"),
            }
            send.finish()?;
            anyhow::Ok(())
        });
    }
}

/// Sends `payload` on an echo stream and checks that it comes back whole.
pub async fn echo(connection: &quinn::Connection, payload: &[u8]) -> anyhow::Result<()> {
    let (mut send, mut recv) = connection.open_bi().await?;
    let write = async {
        send.write_all(&[ECHO]).await?;
        send.write_all(payload).await?;
        send.finish()?;
        anyhow::Ok(())
    };
    let read = async { Ok(recv.read_to_end(payload.len() + 1).await?) };
    let ((), echoed) = patiently(async { tokio::try_join!(write, read) }).await?;
    ensure!(
        echoed == payload,
        "echo differs: {} bytes back",
        echoed.len()
    );
    Ok(())
}

/// Sends `total` bytes on a sink stream; returns the count the manager confirmed.
pub async fn sink(connection: &quinn::Connection, total: usize) -> anyhow::Result<u64> {
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(&[SINK]).await?;
    let chunk = bytes::Bytes::from(vec![0x5a; 1 << 20]);
    let mut sent = 0;
    while sent < total {
        let len = chunk.len().min(total - sent);
        send.write_chunk(chunk.slice(..len)).await?;
        sent += len;
    }
    send.finish()?;
    let answer = recv.read_to_end(8).await?;
    let count = u64::from_be_bytes(answer.try_into().ok().context("short answer")?);
    Ok(count)
}

/// A deterministic, non-repeating payload.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}
