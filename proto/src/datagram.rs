//! Datagram codec for UDP flows over QUIC datagrams: `[varint flow id][payload]`.
//!
//! The varint is QUIC's (RFC 9000 §16): the two high bits of the first byte give the length (1,
//! 2, 4 or 8 bytes), the rest is the value, big-endian, so flow ids go up to 2^62 - 1.

use bytes::BufMut;

/// The largest flow id a datagram can carry, 2^62 - 1.
pub const MAX_FLOW_ID: u64 = (1 << 62) - 1;

/// The most bytes [`encode_datagram`] ever adds in front of a payload.
pub const MAX_DATAGRAM_OVERHEAD: usize = 8;

/// Why a datagram could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// The flow id is over [`MAX_FLOW_ID`].
    #[error("flow id {0} does not fit a QUIC varint")]
    FlowTooLarge(u64),
    /// The datagram is empty or ends inside its flow id.
    #[error("datagram ends inside its flow id")]
    Truncated,
}

/// Bytes that [`encode_datagram`] adds in front of the payload for `flow`: a payload fits a path
/// whose max datagram size is `max` if `payload.len() + datagram_overhead(flow) <= max`.
pub fn datagram_overhead(flow: u64) -> usize {
    match flow {
        0..=0x3f => 1,
        0x40..=0x3fff => 2,
        0x4000..=0x3fff_ffff => 4,
        _ => 8,
    }
}

/// Appends a datagram carrying `payload` for `flow` to `dst`.
pub fn encode_datagram(
    flow: u64,
    payload: &[u8],
    dst: &mut impl BufMut,
) -> Result<(), DatagramError> {
    if flow > MAX_FLOW_ID {
        return Err(DatagramError::FlowTooLarge(flow));
    }
    // Each arm's range check above guarantees the value fits the narrower integer.
    match datagram_overhead(flow) {
        1 => dst.put_u8(flow as u8),
        2 => dst.put_u16(0x4000 | flow as u16),
        4 => dst.put_u32(0x8000_0000 | flow as u32),
        _ => dst.put_u64(0xc000_0000_0000_0000 | flow),
    }
    dst.put_slice(payload);
    Ok(())
}

/// Splits a received datagram into its flow id and payload. Non-minimal varints are accepted,
/// as RFC 9000 allows.
pub fn decode_datagram(datagram: &[u8]) -> Result<(u64, &[u8]), DatagramError> {
    let first = *datagram.first().ok_or(DatagramError::Truncated)?;
    let len = 1usize << (first >> 6);
    if datagram.len() < len {
        return Err(DatagramError::Truncated);
    }
    let (varint, payload) = datagram.split_at(len);
    let flow = varint[1..]
        .iter()
        .fold(u64::from(first & 0x3f), |acc, &b| acc << 8 | u64::from(b));
    Ok((flow, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn encoded(flow: u64, payload: &[u8]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode_datagram(flow, payload, &mut buf).unwrap();
        buf.to_vec()
    }

    #[test]
    fn rfc9000_examples() {
        // RFC 9000 §A.1 sample varints.
        assert_eq!(decode_datagram(&[0x25]), Ok((37, &[][..])));
        assert_eq!(decode_datagram(&[0x40, 0x25]), Ok((37, &[][..])));
        assert_eq!(decode_datagram(&[0x7b, 0xbd]), Ok((15293, &[][..])));
        assert_eq!(
            decode_datagram(&[0x9d, 0x7f, 0x3e, 0x7d]),
            Ok((494_878_333, &[][..]))
        );
        let eight = [0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c];
        assert_eq!(
            decode_datagram(&eight),
            Ok((151_288_809_941_952_652, &[][..]))
        );
        assert_eq!(encoded(15293, b""), [0x7b, 0xbd]);
        assert_eq!(encoded(494_878_333, b""), [0x9d, 0x7f, 0x3e, 0x7d]);
        assert_eq!(encoded(151_288_809_941_952_652, b""), eight);
    }

    #[test]
    fn exact_encoding_with_payload() {
        assert_eq!(encoded(5, b"hi"), [0x05, b'h', b'i']);
        assert_eq!(encoded(64, b"x"), [0x40, 0x40, b'x']);
    }

    #[test]
    fn round_trips_at_every_boundary() {
        for flow in [
            0,
            63,
            64,
            16383,
            16384,
            0x3fff_ffff,
            0x4000_0000,
            MAX_FLOW_ID,
        ] {
            let bytes = encoded(flow, b"payload");
            assert_eq!(bytes.len(), datagram_overhead(flow) + 7, "flow {flow}");
            assert_eq!(decode_datagram(&bytes), Ok((flow, &b"payload"[..])));
        }
    }

    #[test]
    fn rejects_flow_over_62_bits() {
        let mut buf = BytesMut::new();
        assert_eq!(
            encode_datagram(MAX_FLOW_ID + 1, b"x", &mut buf),
            Err(DatagramError::FlowTooLarge(MAX_FLOW_ID + 1))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_truncated_varint() {
        assert_eq!(decode_datagram(&[]), Err(DatagramError::Truncated));
        assert_eq!(decode_datagram(&[0x40]), Err(DatagramError::Truncated));
        assert_eq!(
            decode_datagram(&[0x80, 0, 0]),
            Err(DatagramError::Truncated)
        );
        assert_eq!(decode_datagram(&[0xc0; 7]), Err(DatagramError::Truncated));
    }
}
