//! The groups extension of a session certificate: a DER `SEQUENCE OF UTF8String` under a
//! private OID. Only certificates this crate's CA signs carry it and only the manager reads it,
//! so it is non-critical (other TLS stacks skip it).

/// The extension's OID: an arc under `2.25` (OIDs derived from a UUID, which need no
/// registration). Every arc fits in 31 bits: the API server (Go's `encoding/asn1` before 1.22)
/// refuses a certificate with a longer arc as a "malformed extension", and it parses every
/// certificate a signer writes into a CSR's status.
pub const GROUPS_OID: &[u64] = &[2, 25, 1_406_739_591];

const SEQUENCE: u8 = 0x30;
const UTF8_STRING: u8 = 0x0c;

/// DER of `groups` as a `SEQUENCE OF UTF8String`.
pub(super) fn encode(groups: &[String]) -> Vec<u8> {
    let mut body = Vec::new();
    for group in groups {
        tlv(&mut body, UTF8_STRING, group.as_bytes());
    }
    let mut out = Vec::with_capacity(body.len() + 6);
    tlv(&mut out, SEQUENCE, &body);
    out
}

/// The groups of a DER `SEQUENCE OF UTF8String`; `None` if it is anything else.
pub(super) fn decode(der: &[u8]) -> Option<Vec<String>> {
    let (body, rest) = read_tlv(der, SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let mut groups = Vec::new();
    let mut body = body;
    while !body.is_empty() {
        let (value, rest) = read_tlv(body, UTF8_STRING)?;
        groups.push(String::from_utf8(value.to_vec()).ok()?);
        body = rest;
    }
    Some(groups)
}

fn tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        // Short form. The cast cannot truncate: len < 128.
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        // At most 8 length bytes: 0x80 | 8 fits a byte.
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

/// One DER element with `tag`: (its value, what follows it).
fn read_tlv(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = der.split_first()?;
    if first != tag {
        return None;
    }
    let (&len_byte, mut rest) = rest.split_first()?;
    let len = if len_byte < 0x80 {
        usize::from(len_byte)
    } else {
        let count = usize::from(len_byte & 0x7f);
        if count == 0 || count > std::mem::size_of::<usize>() || rest.len() < count {
            return None;
        }
        let (len_bytes, after) = rest.split_at(count);
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arc_fits_in_31_bits() {
        assert!(GROUPS_OID.iter().all(|arc| *arc <= i32::MAX as u64));
    }

    #[test]
    fn groups_round_trip() {
        for groups in [
            vec![],
            vec!["system:authenticated".to_owned(), "dev".to_owned()],
            vec!["x".repeat(300), "ünïcode".to_owned()],
        ] {
            assert_eq!(decode(&encode(&groups)), Some(groups));
        }
    }

    #[test]
    fn encoding_is_der() {
        assert_eq!(
            encode(&["ab".to_owned()]),
            [0x30, 0x04, 0x0c, 0x02, b'a', b'b']
        );
        let long = encode(&["x".repeat(200)]);
        assert_eq!(&long[..6], [0x30, 0x81, 0xcb, 0x0c, 0x81, 0xc8]);
    }

    #[test]
    fn anything_else_is_refused() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0x30, 0x03, 0x0c, 0x02, b'a']), None);
        assert_eq!(decode(&[0x30, 0x02, 0x04, 0x00]), None);
        assert_eq!(decode(&[0x30, 0x00, 0x00]), None);
        assert_eq!(decode(&[0x30, 0x03, 0x0c, 0x01, 0xff]), None);
    }
}
