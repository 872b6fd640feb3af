//! Relay codec for the port-forward carrier: QUIC packets over a byte stream as
//! `[u16 BE length][packet]`, length 1..=65535.
//!
//! Same shape as the frame codec: [`encode_relay`] appends, [`decode_relay`] takes one packet off
//! a buffer, [`RelayDecoder`] reassembles packets from pieces.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The largest packet the relay carries.
pub const MAX_RELAY_PACKET: usize = u16::MAX as usize;

const LEN_LEN: usize = 2;

/// Why a packet could not be relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// An empty packet: refused on encode; fatal on decode, where it means the stream is not a
    /// relay stream or is corrupt.
    #[error("empty relay packet")]
    Empty,
    /// A packet over [`MAX_RELAY_PACKET`] bytes (encode only).
    #[error("packet of {0} bytes exceeds the relay limit of {MAX_RELAY_PACKET}")]
    TooLong(usize),
    /// The stream ended in the middle of a packet.
    #[error("stream ended inside a relay packet, {buffered} bytes buffered")]
    Truncated {
        /// Bytes of the incomplete packet that were received.
        buffered: usize,
    },
}

/// Appends `packet` to `dst` with its length prefix.
pub fn encode_relay(packet: &[u8], dst: &mut impl BufMut) -> Result<(), RelayError> {
    let len = u16::try_from(packet.len()).map_err(|_| RelayError::TooLong(packet.len()))?;
    if len == 0 {
        return Err(RelayError::Empty);
    }
    dst.put_u16(len);
    dst.put_slice(packet);
    Ok(())
}

/// Takes one packet off the front of `src`: `None` while no complete packet is buffered, and a
/// fatal [`RelayError::Empty`] (nothing consumed) on a zero length.
pub fn decode_relay(src: &mut BytesMut) -> Option<Result<Bytes, RelayError>> {
    let header: [u8; LEN_LEN] = src.get(..LEN_LEN)?.try_into().ok()?;
    let len = usize::from(u16::from_be_bytes(header));
    if len == 0 {
        return Some(Err(RelayError::Empty));
    }
    if src.len() < LEN_LEN + len {
        return None;
    }
    src.advance(LEN_LEN);
    Some(Ok(src.split_to(len).freeze()))
}

/// Reassembles relay packets from bytes received in arbitrary pieces.
///
/// Feed it with [`push`](Self::push), then call [`poll`](Self::poll) until it returns `None`.
/// Every error is fatal: after one, `poll` returns it again and pushed bytes are dropped.
#[derive(Debug, Default)]
pub struct RelayDecoder {
    buf: BytesMut,
    fatal: Option<RelayError>,
}

impl RelayDecoder {
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

    /// The next packet, if a complete one is buffered.
    pub fn poll(&mut self) -> Option<Result<Bytes, RelayError>> {
        if let Some(err) = &self.fatal {
            return Some(Err(err.clone()));
        }
        let item = decode_relay(&mut self.buf)?;
        if let Err(err) = &item {
            self.fatal = Some(err.clone());
            self.buf = BytesMut::new();
        }
        Some(item)
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Call when the stream has ended, after `poll` returned `None`: fails if it ended inside a
    /// packet.
    pub fn finish(&self) -> Result<(), RelayError> {
        match (&self.fatal, self.buf.len()) {
            (Some(err), _) => Err(err.clone()),
            (None, 0) => Ok(()),
            (None, buffered) => Err(RelayError::Truncated { buffered }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_encoding() {
        let mut buf = BytesMut::new();
        encode_relay(b"abc", &mut buf).unwrap();
        encode_relay(&[0xff], &mut buf).unwrap();
        assert_eq!(&buf[..], [0, 3, b'a', b'b', b'c', 0, 1, 0xff]);
    }

    #[test]
    fn encode_rejects_empty_and_oversized() {
        let mut buf = BytesMut::new();
        assert_eq!(encode_relay(b"", &mut buf), Err(RelayError::Empty));
        let big = vec![0; MAX_RELAY_PACKET + 1];
        assert_eq!(
            encode_relay(&big, &mut buf),
            Err(RelayError::TooLong(MAX_RELAY_PACKET + 1))
        );
        assert!(buf.is_empty());
        encode_relay(&big[1..], &mut buf).unwrap();
        assert_eq!(&buf[..2], [0xff, 0xff]);
    }

    #[test]
    fn decodes_packets_fed_one_byte_at_a_time() {
        let mut wire = BytesMut::new();
        let packets: [&[u8]; 3] = [b"first", &[0; 1200], b"x"];
        for p in packets {
            encode_relay(p, &mut wire).unwrap();
        }
        let mut dec = RelayDecoder::new();
        let mut out = Vec::new();
        for b in &wire[..] {
            dec.push(&[*b]);
            while let Some(p) = dec.poll() {
                out.push(p.unwrap());
            }
        }
        assert_eq!(out, packets);
        assert_eq!(dec.finish(), Ok(()));
    }

    #[test]
    fn zero_length_is_fatal() {
        let mut dec = RelayDecoder::new();
        dec.push(&[0, 1, b'a', 0, 0, 0, 1, b'b']);
        assert_eq!(dec.poll(), Some(Ok(Bytes::from_static(b"a"))));
        assert_eq!(dec.poll(), Some(Err(RelayError::Empty)));
        dec.push(&[0, 1, b'c']);
        assert_eq!(dec.poll(), Some(Err(RelayError::Empty)));
        assert_eq!(dec.finish(), Err(RelayError::Empty));
    }

    #[test]
    fn truncated_stream_is_reported() {
        let mut dec = RelayDecoder::new();
        dec.push(&[0, 5, 1, 2]);
        assert_eq!(dec.poll(), None);
        assert_eq!(dec.buffered(), 4);
        assert_eq!(dec.finish(), Err(RelayError::Truncated { buffered: 4 }));
    }
}
