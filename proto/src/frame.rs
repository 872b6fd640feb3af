//! Frame codec: `[u32 BE length][u16 BE kind][payload]`, `length` counting kind + payload.
//!
//! [`encode`] appends one frame to a buffer. [`decode`] takes one frame off the front of a buffer,
//! and [`FrameDecoder`] wraps it for callers that receive bytes in arbitrary pieces. [`needed`]
//! tells a reader that must not read past a frame how much more to read.

use bytes::{Buf, BufMut, BytesMut};

use crate::message::{Message, PayloadError};

/// The largest `length` a frame may have (kind + payload), 1 MiB.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Bytes before the payload: the length and the kind.
pub const HEADER_LEN: usize = LEN_LEN + KIND_LEN;

const LEN_LEN: usize = 4;
const KIND_LEN: usize = 2;

/// Why a message could not be encoded. Nothing is appended to the buffer then.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The frame would be longer than [`MAX_FRAME_LEN`], which the peer rejects.
    #[error("frame of kind {kind} is {len} bytes long, over the limit of {MAX_FRAME_LEN}")]
    TooLong {
        /// The message's kind.
        kind: u16,
        /// The frame's `length` (kind + payload).
        len: usize,
    },
    /// Serialization failed (does not happen for the protocol's own types).
    #[error("cannot serialize a message of kind {kind}")]
    Serialize {
        /// The message's kind.
        kind: u16,
        /// What postcard reported.
        #[source]
        source: postcard::Error,
    },
}

/// Why a frame could not be decoded.
///
/// [`Malformed`](Self::Malformed) concerns one frame only: that frame was consumed and the next
/// one may decode fine. The others are fatal ([`is_fatal`](Self::is_fatal)): the stream cannot be
/// resynchronised and should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A frame of a known kind carried a payload that does not decode as that message.
    #[error("malformed payload in frame of kind {kind}")]
    Malformed {
        /// The frame's kind.
        kind: u16,
        /// What is wrong with the payload.
        #[source]
        source: PayloadError,
    },
    /// A frame header announced a length too short to hold the kind.
    #[error("frame length {len} is shorter than the {KIND_LEN}-byte kind")]
    TooShort {
        /// The announced length.
        len: u32,
    },
    /// A frame header announced a length over [`MAX_FRAME_LEN`].
    #[error("frame length {len} exceeds the limit of {MAX_FRAME_LEN}")]
    TooLong {
        /// The announced length.
        len: u32,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame, {buffered} bytes buffered")]
    Truncated {
        /// Bytes of the incomplete frame that were received.
        buffered: usize,
    },
}

impl DecodeError {
    /// Whether the stream is unusable after this error.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::Malformed { .. })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A message this build knows.
    Message(Message),
    /// A frame of a kind this build does not know (sent by a newer peer); it was skipped.
    Unknown {
        /// The frame's kind.
        kind: u16,
        /// Its payload length in bytes.
        len: usize,
    },
}

/// Appends `msg` to `dst` as one frame.
pub fn encode(msg: &Message, dst: &mut BytesMut) -> Result<(), EncodeError> {
    let kind = msg.kind();
    let start = dst.len();
    dst.put_u32(0); // patched below, once the payload length is known
    dst.put_u16(kind);
    if let Err(source) = msg.write_payload(dst.writer()) {
        dst.truncate(start);
        return Err(EncodeError::Serialize { kind, source });
    }
    let len = dst.len() - start - LEN_LEN;
    // MAX_FRAME_LEN fits in a u32, so the conversion succeeds whenever the check passes.
    match u32::try_from(len) {
        Ok(len32) if len <= MAX_FRAME_LEN => {
            dst[start..start + LEN_LEN].copy_from_slice(&len32.to_be_bytes());
            Ok(())
        }
        _ => {
            dst.truncate(start);
            Err(EncodeError::TooLong { kind, len })
        }
    }
}

/// Takes one frame off the front of `src`.
///
/// Returns `None` while `src` holds no complete frame (nothing is consumed then). A complete frame
/// is consumed, whether it decodes, is of an unknown kind or is malformed. On a fatal error
/// nothing is consumed and the caller must stop decoding this stream.
///
/// Never allocates: `src` grows only as the caller appends received bytes, and a header that
/// announces more than [`MAX_FRAME_LEN`] is rejected as soon as its 4 bytes are in.
pub fn decode(src: &mut BytesMut) -> Option<Result<Decoded, DecodeError>> {
    let frame_len = match frame_len(src)? {
        Ok(len) => len,
        Err(err) => return Some(Err(err)),
    };
    if src.len() < LEN_LEN + frame_len {
        return None;
    }
    let mut frame = src.split_to(LEN_LEN + frame_len);
    frame.advance(LEN_LEN);
    let kind = frame.get_u16();
    Some(match Message::read_payload(kind, &frame) {
        None => Ok(Decoded::Unknown {
            kind,
            len: frame.len(),
        }),
        Some(Ok(msg)) => Ok(Decoded::Message(msg)),
        Some(Err(source)) => Err(DecodeError::Malformed { kind, source }),
    })
}

/// How many more bytes `src` needs before [`decode`] returns `Some` (a frame or a fatal error);
/// 0 when it already does.
///
/// It never counts a byte past the first frame (every frame is at least [`HEADER_LEN`] bytes
/// long), so a reader that reads at most this many bytes before each `decode` never takes a byte
/// of what follows the frame on its stream: a flow's raw bytes after its `Open`, say.
pub fn needed(src: &[u8]) -> usize {
    match frame_len(src) {
        None => HEADER_LEN - src.len(),
        Some(Err(_)) => 0,
        Some(Ok(len)) => (LEN_LEN + len).saturating_sub(src.len()),
    }
}

/// The `length` of the frame at the front of `src` (kind + payload), checked against the limits;
/// `None` while its 4 bytes are not all in. The only place that reads a frame header.
fn frame_len(src: &[u8]) -> Option<Result<usize, DecodeError>> {
    let header: [u8; LEN_LEN] = src.get(..LEN_LEN)?.try_into().ok()?;
    let len = u32::from_be_bytes(header);
    // u32 -> usize is lossless on the 32- and 64-bit targets tether runs on; saturate otherwise.
    let frame_len = usize::try_from(len).unwrap_or(usize::MAX);
    Some(if frame_len < KIND_LEN {
        Err(DecodeError::TooShort { len })
    } else if frame_len > MAX_FRAME_LEN {
        Err(DecodeError::TooLong { len })
    } else {
        Ok(frame_len)
    })
}

/// Reassembles frames from bytes received in arbitrary pieces.
///
/// Feed it with [`push`](Self::push), then call [`poll`](Self::poll) until it returns `None`.
/// After a fatal error every `poll` returns that error again and pushed bytes are dropped.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
    fatal: Option<DecodeError>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.fatal.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next frame, if a complete one is buffered.
    pub fn poll(&mut self) -> Option<Result<Decoded, DecodeError>> {
        if let Some(err) = &self.fatal {
            return Some(Err(err.clone()));
        }
        let item = decode(&mut self.buf)?;
        if let Err(err) = &item {
            if err.is_fatal() {
                self.fatal = Some(err.clone());
                self.buf = BytesMut::new();
            }
        }
        Some(item)
    }

    /// How many more bytes [`poll`](Self::poll) needs to return something (see [`needed`]); 0
    /// when it already does.
    pub fn needed(&self) -> usize {
        if self.fatal.is_some() {
            0
        } else {
            needed(&self.buf)
        }
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Call when the stream has ended, after `poll` returned `None`: fails if it ended inside a
    /// frame.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match (&self.fatal, self.buf.len()) {
            (Some(err), _) => Err(err.clone()),
            (None, 0) => Ok(()),
            (None, buffered) => Err(DecodeError::Truncated { buffered }),
        }
    }
}

#[cfg(test)]
mod tests;
