//! Sans-IO packet classification and UDP packet building.
//!
//! Every packet read from the TUN device goes through [`classify`] before anything else looks at
//! it: malformed packets stop here, TCP goes on to smoltcp, UDP is handled without smoltcp (it
//! needs no state), everything else is dropped.

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, UdpPacket,
    UdpRepr,
};
use thiserror::Error;

/// Hop limit of the packets we build.
const HOP_LIMIT: u8 = 64;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;

/// What a packet from the TUN device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Classified<'a> {
    /// A TCP segment. `syn` is set for a connection request (SYN without ACK). Its checksum has
    /// been verified.
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
        syn: bool,
    },
    /// A UDP datagram with a valid checksum.
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'a [u8],
    },
    /// Well-formed, but nothing we carry (ICMP, IP fragments, IPv6 extension headers, ...).
    Other,
}

/// Why a packet was dropped as malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum Malformed {
    /// Not IPv4 or IPv6, or shorter than its own header says.
    #[error("bad IP header")]
    Ip,
    /// IPv4 header checksum mismatch.
    #[error("bad IPv4 header checksum")]
    IpChecksum,
    /// Truncated TCP or UDP header.
    #[error("bad transport header")]
    Transport,
    /// TCP or UDP checksum mismatch.
    #[error("bad transport checksum")]
    Checksum,
}

/// Classifies one IP packet.
pub(crate) fn classify(packet: &[u8]) -> Result<Classified<'_>, Malformed> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => classify_v4(packet),
        Some(6) => classify_v6(packet),
        _ => Err(Malformed::Ip),
    }
}

fn classify_v4(packet: &[u8]) -> Result<Classified<'_>, Malformed> {
    let ip = Ipv4Packet::new_checked(packet).map_err(|_| Malformed::Ip)?;
    if !ip.verify_checksum() {
        return Err(Malformed::IpChecksum);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Ok(Classified::Other);
    }
    let (src, dst) = (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()));
    // `new_checked` verified that the buffer holds `total_len` bytes, so `payload` is in bounds.
    classify_transport(ip.next_header(), src, dst, ip.payload())
}

fn classify_v6(packet: &[u8]) -> Result<Classified<'_>, Malformed> {
    let ip = Ipv6Packet::new_checked(packet).map_err(|_| Malformed::Ip)?;
    let (src, dst) = (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()));
    classify_transport(ip.next_header(), src, dst, ip.payload())
}

fn classify_transport<'a>(
    protocol: IpProtocol,
    src: IpAddr,
    dst: IpAddr,
    payload: &'a [u8],
) -> Result<Classified<'a>, Malformed> {
    let (src_ip, dst_ip) = (IpAddress::from(src), IpAddress::from(dst));
    match protocol {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(payload).map_err(|_| Malformed::Transport)?;
            if !tcp.verify_checksum(&src_ip, &dst_ip) {
                return Err(Malformed::Checksum);
            }
            Ok(Classified::Tcp {
                src: SocketAddr::new(src, tcp.src_port()),
                dst: SocketAddr::new(dst, tcp.dst_port()),
                syn: tcp.syn() && !tcp.ack(),
            })
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(payload).map_err(|_| Malformed::Transport)?;
            if !udp.verify_checksum(&src_ip, &dst_ip) {
                return Err(Malformed::Checksum);
            }
            let payload = &payload[UDP_HEADER_LEN..usize::from(udp.len())];
            Ok(Classified::Udp {
                src: SocketAddr::new(src, udp.src_port()),
                dst: SocketAddr::new(dst, udp.dst_port()),
                payload,
            })
        }
        _ => Ok(Classified::Other),
    }
}

/// Why a UDP packet could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BuildError {
    /// Source and destination are of different IP families.
    #[error("source and destination are of different IP families")]
    MixedFamilies,
    /// The packet would exceed the MTU (we do not fragment).
    #[error("datagram of {payload} bytes does not fit the MTU of {mtu}")]
    TooBig {
        /// Payload length.
        payload: usize,
        /// Device MTU.
        mtu: usize,
    },
}

/// Builds an IP/UDP packet with valid checksums into `out` (cleared first).
pub(crate) fn build_udp(
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    mtu: usize,
    out: &mut Vec<u8>,
) -> Result<(), BuildError> {
    let ip_header_len = match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => IPV4_HEADER_LEN,
        (IpAddr::V6(_), IpAddr::V6(_)) => IPV6_HEADER_LEN,
        _ => return Err(BuildError::MixedFamilies),
    };
    let udp_len = UDP_HEADER_LEN + payload.len();
    let total = ip_header_len + udp_len;
    if total > mtu || total > usize::from(u16::MAX) {
        return Err(BuildError::TooBig {
            payload: payload.len(),
            mtu,
        });
    }
    out.clear();
    out.resize(total, 0);
    let caps = ChecksumCapabilities::default();
    let (src_ip, dst_ip) = (IpAddress::from(src.ip()), IpAddress::from(dst.ip()));
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Ipv4Repr {
            src_addr: s,
            dst_addr: d,
            next_header: IpProtocol::Udp,
            payload_len: udp_len,
            hop_limit: HOP_LIMIT,
        }
        .emit(&mut Ipv4Packet::new_unchecked(&mut out[..]), &caps),
        (IpAddr::V6(s), IpAddr::V6(d)) => Ipv6Repr {
            src_addr: s,
            dst_addr: d,
            next_header: IpProtocol::Udp,
            payload_len: udp_len,
            hop_limit: HOP_LIMIT,
        }
        .emit(&mut Ipv6Packet::new_unchecked(&mut out[..])),
        _ => return Err(BuildError::MixedFamilies),
    }
    let repr = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let mut udp = UdpPacket::new_unchecked(&mut out[ip_header_len..]);
    repr.emit(
        &mut udp,
        &src_ip,
        &dst_ip,
        payload.len(),
        |buf| buf.copy_from_slice(payload),
        &caps,
    );
    Ok(())
}

#[cfg(test)]
pub(super) mod tests;
