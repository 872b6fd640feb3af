//! Reading and writing tether protocol frames on QUIC streams (any `AsyncRead`/`AsyncWrite`).
//!
//! A flow stream carries one `Open`/`OpenResult` frame and then raw bytes, so frames are read
//! exactly, never a byte past the frame: each read asks for at most what
//! [`tether_proto::frame::needed`] says the frame still lacks, and [`tether_proto::decode`] (the
//! one frame parser) takes it apart.

use bytes::BytesMut;
use tether_proto::frame::needed;
use tether_proto::{DecodeError, Decoded, EncodeError, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Errors of frame I/O on a stream.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    /// The stream failed.
    #[error("stream I/O")]
    Io(#[from] std::io::Error),
    /// The peer sent a frame that cannot be decoded.
    #[error("undecodable frame")]
    Decode(#[from] DecodeError),
    /// The message could not be encoded.
    #[error("unencodable message")]
    Encode(#[from] EncodeError),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
}

impl FrameIoError {
    /// Whether the stream is unusable after this error. A malformed payload is not fatal: the
    /// frame was read whole, so the next read starts at the next frame (on a stream that
    /// carries frames only).
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::Decode(error) => error.is_fatal(),
            // Nothing was written.
            Self::Encode(_) => false,
            Self::Io(_) | Self::Truncated => true,
        }
    }
}

/// The most a frame read allocates ahead of the bytes received.
const READ_STEP: usize = 16 * 1024;

/// Reads one frame. `Ok(None)` at a clean end of stream before any byte of a frame.
///
/// A frame whose payload does not decode is returned as [`FrameIoError::Decode`] with a
/// [`DecodeError::Malformed`], not skipped: most callers read one frame and then raw bytes (a
/// flow's `Open`, a `Dial`), and skipping would make them take those bytes for the next frame.
/// The error is not [fatal](FrameIoError::is_fatal), though: the frame has been read whole, so a
/// caller on a stream of frames only may read on.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Decoded>, FrameIoError> {
    let mut buf = BytesMut::new();
    loop {
        // The header is read first (a frame is never shorter), then the payload as it arrives,
        // in steps of at most READ_STEP: a header claiming a megabyte costs only what the peer
        // really sends (which QUIC's flow control bounds). A length out of bounds needs nothing
        // more and is reported below, before anything is allocated for it.
        let want = needed(&buf).min(READ_STEP);
        if want == 0 {
            break;
        }
        buf.reserve(want);
        if (&mut *r).take(want as u64).read_buf(&mut buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(FrameIoError::Truncated)
            };
        }
    }
    match tether_proto::decode(&mut buf) {
        Some(Ok(d)) => Ok(Some(d)),
        Some(Err(e)) => Err(e.into()),
        None => Err(FrameIoError::Truncated),
    }
}

/// Reads frames until a known message arrives, skipping frames of unknown kinds.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<Message>, FrameIoError> {
    loop {
        match read_frame(r).await? {
            None => return Ok(None),
            Some(Decoded::Message(m)) => return Ok(Some(m)),
            Some(Decoded::Unknown { kind, .. }) => {
                tracing::debug!(kind, "Skipped a frame of unknown kind");
            }
        }
    }
}

/// Writes one message as a frame.
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &Message,
) -> Result<(), FrameIoError> {
    let mut buf = BytesMut::new();
    tether_proto::encode(msg, &mut buf)?;
    w.write_all(&buf).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tether_proto::{Open, Ping, Pong, Protocol};

    use super::*;

    #[tokio::test]
    async fn reads_exactly_one_frame_and_leaves_the_rest() {
        let mut bytes = BytesMut::new();
        let open = Message::Open(Open {
            flow: 1,
            protocol: Protocol::Tcp,
            dst: "10.96.0.1:80".parse().unwrap(),
        });
        tether_proto::encode(&open, &mut bytes).unwrap();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut r = &bytes[..];
        assert_eq!(read_message(&mut r).await.unwrap(), Some(open));
        assert_eq!(r, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn reads_a_frame_longer_than_one_read_step() {
        let packet = Message::UdpPacket(tether_proto::UdpPacket {
            flow: 7,
            payload: (0..3 * READ_STEP + 5).map(|i| i as u8).collect(),
        });
        let mut bytes = BytesMut::new();
        tether_proto::encode(&packet, &mut bytes).unwrap();
        // Delivered at most 1000 bytes at a time, as a slow peer would.
        let (mut w, mut r) = tokio::io::duplex(1000);
        let writer = tokio::spawn(async move { w.write_all(&bytes).await });
        assert_eq!(read_message(&mut r).await.unwrap(), Some(packet));
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn skips_unknown_kinds_and_rejects_bad_lengths() {
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xf0, 9]);
        tether_proto::encode(&Message::Ping(Ping { seq: 5 }), &mut bytes).unwrap();
        let mut r = &bytes[..];
        assert_eq!(
            read_message(&mut r).await.unwrap(),
            Some(Message::Ping(Ping { seq: 5 }))
        );
        assert!(read_message(&mut r).await.unwrap().is_none(), "clean end");

        for bad in [&[0u8, 0, 0, 0, 0, 1][..], &[0xff, 0xff, 0xff, 0xff, 0, 1]] {
            let mut r = bad;
            assert!(
                matches!(read_frame(&mut r).await, Err(FrameIoError::Decode(_))),
                "{bad:?}"
            );
        }
        let mut r = &[0u8, 0, 0, 9, 0, 5, 1][..];
        assert!(matches!(
            read_frame(&mut r).await,
            Err(FrameIoError::Truncated)
        ));
    }

    #[tokio::test]
    async fn a_malformed_frame_is_an_error_the_stream_survives() {
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&[0, 0, 0, 2, 0, 6]); // a Ping without its seq
        tether_proto::encode(&Message::Pong(Pong { seq: 5 }), &mut bytes).unwrap();
        let mut r = &bytes[..];
        let error = read_message(&mut r).await.unwrap_err();
        assert!(
            matches!(
                error,
                FrameIoError::Decode(DecodeError::Malformed { kind: 6, .. })
            ),
            "{error:?}"
        );
        assert!(!error.is_fatal());
        assert_eq!(
            read_message(&mut r).await.unwrap(),
            Some(Message::Pong(Pong { seq: 5 }))
        );
        let mut r = &[0u8, 0, 0, 1][..];
        assert!(read_frame(&mut r).await.unwrap_err().is_fatal());
    }
}
