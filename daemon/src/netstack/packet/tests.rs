use super::*;

/// TCP SYN 10.124.0.1:40000 -> 10.123.4.5:7, MSS option.
pub(crate) const SYN: &[u8] = &[
    0x45, 0x00, 0x00, 0x2c, 0x00, 0x01, 0x40, 0x00, 0x40, 0x06, 0x21, 0xcf, //
    0x0a, 0x7c, 0x00, 0x01, 0x0a, 0x7b, 0x04, 0x05, 0x9c, 0x40, 0x00, 0x07, //
    0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xfa, 0xf0, //
    0xe9, 0xe5, 0x00, 0x00, 0x02, 0x04, 0xff, 0xd7,
];

/// UDP 10.124.0.1:5000 -> 10.123.4.5:53, payload "hello".
pub(crate) const UDP: &[u8] = &[
    0x45, 0x00, 0x00, 0x21, 0x00, 0x01, 0x40, 0x00, 0x40, 0x11, 0x21, 0xcf, //
    0x0a, 0x7c, 0x00, 0x01, 0x0a, 0x7b, 0x04, 0x05, 0x13, 0x88, 0x00, 0x35, //
    0x00, 0x0d, 0x8f, 0x48, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
];

/// ICMP echo request 10.124.0.1 -> 10.123.4.5.
const PING: &[u8] = &[
    0x45, 0x00, 0x00, 0x20, 0x00, 0x01, 0x40, 0x00, 0x40, 0x01, 0x21, 0xe0, //
    0x0a, 0x7c, 0x00, 0x01, 0x0a, 0x7b, 0x04, 0x05, 0x08, 0x00, 0x19, 0x2d, //
    0x00, 0x01, 0x00, 0x01, 0x70, 0x69, 0x6e, 0x67,
];

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address parses")
}

#[test]
fn tcp_syn() {
    assert_eq!(
        classify(SYN),
        Ok(Classified::Tcp {
            src: addr("10.124.0.1:40000"),
            dst: addr("10.123.4.5:7"),
            syn: true,
        })
    );
}

#[test]
fn udp() {
    assert_eq!(
        classify(UDP),
        Ok(Classified::Udp {
            src: addr("10.124.0.1:5000"),
            dst: addr("10.123.4.5:53"),
            payload: b"hello",
        })
    );
}

#[test]
fn icmp_is_other() {
    assert_eq!(classify(PING), Ok(Classified::Other));
}

#[test]
fn malformed() {
    assert_eq!(classify(&[]), Err(Malformed::Ip));
    assert_eq!(classify(&[0x55; 40]), Err(Malformed::Ip));
    // Truncated: the header says 44 bytes.
    assert_eq!(classify(&SYN[..30]), Err(Malformed::Ip));
    // Flipped bit in the IPv4 header.
    let mut bad = SYN.to_vec();
    bad[8] ^= 1;
    assert_eq!(classify(&bad), Err(Malformed::IpChecksum));
    // Flipped bit in the TCP payload area (window) breaks the TCP checksum only.
    let mut bad = SYN.to_vec();
    bad[35] ^= 1;
    assert_eq!(classify(&bad), Err(Malformed::Checksum));
    let mut bad = UDP.to_vec();
    bad[30] ^= 1;
    assert_eq!(classify(&bad), Err(Malformed::Checksum));
    // UDP length field larger than the IP payload.
    let mut bad = UDP.to_vec();
    bad[25] = 0xff;
    assert_eq!(classify(&bad), Err(Malformed::Transport));
}

#[test]
fn fragments_are_other() {
    // Same UDP packet with "more fragments" set (and the header checksum fixed up).
    let mut frag = UDP.to_vec();
    frag[6] = 0x20;
    frag[10..12].copy_from_slice(&[0, 0]);
    let sum = ipv4_checksum(&frag[..20]);
    frag[10..12].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(classify(&frag), Ok(Classified::Other));
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn build_is_inverse_of_classify() {
    let mut out = Vec::new();
    build_udp(
        addr("10.124.0.1:5000"),
        addr("10.123.4.5:53"),
        b"hello",
        1500,
        &mut out,
    )
    .expect("fits");
    // Identical to the captured packet except the IP id (0 here, 1 there) and the don't-fragment
    // bit, which change the header checksum.
    assert_eq!(out[12..], UDP[12..]);
    assert_eq!(
        classify(&out),
        Ok(Classified::Udp {
            src: addr("10.124.0.1:5000"),
            dst: addr("10.123.4.5:53"),
            payload: b"hello",
        })
    );
    let (s6, d6) = (addr("[fd00::1]:53"), addr("[fd00::2]:5000"));
    build_udp(s6, d6, b"v6", 1500, &mut out).expect("fits");
    assert_eq!(
        classify(&out),
        Ok(Classified::Udp {
            src: s6,
            dst: d6,
            payload: b"v6"
        })
    );
}

#[test]
fn build_rejects() {
    let mut out = Vec::new();
    assert_eq!(
        build_udp(addr("10.0.0.1:1"), addr("[::1]:1"), b"", 1500, &mut out),
        Err(BuildError::MixedFamilies)
    );
    assert_eq!(
        build_udp(
            addr("10.0.0.1:1"),
            addr("10.0.0.2:1"),
            &[0; 1473],
            1500,
            &mut out
        ),
        Err(BuildError::TooBig {
            payload: 1473,
            mtu: 1500
        })
    );
    assert!(build_udp(
        addr("10.0.0.1:1"),
        addr("10.0.0.2:1"),
        &[0; 1472],
        1500,
        &mut out
    )
    .is_ok());
}
