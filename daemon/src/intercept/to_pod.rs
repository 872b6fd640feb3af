//! `tether intercept … --to-pod PORT`: while the intercept lasts, `127.0.0.1:PORT` on this
//! machine reaches `PORT` of one of the intercepted pods (a sidecar's port, say), as the app's
//! own `localhost:PORT` does in the pod.
//!
//! TCP and UDP, as in the pod: each accepted connection becomes one TCP flow through the current
//! session, to `POD_IP:PORT`, and each local UDP peer (address and port) one UDP flow, whose
//! replies go back to that peer; a UDP flow ends after [`UDP_IDLE`] without a datagram out. Both
//! are dialed by the traffic manager like any other flow (its dial policy applies). The ports
//! are bound before the intercept is registered, so a port already in use (for either
//! protocol) refuses the intercept before anything changes; they close when the intercept ends
//! ([`ToPod`] aborts them on drop) and with the daemon.
//!
//! The pod is one of the workload's ready pods. When it goes away (a rollout, an eviction), the
//! next ready pod takes its place ([`follow`], every [`FOLLOW_PERIOD`]): new connections and new
//! UDP peers go there, and `tether status` names it.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::{api::ListParams, Api};
use tokio::{
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{debug, info, warn, Instrument};

use crate::session::{self, SessionRx};

/// How often the pod `--to-pod` reaches is checked, and replaced if it is gone.
pub const FOLLOW_PERIOD: Duration = Duration::from_secs(3);

/// The pod `--to-pod` reaches: name and IP.
pub type Target = (String, Ipv4Addr);

/// Where to find the workload's pods, to follow them.
#[derive(Clone)]
pub struct Pods {
    pub api: Api<Pod>,
    /// The workload's pod labels, as a label selector.
    pub selector: String,
}

impl std::fmt::Debug for Pods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pods")
            .field("selector", &self.selector)
            .finish()
    }
}

/// How long a UDP flow lasts without a datagram from its local peer.
pub const UDP_IDLE: Duration = Duration::from_secs(60);

/// Why a `--to-pod` port cannot be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on 127.0.0.1:{port} ({protocol}) for --to-pod {port}")]
pub struct BindError {
    pub port: u16,
    pub protocol: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Bound `--to-pod` ports, not yet forwarding.
#[derive(Debug)]
pub struct Bound(Vec<(u16, TcpListener, UdpSocket)>);

/// Binds `127.0.0.1:PORT`, TCP and UDP, for each of `ports`. All or none.
pub async fn bind(ports: &[u16]) -> Result<Bound, BindError> {
    let mut bound = Vec::new();
    for &port in ports {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|source| BindError {
                port,
                protocol: "TCP",
                source,
            })?;
        // Port 0 (tests): the UDP socket takes the port TCP was given.
        let port_taken = listener.local_addr().map(|a| a.port()).unwrap_or(port);
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, port_taken))
            .await
            .map_err(|source| BindError {
                port,
                protocol: "UDP",
                source,
            })?;
        bound.push((port_taken, listener, socket));
    }
    Ok(Bound(bound))
}

/// Forwarding listeners; they stop when this is dropped (or [`ToPod::stop`]ped).
#[derive(Debug)]
pub struct ToPod(Vec<JoinHandle<()>>, watch::Receiver<Target>);

impl ToPod {
    /// The pod reached now, as `NAME (IP)`.
    pub fn target(&self) -> String {
        let (name, ip) = &*self.1.borrow();
        format!("{name} ({ip})")
    }

    /// Stops listening, and returns once the ports are closed. Connections already forwarded
    /// finish where they are.
    pub async fn stop(mut self) {
        for task in std::mem::take(&mut self.0) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for ToPod {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Bound {
    /// Starts forwarding each listener's connections to the same port of `pod`, and of the
    /// next ready pod of `pods` when it goes away (`None`: always `pod`).
    pub fn forward(self, pod: Target, pods: Option<Pods>, session_rx: SessionRx) -> ToPod {
        let (tx, target) = watch::channel(pod);
        let mut tasks = Vec::new();
        if let Some(pods) = pods {
            tasks.push(tokio::spawn(follow(pods, tx)));
        }
        for (port, listener, socket) in self.0 {
            info!(port, pod = %target.borrow().0, "Forwarding to the pod (TCP and UDP)");
            let span = tracing::info_span!("to_pod", port);
            tasks.push(tokio::spawn(
                serve(listener, port, target.clone(), session_rx.clone()).instrument(span.clone()),
            ));
            tasks.push(tokio::spawn(
                serve_udp(socket, port, target.clone(), session_rx.clone()).instrument(span),
            ));
        }
        ToPod(tasks, target)
    }
}

/// The ready pods of `pods` with their IPs, by name.
async fn ready(pods: &Pods) -> Result<Vec<Target>, kube::Error> {
    let list = pods
        .api
        .list(&ListParams::default().labels(&pods.selector))
        .await?;
    let mut ready: Vec<Target> = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            Some((p.metadata.name?, ip))
        })
        .collect();
    ready.sort();
    Ok(ready)
}

/// Keeps `tx` on a ready pod: while the current one is ready it stays; when it is not, the first
/// ready pod by name takes its place (none ready: the last one stays, and connections to it fail
/// as they would in the pod).
async fn follow(pods: Pods, tx: watch::Sender<Target>) {
    loop {
        tokio::time::sleep(FOLLOW_PERIOD).await;
        let ready = match ready(&pods).await {
            Ok(ready) => ready,
            Err(error) => {
                debug!(%error, "Could not list the workload's pods for --to-pod");
                continue;
            }
        };
        let current = tx.borrow().clone();
        if ready.contains(&current) {
            continue;
        }
        if let Some(next) = ready.into_iter().next() {
            info!(from = %current.0, to = %next.0, ip = %next.1, "--to-pod follows the workload to another pod");
            let _ = tx.send(next);
        }
    }
}

/// The address `port` of the pod `target` names now.
fn dst(target: &watch::Receiver<Target>, port: u16) -> SocketAddr {
    SocketAddr::from((target.borrow().1, port))
}

/// Accepts connections until aborted.
async fn serve(
    listener: TcpListener,
    port: u16,
    target: watch::Receiver<Target>,
    session_rx: SessionRx,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let dst = dst(&target, port);
                let session_rx = session_rx.clone();
                tokio::spawn(async move {
                    if let Err(error) = relay(stream, dst, &session_rx).await {
                        debug!(%peer, %dst, %error, "To-pod connection failed");
                    }
                });
            }
            Err(error) => {
                warn!(%error, "Accepting a to-pod connection failed");
                // Out of file descriptors, say: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

type Peers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>>;

/// Receives local datagrams until aborted, each peer's to its own flow.
async fn serve_udp(
    socket: UdpSocket,
    port: u16,
    target: watch::Receiver<Target>,
    session_rx: SessionRx,
) {
    let socket = Arc::new(socket);
    let peers = Peers::default();
    let mut buf = vec![0u8; 65536];
    let mut flows = tokio::task::JoinSet::new();
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(error) => {
                debug!(%error, "Receiving a to-pod datagram failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let payload = Bytes::copy_from_slice(&buf[..n]);
        let existing = peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .cloned();
        let tx = match existing {
            Some(tx) => tx,
            None => {
                let (tx, rx) = mpsc::channel(256);
                peers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(peer, tx.clone());
                let (socket, peers, session_rx) =
                    (socket.clone(), peers.clone(), session_rx.clone());
                let dst = dst(&target, port);
                // Aborted with this task (the JoinSet), so a flow never outlives the intercept.
                flows.spawn(async move {
                    if let Err(error) = udp_relay(&socket, peer, dst, rx, &session_rx).await {
                        debug!(%peer, %dst, %error, "To-pod UDP flow failed");
                    }
                    peers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&peer);
                });
                tx
            }
        };
        // A peer sending faster than the flow carries loses datagrams, as UDP may.
        let _ = tx.try_send(payload);
        while flows.try_join_next().is_some() {}
    }
}

/// Carries one local peer's datagrams to `dst` and the replies back, until the peer is quiet
/// for [`UDP_IDLE`] or the flow ends.
async fn udp_relay(
    socket: &UdpSocket,
    peer: SocketAddr,
    dst: SocketAddr,
    mut rx: mpsc::Receiver<Bytes>,
    session_rx: &SessionRx,
) -> Result<(), session::SessionError> {
    let session = session::current(session_rx)
        .await
        .ok_or(session::SessionError::TimedOut)?;
    let flow = session.open_udp(dst).await?;
    loop {
        tokio::select! {
            out = tokio::time::timeout(UDP_IDLE, rx.recv()) => match out {
                Ok(Some(payload)) => flow.send(&payload).await?,
                _ => return Ok(()),
            },
            reply = flow.recv() => match reply {
                Some(payload) => {
                    let _ = socket.send_to(&payload, peer).await;
                }
                None => return Ok(()),
            },
        }
    }
}

/// Splices one local connection with a flow to `dst`. A failed dial closes the local connection.
async fn relay(
    mut stream: TcpStream,
    dst: SocketAddr,
    session_rx: &SessionRx,
) -> Result<(), session::SessionError> {
    let session = session::current(session_rx)
        .await
        .ok_or(session::SessionError::TimedOut)?;
    let (send, recv) = session.open_tcp(dst).await?;
    let _ = stream.set_nodelay(true);
    let mut quic = tokio::io::join(recv, send);
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut quic).await;
    let (_, mut send) = quic.into_inner();
    let _ = send.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_in_use_is_refused_and_the_others_are_released() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let free_port = free.local_addr().unwrap().port();
        drop(free);
        let err = bind(&[free_port, taken_port]).await.unwrap_err();
        assert_eq!(err.port, taken_port);
        assert_eq!(
            err.to_string(),
            format!("cannot listen on 127.0.0.1:{taken_port} (TCP) for --to-pod {taken_port}")
        );
        // UDP counts too: a port whose UDP side is taken is refused.
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, udp_port))
            .await
            .is_ok()
        {
            let err = bind(&[udp_port]).await.unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("cannot listen on 127.0.0.1:{udp_port} (UDP) for --to-pod {udp_port}")
            );
        }
        // All or none: the first port is free again.
        TcpListener::bind((Ipv4Addr::LOCALHOST, free_port))
            .await
            .expect("released");
    }

    #[tokio::test]
    async fn stopping_closes_the_port() {
        let bound = bind(&[0]).await.unwrap();
        let port = bound.0[0].0;
        let (_tx, session_rx) = tokio::sync::watch::channel(None);
        let to_pod = bound.forward(
            ("pod-1".into(), Ipv4Addr::new(10, 0, 0, 1)),
            None,
            session_rx,
        );
        assert_eq!(to_pod.target(), "pod-1 (10.0.0.1)");
        to_pod.stop().await;
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .expect("127.0.0.1:PORT is free once stopped");
        UdpSocket::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .expect("and its UDP side");
    }
}
