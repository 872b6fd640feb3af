//! The driver task: reads packets from the TUN device in batches, feeds them to the core, and
//! writes out what the core produced. Thin glue; the decisions live in `core`.

use std::future::pending;
use std::io::ErrorKind;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tun_rs::AsyncDevice;

use super::core::{FlowKey, Ingress};
use super::{NetStackError, Shared, TcpRequest, UdpDatagram};

/// Packets read per batch before the core is polled once.
const RX_BATCH: usize = 32;

pub(super) async fn run(
    device: Arc<AsyncDevice>,
    shared: Arc<Shared>,
    requests_tx: mpsc::Sender<TcpRequest>,
    datagrams_tx: mpsc::Sender<UdpDatagram>,
    mtu: usize,
) -> Result<(), NetStackError> {
    let result = pump(&device, &shared, &requests_tx, &datagrams_tx, mtu).await;
    if let Err(e) = &result {
        tracing::warn!(error = %e, "Network stack stopped");
    }
    shared.lock().abort_all();
    result
}

async fn pump(
    device: &AsyncDevice,
    shared: &Arc<Shared>,
    requests_tx: &mpsc::Sender<TcpRequest>,
    datagrams_tx: &mpsc::Sender<UdpDatagram>,
    mtu: usize,
) -> Result<(), NetStackError> {
    let mut rx_bufs: Vec<Vec<u8>> = (0..RX_BATCH).map(|_| vec![0; mtu]).collect();
    let mut rx_lens = [0usize; RX_BATCH];
    let mut written: Vec<Vec<u8>> = Vec::new();
    let mut requests: Vec<FlowKey> = Vec::new();
    let mut datagrams: Vec<UdpDatagram> = Vec::new();
    let mut delay: Option<std::time::Duration> = None;
    let both_closed = async {
        requests_tx.closed().await;
        datagrams_tx.closed().await;
    };
    tokio::pin!(both_closed);

    loop {
        let timer = async {
            match delay {
                Some(d) => tokio::time::sleep(d).await,
                None => pending().await,
            }
        };
        tokio::select! {
            ready = device.readable() => ready.map_err(NetStackError::Device)?,
            () = shared.poll_needed.notified() => {}
            () = timer => {}
            () = &mut both_closed => return Ok(()),
        }

        // Read a batch without holding the lock, so streams keep moving meanwhile.
        let mut count = 0;
        while count < RX_BATCH {
            match device.try_recv(&mut rx_bufs[count]) {
                Ok(len) => {
                    rx_lens[count] = len;
                    count += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(NetStackError::Device(e)),
            }
        }

        {
            let mut core = shared.lock();
            let now = shared.now();
            for (buf, &len) in rx_bufs.iter().zip(&rx_lens).take(count) {
                match core.ingest(now, &buf[..len]) {
                    Ingress::None => {}
                    Ingress::TcpRequest(key) => requests.push(key),
                    Ingress::Udp { src, dst, payload } => datagrams.push(UdpDatagram {
                        src,
                        dst,
                        payload: Bytes::copy_from_slice(payload),
                    }),
                }
            }
            core.poll(now);
            core.take_tx(&mut written);
            delay = core.poll_delay(now).map(Into::into);
        }

        for key in requests.drain(..) {
            tracing::debug!(src = %key.0, dst = %key.1, "TCP connection request");
            // A full backlog drops the request, and dropping it refuses it.
            let _ = requests_tx.try_send(TcpRequest::new(shared.clone(), key));
        }
        let mut udp_dropped = 0;
        for datagram in datagrams.drain(..) {
            if datagrams_tx.try_send(datagram).is_err() {
                udp_dropped += 1;
            }
        }
        for packet in &written {
            device.send(packet).await.map_err(NetStackError::Device)?;
        }
        if !written.is_empty() || udp_dropped > 0 {
            let mut core = shared.lock();
            core.recycle(&mut written);
            core.counters.udp_dropped += udp_dropped;
        }
    }
}
