//! The two copy loops of a relay: UDP packets to stream frames, and back.
//!
//! Per-packet system calls are what a relay spends its time on, so both loops batch:
//! * UDP to stream: quinn-udp receives several datagrams per call (`recvmmsg`) and, with GRO,
//!   a burst of equal-sized packets as one buffer. Frames go through a write buffer that is
//!   flushed once the socket has nothing more queued, so a burst becomes one stream write.
//! * Stream to UDP: frames already in the read buffer whose packets have the same size (the
//!   last may be shorter) leave in one GSO send.
//!
//! Buffers are allocated once per relay and reused.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::{
    AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
    Interest,
};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, trace};

use super::frame::{self, HEADER_LEN, MAX_PACKET};
use super::CarrierError;

/// Stream buffer size in each direction: a few dozen full-size QUIC packets.
const STREAM_BUFFER: usize = 256 * 1024;

/// Receive buffer slots per system call, each holding one datagram or one GRO batch.
const RECV_SLOTS: usize = 8;

/// Bytes per receive slot: the largest UDP payload, which also bounds a GRO batch.
const SLOT_LEN: usize = 64 * 1024;

/// Receive calls made without waiting before the frames are flushed regardless, bounding the
/// delay a continuous burst can add.
const MAX_RECV_BATCH: usize = 8;

/// Largest GSO send: below the largest IPv4 UDP payload.
const MAX_GSO_BYTES: usize = 60 * 1024;

/// Copies packets from `udp` to `stream` as frames, until writing fails.
///
/// `peer` is the only source accepted. If it starts empty, the first packet's source becomes it
/// (and is published for [`stream_to_udp`]); packets from anyone else are dropped.
pub(super) async fn udp_to_stream<W>(
    udp: &UdpSocket,
    peer: &watch::Sender<Option<SocketAddr>>,
    stream: W,
) -> Result<(), CarrierError>
where
    W: AsyncWrite + Unpin,
{
    let state = UdpSocketState::new(udp.into())?;
    let mut stream = BufWriter::with_capacity(STREAM_BUFFER, stream);
    let mut buf = vec![0; RECV_SLOTS * SLOT_LEN];
    let mut meta = [RecvMeta::default(); RECV_SLOTS];
    let mut known = *peer.borrow();
    loop {
        let mut received = udp
            .async_io(Interest::READABLE, || {
                recv(&state, udp, &mut buf, &mut meta)
            })
            .await?;
        let mut batch = 1;
        loop {
            for (meta, slot) in meta[..received].iter().zip(buf.chunks(SLOT_LEN)) {
                if !accept(&mut known, peer, meta.addr) {
                    continue;
                }
                // With GRO a slot holds several packets, `stride` bytes apart.
                for packet in slot[..meta.len].chunks(meta.stride.max(1)) {
                    write_frame(&mut stream, packet).await?;
                }
            }
            if batch == MAX_RECV_BATCH {
                break;
            }
            match udp.try_io(Interest::READABLE, || {
                recv(&state, udp, &mut buf, &mut meta)
            }) {
                Ok(n) => received = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
            batch += 1;
        }
        stream.flush().await?;
    }
}

fn recv(
    state: &UdpSocketState,
    udp: &UdpSocket,
    buf: &mut [u8],
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    let mut chunks = buf.chunks_mut(SLOT_LEN);
    // `buf` is RECV_SLOTS * SLOT_LEN long, so there is a chunk for every slot.
    let mut slots: [IoSliceMut<'_>; RECV_SLOTS] =
        std::array::from_fn(|_| IoSliceMut::new(chunks.next().expect("one chunk per slot")));
    state.recv(udp.into(), &mut slots, meta)
}

/// Whether a packet from `from` may pass; learns the peer from the first packet.
fn accept(
    known: &mut Option<SocketAddr>,
    peer: &watch::Sender<Option<SocketAddr>>,
    from: SocketAddr,
) -> bool {
    match *known {
        Some(peer) => {
            if peer != from {
                trace!(%from, "Dropped packet from a stranger");
            }
            peer == from
        }
        None => {
            debug!(peer = %from, "Learned UDP peer");
            *known = Some(from);
            peer.send_replace(Some(from));
            true
        }
    }
}

async fn write_frame<W>(stream: &mut BufWriter<W>, packet: &[u8]) -> Result<(), CarrierError>
where
    W: AsyncWrite + Unpin,
{
    // An empty datagram carries no QUIC packet and cannot be framed: skip it.
    let Some(header) = frame::encode_header(packet.len()) else {
        trace!(len = packet.len(), "Dropped unframable packet");
        return Ok(());
    };
    stream.write_all(&header).await?;
    stream.write_all(packet).await?;
    Ok(())
}

/// Copies frames from `stream` to `udp` as packets for the peer, until the stream ends
/// (`Ok`) or breaks or carries a malformed frame (`Err`). Waits for the peer to be known
/// before sending the first packet.
pub(super) async fn stream_to_udp<R>(
    stream: R,
    udp: &UdpSocket,
    mut peer: watch::Receiver<Option<SocketAddr>>,
    frames: &AtomicU64,
) -> Result<(), CarrierError>
where
    R: AsyncRead + Unpin,
{
    let state = UdpSocketState::new(udp.into())?;
    let mut stream = BufReader::with_capacity(STREAM_BUFFER, stream);
    let mut batch = Vec::with_capacity(MAX_GSO_BYTES.max(MAX_PACKET));
    let mut to = *peer.borrow();
    loop {
        // Wait for one whole frame.
        let mut header = [0; HEADER_LEN];
        // A stream that ends between frames ends the relay cleanly; inside one, it is an error.
        if stream.read(&mut header[..1]).await? == 0 {
            return Ok(());
        }
        stream.read_exact(&mut header[1..]).await?;
        let segment = frame::decode_header(header).map_err(|_| CarrierError::EmptyFrame)?;
        batch.resize(segment, 0);
        stream.read_exact(&mut batch).await?;
        let segments = take_buffered(&mut stream, &mut batch, segment, state.max_gso_segments())?;
        frames.fetch_add(1, Ordering::Relaxed);

        let to = match to {
            Some(to) => to,
            None => {
                let learned = peer.wait_for(Option::is_some).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::BrokenPipe, "UDP side of the relay ended")
                })?;
                // wait_for returned a value for which is_some() held.
                *to.insert(learned.expect("peer is known"))
            }
        };
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: &batch,
            segment_size: (segments > 1).then_some(segment),
            src_ip: None,
        };
        // quinn-udp logs and swallows send errors other than "would block": UDP may drop
        // packets anyway, and QUIC recovers.
        udp.async_io(Interest::WRITABLE, || state.send(udp.into(), &transmit))
            .await?;
    }
}

/// Appends to `batch` the packets of the frames already in `stream`'s buffer that can share a
/// GSO send with it: `segment` bytes each, except a shorter last one. Returns the number of
/// packets in `batch`.
fn take_buffered<R: AsyncRead + Unpin>(
    stream: &mut BufReader<R>,
    batch: &mut Vec<u8>,
    segment: usize,
    max_segments: usize,
) -> Result<usize, CarrierError> {
    let mut segments = 1;
    while segments < max_segments && batch.len() + segment <= MAX_GSO_BYTES {
        let buffered = stream.buffer();
        let Some(header) = buffered.first_chunk::<HEADER_LEN>() else {
            break;
        };
        let len = frame::decode_header(*header).map_err(|_| CarrierError::EmptyFrame)?;
        let Some(packet) = buffered.get(HEADER_LEN..HEADER_LEN + len) else {
            break;
        };
        if len > segment {
            break;
        }
        batch.extend_from_slice(packet);
        Pin::new(&mut *stream).consume(HEADER_LEN + len);
        segments += 1;
        if len < segment {
            break;
        }
    }
    Ok(segments)
}
