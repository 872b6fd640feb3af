//! `tether intercept … --to-pod PORT`: while the intercept lasts, `127.0.0.1:PORT` on this
//! machine reaches `PORT` of one of the intercepted pods (a sidecar's port, say), as the app's
//! own `localhost:PORT` does in the pod.
//!
//! Each accepted connection becomes one TCP flow through the current session, to `POD_IP:PORT`,
//! dialed by the traffic manager like any other flow (its dial policy applies). The listeners
//! are bound before the intercept is registered, so a port already in use refuses the intercept
//! before anything changes; they close when the intercept ends ([`ToPod`] aborts them on drop)
//! and with the daemon. TCP only.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tracing::{debug, info, warn, Instrument};

use crate::session::{self, SessionRx};

/// Why a `--to-pod` port cannot be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on 127.0.0.1:{port} for --to-pod {port}")]
pub struct BindError {
    pub port: u16,
    #[source]
    pub source: std::io::Error,
}

/// Bound `--to-pod` listeners, not yet forwarding.
#[derive(Debug)]
pub struct Bound(Vec<(u16, TcpListener)>);

/// Binds `127.0.0.1:PORT` for each of `ports`. All or none.
pub async fn bind(ports: &[u16]) -> Result<Bound, BindError> {
    let mut bound = Vec::new();
    for &port in ports {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|source| BindError { port, source })?;
        bound.push((port, listener));
    }
    Ok(Bound(bound))
}

/// Forwarding listeners; they stop when this is dropped (or [`ToPod::stop`]ped).
#[derive(Debug, Default)]
pub struct ToPod(Vec<JoinHandle<()>>);

impl ToPod {
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
    /// Starts forwarding each listener's connections to the same port of `pod`.
    pub fn forward(self, pod: Ipv4Addr, session_rx: SessionRx) -> ToPod {
        let tasks = self
            .0
            .into_iter()
            .map(|(port, listener)| {
                let dst = SocketAddr::from((pod, port));
                info!(port, %dst, "Forwarding to the pod");
                let span = tracing::info_span!("to_pod", port);
                tokio::spawn(serve(listener, dst, session_rx.clone()).instrument(span))
            })
            .collect();
        ToPod(tasks)
    }
}

/// Accepts connections until aborted.
async fn serve(listener: TcpListener, dst: SocketAddr, session_rx: SessionRx) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
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
            format!("cannot listen on 127.0.0.1:{taken_port} for --to-pod {taken_port}")
        );
        // All or none: the first port is free again.
        TcpListener::bind((Ipv4Addr::LOCALHOST, free_port))
            .await
            .expect("released");
    }

    #[tokio::test]
    async fn stopping_closes_the_port() {
        let bound = bind(&[0]).await.unwrap();
        let port = bound.0[0].1.local_addr().unwrap().port();
        let (_tx, session_rx) = tokio::sync::watch::channel(None);
        let to_pod = bound.forward(Ipv4Addr::new(10, 0, 0, 1), session_rx);
        to_pod.stop().await;
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .expect("127.0.0.1:PORT is free once stopped");
    }
}
