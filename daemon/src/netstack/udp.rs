//! UDP through the stack: datagrams for any destination in, replies out.
//!
//! UDP needs no state in the stack: each datagram is handed over with its addresses, and a reply
//! is a packet built from scratch (from the original destination to the original source) and
//! written straight to the device.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tun_rs::AsyncDevice;

use super::packet::build_udp;
use super::NetStackError;

/// One datagram a client sent into the TUN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDatagram {
    /// The client's address.
    pub src: SocketAddr,
    /// The address the client sent to.
    pub dst: SocketAddr,
    /// The UDP payload.
    pub payload: Bytes,
}

/// Receives the datagrams the clients send, and sends replies.
#[derive(Debug)]
pub struct UdpSocket {
    pub(super) datagrams_rx: mpsc::Receiver<UdpDatagram>,
    pub(super) sender: UdpSender,
}

impl UdpSocket {
    /// The next datagram; `None` once the stack has stopped. Datagrams that arrive while the
    /// queue is full are dropped (and counted), as a kernel socket would.
    pub async fn recv(&mut self) -> Option<UdpDatagram> {
        self.datagrams_rx.recv().await
    }

    /// A handle to send replies from other tasks.
    pub fn sender(&self) -> UdpSender {
        self.sender.clone()
    }

    /// See [`UdpSender::send`].
    pub async fn send(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Result<(), NetStackError> {
        self.sender.send(from, to, payload).await
    }
}

/// Sends UDP datagrams into the TUN device. Cheap to clone.
#[derive(Clone)]
pub struct UdpSender {
    pub(super) device: Arc<AsyncDevice>,
    pub(super) mtu: usize,
}

impl std::fmt::Debug for UdpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSender")
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

impl UdpSender {
    /// Sends `payload` to the client `to`, appearing to come from `from` (the address the client
    /// sent its request to). Fails if the packet would not fit the MTU: the stack does not
    /// fragment.
    pub async fn send(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Result<(), NetStackError> {
        let mut packet = Vec::new();
        build_udp(from, to, payload, self.mtu, &mut packet)?;
        self.device
            .send(&packet)
            .await
            .map_err(NetStackError::Device)?;
        Ok(())
    }
}
