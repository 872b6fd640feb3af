//! `[u16 BE length][packet]` framing of QUIC packets on a byte stream.
//!
//! Local stand-in until tether-proto exports the same framing; the wire format must not change
//! when it moves there. A length of zero is malformed: no QUIC packet is empty.

/// Bytes of the length prefix.
pub(crate) const HEADER_LEN: usize = 2;

/// Largest packet a frame can hold.
pub(crate) const MAX_PACKET: usize = u16::MAX as usize;

/// A length prefix that no packet can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EmptyFrame;

/// The prefix for a packet of `len` bytes, or `None` if the packet cannot be framed
/// (empty, or longer than [`MAX_PACKET`]).
pub(crate) fn encode_header(len: usize) -> Option<[u8; HEADER_LEN]> {
    match u16::try_from(len) {
        Ok(0) | Err(_) => None,
        Ok(len) => Some(len.to_be_bytes()),
    }
}

/// The packet length a prefix announces.
pub(crate) fn decode_header(header: [u8; HEADER_LEN]) -> Result<usize, EmptyFrame> {
    match u16::from_be_bytes(header) {
        0 => Err(EmptyFrame),
        len => Ok(usize::from(len)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_big_endian_length() {
        assert_eq!(encode_header(1), Some([0x00, 0x01]));
        assert_eq!(encode_header(1200), Some([0x04, 0xb0]));
        assert_eq!(encode_header(MAX_PACKET), Some([0xff, 0xff]));
        assert_eq!(decode_header([0x04, 0xb0]), Ok(1200));
        assert_eq!(decode_header([0xff, 0xff]), Ok(MAX_PACKET));
    }

    #[test]
    fn empty_and_oversized_packets_are_not_framed() {
        assert_eq!(encode_header(0), None);
        assert_eq!(encode_header(MAX_PACKET + 1), None);
        assert_eq!(decode_header([0x00, 0x00]), Err(EmptyFrame));
    }
}
